//! Plays a router against the model, event by event, and checks both.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use relay_codec::flow::{Credit, Owed, accepted_window, is_charged};
use relay_codec::{Flags, FrameHeader, Handshake, RUNTIME_RESERVED_ID};

use super::state::{Holder, Known, MSession, MSlot, Model, Queued, expires};
use super::{Event, Report, Scenario, Violation};
use crate::{
    Action, AgentVerdict, ClientId, ClientVerdict, ControlBatch, CutReason, DropReason, EXEMPT_LEN,
    OVERDRAFT, ReadyOutcome, RefuseReason, RejectReason, Router, RouterCounters, SlotLayout,
};

/// Feeds every event of `scenario` to a router and checks it against the
/// model after each one.
pub fn run(scenario: &Scenario) -> Result<Report, Violation> {
    let mut router = Router::new(scenario.config.clone())
        .map_err(|e| format!("a valid configuration was refused: {e}"))?;
    let mut model = Model::new(&scenario.config);
    let mut now = Instant::now();
    let mut previous = RouterCounters::default();
    let mut peak_queued = 0;
    for (step, event) in scenario.events.iter().enumerate() {
        apply(&mut router, &mut model, *event, &mut now)
            .map_err(|v| format!("event {step} ({event:?}): {v}"))?;
        check_actions(&mut router, &mut model)
            .map_err(|v| format!("actions after event {step} ({event:?}): {v}"))?;
        check_state(&router, &model, &previous)
            .map_err(|v| format!("after event {step} ({event:?}): {v}"))?;
        previous = router.counters();
        peak_queued = peak_queued.max(router.queued_bytes());
    }
    Ok(Report {
        events: scenario.events.len(),
        counters: router.counters(),
        peak_queued,
    })
}

fn apply(
    router: &mut Router,
    model: &mut Model,
    event: Event,
    now: &mut Instant,
) -> Result<(), Violation> {
    match event {
        Event::Connect => connect(router, model, *now),
        Event::Disconnect { client } => match model.nth_client(client) {
            Some(known) => disconnect(router, model, known.id),
            None => Ok(()),
        },
        Event::ClientFrame {
            client,
            id,
            flags,
            len,
        } => {
            let Some(known) = model.nth_client(client) else {
                return Ok(());
            };
            let header = FrameHeader {
                id: model.pick(id),
                flags: Flags::from_bits(flags),
            };
            client_frame(router, model, known, header, usize::from(len))
        }
        Event::AgentFrame { id, flags, len } => {
            let header = FrameHeader {
                id: model.pick(id),
                flags: Flags::from_bits(flags),
            };
            agent_frame(router, model, header, usize::from(len), *now)
        }
        Event::Drain {
            client,
            frames,
            written,
        } => match model.nth_client(client) {
            Some(known) => drain(router, model, known.id, usize::from(frames), written),
            None => Ok(()),
        },
        Event::QueueOwn { client, len } => {
            let Some(known) = model.nth_client(client) else {
                return Ok(());
            };
            let cost = usize::from(len);
            let slot = known.id.slot() as usize;
            let expected = model.holds(known.id) && model.charge(slot, cost);
            if expected {
                let header = FrameHeader {
                    id: 0,
                    flags: Flags::NONE,
                };
                model.push(
                    slot,
                    Queued {
                        cost,
                        header,
                        len: 0,
                        credited: false,
                    },
                );
            }
            let got = router.queue_own(known.id, cost);
            if got != expected {
                return Err(format!("queue_own: {got}, expected {expected}"));
            }
            Ok(())
        }
        Event::Stall { client } => {
            let Some(known) = model.nth_client(client) else {
                return Ok(());
            };
            let expected = model.holds(known.id) && !model.is_cut(known.id);
            if expected {
                model.cut(known.id.slot() as usize, CutReason::Stalled);
            }
            let got = router.cut_off(known.id, CutReason::Stalled);
            if got != expected {
                return Err(format!("cut_off: {got}, expected {expected}"));
            }
            Ok(())
        }
        Event::WriteControl => write_control(router, model, *now),
        Event::Ready { offer } => ready(router, model, offer),
        Event::Credit { id, bytes } => {
            let id = model.pick(id);
            let expected = credit(model, id, bytes);
            let got = router.agent_credit(id, bytes);
            if got != expected {
                return Err(format!("credit for {id}: {got}, expected {expected}"));
            }
            Ok(())
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

fn connect(router: &mut Router, model: &mut Model, now: Instant) -> Result<(), Violation> {
    model.expire(now);
    let connected = model.connected();
    let grace = model.config.quarantine_grace;
    let slot = if connected < model.config.max_clients {
        model.free.pop_front().or_else(|| {
            let mut best: Option<(usize, usize)> = None;
            for (index, s) in model.slots.iter().enumerate() {
                let reusable = s.holder == Holder::Resting
                    && s.sessions.values().all(|session| match *session {
                        MSession::Killed { killed_at, .. } => {
                            killed_at.is_some_and(|k| k + grace <= now)
                        }
                        MSession::Open { .. } => false,
                    });
                if reusable && best.is_none_or(|(_, t)| s.tombstones() < t) {
                    best = Some((index, s.tombstones()));
                }
            }
            best.map(|(index, _)| index)
        })
    } else {
        None
    };
    match (router.connect(now), slot) {
        (Ok(admission), Some(slot)) => {
            let client = admission.client;
            if client.slot() as usize != slot {
                return Err(format!(
                    "admitted to slot {}, expected {slot}",
                    client.slot()
                ));
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
            if model.slots[slot].holder == Holder::Resting {
                model.counters.clients_admitted_beside_tombstones += 1;
            }
            model.last_generation = client.generation();
            model.slots[slot].holder = Holder::Client {
                id: client,
                queue: VecDeque::new(),
                cut: false,
                wake_queued: false,
            };
            model.clients.push(Known { id: client, ids });
            model.counters.clients_admitted += 1;
            Ok(())
        }
        (Err(refusal), None) => {
            if refusal.connected != connected
                || refusal.quarantined != model.resting()
                || refusal.max_clients != model.config.max_clients
            {
                return Err(format!("refusal {refusal:?} misreports the state"));
            }
            model.counters.clients_refused += 1;
            Ok(())
        }
        (got, expected) => Err(format!("connect: {got:?}, expected slot {expected:?}")),
    }
}

fn disconnect(router: &mut Router, model: &mut Model, client: ClientId) -> Result<(), Violation> {
    let killed = router.disconnect(client);
    if !model.holds(client) {
        return match killed {
            0 => Ok(()),
            n => Err(format!("a client already gone had {n} kills")),
        };
    }
    let slot = client.slot() as usize;
    let mut expected = 0;
    for (&id, session) in &mut model.slots[slot].sessions {
        if matches!(session, MSession::Open { .. }) {
            *session = MSession::Killed {
                killed_at: None,
                last: None,
            };
            model.credit_due.remove(&id);
            model.kills.insert(id);
            if !model.killed.insert((client.generation(), id)) {
                return Err(format!("session {id} of {client:?} killed twice"));
            }
            expected += 1;
        }
    }
    if killed != expected {
        return Err(format!("{killed} kills, {expected} open sessions"));
    }
    model.counters.clients_disconnected += 1;
    model.counters.sessions_killed += killed as u64;
    if model.slots[slot].tombstones() == 0 {
        model.slots[slot].holder = Holder::Free;
        model.free.push_back(slot);
    } else {
        model.slots[slot].holder = Holder::Resting;
    }
    model.actions.retain(|action| match action {
        Action::CutOff { client: c, .. } | Action::Wake(c) => *c != client,
    });
    Ok(())
}

fn client_frame(
    router: &mut Router,
    model: &mut Model,
    client: Known,
    header: FrameHeader,
    len: usize,
) -> Result<(), Violation> {
    let verdict = router.client_frame(client.id, header, len);
    let expected = expected_client_verdict(model, client, header, len);
    if verdict != expected {
        return Err(format!(
            "client frame {header:?}: {verdict:?}, expected {expected:?}"
        ));
    }
    if matches!(verdict, ClientVerdict::Reject(_)) {
        // The relay disconnects a client on the frame it rejects.
        disconnect(router, model, client.id)?;
    }
    Ok(())
}

fn expected_client_verdict(
    model: &mut Model,
    client: Known,
    header: FrameHeader,
    len: usize,
) -> ClientVerdict {
    if !model.holds(client.id) || model.is_cut(client.id) {
        return ClientVerdict::Stale;
    }
    let FrameHeader { id, flags } = header;
    let shutdown = flags.contains(Flags::SHUTDOWN);
    if !(client.ids.contains(id) || (shutdown && id == 0)) {
        model.counters.clients_rejected += 1;
        return ClientVerdict::Reject(RejectReason::IdOutOfRange {
            id,
            first: client.ids.first(),
            last: client.ids.last(),
        });
    }
    let limit = model.config.max_sessions_per_client;
    let window = model.window;
    let slot = client.id.slot() as usize;
    let sessions = &mut model.slots[slot].sessions;
    let starts =
        id != 0 && flags.contains(Flags::SESSION_START) && !flags.contains(Flags::TERMINAL);
    match sessions.get(&id) {
        Some(MSession::Killed { .. }) if starts => {
            model.counters.sessions_refused += 1;
            return ClientVerdict::RefuseSession(RefuseReason::IdInUse { id });
        }
        None if starts => {
            if sessions.len() >= limit {
                model.counters.sessions_refused += 1;
                return ClientVerdict::RefuseSession(RefuseReason::Limit { limit });
            }
            sessions.insert(
                id,
                MSession::Open {
                    send: window.map(Credit::new),
                    owed: Owed::default(),
                    due: 0,
                },
            );
            model.counters.sessions_opened += 1;
        }
        _ => {}
    }
    if is_charged(header)
        && let Some(MSession::Open {
            send: Some(credit), ..
        }) = sessions.get_mut(&id)
    {
        if !credit.may_send() && (len > EXEMPT_LEN || credit.available() <= -OVERDRAFT) {
            model.counters.client_frames_held += 1;
            return ClientVerdict::Hold;
        }
        credit.spend(len);
    }
    if flags.contains(Flags::TERMINAL) && matches!(sessions.get(&id), Some(MSession::Open { .. })) {
        model.remove_session(slot, id);
        model.counters.sessions_closed += 1;
    }
    model.counters.shutdown_requests += u64::from(shutdown);
    model.counters.client_frames_forwarded += 1;
    ClientVerdict::Forward { shutdown }
}

fn agent_frame(
    router: &mut Router,
    model: &mut Model,
    header: FrameHeader,
    len: usize,
    now: Instant,
) -> Result<(), Violation> {
    let verdict = router.agent_frame(header, len, now);
    let killed_before = model.slot_of(header.id).is_some_and(|slot| {
        matches!(
            model.slots[slot].sessions.get(&header.id),
            Some(MSession::Killed { .. })
        )
    });
    let expected = expected_agent_verdict(model, header, len, now);
    if let AgentVerdict::Deliver { client, .. } = verdict {
        // Stated on its own, whatever the model expected: only the
        // current holder of the id's slot may receive the frame, and
        // never one of a killed session.
        let owns = model.holds(client)
            && model.slots[client.slot() as usize]
                .range
                .contains(header.id);
        if !owns || killed_before {
            return Err(format!(
                "frame {} delivered to {client:?}, who may not have it",
                header.id
            ));
        }
    }
    if verdict != expected {
        return Err(format!(
            "agent frame {header:?}: {verdict:?}, expected {expected:?}"
        ));
    }
    Ok(())
}

fn expected_agent_verdict(
    model: &mut Model,
    header: FrameHeader,
    len: usize,
    now: Instant,
) -> AgentVerdict {
    let FrameHeader { id, flags } = header;
    if id == 0 {
        model.counters.agent_control_frames += 1;
        return AgentVerdict::Control;
    }
    if id == RUNTIME_RESERVED_ID {
        model.counters.agent_frames_dropped_reserved += 1;
        return AgentVerdict::Drop(DropReason::Reserved);
    }
    let Some(slot) = model.slot_of(id) else {
        model.counters.agent_frames_dropped_no_slot += 1;
        return AgentVerdict::Drop(DropReason::NoSlot);
    };
    let terminal = flags.contains(Flags::TERMINAL);
    let mut credited = false;
    match model.slots[slot].sessions.get_mut(&id) {
        Some(MSession::Killed { killed_at, last }) => {
            if terminal {
                model.remove_session(slot, id);
                model.counters.sessions_closed += 1;
            } else if killed_at.is_some() {
                *last = Some(now);
            }
            model.counters.agent_frames_dropped_tombstoned += 1;
            return AgentVerdict::Drop(DropReason::Tombstoned);
        }
        Some(MSession::Open { .. }) if terminal => {
            model.remove_session(slot, id);
            model.counters.sessions_closed += 1;
            if model.window.is_some() {
                model.wake_owner(slot);
            }
        }
        Some(MSession::Open { .. }) => credited = model.window.is_some() && is_charged(header),
        None => {}
    }
    match model.slots[slot].holder.clone() {
        Holder::Free => {
            model.counters.agent_frames_dropped_free += 1;
            AgentVerdict::Drop(DropReason::SlotFree)
        }
        Holder::Resting => {
            model.counters.agent_frames_dropped_quarantined += 1;
            AgentVerdict::Drop(DropReason::SlotQuarantined)
        }
        Holder::Client { id: client, .. } => {
            let cost = model.config.charge(len);
            if model.charge(slot, cost) {
                model.push(
                    slot,
                    Queued {
                        cost,
                        header,
                        len,
                        credited,
                    },
                );
                model.counters.agent_frames_delivered += 1;
                AgentVerdict::Deliver { client, credited }
            } else {
                model.counters.agent_frames_dropped_cut_off += 1;
                AgentVerdict::Drop(DropReason::CutOff)
            }
        }
    }
}

fn drain(
    router: &mut Router,
    model: &mut Model,
    client: ClientId,
    frames: usize,
    written: bool,
) -> Result<(), Violation> {
    let slot = client.slot() as usize;
    let window = model.window;
    let taken: Vec<Queued> = match &mut model.slots[slot].holder {
        Holder::Client { id, queue, .. } if *id == client => {
            let n = frames.min(queue.len());
            queue.drain(..n).collect()
        }
        _ => return Ok(()),
    };
    let charged = taken.iter().map(|q| q.cost).sum();
    let credited: Vec<(FrameHeader, usize)> = taken
        .iter()
        .filter(|q| written && q.credited)
        .map(|q| (q.header, q.len))
        .collect();
    if let Some(window) = window {
        for &(header, len) in &credited {
            if let Some(MSession::Open { owed, due, .. }) =
                model.slots[slot].sessions.get_mut(&header.id)
                && let Some(bytes) = owed.add(len, window)
            {
                *due += bytes;
                model.credit_due.insert(header.id);
            }
        }
    }
    router.frames_left(client, charged, &credited);
    Ok(())
}

fn write_control(router: &mut Router, model: &mut Model, now: Instant) -> Result<(), Violation> {
    let got = router.take_control();
    let kills: Vec<u32> = std::mem::take(&mut model.kills).into_iter().collect();
    let mut credits = Vec::new();
    for id in std::mem::take(&mut model.credit_due) {
        if let Some(slot) = model.slot_of(id)
            && let Some(MSession::Open { due, .. }) = model.slots[slot].sessions.get_mut(&id)
            && *due > 0
        {
            credits.push((id, std::mem::take(due)));
        }
    }
    let expected = ControlBatch { kills, credits };
    if got != expected {
        return Err(format!("control {got:?}, expected {expected:?}"));
    }
    router.kills_written(&got.kills, now);
    for id in &got.kills {
        if let Some(slot) = model.slot_of(*id)
            && let Some(MSession::Killed { killed_at, .. }) = model.slots[slot].sessions.get_mut(id)
            && killed_at.is_none()
        {
            *killed_at = Some(now);
        }
    }
    Ok(())
}

fn ready(router: &mut Router, model: &mut Model, offer: Option<u32>) -> Result<(), Violation> {
    let got = router.agent_ready(offer);
    let expected = if !model.ready {
        model.ready = true;
        model.window = offer.map(accepted_window);
        ReadyOutcome::First {
            accept: model.window,
        }
    } else {
        model.counters.agent_restarts += 1;
        let mut forgotten = 0;
        for slot in 0..model.slots.len() {
            let open = model.slots[slot]
                .sessions
                .values()
                .filter(|s| matches!(s, MSession::Open { .. }))
                .count();
            forgotten += model.slots[slot].sessions.len();
            model.slots[slot].sessions.clear();
            model.release_if_done(slot);
            if open > 0 {
                model.cut(slot, CutReason::AgentRestarted { sessions: open });
            }
        }
        model.counters.sessions_abandoned += forgotten as u64;
        model.kills.clear();
        model.credit_due.clear();
        if model.window.take().is_some() {
            for slot in 0..model.slots.len() {
                model.wake_owner(slot);
            }
        }
        ReadyOutcome::Restarted {
            sessions: forgotten,
        }
    };
    if got != expected {
        return Err(format!("ready: {got:?}, expected {expected:?}"));
    }
    Ok(())
}

fn credit(model: &mut Model, id: u32, bytes: u32) -> bool {
    let slot = model.slot_of(id).filter(|_| model.window.is_some());
    let taken = slot.is_some_and(|slot| match model.slots[slot].sessions.get_mut(&id) {
        Some(MSession::Open {
            send: Some(credit), ..
        }) => {
            let was_out = !credit.may_send();
            credit.grant(bytes);
            if was_out {
                model.wake_owner(slot);
            }
            true
        }
        _ => false,
    });
    if !taken {
        model.counters.credits_ignored += 1;
    }
    taken
}

fn check_actions(router: &mut Router, model: &mut Model) -> Result<(), Violation> {
    let mut got = Vec::new();
    while let Some(action) = router.poll_action() {
        got.push(action);
    }
    let expected: Vec<Action> = model.actions.drain(..).collect();
    for action in &expected {
        if let Action::Wake(client) = action
            && let Holder::Client {
                id, wake_queued, ..
            } = &mut model.slots[client.slot() as usize].holder
            && id == client
        {
            *wake_queued = false;
        }
    }
    if got != expected {
        return Err(format!("actions {got:?}, expected {expected:?}"));
    }
    Ok(())
}

fn check_state(router: &Router, model: &Model, previous: &RouterCounters) -> Result<(), Violation> {
    let connected = router.clients_connected();
    if connected != model.connected() || connected > model.config.max_clients {
        return Err(format!(
            "{connected} connected; model {}",
            model.connected()
        ));
    }
    if router.slots_quarantined() != model.resting() {
        return Err(format!(
            "{} slots resting, model {}",
            router.slots_quarantined(),
            model.resting()
        ));
    }
    let sessions = model.known_sessions().len();
    let tombstones: usize = model.slots.iter().map(MSlot::tombstones).sum();
    if router.sessions_open() != sessions || router.sessions_tombstoned() != tombstones {
        return Err(format!(
            "sessions {}/{} tombstoned, model {sessions}/{tombstones}",
            router.sessions_open(),
            router.sessions_tombstoned()
        ));
    }
    if router.control_backlog() > sessions {
        return Err(format!(
            "{} control entries for {sessions} sessions",
            router.control_backlog()
        ));
    }
    let queued = router.queued_bytes();
    if queued != model.queued_total() || queued > model.config.total_queue_budget {
        return Err(format!(
            "{queued} bytes charged, model {}, budget {}",
            model.queued_total(),
            model.config.total_queue_budget
        ));
    }
    for known in &model.clients {
        let holds = model.holds(known.id);
        if router.is_connected(known.id) != holds {
            return Err(format!("{:?} connected: router says {}", known.id, !holds));
        }
        let slot = &model.slots[known.id.slot() as usize];
        let (expected, charged): (Vec<u32>, usize) = if holds {
            let open = slot
                .sessions
                .iter()
                .filter(|(_, s)| matches!(s, MSession::Open { .. }))
                .map(|(&id, _)| id)
                .collect();
            (open, slot.queued())
        } else {
            (Vec::new(), 0)
        };
        if router.sessions_of(known.id) != expected {
            return Err(format!(
                "sessions of {:?}: {:?}, model {expected:?}",
                known.id,
                router.sessions_of(known.id)
            ));
        }
        let got = router.queued_bytes_of(known.id);
        if got != charged || got > model.config.client_queue_budget {
            return Err(format!("{:?} charged {got}, model {charged}", known.id));
        }
    }
    let grace = model.config.quarantine_grace;
    let deadline = model
        .slots
        .iter()
        .flat_map(|s| s.sessions.values())
        .filter_map(|s| match *s {
            MSession::Killed { killed_at, last } => expires(killed_at, last, grace),
            MSession::Open { .. } => None,
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
            == c.sessions_closed + c.sessions_abandoned + router.sessions_open() as u64;
    if !adds_up {
        return Err(format!("counters do not add up: {c:?}"));
    }
    if went_down(previous, &c) {
        return Err(format!("a counter went down: {previous:?} -> {c:?}"));
    }
    Ok(())
}

/// Whether any counter decreased (every field is a `u64` that only grows).
fn went_down(before: &RouterCounters, after: &RouterCounters) -> bool {
    let fields = |c: &RouterCounters| {
        [
            c.clients_admitted,
            c.clients_admitted_beside_tombstones,
            c.clients_refused,
            c.clients_rejected,
            c.clients_cut_off,
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
            c.agent_frames_dropped_tombstoned,
            c.agent_frames_dropped_cut_off,
            c.quarantines_ended,
            c.agent_restarts,
            c.credits_ignored,
            c.client_frames_held,
        ]
    };
    fields(after)
        .iter()
        .zip(fields(before))
        .any(|(now, then)| *now < then)
}
