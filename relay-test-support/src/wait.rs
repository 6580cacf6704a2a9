//! Waiting without timing thresholds: the hang guard, and polling until
//! something a test expects has happened.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for something that must happen before it calls
/// it a hang. Generous on purpose: it turns a hang into a failure and is
/// never a performance threshold.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(5);

/// Awaits `work`, panicking with `what` if it is still unfinished after the
/// hang guard.
pub async fn guard<F: Future>(what: &str, work: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, work).await {
        Ok(output) => output,
        Err(_) => panic!("still waiting for {what} after the hang guard ({HANG_GUARD:?})"),
    }
}

/// Polls `probe` until it returns `Some`, and returns what it found;
/// panics with `what` after the hang guard.
pub async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(start.elapsed() < HANG_GUARD, "never reached: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a test without a runtime: sleeps the thread between looks.
pub fn eventually_blocking<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(start.elapsed() < HANG_GUARD, "never reached: {what}");
        std::thread::sleep(POLL);
    }
}
