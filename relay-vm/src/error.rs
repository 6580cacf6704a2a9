//! The one error type of the VM proof.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use relay_client::ClientError;

/// Why the VM proof could not run or did not pass.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Something the proof needs is missing and cannot be had here (QEMU
    /// without root to install it). Callers may report this as a skip.
    #[error("{reason}")]
    Unavailable {
        /// What is missing and how to get it.
        reason: String,
    },
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A tool could not be started or failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and the end of its output, or why it did not start.
        detail: String,
    },
    /// A package or file was not where it should be.
    #[error("{what} not found in {}", place.display())]
    Missing {
        /// What was looked for.
        what: String,
        /// Where.
        place: PathBuf,
    },
    /// A scenario step saw something other than expected.
    #[error("step `{step}`: {detail}")]
    Check {
        /// The step.
        step: &'static str,
        /// What was expected and what came.
        detail: String,
    },
    /// The client library failed during a step.
    #[error("step `{step}`: {source}")]
    Client {
        /// The step.
        step: &'static str,
        /// The client error.
        source: ClientError,
    },
    /// Something did not happen within its hang guard.
    #[error("step `{step}`: {what} did not happen within {after:?}")]
    Timeout {
        /// The step.
        step: &'static str,
        /// What was awaited.
        what: &'static str,
        /// The guard.
        after: Duration,
    },
}

impl VmError {
    /// An I/O error about `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> VmError {
        let path = path.into();
        move |source| VmError::Io { path, source }
    }

    /// A failed check.
    pub(crate) fn check(step: &'static str, detail: impl Into<String>) -> VmError {
        VmError::Check {
            step,
            detail: detail.into(),
        }
    }

    /// A client error during `step`.
    pub(crate) fn client(step: &'static str) -> impl FnOnce(ClientError) -> VmError {
        move |source| VmError::Client { step, source }
    }
}
