//! Why a relay could not start, or why it ended.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use relay_codec::FrameError;
use relay_router::ConfigError;

/// A relay could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration is inconsistent.
    #[error("invalid relay configuration: {0}")]
    Config(#[from] ConfigError),
    /// Another relay is serving on the socket path; it is left alone.
    #[error("a relay is already listening on {path}")]
    AlreadyServing {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket occupies the socket path.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Setting up the socket or its directory failed.
    #[error("cannot set up the socket at {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The system error.
        source: io::Error,
    },
    /// The ring's halves could not be registered with the runtime.
    #[error("cannot set up the ring: {0}")]
    RingSetup(#[source] io::Error),
    /// The agent did not send `core.ready` in time.
    #[error("the agent sent no core.ready within {timeout:?}")]
    ReadyTimeout {
        /// The configured timeout.
        timeout: Duration,
    },
    /// The agent's stream is malformed and cannot be trusted any more.
    #[error("malformed frame from the agent: {0}")]
    AgentProtocol(#[source] FrameError),
    /// The agent's stream ended.
    #[error("the agent stream ended")]
    AgentClosed,
    /// Reading from or writing to the agent failed.
    #[error("agent stream i/o: {0}")]
    AgentIo(#[source] io::Error),
    /// Accepting connections failed persistently.
    #[error("accepting connections failed: {0}")]
    Accept(#[source] io::Error),
    /// A relay task panicked (a bug).
    #[error("the relay's {task} task failed: {source}")]
    Task {
        /// Which task.
        task: &'static str,
        /// The panic or cancellation.
        source: tokio::task::JoinError,
    },
}

/// Why a client was disconnected by the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientFault {
    /// It sent a malformed frame.
    #[error("malformed frame: {0}")]
    Malformed(#[from] FrameErrorKind),
    /// It broke a routing rule.
    #[error("protocol violation: {0}")]
    Rejected(#[from] relay_router::RejectReason),
    /// Its queue outgrew its budget.
    #[error("slow consumer: queue would exceed its budget of {budget} bytes")]
    OverBudget {
        /// The per-client budget.
        budget: usize,
    },
    /// The relay's total queue budget was reached and its queue was the largest.
    #[error("slow consumer: largest queue ({queued} bytes) when the total budget was reached")]
    TotalBudget {
        /// Bytes it had queued.
        queued: usize,
    },
    /// Its queue made no progress for the stall timeout.
    #[error("slow consumer: no progress for {timeout:?}")]
    Stalled {
        /// The stall timeout.
        timeout: Duration,
    },
    /// The agent sent `core.ready` again (it restarted) while the client
    /// had sessions open: they ended with the old agent and will never get
    /// their terminal frames.
    #[error("the agent restarted; {sessions} open sessions ended with it")]
    AgentRestarted {
        /// The client's sessions that were open.
        sessions: usize,
    },
}

/// A copyable summary of a [`FrameError`] from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameErrorKind {
    /// `len` below 5.
    #[error("length {len} below the header size")]
    TooShort {
        /// The announced length.
        len: usize,
    },
    /// `len` above the maximum.
    #[error("length {len} above the maximum {max}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The connection ended inside a frame.
    #[error("connection ended inside a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes received.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
}

impl From<FrameError> for FrameErrorKind {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::FrameTooShort { len } => FrameErrorKind::TooShort { len },
            FrameError::FrameTooLarge { len, max } => FrameErrorKind::TooLarge { len, max },
            FrameError::Truncated { have, need } => FrameErrorKind::Truncated { have, need },
            FrameError::LengthMismatch { len, actual } => FrameErrorKind::Truncated {
                have: actual,
                need: len,
            },
        }
    }
}
