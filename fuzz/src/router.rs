//! Target `router_events`: the router driven by an event sequence decoded
//! from the fuzzer's bytes, checked against a small model after every step.
//!
//! The model ([`Model`]) keeps what the specification says the router must
//! know: who holds each slot now (free, a client, or resting after a client
//! left with sessions open), which sessions are open, and every counter.
//! After each event the harness checks:
//!
//! - **routing**: an agent frame is delivered only to the client that holds
//!   its id's slot at that moment, never to a stranger or a departed client;
//! - **admission**: a connection is refused only when the limit is reached
//!   or no slot is free, and admitted only to a free slot, with the
//!   handshake and ids of that slot; `connected <= max_clients` always;
//! - **sessions**: a departed client's open sessions are killed exactly once
//!   each (never twice over the whole run); its slot rests until they end or
//!   the grace period passes;
//! - **counters**: every counter equals the model's and they add up
//!   (admitted - disconnected = connected, opened = closed + abandoned +
//!   open, every agent frame delivered, control or dropped).
//!
//! Like the relay, the harness disconnects a client as soon as the router
//! rejects one of its frames.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use relay_codec::{Flags, FrameHeader, Handshake, IdRange};
use relay_router::{
    AgentVerdict, ClientId, ClientVerdict, DropReason, RejectReason, Router, RouterConfig,
    RouterCounters, SlotLayout,
};

use crate::Violation;
use crate::input::{Input, Output};

/// Most events decoded from one input.
pub const MAX_EVENTS: usize = 512;

/// Ids of each legacy slot, as the specification defines them.
const LEGACY_STEP: u32 = u32::MAX / 16;

/// A router configuration and the events to feed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The router's settings.
    pub config: RouterConfig,
    /// What happens, in order.
    pub events: Vec<Event>,
}

/// One input to the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A connection arrives.
    Connect,
    /// A client leaves (index into every client admitted so far, modulo
    /// their number, so departed clients are picked too).
    Disconnect {
        /// Which client.
        client: u8,
    },
    /// A client sends a frame.
    ClientFrame {
        /// Which client (as for `Disconnect`).
        client: u8,
        /// Its id.
        id: IdPick,
        /// Its flags byte.
        flags: u8,
    },
    /// The agent sends a frame.
    AgentFrame {
        /// Its id.
        id: IdPick,
        /// Its flags byte.
        flags: u8,
    },
    /// Time passes, then the router ticks.
    Tick {
        /// Milliseconds.
        millis: u16,
    },
}

/// How an event picks a frame id, so that ids that matter come up often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdPick {
    /// `offset` past the first id of a client's range.
    Own {
        /// Which client (as for `Event::Disconnect`).
        client: u8,
        /// Added to the range's first id.
        offset: u8,
    },
    /// `offset` past the last id of a client's range (0 is the last id).
    OwnEnd {
        /// Which client.
        client: u8,
        /// Added to the range's last id.
        offset: u8,
    },
    /// An open session (of any slot, resting ones included).
    Session {
        /// Index into every open session, modulo their number.
        index: u8,
    },
    /// The first id routed to a slot.
    SlotStart {
        /// Which slot (modulo the slot count).
        slot: u8,
    },
    /// Id 0.
    Zero,
    /// Id `u32::MAX`.
    Max,
    /// Any id.
    Any(u32),
}

impl Scenario {
    /// Decodes fuzzer bytes: a configuration (4 bytes), then events until
    /// the input ends or [`MAX_EVENTS`] is reached.
    pub fn from_fuzz(bytes: &[u8]) -> Scenario {
        let mut input = Input::new(bytes);
        let layout = match input.below(9) {
            0 => SlotLayout::Legacy,
            n => SlotLayout::Bounds { slots: n },
        };
        let max_clients = 1 + input.below(layout.slots());
        let quarantine_grace = Duration::from_millis(u64::from(input.below(1000)));
        let max_sessions_per_client = 1 + input.below(4) as usize;
        let config = RouterConfig {
            layout,
            max_clients,
            quarantine_grace,
            max_sessions_per_client,
        };
        let mut events = Vec::new();
        while !input.is_empty() && events.len() < MAX_EVENTS {
            events.push(Event::from_fuzz(&mut input));
        }
        Scenario { config, events }
    }

    /// The bytes [`from_fuzz`](Scenario::from_fuzz) reads back as `self`
    /// (the configuration must be one it can produce).
    pub fn to_fuzz(&self) -> Vec<u8> {
        let mut out = Output::new();
        let slots = self.config.layout.slots();
        match self.config.layout {
            SlotLayout::Legacy => out.below(0, 9),
            SlotLayout::Bounds { slots } => out.below(slots, 9),
        };
        out.below(self.config.max_clients - 1, slots);
        out.below(self.config.quarantine_grace.as_millis() as u32, 1000);
        out.below(self.config.max_sessions_per_client as u32 - 1, 4);
        for event in &self.events {
            event.write_fuzz(&mut out);
        }
        out.into_bytes()
    }
}

impl Event {
    fn from_fuzz(input: &mut Input<'_>) -> Event {
        match input.below(8) {
            0 | 1 => Event::Connect,
            2 => Event::Disconnect { client: input.u8() },
            3 | 4 => Event::ClientFrame {
                client: input.u8(),
                id: IdPick::from_fuzz(input),
                flags: input.u8(),
            },
            5 | 6 => Event::AgentFrame {
                id: IdPick::from_fuzz(input),
                flags: input.u8(),
            },
            _ => Event::Tick {
                millis: input.u16(),
            },
        }
    }

    fn write_fuzz(self, out: &mut Output) {
        match self {
            Event::Connect => {
                out.below(0, 8);
            }
            Event::Disconnect { client } => {
                out.below(2, 8).u8(client);
            }
            Event::ClientFrame { client, id, flags } => {
                out.below(3, 8).u8(client);
                id.write_fuzz(out);
                out.u8(flags);
            }
            Event::AgentFrame { id, flags } => {
                out.below(5, 8);
                id.write_fuzz(out);
                out.u8(flags);
            }
            Event::Tick { millis } => {
                out.below(7, 8).u16(millis);
            }
        }
    }
}

impl IdPick {
    fn from_fuzz(input: &mut Input<'_>) -> IdPick {
        match input.below(8) {
            0 | 1 => IdPick::Own {
                client: input.u8(),
                offset: input.u8(),
            },
            2 => IdPick::OwnEnd {
                client: input.u8(),
                offset: input.u8(),
            },
            3 | 4 => IdPick::Session { index: input.u8() },
            5 => IdPick::SlotStart { slot: input.u8() },
            6 => match input.below(3) {
                0 => IdPick::Zero,
                1 => IdPick::Max,
                _ => IdPick::Any(input.u32()),
            },
            _ => IdPick::Any(input.u32()),
        }
    }

    fn write_fuzz(self, out: &mut Output) {
        match self {
            IdPick::Own { client, offset } => {
                out.below(0, 8).u8(client).u8(offset);
            }
            IdPick::OwnEnd { client, offset } => {
                out.below(2, 8).u8(client).u8(offset);
            }
            IdPick::Session { index } => {
                out.below(3, 8).u8(index);
            }
            IdPick::SlotStart { slot } => {
                out.below(5, 8).u8(slot);
            }
            IdPick::Zero => {
                out.below(6, 8).below(0, 3);
            }
            IdPick::Max => {
                out.below(6, 8).below(1, 3);
            }
            IdPick::Any(id) => {
                out.below(7, 8).u32(id);
            }
        }
    }
}

/// What a slot holds, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Free,
    Client(ClientId),
    Resting { until: Instant },
}

#[derive(Debug, Clone)]
struct ModelSlot {
    holder: Holder,
    /// Every id routed to the slot.
    range: IdRange,
    sessions: BTreeSet<u32>,
}

/// A client the harness has seen admitted.
#[derive(Debug, Clone, Copy)]
struct Known {
    id: ClientId,
    ids: IdRange,
}

/// The reference model of the router's state.
#[derive(Debug)]
pub struct Model {
    config: RouterConfig,
    slots: Vec<ModelSlot>,
    clients: Vec<Known>,
    killed: HashSet<(u64, u32)>,
    counters: RouterCounters,
    last_generation: u64,
}

/// Every id of slot `slot`, derived from the specification's arithmetic.
fn slot_range(layout: SlotLayout, slot: u32) -> IdRange {
    let (first, last) = match layout {
        SlotLayout::Legacy => {
            let first = slot * LEGACY_STEP;
            let last = if slot == 15 {
                u32::MAX
            } else {
                first + LEGACY_STEP - 1
            };
            (first, last)
        }
        SlotLayout::Bounds { slots } => {
            // microsandbox 0.7's canonical ranges: [k*S + 1, (k+1)*S) with
            // S = u32::MAX / slots; the multiples of S and the tail belong to none.
            let step = u32::MAX / slots;
            (slot * step + 1, slot * step + step - 1)
        }
    };
    IdRange::new(first, last).unwrap_or_else(|| unreachable!("slot ranges are never empty"))
}

impl Model {
    fn new(config: &RouterConfig) -> Model {
        let slots = (0..config.layout.slots())
            .map(|slot| ModelSlot {
                holder: Holder::Free,
                range: slot_range(config.layout, slot),
                sessions: BTreeSet::new(),
            })
            .collect();
        Model {
            config: config.clone(),
            slots,
            clients: Vec::new(),
            killed: HashSet::new(),
            counters: RouterCounters::default(),
            last_generation: 0,
        }
    }

    fn slot_of(&self, id: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.range.contains(id))
    }

    fn connected(&self) -> u32 {
        self.slots
            .iter()
            .filter(|s| matches!(s.holder, Holder::Client(_)))
            .count() as u32
    }

    fn resting(&self) -> u32 {
        self.slots
            .iter()
            .filter(|s| matches!(s.holder, Holder::Resting { .. }))
            .count() as u32
    }

    fn holds(&self, client: ClientId) -> bool {
        self.slots
            .get(client.slot() as usize)
            .is_some_and(|s| s.holder == Holder::Client(client))
    }

    fn open_sessions(&self) -> Vec<u32> {
        self.slots
            .iter()
            .flat_map(|s| s.sessions.iter().copied())
            .collect()
    }

    /// Resting slots whose grace has passed become free.
    fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        for slot in &mut self.slots {
            if let Holder::Resting { until } = slot.holder
                && until <= now
            {
                self.counters.sessions_abandoned += slot.sessions.len() as u64;
                self.counters.quarantines_expired += 1;
                slot.sessions.clear();
                slot.holder = Holder::Free;
                expired += 1;
            }
        }
        expired
    }

    fn pick(&self, pick: IdPick) -> u32 {
        let client = |n: u8| {
            (!self.clients.is_empty()).then(|| self.clients[usize::from(n) % self.clients.len()])
        };
        match pick {
            IdPick::Own { client: n, offset } => {
                client(n).map_or(1, |c| c.ids.first().saturating_add(u32::from(offset)))
            }
            IdPick::OwnEnd { client: n, offset } => {
                client(n).map_or(u32::MAX, |c| c.ids.last().saturating_add(u32::from(offset)))
            }
            IdPick::Session { index } => {
                let open = self.open_sessions();
                if open.is_empty() {
                    1
                } else {
                    open[usize::from(index) % open.len()]
                }
            }
            IdPick::SlotStart { slot } => self.slots[usize::from(slot) % self.slots.len()]
                .range
                .first(),
            IdPick::Zero => 0,
            IdPick::Max => u32::MAX,
            IdPick::Any(id) => id,
        }
    }
}

/// What a run did, for tests and seeds to assert on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Events fed.
    pub events: usize,
    /// Agent frames delivered to a client.
    pub delivered: u64,
    /// Connections refused.
    pub refused: u64,
    /// Clients rejected for a frame.
    pub rejected: u64,
    /// Session requests refused for the per-client limit.
    pub sessions_refused: u64,
    /// Sessions killed on disconnect.
    pub killed: u64,
    /// Agent frames dropped for a resting slot.
    pub dropped_resting: u64,
    /// Resting slots whose grace ran out.
    pub expired: u64,
}

/// Feeds every event of `scenario` to a router and checks it against the
/// model after each one.
pub fn run(scenario: &Scenario) -> Result<Report, Violation> {
    let mut router = Router::new(scenario.config.clone())
        .map_err(|e| format!("a valid configuration was refused: {e}"))?;
    let mut model = Model::new(&scenario.config);
    let start = Instant::now();
    let mut now = start;
    let mut previous = RouterCounters::default();
    for (step, event) in scenario.events.iter().enumerate() {
        apply(&mut router, &mut model, *event, &mut now)
            .map_err(|v| format!("event {step} ({event:?}): {v}"))?;
        check_state(&router, &model, &previous)
            .map_err(|v| format!("after event {step} ({event:?}): {v}"))?;
        previous = router.counters();
    }
    let counters = router.counters();
    Ok(Report {
        events: scenario.events.len(),
        delivered: counters.agent_frames_delivered,
        refused: counters.clients_refused,
        rejected: counters.clients_rejected,
        sessions_refused: counters.sessions_refused,
        killed: counters.sessions_killed,
        dropped_resting: counters.agent_frames_dropped_quarantined,
        expired: counters.quarantines_expired,
    })
}

/// The property on one fuzzer input.
pub fn check(bytes: &[u8]) -> Result<Report, Violation> {
    run(&Scenario::from_fuzz(bytes))
}

fn apply(
    router: &mut Router,
    model: &mut Model,
    event: Event,
    now: &mut Instant,
) -> Result<(), Violation> {
    match event {
        Event::Connect => connect(router, model, *now),
        Event::Disconnect { client } => {
            let Some(known) = nth_client(model, client) else {
                return Ok(());
            };
            disconnect(router, model, known.id, *now)
        }
        Event::ClientFrame { client, id, flags } => {
            let Some(known) = nth_client(model, client) else {
                return Ok(());
            };
            let header = FrameHeader {
                id: model.pick(id),
                flags: Flags::from_bits(flags),
            };
            client_frame(router, model, known, header, *now)
        }
        Event::AgentFrame { id, flags } => {
            let header = FrameHeader {
                id: model.pick(id),
                flags: Flags::from_bits(flags),
            };
            agent_frame(router, model, header)
        }
        Event::Tick { millis } => {
            *now += Duration::from_millis(u64::from(millis));
            let expected = model.expire(*now);
            let freed = router.tick(*now);
            if freed != expected {
                return Err(format!("tick freed {freed} slots, expected {expected}"));
            }
            Ok(())
        }
    }
}

fn nth_client(model: &Model, n: u8) -> Option<Known> {
    (!model.clients.is_empty()).then(|| model.clients[usize::from(n) % model.clients.len()])
}

fn connect(router: &mut Router, model: &mut Model, now: Instant) -> Result<(), Violation> {
    model.expire(now);
    let connected = model.connected();
    let has_free = model.slots.iter().any(|s| s.holder == Holder::Free);
    let may_admit = connected < model.config.max_clients && has_free;
    match router.connect(now) {
        Ok(admission) => {
            if !may_admit {
                return Err(format!(
                    "admitted {admission:?} with {connected} connected and free slots: {has_free}"
                ));
            }
            let client = admission.client;
            let slot = client.slot() as usize;
            match model.slots.get(slot).map(|s| s.holder) {
                Some(Holder::Free) => {}
                holder => return Err(format!("admitted to slot {slot} holding {holder:?}")),
            }
            if client.generation() <= model.last_generation {
                return Err(format!("generation {client:?} was used before"));
            }
            let range = model.slots[slot].range;
            let expected = match model.config.layout {
                SlotLayout::Legacy => Handshake::Legacy {
                    offset: range.first(),
                },
                SlotLayout::Bounds { .. } => Handshake::Bounds { range },
            };
            if admission.handshake != expected {
                return Err(format!(
                    "slot {slot} greeted with {:?}, expected {expected:?}",
                    admission.handshake
                ));
            }
            let ids = admission.ids;
            if Some(ids) != expected.client_ids() || ids.contains(0) || !range.contains(ids.last())
            {
                return Err(format!("slot {slot} ({range:?}) gave ids {ids:?}"));
            }
            model.last_generation = client.generation();
            model.slots[slot].holder = Holder::Client(client);
            model.clients.push(Known { id: client, ids });
            model.counters.clients_admitted += 1;
        }
        Err(refusal) => {
            if may_admit {
                return Err(format!(
                    "refused ({refusal}) with {connected} connected and a free slot"
                ));
            }
            if refusal.connected != connected
                || refusal.quarantined != model.resting()
                || refusal.max_clients != model.config.max_clients
            {
                return Err(format!("refusal {refusal:?} misreports the state"));
            }
            model.counters.clients_refused += 1;
        }
    }
    Ok(())
}

fn disconnect(
    router: &mut Router,
    model: &mut Model,
    client: ClientId,
    now: Instant,
) -> Result<(), Violation> {
    let kills = router.disconnect(client, now);
    if !model.holds(client) {
        if kills.is_empty() {
            return Ok(());
        }
        return Err(format!("a client already gone had kills {kills:?}"));
    }
    let slot = &mut model.slots[client.slot() as usize];
    let expected: Vec<u32> = slot.sessions.iter().copied().collect();
    if kills != expected {
        return Err(format!("kills {kills:?}, open sessions {expected:?}"));
    }
    for &id in &kills {
        if !model.killed.insert((client.generation(), id)) {
            return Err(format!("session {id} of {client:?} killed twice"));
        }
    }
    slot.holder = if kills.is_empty() {
        Holder::Free
    } else {
        Holder::Resting {
            until: now + model.config.quarantine_grace,
        }
    };
    model.counters.clients_disconnected += 1;
    model.counters.sessions_killed += kills.len() as u64;
    Ok(())
}

fn client_frame(
    router: &mut Router,
    model: &mut Model,
    client: Known,
    header: FrameHeader,
    now: Instant,
) -> Result<(), Violation> {
    let verdict = router.client_frame(client.id, header);
    let FrameHeader { id, flags } = header;
    let expected = if model.holds(client.id) {
        let shutdown = flags.contains(Flags::SHUTDOWN);
        let limit = model.config.max_sessions_per_client;
        let sessions = &mut model.slots[client.id.slot() as usize].sessions;
        let starts =
            id != 0 && flags.contains(Flags::SESSION_START) && !flags.contains(Flags::TERMINAL);
        if !(client.ids.contains(id) || (shutdown && id == 0)) {
            model.counters.clients_rejected += 1;
            ClientVerdict::Reject(RejectReason::IdOutOfRange {
                id,
                first: client.ids.first(),
                last: client.ids.last(),
            })
        } else if starts && sessions.len() >= limit && !sessions.contains(&id) {
            model.counters.sessions_refused += 1;
            ClientVerdict::RefuseSession { limit }
        } else {
            if starts && sessions.insert(id) {
                model.counters.sessions_opened += 1;
            }
            if flags.contains(Flags::TERMINAL) && sessions.remove(&id) {
                model.counters.sessions_closed += 1;
            }
            model.counters.shutdown_requests += u64::from(shutdown);
            model.counters.client_frames_forwarded += 1;
            ClientVerdict::Forward { shutdown }
        }
    } else {
        ClientVerdict::Stale
    };
    if verdict != expected {
        return Err(format!("client frame: {verdict:?}, expected {expected:?}"));
    }
    if matches!(verdict, ClientVerdict::Reject(_)) {
        // The relay cuts a client off on the frame it rejects.
        disconnect(router, model, client.id, now)?;
    }
    Ok(())
}

fn agent_frame(
    router: &mut Router,
    model: &mut Model,
    header: FrameHeader,
) -> Result<(), Violation> {
    let verdict = router.agent_frame(header);
    let FrameHeader { id, flags } = header;
    let expected = if id == 0 {
        model.counters.agent_control_frames += 1;
        AgentVerdict::Control
    } else if id == u32::MAX {
        model.counters.agent_frames_dropped_reserved += 1;
        AgentVerdict::Drop(DropReason::Reserved)
    } else if let Some(index) = model.slot_of(id) {
        let slot = &mut model.slots[index];
        if flags.contains(Flags::TERMINAL) && slot.sessions.remove(&id) {
            model.counters.sessions_closed += 1;
        }
        match slot.holder {
            Holder::Client(client) => {
                model.counters.agent_frames_delivered += 1;
                AgentVerdict::Deliver(client)
            }
            Holder::Free => {
                model.counters.agent_frames_dropped_free += 1;
                AgentVerdict::Drop(DropReason::SlotFree)
            }
            Holder::Resting { .. } => {
                model.counters.agent_frames_dropped_quarantined += 1;
                if slot.sessions.is_empty() {
                    slot.holder = Holder::Free;
                }
                AgentVerdict::Drop(DropReason::SlotQuarantined)
            }
        }
    } else {
        model.counters.agent_frames_dropped_no_slot += 1;
        AgentVerdict::Drop(DropReason::NoSlot)
    };
    if let AgentVerdict::Deliver(client) = verdict {
        // Stated on its own, whatever the model expected: only the
        // current holder of the id's slot may receive the frame.
        let holder = model.slots.get(client.slot() as usize);
        let owns =
            holder.is_some_and(|s| s.holder == Holder::Client(client) && s.range.contains(id));
        if !owns {
            return Err(format!(
                "frame {id} delivered to {client:?}, who does not hold its slot"
            ));
        }
    }
    if verdict != expected {
        return Err(format!("agent frame: {verdict:?}, expected {expected:?}"));
    }
    Ok(())
}

fn check_state(router: &Router, model: &Model, previous: &RouterCounters) -> Result<(), Violation> {
    let connected = router.clients_connected();
    if connected != model.connected() || connected > model.config.max_clients {
        return Err(format!(
            "{connected} connected; model {}, limit {}",
            model.connected(),
            model.config.max_clients
        ));
    }
    if router.slots_quarantined() != model.resting() {
        return Err(format!(
            "{} slots resting, model {}",
            router.slots_quarantined(),
            model.resting()
        ));
    }
    if router.sessions_open() != model.open_sessions().len() {
        return Err(format!(
            "{} sessions open, model {}",
            router.sessions_open(),
            model.open_sessions().len()
        ));
    }
    for known in &model.clients {
        let holds = model.holds(known.id);
        if router.is_connected(known.id) != holds {
            return Err(format!("{:?} connected: router says {}", known.id, !holds));
        }
        let expected: Vec<u32> = if holds {
            model.slots[known.id.slot() as usize]
                .sessions
                .iter()
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        if router.sessions_of(known.id) != expected {
            return Err(format!(
                "sessions of {:?}: {:?}, model {expected:?}",
                known.id,
                router.sessions_of(known.id)
            ));
        }
    }
    let deadline = model
        .slots
        .iter()
        .filter_map(|s| match s.holder {
            Holder::Resting { until } => Some(until),
            _ => None,
        })
        .min();
    if router.next_deadline() != deadline {
        return Err(format!(
            "next deadline {:?}, model {deadline:?}",
            router.next_deadline()
        ));
    }
    let c = router.counters();
    if c != model.counters {
        return Err(format!("counters {c:?}\n model {:?}", model.counters));
    }
    let adds_up = c.clients_admitted - c.clients_disconnected == u64::from(connected)
        && c.sessions_opened
            == c.sessions_closed + c.sessions_abandoned + router.sessions_open() as u64
        && c.sessions_killed <= c.sessions_opened;
    if !adds_up {
        return Err(format!("counters do not add up: {c:?}"));
    }
    let fields = |c: &RouterCounters| {
        [
            c.clients_admitted,
            c.clients_refused,
            c.clients_rejected,
            c.clients_disconnected,
            c.sessions_opened,
            c.sessions_refused,
            c.sessions_closed,
            c.sessions_killed,
            c.sessions_abandoned,
            c.client_frames_forwarded,
            c.shutdown_requests,
            c.agent_frames_delivered,
            c.agent_control_frames,
            c.agent_frames_dropped_free,
            c.agent_frames_dropped_quarantined,
            c.agent_frames_dropped_no_slot,
            c.agent_frames_dropped_reserved,
            c.quarantines_expired,
        ]
    };
    if fields(&c)
        .iter()
        .zip(fields(previous))
        .any(|(now, before)| *now < before)
    {
        return Err(format!("a counter went down: {previous:?} -> {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(layout: SlotLayout, max_clients: u32, grace_ms: u64) -> RouterConfig {
        RouterConfig {
            layout,
            max_clients,
            quarantine_grace: Duration::from_millis(grace_ms),
            max_sessions_per_client: 2,
        }
    }

    fn own(client: u8, offset: u8) -> IdPick {
        IdPick::Own { client, offset }
    }

    const START: u8 = 0x02;
    const TERMINAL: u8 = 0x01;

    #[test]
    fn a_departed_clients_sessions_are_killed_once_and_its_slot_rests() {
        let scenario = Scenario {
            config: config(SlotLayout::Bounds { slots: 2 }, 2, 500),
            events: vec![
                Event::Connect,
                Event::ClientFrame {
                    client: 0,
                    id: own(0, 0),
                    flags: START,
                },
                Event::AgentFrame {
                    id: own(0, 0),
                    flags: 0,
                },
                Event::Disconnect { client: 0 },
                Event::Disconnect { client: 0 },
                Event::AgentFrame {
                    id: own(0, 0),
                    flags: 0,
                },
                Event::Connect,
                Event::Connect,
                Event::AgentFrame {
                    id: IdPick::Session { index: 0 },
                    flags: TERMINAL,
                },
                Event::Connect,
            ],
        };
        let report = run(&scenario).unwrap();
        assert_eq!(report.delivered, 1);
        assert_eq!(report.killed, 1);
        assert_eq!(report.dropped_resting, 2);
        assert_eq!(report.refused, 1, "the resting slot is not handed out");
    }

    #[test]
    fn a_resting_slot_frees_when_its_grace_passes() {
        let scenario = Scenario {
            config: config(SlotLayout::Bounds { slots: 1 }, 1, 100),
            events: vec![
                Event::Connect,
                Event::ClientFrame {
                    client: 0,
                    id: own(0, 0),
                    flags: START,
                },
                Event::Disconnect { client: 0 },
                Event::Connect,
                Event::Tick { millis: 99 },
                Event::Connect,
                Event::Tick { millis: 1 },
                Event::Connect,
            ],
        };
        let report = run(&scenario).unwrap();
        assert_eq!((report.refused, report.expired), (2, 1));
    }

    #[test]
    fn a_frame_outside_the_range_rejects_and_disconnects_its_client() {
        let scenario = Scenario {
            config: config(SlotLayout::Bounds { slots: 3 }, 3, 0),
            events: vec![
                Event::Connect,
                Event::Connect,
                Event::ClientFrame {
                    client: 0,
                    id: own(1, 0),
                    flags: 0,
                },
                Event::ClientFrame {
                    client: 0,
                    id: own(0, 0),
                    flags: 0,
                },
                Event::ClientFrame {
                    client: 1,
                    id: IdPick::Zero,
                    flags: 0x04,
                },
                Event::ClientFrame {
                    client: 1,
                    id: own(1, 1),
                    flags: START,
                },
                Event::ClientFrame {
                    client: 1,
                    id: own(1, 2),
                    flags: START,
                },
                Event::ClientFrame {
                    client: 1,
                    id: own(1, 3),
                    flags: START,
                },
            ],
        };
        let report = run(&scenario).unwrap();
        assert_eq!(report.rejected, 1, "a spy");
        assert_eq!(report.sessions_refused, 1, "one session too many");
        assert_eq!(
            report.killed, 0,
            "the client over its limit keeps its sessions"
        );
    }

    #[test]
    fn scenarios_round_trip_through_fuzz_bytes() {
        let scenario = Scenario {
            config: config(SlotLayout::Bounds { slots: 8 }, 5, 999),
            events: vec![
                Event::Connect,
                Event::Disconnect { client: 3 },
                Event::ClientFrame {
                    client: 1,
                    id: IdPick::OwnEnd {
                        client: 2,
                        offset: 1,
                    },
                    flags: 0xff,
                },
                Event::AgentFrame {
                    id: IdPick::Any(0xdead_beef),
                    flags: 1,
                },
                Event::AgentFrame {
                    id: IdPick::Zero,
                    flags: 0,
                },
                Event::AgentFrame {
                    id: IdPick::Max,
                    flags: 0,
                },
                Event::AgentFrame {
                    id: IdPick::SlotStart { slot: 9 },
                    flags: 0,
                },
                Event::AgentFrame {
                    id: IdPick::Session { index: 4 },
                    flags: 0,
                },
                Event::Tick { millis: 65_535 },
            ],
        };
        assert_eq!(Scenario::from_fuzz(&scenario.to_fuzz()), scenario);
        let legacy = Scenario {
            config: config(SlotLayout::Legacy, 16, 0),
            events: vec![],
        };
        assert_eq!(Scenario::from_fuzz(&legacy.to_fuzz()), legacy);
    }

    #[test]
    fn the_models_slot_ranges_match_the_codecs() {
        for slot in 0..16 {
            assert_eq!(
                slot_range(SlotLayout::Legacy, slot),
                relay_codec::legacy_slot_range(slot)
            );
        }
        for slots in 1..=8 {
            for slot in 0..slots {
                assert_eq!(
                    Some(slot_range(SlotLayout::Bounds { slots }, slot)),
                    relay_codec::bounds_slot_range(slot, slots)
                );
            }
        }
    }

    #[test]
    fn any_bytes_make_a_scenario_that_passes() {
        let mut state = 0x9e37_79b9_u32;
        for len in [0usize, 1, 5, 40, 400, 4000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            check(&bytes).unwrap();
        }
    }
}
