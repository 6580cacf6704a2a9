//! The relay's routing and session state machine: who owns which ids, which
//! sessions are open, and what happens to every frame. Pure logic, no I/O.
//!
//! In the layering this crate sits between `relay-codec` (it uses only the
//! frame header types: it never decodes CBOR) and `relay-server`, which drives
//! it. Like quinn-proto beside quinn, it has no sockets, no tasks and no
//! clock: inputs are method calls (those that depend on time carry `now`), and every decision
//! comes back as a value the server carries out.
//!
//! | input | output |
//! |---|---|
//! | [`Router::connect`] | an [`Admission`] (slot, handshake) or a [`Refusal`] |
//! | [`Router::client_frame`] | [`ClientVerdict`]: forward (maybe a drain notification) or reject the client |
//! | [`Router::agent_frame`] | [`AgentVerdict`]: deliver to a client, drop (counted), or a control frame |
//! | [`Router::disconnect`] | the session ids to kill (`SIGKILL`) |
//! | [`Router::tick`] | quarantines that ended |
//!
//! # Rules
//!
//! - Each client owns one slot, a range of ids. A client frame outside that
//!   range is a protocol violation and the client is rejected; the only
//!   exception is a `SHUTDOWN` frame with id 0.
//! - `SESSION_START` on a client frame opens session `id`; `TERMINAL` from
//!   either side closes it.
//! - When a client goes, each of its open sessions is killed exactly once, and
//!   its slot is quarantined until those sessions have ended or the grace
//!   period has passed, so a late reply never reaches the next owner.
//! - Agent frames for a free or quarantined slot are dropped and counted, and
//!   so are those on the runtime's reserved id `u32::MAX`, in both layouts.
//! - With every usable slot taken, a connection is refused and counted.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use relay_codec::{
    Flags, FrameHeader, Handshake, IdRange, LEGACY_SLOTS, RUNTIME_RESERVED_ID, bounds_slot_of,
    bounds_slot_range, legacy_slot_of, legacy_slot_range,
};

/// How the id space is divided between clients; decides the handshake form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLayout {
    /// 16 slots of `u32::MAX / 16` ids, announced with the 4-byte offset that
    /// microsandbox 0.4.x clients expect.
    Legacy,
    /// `slots` equal ranges, announced as `[start, end)` (microsandbox 0.5+).
    Bounds {
        /// Number of slots (at least 1).
        slots: u32,
    },
}

impl SlotLayout {
    /// Number of slots of this layout.
    pub fn slots(self) -> u32 {
        match self {
            SlotLayout::Legacy => LEGACY_SLOTS,
            SlotLayout::Bounds { slots } => slots,
        }
    }

    /// Every id a slot owns (for routing agent frames).
    fn range(self, slot: u32) -> Option<IdRange> {
        match self {
            SlotLayout::Legacy => (slot < LEGACY_SLOTS).then(|| legacy_slot_range(slot)),
            SlotLayout::Bounds { slots } => bounds_slot_range(slot, slots),
        }
    }

    /// The slot an agent frame's id belongs to.
    fn slot_of(self, id: u32) -> Option<u32> {
        match self {
            SlotLayout::Legacy => Some(legacy_slot_of(id)),
            SlotLayout::Bounds { slots } => bounds_slot_of(id, slots),
        }
    }

    fn handshake(self, slot: u32, range: IdRange) -> Handshake {
        match self {
            SlotLayout::Legacy => Handshake::Legacy {
                offset: range.first(),
            },
            SlotLayout::Bounds { .. } => {
                debug_assert!(slot < self.slots());
                Handshake::Bounds { range }
            }
        }
    }
}

/// Router settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Division of the id space.
    pub layout: SlotLayout,
    /// Most clients connected at once (at most the layout's slot count).
    pub max_clients: u32,
    /// How long a departed client's slot waits for its sessions to end.
    pub quarantine_grace: Duration,
    /// Most sessions one client may have open; opening more rejects it.
    pub max_sessions_per_client: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            layout: SlotLayout::Legacy,
            max_clients: LEGACY_SLOTS,
            quarantine_grace: Duration::from_secs(10),
            max_sessions_per_client: 1024,
        }
    }
}

/// A configuration the router cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The bounds layout needs at least one slot.
    #[error("the bounds layout needs at least one slot")]
    NoSlots,
    /// More clients than slots.
    #[error("max_clients {max_clients} exceeds the layout's {slots} slots")]
    TooManyClients {
        /// Requested maximum.
        max_clients: u32,
        /// Slots available.
        slots: u32,
    },
    /// `max_clients` of zero would refuse everyone.
    #[error("max_clients must be at least 1")]
    NoClients,
}

/// Identifies one connected client: its slot plus a generation, so an event
/// about a client that has gone never touches the slot's next owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    slot: u32,
    generation: u64,
}

impl ClientId {
    /// The slot the client occupies.
    pub fn slot(self) -> u32 {
        self.slot
    }

    /// Increases for every admission; unique for the router's lifetime.
    pub fn generation(self) -> u64 {
        self.generation
    }
}

/// A client let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The client's identity for later calls.
    pub client: ClientId,
    /// What to write to the client before anything else.
    pub handshake: Handshake,
    /// Ids the client's frames may carry.
    pub ids: IdRange,
}

/// A connection turned away because no slot is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "all client slots are busy ({connected} connected, {quarantined} quarantined, limit {max_clients})"
)]
pub struct Refusal {
    /// Clients connected.
    pub connected: u32,
    /// Slots waiting for a departed client's sessions.
    pub quarantined: u32,
    /// The configured maximum.
    pub max_clients: u32,
}

/// What to do with a frame a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientVerdict {
    /// Write it to the agent.
    Forward {
        /// The frame asks the sandbox to stop: tell the relay's owner.
        shutdown: bool,
    },
    /// Do not forward: the frame would open a session past the client's
    /// limit. The client stays connected; the server answers the request
    /// with a terminal error in the agent's place.
    RefuseSession {
        /// The configured limit.
        limit: usize,
    },
    /// Do not forward; disconnect the client.
    Reject(RejectReason),
    /// The client is no longer connected (it was rejected or disconnected
    /// earlier); do not forward.
    Stale,
}

/// Why a client is disconnected for a frame it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The id lies outside the client's range.
    #[error("id {id} is outside the client's range {first}..={last}")]
    IdOutOfRange {
        /// The offending id.
        id: u32,
        /// First id of the client's range.
        first: u32,
        /// Last id of the client's range.
        last: u32,
    },
    /// The client tried to open more sessions than allowed.
    #[error("more than {limit} open sessions")]
    TooManySessions {
        /// The configured limit.
        limit: usize,
    },
}

/// What to do with a frame the agent sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentVerdict {
    /// Queue it for this client.
    Deliver(ClientId),
    /// Id 0 is not a client's: a control frame for the relay (`core.ready`).
    Control,
    /// Discard it; the reason is counted.
    Drop(DropReason),
}

/// Why the router discarded an agent frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// No client holds the id's slot.
    #[error("no client owns the slot")]
    SlotFree,
    /// The slot's previous client left and its sessions may still reply.
    #[error("the slot is quarantined after its client left")]
    SlotQuarantined,
    /// The id belongs to no slot of the layout.
    #[error("the id is outside every slot")]
    NoSlot,
    /// The id is the runtime's own (`RUNTIME_RESERVED_ID`): never a client's.
    #[error("the id is reserved for the runtime")]
    Reserved,
}

/// Counters of every decision; all only ever increase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterCounters {
    /// Connections admitted.
    pub clients_admitted: u64,
    /// Connections refused for lack of a slot.
    pub clients_refused: u64,
    /// Clients rejected for a protocol violation.
    pub clients_rejected: u64,
    /// Client disconnections processed (any cause).
    pub clients_disconnected: u64,
    /// Sessions opened by clients.
    pub sessions_opened: u64,
    /// Session requests refused for the per-client session limit.
    pub sessions_refused: u64,
    /// Sessions closed by a `TERMINAL` frame.
    pub sessions_closed: u64,
    /// Kill requests produced for sessions of departed clients.
    pub sessions_killed: u64,
    /// Sessions forgotten when a quarantine's grace period ran out.
    pub sessions_abandoned: u64,
    /// Client frames forwarded to the agent.
    pub client_frames_forwarded: u64,
    /// Shutdown requests seen.
    pub shutdown_requests: u64,
    /// Agent frames delivered to a client.
    pub agent_frames_delivered: u64,
    /// Agent frames with id 0.
    pub agent_control_frames: u64,
    /// Agent frames dropped because their slot was free.
    pub agent_frames_dropped_free: u64,
    /// Agent frames dropped because their slot was quarantined.
    pub agent_frames_dropped_quarantined: u64,
    /// Agent frames dropped because their id belongs to no slot.
    pub agent_frames_dropped_no_slot: u64,
    /// Agent frames dropped because their id is the runtime's reserved one.
    pub agent_frames_dropped_reserved: u64,
    /// Quarantines that ended because the grace period passed.
    pub quarantines_expired: u64,
}

#[derive(Debug)]
enum SlotState {
    Free,
    Occupied(ClientId),
    Quarantined { until: Instant },
}

#[derive(Debug)]
struct Slot {
    /// Every id routed to this slot.
    range: IdRange,
    /// The ids its client may send (the range without its first id).
    ids: IdRange,
    state: SlotState,
    sessions: BTreeSet<u32>,
}

/// The routing state machine. See the crate docs for its rules.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    slots: Vec<Slot>,
    /// Free slots, least recently freed first, so a slot rests as long as possible.
    free: VecDeque<u32>,
    connected: u32,
    quarantined: u32,
    next_generation: u64,
    counters: RouterCounters,
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
                    sessions: BTreeSet::new(),
                }
            })
            .collect::<Vec<_>>();
        let free = (0..config.layout.slots()).collect();
        Ok(Router {
            config,
            slots,
            free,
            connected: 0,
            quarantined: 0,
            next_generation: 1,
            counters: RouterCounters::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// A new connection arrives.
    pub fn connect(&mut self, now: Instant) -> Result<Admission, Refusal> {
        self.tick(now);
        let slot = if self.connected < self.config.max_clients {
            self.free.pop_front()
        } else {
            None
        };
        let Some(slot) = slot else {
            self.counters.clients_refused += 1;
            return Err(Refusal {
                connected: self.connected,
                quarantined: self.quarantined,
                max_clients: self.config.max_clients,
            });
        };
        let client = ClientId {
            slot,
            generation: self.next_generation,
        };
        self.next_generation += 1;
        let entry = &mut self.slots[slot as usize];
        debug_assert!(matches!(entry.state, SlotState::Free) && entry.sessions.is_empty());
        entry.state = SlotState::Occupied(client);
        self.connected += 1;
        self.counters.clients_admitted += 1;
        Ok(Admission {
            client,
            handshake: self.config.layout.handshake(slot, entry.range),
            ids: entry.ids,
        })
    }

    /// A client sent a frame with this header.
    pub fn client_frame(&mut self, client: ClientId, header: FrameHeader) -> ClientVerdict {
        let Some(slot) = self.owned_slot(client) else {
            return ClientVerdict::Stale;
        };
        let FrameHeader { id, flags } = header;
        let shutdown = flags.contains(Flags::SHUTDOWN);
        let ids = self.slots[slot as usize].ids;
        let allowed = ids.contains(id) || (shutdown && id == 0);
        if !allowed {
            self.counters.clients_rejected += 1;
            return ClientVerdict::Reject(RejectReason::IdOutOfRange {
                id,
                first: ids.first(),
                last: ids.last(),
            });
        }
        let limit = self.config.max_sessions_per_client;
        let entry = &mut self.slots[slot as usize];
        if id != 0 && flags.contains(Flags::SESSION_START) && !flags.contains(Flags::TERMINAL) {
            if entry.sessions.len() >= limit && !entry.sessions.contains(&id) {
                self.counters.sessions_refused += 1;
                return ClientVerdict::RefuseSession { limit };
            }
            if entry.sessions.insert(id) {
                self.counters.sessions_opened += 1;
            }
        }
        if flags.contains(Flags::TERMINAL) && entry.sessions.remove(&id) {
            self.counters.sessions_closed += 1;
        }
        if shutdown {
            self.counters.shutdown_requests += 1;
        }
        self.counters.client_frames_forwarded += 1;
        ClientVerdict::Forward { shutdown }
    }

    /// The agent sent a frame with this header.
    pub fn agent_frame(&mut self, header: FrameHeader) -> AgentVerdict {
        let FrameHeader { id, flags } = header;
        if id == 0 {
            self.counters.agent_control_frames += 1;
            return AgentVerdict::Control;
        }
        if id == RUNTIME_RESERVED_ID {
            // microsandbox 0.7's agent speaks to its own runtime here; in the
            // legacy layout the id would otherwise fall into the last slot.
            self.counters.agent_frames_dropped_reserved += 1;
            return AgentVerdict::Drop(DropReason::Reserved);
        }
        let Some(slot) = self.config.layout.slot_of(id) else {
            self.counters.agent_frames_dropped_no_slot += 1;
            return AgentVerdict::Drop(DropReason::NoSlot);
        };
        let entry = &mut self.slots[slot as usize];
        let closes = flags.contains(Flags::TERMINAL) && entry.sessions.remove(&id);
        if closes {
            self.counters.sessions_closed += 1;
        }
        match entry.state {
            SlotState::Occupied(client) => {
                self.counters.agent_frames_delivered += 1;
                AgentVerdict::Deliver(client)
            }
            SlotState::Free => {
                self.counters.agent_frames_dropped_free += 1;
                AgentVerdict::Drop(DropReason::SlotFree)
            }
            SlotState::Quarantined { .. } => {
                self.counters.agent_frames_dropped_quarantined += 1;
                if entry.sessions.is_empty() {
                    self.release(slot);
                }
                AgentVerdict::Drop(DropReason::SlotQuarantined)
            }
        }
    }

    /// A client has gone (closed, rejected or cut off). Returns the ids of its
    /// open sessions, each to be killed exactly once. Calling it again for the
    /// same client returns nothing.
    pub fn disconnect(&mut self, client: ClientId, now: Instant) -> Vec<u32> {
        let Some(slot) = self.owned_slot(client) else {
            return Vec::new();
        };
        self.connected -= 1;
        self.counters.clients_disconnected += 1;
        let entry = &mut self.slots[slot as usize];
        let kills: Vec<u32> = entry.sessions.iter().copied().collect();
        self.counters.sessions_killed += kills.len() as u64;
        if kills.is_empty() {
            entry.state = SlotState::Free;
            self.free.push_back(slot);
        } else {
            entry.state = SlotState::Quarantined {
                until: now + self.config.quarantine_grace,
            };
            self.quarantined += 1;
        }
        kills
    }

    /// Ends every quarantine whose grace period has passed at `now`.
    /// Returns how many slots became free.
    pub fn tick(&mut self, now: Instant) -> usize {
        if self.quarantined == 0 {
            return 0;
        }
        let expired: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.state, SlotState::Quarantined { until } if until <= now))
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        for &slot in &expired {
            let entry = &mut self.slots[slot as usize];
            self.counters.sessions_abandoned += entry.sessions.len() as u64;
            entry.sessions.clear();
            self.counters.quarantines_expired += 1;
            self.release(slot);
        }
        expired.len()
    }

    /// The agent restarted (a `core.ready` after the first): it knows none
    /// of the sessions open now, and none will get a terminal frame. Forgets
    /// them all (counted as abandoned), frees resting slots at once, and
    /// returns the connected clients that had sessions open, with how many:
    /// the server ends those connections. Clients without sessions are left
    /// alone.
    pub fn agent_restarted(&mut self) -> Vec<(ClientId, usize)> {
        let mut affected = Vec::new();
        for slot in 0..self.slots.len() {
            let entry = &mut self.slots[slot];
            let open = entry.sessions.len();
            if open == 0 {
                continue;
            }
            entry.sessions.clear();
            self.counters.sessions_abandoned += open as u64;
            match entry.state {
                SlotState::Occupied(client) => affected.push((client, open)),
                SlotState::Quarantined { .. } => self.release(slot as u32),
                SlotState::Free => {}
            }
        }
        affected
    }

    /// When the next quarantine ends, if any (the server ticks then).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                SlotState::Quarantined { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Clients connected now.
    pub fn clients_connected(&self) -> u32 {
        self.connected
    }

    /// Slots waiting for a departed client's sessions.
    pub fn slots_quarantined(&self) -> u32 {
        self.quarantined
    }

    /// Sessions open now, including those of quarantined slots.
    pub fn sessions_open(&self) -> usize {
        self.slots.iter().map(|s| s.sessions.len()).sum()
    }

    /// Sessions a connected client has open, in id order.
    pub fn sessions_of(&self, client: ClientId) -> Vec<u32> {
        self.owned_slot(client)
            .map(|slot| self.slots[slot as usize].sessions.iter().copied().collect())
            .unwrap_or_default()
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
        match self.slots.get(slot as usize)?.state {
            SlotState::Occupied(client) => Some(client),
            _ => None,
        }
    }

    /// The ids routed to a slot (all of them, not only the client's usable ones).
    pub fn slot_range(&self, slot: u32) -> Option<IdRange> {
        self.slots.get(slot as usize).map(|s| s.range)
    }

    /// Whether `client` is connected now.
    pub fn is_connected(&self, client: ClientId) -> bool {
        self.owned_slot(client).is_some()
    }

    fn owned_slot(&self, client: ClientId) -> Option<u32> {
        match self.slots.get(client.slot as usize)?.state {
            SlotState::Occupied(owner) if owner == client => Some(client.slot),
            _ => None,
        }
    }

    /// A quarantined slot becomes free.
    fn release(&mut self, slot: u32) {
        let entry = &mut self.slots[slot as usize];
        if matches!(entry.state, SlotState::Quarantined { .. }) {
            entry.state = SlotState::Free;
            self.quarantined -= 1;
            self.free.push_back(slot);
        }
    }
}

#[cfg(test)]
mod tests;
