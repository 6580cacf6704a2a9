//! Client library of the agent relay: one connection to the relay's Unix
//! socket, carrying many concurrent exec and fs sessions with the guest agent.
//!
//! Layering: `relay-client -> relay-codec`, nothing else of this workspace.
//! The relay and the agent are peers on the wire only; the CLI
//! (`agent-relay exec`, `agent-relay fs`) is built on this crate.
//!
//! ```no_run
//! use relay_client::Client;
//! use relay_codec::payload::ExecRequest;
//!
//! # async fn run() -> Result<(), relay_client::ClientError> {
//! let client = Client::connect("/run/sandbox/agent.sock").await?;
//! let output = client
//!     .exec_output(ExecRequest::new("uname", ["-a"]), None)
//!     .await?;
//! assert_eq!(output.code, 0);
//! client.fs().write("/tmp/hello", None, b"hello").await?;
//! assert_eq!(client.fs().read_all("/tmp/hello").await?, b"hello");
//! # Ok(())
//! # }
//! ```
//!
//! # Connection and ids
//!
//! [`Client::connect`] (or [`Client::from_stream`]) reads the relay's
//! greeting (within a deadline, see below), detecting its form (the 4-byte legacy offset or the 8-byte
//! bounds), and the cached `core.ready` frame. Every session takes an id
//! from the client's range, round robin, wrapping around; an id is *in
//! flight* from its request until its TERMINAL frame arrives, even when the
//! caller has dropped the session's handle, and an id in flight is never
//! handed out again. When every id is in flight, opening a session fails at
//! once with [`ClientError::IdsExhausted`].
//!
//! # Deadlines
//!
//! Connecting is bounded by [`ClientConfig::connect_timeout`] (30 s by
//! default, `None` to wait forever): the socket connect and the whole
//! greeting must be done in time, or the result is
//! [`ClientError::Timeout`] whose [`Awaited`] says what did not come
//! ([`Awaited::Handshake`] from a relay still waiting for its agent, which
//! greets no client before `core.ready`).
//!
//! Requests have no deadline by default. [`ClientConfig::request_timeout`]
//! sets one for every request of a client, and
//! [`Client::with_request_timeout`] makes a handle on the same connection
//! with another (its [`Client::fs`] inherits it). The timeout counts from
//! the call and covers the whole operation of the one-shot helpers:
//! [`Client::exec_output`], every [`Fs`] operation but [`Fs::read`]
//! (uploads and downloads included) and [`Client::shutdown`]. For the calls
//! that return a streaming handle ([`Client::open`], [`Client::exec`],
//! [`Fs::read`]) it bounds only writing the request; bound the handle's
//! reads with `tokio::time::timeout`, they are cancel-safe. On expiry the
//! error is [`ClientError::Timeout`], with [`Awaited::Request`] (the relay
//! did not take the request or its data), [`Awaited::Reply`] (the agent did
//! not answer) or [`Awaited::Local`] (an upload's source or a download's
//! destination was the holdup).
//!
//! A timed-out request is abandoned, not cancelled: if it may have reached
//! the agent, its id stays in flight, its late frames are discarded, and
//! the id is handed out again only after its TERMINAL frame (or the end of
//! the connection). An agent that never answers thus keeps the id;
//! [`ClientError::IdsExhausted`] follows once every id is held. A command
//! that ran out of time ([`Client::exec_output`], or [`Client::exec`]
//! before it started) is killed with SIGKILL ([`ExecInput::kill`], sent in
//! the background, so the error returns at once), which makes the agent end
//! its session. The protocol has no way to cancel an fs operation: the
//! agent may still carry it out, and an upload that timed out stays open
//! on the agent's side.
//!
//! Timeouts need the tokio runtime's timer (`enable_time`, or
//! `enable_all` as `#[tokio::main]` does) unless they are all `None`.
//!
//! # Concurrency and backpressure
//!
//! One reader task reads frames from the socket and routes each by id to
//! its session's **bounded** channel ([`ClientConfig::session_buffer`]
//! frames). When that channel is full the reader task *waits* until the
//! session's handle takes a frame: it stops reading the socket, so the
//! socket, and then the relay's queue for this client, fill up. No frame is
//! dropped, and memory stays bounded, but one session whose handle is not
//! read stalls every session of the connection, and the relay may then
//! disconnect the client as a slow consumer. Read every open session's
//! events, or drop its handle: frames for a dropped handle are discarded
//! without waiting. Frames for unknown or finished ids are logged and
//! dropped.
//!
//! Sessions share one writer (a fair async mutex around the framed socket):
//! each frame is written and flushed whole, in the order callers queue for
//! the lock, and a caller waits while the socket does not take bytes.
//! A frame for a session that has ended is refused
//! ([`ClientError::SessionClosed`]) rather than risk reaching a newer
//! session on the same id.
//!
//! When the connection ends (end of stream, an I/O error, a malformed frame,
//! a failed write), every open session reports
//! [`ClientError::Disconnected`] after the frames it had already received,
//! and every later operation fails the same way.
#![forbid(unsafe_code)]

mod client;
mod config;
mod deadline;
mod error;
mod exec;
mod fs;
mod session;
mod sessions;
mod tasks;

pub use client::Client;
pub use config::ClientConfig;
pub use error::{Awaited, ClientError, Disconnect, FsOpKind};
pub use exec::{ExecEvent, ExecEvents, ExecInput, ExecSession, ExitStatus, Output};
pub use fs::{Fs, FsReader};
/// The payload types this crate's API takes and returns.
pub use relay_codec::payload::{ExecRequest, FsEntry};
pub use session::{Session, SessionReceiver, SessionSender};
