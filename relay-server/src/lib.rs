//! The relay itself: listens on a Unix socket and multiplexes many clients
//! onto one agent byte stream, with isolation between clients and no silent
//! loss.
//!
//! This is the top of the relay's layering and the only crate on the relay
//! path that awaits: `relay-codec` frames the bytes, `relay-router` decides
//! where each frame goes, `relay-ring` carries the agent's bytes, and this
//! crate runs the tasks that move them.
//!
//! ```text
//!  client --unix--> reader task --router--> lanes --> agent writer task --> ring / stream --> agent
//!  client <--unix-- writer task <-- outbox (charged by the router) <-- agent reader <-- ring / stream <-- agent
//! ```
//!
//! One file per task: `accept`, `client_reader`, `client_writer`,
//! `agent_reader`, `agent_writer`, `supervisor`, `control`; `handle` is
//! the owner's side and `state` the state they share.
//!
//! # Guarantees
//!
//! - **The agent reader never waits for a client.** Each client has its own
//!   outbox bounded in bytes; a client whose outbox would overflow its
//!   budget, that stalls for the stall timeout, or that holds the largest
//!   queue when the relay-wide budget is reached is disconnected at once,
//!   logged and counted. Those are the only guest-to-client frames the relay
//!   ever discards, and each one is counted in [`StatsSnapshot::dropped`].
//! - **Client-to-agent frames are never dropped.** A client's reader hands
//!   the frames the router accepted to the one agent writer, which writes
//!   whole frames, the relay's own control frames first, then clients in
//!   turns; the reader reads its socket again only once they are written:
//!   backpressure.
//! - **Bad input ends only its source.** A malformed or out-of-range client
//!   frame disconnects that client; a malformed agent stream ends the relay
//!   with a typed [`RelayError`].
//! - **Memory is bounded by configuration**: the queue budgets, one read
//!   buffer per client (at most one maximal frame), and the ring.
//!
//! # Use
//!
//! ```no_run
//! # async fn run(agent_rx: tokio::net::unix::OwnedReadHalf, agent_tx: tokio::net::unix::OwnedWriteHalf) -> Result<(), relay_server::RelayError> {
//! use relay_server::{Relay, RelayConfig};
//!
//! let config = RelayConfig::new("/run/sandbox/agent.sock");
//! let mut relay = Relay::start(config, agent_rx, agent_tx)?;
//! relay.ready().await;
//! println!("{:?}", relay.stats());
//! relay.shutdown();
//! relay.join().await?;
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

mod accept;
mod agent_reader;
mod agent_writer;
mod client_reader;
mod client_writer;
mod config;
mod control;
mod error;
mod handle;
mod outbox;
mod ratelog;
mod socket;
mod state;
mod stats;
mod supervisor;
mod vectored;

pub use config::{AllowedPeers, HandshakeForm, RelayConfig};
pub use error::{ClientFault, FrameErrorKind, RelayError};
pub use handle::{
    Relay, RelayExit, RelayHandle, RingProbe, ShutdownHandle, StatsHandle, default_socket_path,
};
pub use stats::{DropCounts, FlowStats, RingOccupancy, StatsSnapshot};
