//! Rate limits for log lines a peer can trigger at will (a guest re-sending
//! `core.ready`, a client connecting in a loop): each call site writes its
//! first occurrence, then at most one line per period carrying the count of
//! those it held back, so a hostile peer cannot flood the relay's log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One call site's limit. Put it in a `static` beside the log line.
#[derive(Debug)]
pub(crate) struct LogLimit {
    period: Duration,
    /// When the last line was written, and how many were held back since.
    state: Mutex<Option<(Instant, u64)>>,
}

impl LogLimit {
    /// At most one line per `period` after the first.
    pub(crate) const fn new(period: Duration) -> LogLimit {
        LogLimit {
            period,
            state: Mutex::new(None),
        }
    }

    /// `Some(held_back)` when a line may be written now, with how many
    /// occurrences since the last line were not written; `None` to skip.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *state {
            Some((last, ref mut held)) if now.duration_since(last) < self.period => {
                *held += 1;
                None
            }
            Some((_, held)) => {
                *state = Some((now, 0));
                Some(held)
            }
            None => {
                *state = Some((now, 0));
                Some(0)
            }
        }
    }
}

/// The period of every limit in the relay: a flood costs one line each
/// ten seconds per call site.
pub(crate) const PERIOD: Duration = Duration::from_secs(10);

/// Writes a `tracing` event at most once per [`PERIOD`] for this call site,
/// adding `held_back` (occurrences not written since the last line).
macro_rules! limited {
    ($level:ident, $($rest:tt)+) => {{
        static LIMIT: $crate::ratelog::LogLimit = $crate::ratelog::LogLimit::new($crate::ratelog::PERIOD);
        if let Some(held_back) = LIMIT.allow(::std::time::Instant::now()) {
            ::tracing::$level!(held_back, $($rest)+);
        }
    }};
}
pub(crate) use limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_passes_then_one_per_period_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.allow(t0), Some(0));
        for n in 1..=1000u64 {
            assert_eq!(limit.allow(t0 + Duration::from_millis(n)), None);
        }
        assert_eq!(limit.allow(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(limit.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(21)), Some(1));
    }
}
