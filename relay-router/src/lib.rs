//! The relay's whole decision logic as one deterministic state machine:
//! who owns which ids, which sessions are open or killed, what every frame
//! may do, how much each client's queue is charged, who is cut off, and
//! what credit the agent is owed. Pure logic: no I/O, no clock, no tokio.
//!
//! In the layering this crate sits between `relay-codec` (it uses the frame
//! header types and the shared flow-credit rules; it never decodes CBOR)
//! and `relay-server`, which drives it. Like quinn-proto beside quinn,
//! inputs are method calls (those that depend on time carry `now`), and
//! every decision comes back as a value the server carries out.
//!
//! | event in | decision out |
//! |---|---|
//! | [`Router::connect`] | an [`Admission`] (slot, handshake) or a [`Refusal`] |
//! | [`Router::client_frame`] | [`ClientVerdict`]: forward, hold for credit, refuse the session, reject the client |
//! | [`Router::agent_frame`] | [`AgentVerdict`]: deliver (charged), drop (counted), or a control frame |
//! | [`Router::frames_left`] | charge released; credit comes due |
//! | [`Router::agent_ready`], [`Router::agent_credit`] | [`ReadyOutcome`]; wakes |
//! | [`Router::disconnect`] | sessions tombstoned; their kills queued |
//! | [`Router::take_control`], [`Router::kills_written`] | the [`ControlBatch`] to write first; grace starts |
//! | [`Router::tick`] | tombstones past their grace forgotten, slots freed |
//! | after any of them: [`Router::poll_action`] | [`Action`]: cut a client off, wake a reader |
//!
//! # Rules
//!
//! - Each client owns one slot, a range of ids. A client frame outside that
//!   range is a protocol violation and the client is rejected; the only
//!   exception is a `SHUTDOWN` frame with id 0.
//! - `SESSION_START` on a client frame opens session `id`; `TERMINAL` from
//!   either side closes it. A slot holds at most `max_sessions_per_client`
//!   sessions; a request past that is refused, not the client.
//! - When a client goes, each of its open sessions becomes a tombstone and
//!   is killed exactly once. A tombstone lasts until the agent's terminal
//!   frame for it, or until it has been silent for the grace period,
//!   counted from when its kill was written. Its frames are dropped and
//!   counted, whoever holds the slot by then. A slot with tombstones rests;
//!   a resting slot is handed out again only when no free slot is left and
//!   every kill was written a grace period ago, and the new owner cannot
//!   open a session on an id still tombstoned.
//! - Agent frames for a free or resting slot, and those on the runtime's
//!   reserved id `u32::MAX`, are dropped and counted.
//! - Every delivered frame is charged its wire bytes plus the server's
//!   per-frame overhead until it leaves. A frame that would take its
//!   client past its budget cuts that client off; one that would take all
//!   clients past the total budget cuts off the largest queues first.
//! - With flow control on, each open session has credit both ways, using
//!   the rules in [`relay_codec::flow`]: client frames wait for credit
//!   (small ones up to an overdraft), and credit for delivered frames comes
//!   due to the agent in half windows. Only open sessions of connected
//!   clients earn credit; everything the relay owes the agent is one entry
//!   per session.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use relay_codec::IdRange;
use relay_codec::flow::{Credit, Owed};

mod agent;
mod client;
mod config;
mod counters;
mod layout;
#[cfg(any(test, feature = "model"))]
pub mod model;
mod outcome;

pub use config::{ConfigError, RouterConfig};
pub use counters::RouterCounters;
pub use layout::{ClientId, SlotLayout};
pub use outcome::{
    Action, Admission, AgentVerdict, ClientVerdict, ControlBatch, CutReason, DropReason,
    ReadyOutcome, Refusal, RefuseReason, RejectReason,
};

/// Client frames up to this size are not held for lack of credit...
pub const EXEMPT_LEN: usize = 256;

/// ...until their session's credit is this far below zero: a signal sent
/// after a large stdin frame still reaches a process that stopped reading,
/// and the agent's input queue stays bounded.
pub const OVERDRAFT: i64 = 64 * 1024;

#[derive(Debug)]
struct Occupant {
    client: ClientId,
    /// Bytes charged for its queued frames.
    queued: usize,
    /// Cut off: nothing more is delivered or forwarded.
    cut: bool,
    /// An [`Action::Wake`] for it is pending.
    wake_queued: bool,
}

#[derive(Debug)]
enum SlotState {
    Free,
    Occupied(Occupant),
    /// Its client left while sessions were open: waits for their tombstones.
    Resting,
}

#[derive(Debug)]
enum Session {
    Open {
        /// Credit toward the agent, with flow control on.
        send: Option<Credit>,
        /// Credit owed to the agent and not yet due.
        owed: Owed,
        /// Credit due to the agent and not yet taken.
        due: u64,
    },
    Killed(Tomb),
}

#[derive(Debug, Clone, Copy)]
struct Tomb {
    /// When its kill was written (the grace starts then).
    killed_at: Option<Instant>,
    /// The latest frame the agent sent for it after that.
    last_frame: Option<Instant>,
}

impl Tomb {
    /// When it is forgotten, once its kill is on the wire.
    fn expires(self, grace: std::time::Duration) -> Option<Instant> {
        let killed = self.killed_at?;
        Some(self.last_frame.map_or(killed, |last| last.max(killed)) + grace)
    }
}

#[derive(Debug)]
struct Slot {
    /// Every id routed to this slot.
    range: IdRange,
    /// The ids its client may send (the range without its first id).
    ids: IdRange,
    state: SlotState,
    sessions: BTreeMap<u32, Session>,
    /// How many of `sessions` are tombstones.
    tombstones: usize,
}

impl Slot {
    fn occupant(&mut self, client: ClientId) -> Option<&mut Occupant> {
        match &mut self.state {
            SlotState::Occupied(occupant) if occupant.client == client => Some(occupant),
            _ => None,
        }
    }

    fn open_sessions(&self) -> usize {
        self.sessions.len() - self.tombstones
    }
}

/// The relay's state machine. See the crate docs for its rules.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    slots: Vec<Slot>,
    /// Free slots, least recently freed first, so a slot rests as long as possible.
    free: VecDeque<u32>,
    connected: u32,
    resting: u32,
    next_generation: u64,
    counters: RouterCounters,
    /// Bytes charged to every client's queue together.
    queued_total: usize,
    /// Whether the first `core.ready` has arrived.
    ready: bool,
    /// The accepted window while flow control is on.
    window: Option<u32>,
    /// Sessions whose kill is still to be written.
    kills: BTreeSet<u32>,
    /// Sessions with credit due.
    credit_due: BTreeSet<u32>,
    actions: VecDeque<Action>,
}

impl Router {
    /// A router with every slot free.
    pub fn new(config: RouterConfig) -> Result<Router, ConfigError> {
        let slots = config.layout.slots();
        if slots == 0 {
            return Err(ConfigError::NoSlots);
        }
        if config.max_clients == 0 {
            return Err(ConfigError::NoClients);
        }
        if config.max_clients > slots {
            return Err(ConfigError::TooManyClients {
                max_clients: config.max_clients,
                slots,
            });
        }
        let slots = (0..slots)
            .map(|slot| {
                let range = config
                    .layout
                    .range(slot)
                    .unwrap_or_else(|| unreachable!("slot {slot} is inside the layout"));
                let ids = config
                    .layout
                    .handshake(slot, range)
                    .client_ids()
                    .unwrap_or_else(|| unreachable!("every slot has usable ids"));
                Slot {
                    range,
                    ids,
                    state: SlotState::Free,
                    sessions: BTreeMap::new(),
                    tombstones: 0,
                }
            })
            .collect::<Vec<_>>();
        let free = (0..config.layout.slots()).collect();
        Ok(Router {
            config,
            slots,
            free,
            connected: 0,
            resting: 0,
            next_generation: 1,
            counters: RouterCounters::default(),
            queued_total: 0,
            ready: false,
            window: None,
            kills: BTreeSet::new(),
            credit_due: BTreeSet::new(),
            actions: VecDeque::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The next thing to do that an event left behind, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front()?;
        if let Action::Wake(client) = action
            && let Some(occupant) = self.slots[client.slot as usize].occupant(client)
        {
            occupant.wake_queued = false;
        }
        Some(action)
    }

    /// Whether the agent has said `core.ready`.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The window in force, while flow control is on.
    pub fn flow_window(&self) -> Option<u32> {
        self.window
    }

    /// Clients connected now.
    pub fn clients_connected(&self) -> u32 {
        self.connected
    }

    /// Slots waiting for a departed client's sessions.
    pub fn slots_quarantined(&self) -> u32 {
        self.resting
    }

    /// Sessions open now (killed ones not yet ended included).
    pub fn sessions_open(&self) -> usize {
        self.slots.iter().map(|s| s.sessions.len()).sum()
    }

    /// Killed sessions not yet ended.
    pub fn sessions_tombstoned(&self) -> usize {
        self.slots.iter().map(|s| s.tombstones).sum()
    }

    /// Sessions a connected client has open, in id order.
    pub fn sessions_of(&self, client: ClientId) -> Vec<u32> {
        self.owned_slot(client)
            .map(|slot| {
                self.slots[slot as usize]
                    .sessions
                    .iter()
                    .filter(|(_, s)| matches!(s, Session::Open { .. }))
                    .map(|(&id, _)| id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Bytes charged to every queue together.
    pub fn queued_bytes(&self) -> usize {
        self.queued_total
    }

    /// Bytes charged to one client's queue.
    pub fn queued_bytes_of(&self, client: ClientId) -> usize {
        match &self.slots.get(client.slot as usize).map(|s| &s.state) {
            Some(SlotState::Occupied(o)) if o.client == client => o.queued,
            _ => 0,
        }
    }

    /// Entries the router holds for the agent's side: sessions (open and
    /// killed), kills and credit not yet written. O(sessions) whatever the
    /// peers send.
    pub fn control_backlog(&self) -> usize {
        self.kills.len() + self.credit_due.len()
    }

    /// Every counter.
    pub fn counters(&self) -> RouterCounters {
        self.counters
    }

    /// The connected client whose slot holds `id`, if any (a query: nothing
    /// is counted or changed).
    pub fn owner(&self, id: u32) -> Option<ClientId> {
        if id == 0 {
            return None;
        }
        let slot = self.config.layout.slot_of(id)?;
        match &self.slots.get(slot as usize)?.state {
            SlotState::Occupied(occupant) => Some(occupant.client),
            _ => None,
        }
    }

    /// The ids routed to a slot (all of them, not only the client's usable ones).
    pub fn slot_range(&self, slot: u32) -> Option<IdRange> {
        self.slots.get(slot as usize).map(|s| s.range)
    }

    /// Whether `client` is connected now (cut off or not).
    pub fn is_connected(&self, client: ClientId) -> bool {
        self.owned_slot(client).is_some()
    }

    /// When the next tombstone expires, if any (the server ticks then).
    pub fn next_deadline(&self) -> Option<Instant> {
        let grace = self.config.quarantine_grace;
        self.slots
            .iter()
            .filter(|s| s.tombstones > 0)
            .flat_map(|s| s.sessions.values())
            .filter_map(|s| match s {
                Session::Killed(tomb) => tomb.expires(grace),
                Session::Open { .. } => None,
            })
            .min()
    }

    fn owned_slot(&self, client: ClientId) -> Option<u32> {
        match &self.slots.get(client.slot as usize)?.state {
            SlotState::Occupied(o) if o.client == client => Some(client.slot),
            _ => None,
        }
    }

    /// Queues a wake for the client owning `id`'s slot, once.
    fn wake_owner(&mut self, slot: u32) {
        if let SlotState::Occupied(occupant) = &mut self.slots[slot as usize].state
            && !occupant.wake_queued
            && !occupant.cut
        {
            occupant.wake_queued = true;
            self.actions.push_back(Action::Wake(occupant.client));
        }
    }

    /// A resting slot whose last tombstone went becomes free.
    fn release_if_done(&mut self, slot: u32) {
        let entry = &mut self.slots[slot as usize];
        if matches!(entry.state, SlotState::Resting) && entry.tombstones == 0 {
            entry.state = SlotState::Free;
            self.resting -= 1;
            self.counters.quarantines_ended += 1;
            self.free.push_back(slot);
        }
    }

    /// Forgets a session, whatever its state.
    fn remove_session(&mut self, slot: u32, id: u32) -> Option<Session> {
        let entry = &mut self.slots[slot as usize];
        let session = entry.sessions.remove(&id)?;
        match session {
            Session::Killed(_) => {
                entry.tombstones -= 1;
                self.kills.remove(&id);
                self.release_if_done(slot);
            }
            Session::Open { .. } => {
                self.credit_due.remove(&id);
            }
        }
        Some(session)
    }
}

#[cfg(test)]
mod tests;
