//! Typed errors of the client: connecting, the handshake, deadlines,
//! sessions, and the agent's own failures.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use relay_codec::payload::FsOp;
use relay_codec::{FrameError, Handshake, HandshakeError, MessageError, MessageType};

/// Everything a client operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The relay's socket could not be connected.
    #[error("cannot connect to the relay at {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// What the connect call reported.
        source: io::Error,
    },
    /// Reading the relay's greeting failed.
    #[error("reading the relay's handshake failed: {source}")]
    HandshakeRead {
        /// What the read reported.
        source: io::Error,
    },
    /// The relay closed the connection before a complete greeting.
    #[error("the relay closed the connection after {received} bytes of its handshake")]
    HandshakeTruncated {
        /// Bytes received before the end.
        received: usize,
    },
    /// The greeting is malformed.
    #[error("the relay's handshake is malformed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The greeting leaves this client no usable id.
    #[error("the handshake {handshake:?} leaves the client no usable id")]
    NoClientIds {
        /// The greeting received.
        handshake: Handshake,
    },
    /// The frame after the id prefix is not a valid `core.ready`.
    #[error("the relay's ready frame is not a valid core.ready message: {source}")]
    BadReady {
        /// Why it does not decode.
        source: MessageError,
    },
    /// The frame after the id prefix is a message of another type.
    #[error("the relay greeted with {message_type} instead of core.ready")]
    NotReady {
        /// The type found.
        message_type: MessageType,
    },
    /// A deadline passed: [`ClientConfig::connect_timeout`] while
    /// connecting, or the request timeout (see the crate documentation on
    /// deadlines) during a request.
    ///
    /// [`ClientConfig::connect_timeout`]: crate::ClientConfig::connect_timeout
    #[error("{}", timeout_text(*awaited, *after))]
    Timeout {
        /// What was awaited when the deadline passed.
        awaited: Awaited,
        /// The timeout that passed, counted from the start of the operation.
        after: Duration,
    },
    /// Every id of the client's range belongs to a session still in flight.
    #[error("all {in_flight} ids of the client's range are in flight")]
    IdsExhausted {
        /// Sessions in flight (equal to the size of the range).
        in_flight: usize,
    },
    /// The connection already has as many sessions in flight as
    /// [`ClientConfig::max_sessions`](crate::ClientConfig::max_sessions)
    /// allows (by default the relay's own per-client limit, past which the
    /// relay would answer the request with an error itself).
    #[error(
        "{limit} sessions are already in flight on this connection (the relay's per-client limit)"
    )]
    SessionLimit {
        /// The limit in force.
        limit: usize,
    },
    /// The connection to the relay is gone; every session on it has ended.
    #[error("connection to the relay lost: {0}")]
    Disconnected(#[source] Disconnect),
    /// A frame was sent on a session whose terminal frame already arrived
    /// (its id may belong to a newer session by now, so the frame was not sent).
    #[error("session {id} has already ended")]
    SessionClosed {
        /// The session's id.
        id: u32,
    },
    /// A session ended (terminal frame) without the message that should end it.
    #[error("session {id} ended without its final message")]
    SessionEnded {
        /// The session's id.
        id: u32,
    },
    /// A message could not be encoded into a frame.
    #[error("encoding a frame for session {id} failed: {source}")]
    Encode {
        /// The session's id (0 for `core.shutdown`).
        id: u32,
        /// Why.
        source: MessageError,
    },
    /// A frame received for a session does not decode.
    #[error("a frame received on session {id} does not decode: {source}")]
    Decode {
        /// The session's id.
        id: u32,
        /// Why.
        source: MessageError,
    },
    /// The agent sent a message this kind of session does not expect.
    #[error("session {id} received an unexpected {message_type} message")]
    UnexpectedMessage {
        /// The session's id.
        id: u32,
        /// The type received.
        message_type: MessageType,
    },
    /// A session can only be opened with a `SESSION_START` message.
    #[error("{message_type} does not open a session")]
    NotASessionRequest {
        /// The type given.
        message_type: MessageType,
    },
    /// The agent reported that a filesystem operation failed.
    #[error("{}", remote_text(*op, path, message))]
    Remote {
        /// The operation.
        op: FsOpKind,
        /// Its path (the source path for copy and rename).
        path: String,
        /// The agent's error text.
        message: String,
    },
    /// A successful filesystem response lacks the data its operation returns.
    #[error("the agent's answer to {op} {path} carries no {op} data")]
    MissingResponseData {
        /// The operation.
        op: FsOpKind,
        /// Its path.
        path: String,
    },
    /// Reading or writing a local stream (an upload's source, a download's
    /// destination, a stdin source) failed.
    #[error("local i/o failed: {0}")]
    LocalIo(#[source] io::Error),
}

/// Why the connection to the relay ended. Shared by every session it ends,
/// hence cheap to clone.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Disconnect {
    /// The relay closed the connection.
    #[error("the relay closed the connection")]
    Eof,
    /// Reading from the relay failed.
    #[error("reading from the relay failed: {0}")]
    Read(#[source] Arc<io::Error>),
    /// The relay sent bytes that are not a frame; the stream cannot be trusted.
    #[error("the relay sent a malformed frame: {0}")]
    Malformed(#[source] FrameError),
    /// Writing to the relay failed.
    #[error("writing to the relay failed: {0}")]
    Write(#[source] Arc<io::Error>),
}

/// What a client was waiting for when a deadline passed
/// ([`ClientError::Timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Awaited {
    /// The connect call on the relay's socket.
    Connect,
    /// The id prefix of the relay's greeting: nothing, or too few bytes to
    /// tell its form (4-byte legacy or 8-byte bounds), had arrived. A relay
    /// greets a client only once its agent is ready.
    Handshake,
    /// The cached `core.ready` frame that completes the greeting.
    Ready,
    /// Writing a request, or the data of an upload or of stdin: the relay
    /// did not take the bytes.
    Request,
    /// The agent's answer: the reply to a request, a file's contents, a
    /// command's output and exit.
    Reply,
    /// Local i/o of the operation: reading an upload's source or writing a
    /// download's destination.
    Local,
}

impl Awaited {
    /// What was awaited, as the end of "waiting for ...".
    pub const fn describe(self) -> &'static str {
        match self {
            Awaited::Connect => "the relay's socket to connect",
            Awaited::Handshake => "the relay's greeting (handshake)",
            Awaited::Ready => "the relay's greeting (the agent's core.ready frame)",
            Awaited::Request => "the relay to take a request",
            Awaited::Reply => "the agent's reply",
            Awaited::Local => "local i/o (an upload's source or a download's destination)",
        }
    }

    /// A hint at the likely cause, for people reading the error.
    const fn hint(self) -> &'static str {
        match self {
            Awaited::Connect => "is the sandbox's relay running?",
            Awaited::Handshake | Awaited::Ready => "is the guest agent up?",
            Awaited::Request => "is the relay or the agent stalled?",
            Awaited::Reply => "is the guest agent responsive?",
            Awaited::Local => "the relay and the agent were not the holdup",
        }
    }
}

impl fmt::Display for Awaited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The kind of a filesystem operation, for error reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsOpKind {
    /// [`FsOp::Stat`].
    Stat,
    /// [`FsOp::List`].
    List,
    /// [`FsOp::Read`].
    Read,
    /// [`FsOp::Write`].
    Write,
    /// [`FsOp::Mkdir`].
    Mkdir,
    /// [`FsOp::Remove`].
    Remove,
    /// [`FsOp::RemoveDir`].
    RemoveDir,
    /// [`FsOp::Copy`].
    Copy,
    /// [`FsOp::Rename`].
    Rename,
}

impl FsOpKind {
    /// The kind of `op` and the path an error report names (the source for
    /// copy and rename).
    pub fn of(op: &FsOp) -> (FsOpKind, &str) {
        match op {
            FsOp::Stat { path } => (FsOpKind::Stat, path),
            FsOp::List { path } => (FsOpKind::List, path),
            FsOp::Read { path } => (FsOpKind::Read, path),
            FsOp::Write { path, .. } => (FsOpKind::Write, path),
            FsOp::Mkdir { path } => (FsOpKind::Mkdir, path),
            FsOp::Remove { path } => (FsOpKind::Remove, path),
            FsOp::RemoveDir { path } => (FsOpKind::RemoveDir, path),
            FsOp::Copy { src, .. } => (FsOpKind::Copy, src),
            FsOp::Rename { src, .. } => (FsOpKind::Rename, src),
        }
    }

    /// A short lower-case name (`stat`, `remove_dir`...).
    pub const fn name(self) -> &'static str {
        match self {
            FsOpKind::Stat => "stat",
            FsOpKind::List => "list",
            FsOpKind::Read => "read",
            FsOpKind::Write => "write",
            FsOpKind::Mkdir => "mkdir",
            FsOpKind::Remove => "remove",
            FsOpKind::RemoveDir => "remove_dir",
            FsOpKind::Copy => "copy",
            FsOpKind::Rename => "rename",
        }
    }
}

impl fmt::Display for FsOpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The agent's error text, with the operation and path in front unless the
/// text already names the path (the reference agent's texts do).
fn remote_text(op: FsOpKind, path: &str, message: &str) -> String {
    if message.contains(path) {
        message.to_owned()
    } else {
        format!("{op} {path}: {message}")
    }
}

/// "timed out after 30s waiting for the relay's greeting (handshake); is the
/// guest agent up?"
fn timeout_text(awaited: Awaited, after: Duration) -> String {
    format!(
        "timed out after {after:?} waiting for {awaited}; {}",
        awaited.hint()
    )
}
