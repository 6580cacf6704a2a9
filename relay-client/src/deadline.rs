//! Deadlines: one instant for a whole operation, and the typed error naming
//! what was awaited when it passed.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Awaited, ClientError};

/// When an operation must be over, and the timeout it came from (for the
/// error report).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    after: Duration,
}

impl Deadline {
    /// The deadline `timeout` from now; `None` without a timeout, or when
    /// the instant is too far away to represent (as good as none).
    pub(crate) fn after(timeout: Option<Duration>) -> Option<Deadline> {
        let after = timeout?;
        let at = Instant::now().checked_add(after)?;
        Some(Deadline { at, after })
    }
}

/// Runs `work` until `deadline`; past it, `work` is dropped (so it must be
/// cancel-safe) and the result is [`ClientError::Timeout`] naming `awaited`.
pub(crate) async fn within<T, F>(
    deadline: Option<Deadline>,
    awaited: Awaited,
    work: F,
) -> Result<T, ClientError>
where
    F: Future<Output = Result<T, ClientError>>,
{
    let Some(deadline) = deadline else {
        return work.await;
    };
    match tokio::time::timeout_at(deadline.at, work).await {
        Ok(result) => result,
        Err(_elapsed) => {
            tracing::debug!(?awaited, after = ?deadline.after, "deadline passed");
            Err(ClientError::Timeout {
                awaited,
                after: deadline.after,
            })
        }
    }
}
