//! The reference model of the router, and the harness that plays a
//! [`Router`] against it event by event. One model for both the property
//! test (`tests/model.rs`) and the `router_events` fuzz target (built with
//! the `model` feature).
//!
//! The model is a second, deliberately plain implementation of the rules in
//! the crate docs: linear scans, one queue of charged frames per client,
//! credit kept with the same [`relay_codec::flow`] rules. After every event
//! the harness checks that both agree on every verdict, action, query and
//! counter, and it checks the promises on their own, whatever the model
//! says:
//!
//! - **routing**: an agent frame is delivered only to the client that holds
//!   its id's slot at that moment, and never for a killed session;
//! - **sessions**: each of a departed client's open sessions is killed
//!   exactly once over the whole run;
//! - **memory**: the bytes charged never exceed the total budget, nor any
//!   client's its own budget, and what the router keeps for the agent's
//!   side (kills, credit due) is at most one entry per session.

use crate::{RouterConfig, RouterCounters};

mod checks;
mod harness;
mod state;

pub use harness::run;

/// A broken property: what was expected and what happened instead.
pub type Violation = String;

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
        /// Its wire length.
        len: u16,
    },
    /// The agent sends a frame.
    AgentFrame {
        /// Its id.
        id: IdPick,
        /// Its flags byte.
        flags: u8,
        /// Its wire length.
        len: u16,
    },
    /// A client's writer is done with the first `frames` frames of its
    /// queue: written, or abandoned.
    Drain {
        /// Which client.
        client: u8,
        /// How many frames.
        frames: u8,
        /// Written (credit is earned) or abandoned.
        written: bool,
    },
    /// The relay queues `len` bytes of its own for a client.
    QueueOwn {
        /// Which client.
        client: u8,
        /// The charge.
        len: u16,
    },
    /// A client's writer stalled.
    Stall {
        /// Which client.
        client: u8,
    },
    /// The agent writer writes the control lane.
    WriteControl,
    /// The agent sends `core.ready`.
    Ready {
        /// Its flow-control offer.
        offer: Option<u32>,
    },
    /// The agent sends `core.flow.credit`.
    Credit {
        /// The session.
        id: IdPick,
        /// Bytes granted.
        bytes: u32,
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
    /// A session the router knows (open or killed, any slot).
    Session {
        /// Index into every such session, modulo their number.
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

/// What a run did, for tests and seeds to assert on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Events fed.
    pub events: usize,
    /// Every counter at the end.
    pub counters: RouterCounters,
    /// The most bytes charged at once.
    pub peak_queued: usize,
}
