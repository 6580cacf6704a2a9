//! What the router decides: the values the server carries out.

use relay_codec::{Handshake, IdRange};

use crate::ClientId;

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
    /// Not yet: its session is out of credit. Nothing was changed or
    /// counted; offer the frame again after an [`Action::Wake`] for this
    /// client, and read nothing more from it meanwhile.
    Hold,
    /// Do not forward: the frame would open a session the relay will not
    /// open. The client stays connected; the server answers the request
    /// with a terminal error in the agent's place.
    RefuseSession(RefuseReason),
    /// Do not forward; disconnect the client.
    Reject(RejectReason),
    /// The client is no longer served (it was cut off, rejected or has
    /// disconnected); do not forward.
    Stale,
}

/// Why a session request is answered by the relay instead of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefuseReason {
    /// The client has its limit of sessions open.
    #[error("this connection already has {limit} sessions open (the relay's limit)")]
    Limit {
        /// The configured limit.
        limit: usize,
    },
    /// The id still belongs to a killed session of the slot's previous
    /// client that the agent has not ended.
    #[error("id {id} still belongs to a session of this slot's previous client")]
    IdInUse {
        /// The id asked for.
        id: u32,
    },
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
    /// The client tried to open more sessions than allowed (for a request
    /// the server cannot answer in the agent's place).
    #[error("more than {limit} open sessions")]
    TooManySessions {
        /// The configured limit.
        limit: usize,
    },
    /// The client tried to open a session on an id still tombstoned (for a
    /// request the server cannot answer in the agent's place).
    #[error("id {id} still belongs to a session of the slot's previous client")]
    IdInUse {
        /// The id.
        id: u32,
    },
}

/// What to do with a frame the agent sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentVerdict {
    /// Queue it for this client; its charge is counted against the budgets
    /// until [`Router::frames_left`](crate::Router::frames_left) reports it.
    Deliver {
        /// The client.
        client: ClientId,
        /// Return credit for it once it has been written
        /// ([`Router::frames_left`](crate::Router::frames_left) with its header).
        credited: bool,
    },
    /// Id 0 is not a client's: a control frame for the relay (`core.ready`,
    /// `core.flow.credit`).
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
    /// The id is a killed session of a departed client.
    #[error("the session was killed when its client left")]
    Tombstoned,
    /// The owner is being cut off (or was, just now, for this frame).
    #[error("the client is cut off as a slow consumer")]
    CutOff,
}

/// Why the router cut a client off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// A frame would have taken its queue past its budget.
    OverBudget {
        /// The configured budget.
        budget: usize,
    },
    /// All queues together reached the total budget, and its was the largest.
    TotalBudget {
        /// Bytes charged to its queue then.
        queued: usize,
    },
    /// Its writer made no progress within the server's stall timeout.
    Stalled,
    /// The agent restarted while it had sessions open.
    AgentRestarted {
        /// Sessions that died with the agent.
        sessions: usize,
    },
}

/// Something the server must do that no single call returned; taken with
/// [`Router::poll_action`](crate::Router::poll_action) after each event.
/// At most one of each kind per client is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop serving the client: abandon its queue, stop its reader and
    /// writer. Its charge has already been released.
    CutOff {
        /// The client.
        client: ClientId,
        /// Why.
        reason: CutReason,
    },
    /// A frame the client's reader holds may go now: offer it again.
    Wake(ClientId),
}

/// What a `core.ready` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyOutcome {
    /// The first one: serve clients. With `Some(window)`, write
    /// `core.flow.accept` with it before greeting anyone.
    First {
        /// The window accepted, when the agent offered flow control.
        accept: Option<u32>,
    },
    /// Another one: the agent restarted. Every session was forgotten, its
    /// clients are being cut off, and flow control is off for good.
    Restarted {
        /// Sessions that were open.
        sessions: usize,
    },
}

/// Frames the relay itself owes the agent, written before any client's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlBatch {
    /// Sessions of departed clients to kill (`core.exec.signal` 9); report
    /// them with [`Router::kills_written`](crate::Router::kills_written)
    /// once they are on the wire.
    pub kills: Vec<u32>,
    /// Credit to return, `(session, bytes)`.
    pub credits: Vec<(u32, u64)>,
}

impl ControlBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.kills.is_empty() && self.credits.is_empty()
    }
}
