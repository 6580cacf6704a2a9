//! Times since the guest booted, for the fields of `core.ready`.

use relay_codec::payload::{FlowWindow, Ready};
use rustix::time::{ClockId, clock_gettime};

/// When the agent's process started and when it finished initialising, in
/// nanoseconds of `CLOCK_BOOTTIME` (time since boot, sleep included).
///
/// `core.ready` carries them as `boot_time_ns` (the process start: how long
/// the kernel and anything before the agent took) and `init_time_ns` (the
/// end of the agent's initialisation), plus `ready_time_ns`, read when the
/// message is sent. The three are non-decreasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTimes {
    /// When the process started.
    pub boot_time_ns: u64,
    /// When initialisation ended.
    pub init_time_ns: u64,
}

impl BootTimes {
    /// Reads the process start from `/proc/self/stat` (clock ticks since
    /// boot; falls back to now when it cannot be read) and takes now as the
    /// end of initialisation.
    pub fn capture() -> BootTimes {
        let now = boottime_ns();
        let start = process_start_ns().map_or(now, |start| start.min(now));
        BootTimes {
            boot_time_ns: start,
            init_time_ns: now,
        }
    }

    /// The ready payload, with `ready_time_ns` read now and the flow-control
    /// offer, if any.
    pub(crate) fn ready_now(&self, flow_window: Option<u32>) -> Ready {
        let now = boottime_ns().max(self.init_time_ns);
        Ready {
            boot_time_ns: self.boot_time_ns,
            init_time_ns: self.init_time_ns,
            ready_time_ns: now,
            flow: flow_window.map(|window| FlowWindow { window }),
        }
    }
}

/// `CLOCK_BOOTTIME` now, in nanoseconds.
pub(crate) fn boottime_ns() -> u64 {
    let ts = clock_gettime(ClockId::Boottime);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Field 22 of `/proc/self/stat` (`starttime`, in clock ticks since boot)
/// converted to nanoseconds.
fn process_start_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_start_ticks(&stat).map(|ticks| {
        let hz = rustix::param::clock_ticks_per_second().max(1);
        ticks.saturating_mul(1_000_000_000) / hz
    })
}

/// The command name (field 2) may contain spaces and parentheses, so the
/// fields are counted from the last `)`: `state` is field 3, `starttime` 22.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_are_found_after_a_command_name_with_spaces() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(parse_start_ticks(stat), Some(12345));
    }

    #[test]
    fn captured_times_do_not_decrease() {
        let times = BootTimes::capture();
        let ready = times.ready_now(None);
        assert!(ready.boot_time_ns <= ready.init_time_ns);
        assert!(ready.init_time_ns <= ready.ready_time_ns);
        assert!(ready.boot_time_ns > 0);
    }
}
