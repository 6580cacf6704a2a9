//! The sizes and counts of a run: full (the numbers for the README), quick
//! and smoke (checks that every scenario runs).

use std::time::Duration;

use crate::serve::{Impl, Runtime, ServeOptions};
use crate::transport::DeviceWait;

/// Sizes and counts of one run.
#[derive(Debug, Clone)]
pub(crate) struct Mode {
    pub(crate) name: &'static str,
    /// Rounds of every scenario but the memory ones.
    pub(super) repeats: usize,
    pub(super) rtt_warmup: usize,
    pub(super) rtt_pings: usize,
    pub(super) bulk_warmup: u64,
    pub(super) bulk_up: u64,
    pub(super) bulk_down: u64,
    pub(super) fan_in_rounds_16: usize,
    pub(super) fan_in_rounds_128: usize,
    pub(super) isolation_pings: usize,
    /// Bytes sent toward the client that never reads, in the burst rows.
    pub(super) isolation_burst: u64,
    /// Bytes the slow reader asks for.
    pub(super) slow_total: u64,
    pub(super) ping_timeout: Duration,
    /// A pause for the load to reach its steady state before measuring.
    pub(super) settle: Duration,
    /// Rounds of the memory scenarios.
    pub(super) memory_repeats: usize,
    pub(super) flood_for: Duration,
    /// The naive relay's flood is stopped once its RSS passes this.
    pub(super) naive_rss_cap: u64,
    pub(super) exec_rounds: usize,
    pub(super) exec_stdout: u64,
    /// 64-byte round trips through `cat`.
    pub(super) cat_rounds: usize,
    /// Bytes of the file each fs row moves.
    pub(super) fs_bytes: u64,
    /// The relays' tokio runtime.
    pub(crate) runtime: Runtime,
    /// How the device side of the rings waits.
    pub(crate) wait: DeviceWait,
    /// Bytes of each ring of ours.
    pub(crate) ring: usize,
}

impl Mode {
    /// A few minutes: the numbers for the README.
    pub(crate) fn full() -> Mode {
        Mode {
            name: "full",
            repeats: 5,
            rtt_warmup: 2000,
            rtt_pings: 20_000,
            bulk_warmup: 32 << 20,
            bulk_up: 1 << 30,
            bulk_down: 1 << 30,
            fan_in_rounds_16: 2000,
            fan_in_rounds_128: 250,
            isolation_pings: 3000,
            isolation_burst: 8 << 20,
            slow_total: 40_000_000,
            ping_timeout: Duration::from_secs(2),
            settle: Duration::from_millis(300),
            memory_repeats: 3,
            flood_for: Duration::from_secs(5),
            naive_rss_cap: 1 << 30,
            exec_rounds: 200,
            exec_stdout: 100_000_000,
            cat_rounds: 5000,
            fs_bytes: 1 << 30,
            runtime: Runtime::Current,
            wait: DeviceWait::Park,
            ring: relay_ring::DEFAULT_CAPACITY,
        }
    }

    /// Under a minute: the same scenarios, smaller.
    pub(crate) fn quick() -> Mode {
        Mode {
            name: "quick",
            repeats: 3,
            rtt_warmup: 500,
            rtt_pings: 4000,
            bulk_warmup: 8 << 20,
            bulk_up: 128 << 20,
            bulk_down: 256 << 20,
            fan_in_rounds_16: 400,
            fan_in_rounds_128: 50,
            isolation_pings: 1000,
            isolation_burst: 8 << 20,
            slow_total: 20_000_000,
            ping_timeout: Duration::from_millis(500),
            settle: Duration::from_millis(200),
            memory_repeats: 2,
            flood_for: Duration::from_millis(1500),
            naive_rss_cap: 512 << 20,
            exec_rounds: 50,
            exec_stdout: 100_000_000,
            cat_rounds: 2000,
            fs_bytes: 256 << 20,
            runtime: Runtime::Current,
            wait: DeviceWait::Park,
            ring: relay_ring::DEFAULT_CAPACITY,
        }
    }

    /// Seconds: checks that every scenario runs (CI), numbers meaningless.
    pub(crate) fn smoke() -> Mode {
        Mode {
            name: "smoke",
            repeats: 1,
            rtt_warmup: 10,
            rtt_pings: 200,
            bulk_warmup: 1 << 20,
            bulk_up: 8 << 20,
            bulk_down: 8 << 20,
            fan_in_rounds_16: 5,
            fan_in_rounds_128: 2,
            isolation_pings: 100,
            isolation_burst: 2 << 20,
            slow_total: 2_000_000,
            ping_timeout: Duration::from_millis(500),
            settle: Duration::from_millis(50),
            memory_repeats: 1,
            flood_for: Duration::from_millis(300),
            naive_rss_cap: 256 << 20,
            exec_rounds: 3,
            exec_stdout: 1_000_000,
            cat_rounds: 50,
            fs_bytes: 4 << 20,
            runtime: Runtime::Current,
            wait: DeviceWait::Park,
            ring: relay_ring::DEFAULT_CAPACITY,
        }
    }

    /// Server options for `imp` with this run's runtime, device wait and ring.
    pub(super) fn serve_options(&self, imp: Impl) -> ServeOptions {
        let mut opts = ServeOptions::new(imp);
        opts.runtime = self.runtime;
        opts.wait = self.wait;
        opts.ring = self.ring;
        opts
    }
}
