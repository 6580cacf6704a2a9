//! Errors that end the agent ([`AgentError`]) or keep it from reaching its
//! console ([`TransportError`]).
//!
//! Errors that concern one session (a command that cannot start, a failed
//! file operation) never appear here: they are answered on that session.

use std::io;
use std::path::PathBuf;

use relay_codec::{FrameError, MessageError};

/// Why [`Agent::serve`](crate::Agent::serve) stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Reading the console failed.
    #[error("reading the console failed: {source}")]
    ConsoleRead {
        /// The I/O error.
        source: io::Error,
    },
    /// Writing the console failed.
    #[error("writing the console failed: {source}")]
    ConsoleWrite {
        /// The I/O error.
        source: io::Error,
    },
    /// The console carried a malformed frame: the stream cannot be trusted.
    #[error("malformed frame on the console: {source}")]
    MalformedStream {
        /// What was wrong with the frame.
        source: FrameError,
    },
    /// A message of the agent's own could not be encoded.
    #[error("cannot encode {message}: {source}")]
    Encode {
        /// Wire name of the message.
        message: &'static str,
        /// The encoder's error.
        source: MessageError,
    },
    /// An internal task of the agent panicked or was cancelled.
    #[error("agent task {task} failed: {source}")]
    Task {
        /// Which task.
        task: &'static str,
        /// The join error.
        source: tokio::task::JoinError,
    },
}

/// Why a console transport could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Connecting to a Unix socket failed.
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Opening a device (or duplicating its descriptor) failed.
    #[error("cannot open {}: {source}", path.display())]
    OpenDevice {
        /// Device path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A terminal device could not be put into raw mode.
    #[error("cannot put terminal {} into raw mode: {source}", path.display())]
    RawMode {
        /// Device path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The virtio-ports directory could not be read.
    #[error("cannot list virtio ports in {}: {source}", dir.display())]
    ListPorts {
        /// The sysfs directory.
        dir: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// No virtio port has the requested name.
    #[error("no virtio port named {name:?} in {}", dir.display())]
    PortNotFound {
        /// The port name looked for.
        name: String,
        /// The sysfs directory searched.
        dir: PathBuf,
    },
}
