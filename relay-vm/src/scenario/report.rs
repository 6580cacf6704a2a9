//! What one run measured, and how it prints (figures, never asserted).

use std::fmt;
use std::time::Duration;

use super::exec::{ECHO_ROUNDS, EXEC_ROUNDS};

/// What one run measured (printed, never asserted).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// From starting QEMU until a client got the relay's greeting.
    pub boot_to_ready: Duration,
    /// `core.ready`'s `boot_time_ns`: the guest kernel's boot until `/init`.
    pub guest_boot: Duration,
    /// `core.ready`'s `init_time_ns`: mounts, modules and the port done.
    pub guest_init: Duration,
    /// `core.ready`'s `ready_time_ns`.
    pub guest_ready: Duration,
    /// The line of the guest console with the kernel version.
    pub kernel_line: String,
    /// `uname -a` in the guest.
    pub uname: String,
    /// Mean round trip of an exec of `true` (request to exit code).
    pub exec_rtt: Duration,
    /// Fastest exec round trip.
    pub exec_rtt_min: Duration,
    /// Mean stdin-to-stdout echo round trip in one running `cat`.
    pub echo_rtt: Duration,
    /// Bytes streamed on stdout.
    pub stdout_bytes: usize,
    /// Time of that stream (request to exit code).
    pub stdout_time: Duration,
    /// The same echo with no relay: the host on the chardev socket itself.
    pub raw_echo_rtt: Duration,
    /// The same stream with no relay.
    pub raw_stdout_time: Duration,
    /// Bytes of the fs put and get.
    pub fs_bytes: usize,
    /// Time of the put.
    pub put_time: Duration,
    /// Time of the get.
    pub get_time: Duration,
    /// Clients that ran at once.
    pub clients: usize,
    /// From `agent-relay shutdown` to QEMU's exit.
    pub shutdown_time: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "guest kernel:     {}", self.kernel_line)?;
        writeln!(f, "guest uname -a:   {}", self.uname)?;
        writeln!(
            f,
            "boot-to-ready:    {:.0} ms (QEMU start to the relay's greeting); in the guest: \
             kernel {:.0} ms, init {:.0} ms, ready {:.0} ms after boot",
            ms(self.boot_to_ready),
            ms(self.guest_boot),
            ms(self.guest_init),
            ms(self.guest_ready)
        )?;
        writeln!(
            f,
            "exec round trip:  {:.2} ms mean, {:.2} ms min ({EXEC_ROUNDS} x `true`); \
             stdin echo {:.3} ms mean ({ECHO_ROUNDS} x 16 bytes through `cat`)",
            ms(self.exec_rtt),
            ms(self.exec_rtt_min),
            ms(self.echo_rtt)
        )?;
        writeln!(
            f,
            "stdout transfer:  {:.1} MiB/s ({} MiB in {:.2} s, SHA-256 matched)",
            mib_per_s(self.stdout_bytes, self.stdout_time),
            self.stdout_bytes >> 20,
            self.stdout_time.as_secs_f64()
        )?;
        writeln!(
            f,
            "relay / raw:      stdin echo {:.3} ms / {:.3} ms = {:.2}x; stdout {:.1} / {:.1} MiB/s = {:.2}x \
             (raw: the host on QEMU's chardev socket itself, same VM and boot)",
            ms(self.echo_rtt),
            ms(self.raw_echo_rtt),
            ratio(self.echo_rtt, self.raw_echo_rtt),
            mib_per_s(self.stdout_bytes, self.stdout_time),
            mib_per_s(self.stdout_bytes, self.raw_stdout_time),
            ratio(self.raw_stdout_time, self.stdout_time),
        )?;
        writeln!(
            f,
            "fs put / get:     {:.1} / {:.1} MiB/s ({} MiB each way, SHA-256 matched)",
            mib_per_s(self.fs_bytes, self.put_time),
            mib_per_s(self.fs_bytes, self.get_time),
            self.fs_bytes >> 20
        )?;
        writeln!(
            f,
            "clients:          {} at once, each with its own id range",
            self.clients
        )?;
        write!(
            f,
            "shutdown:         QEMU exited 0 {:.0} ms after `agent-relay shutdown`",
            ms(self.shutdown_time)
        )
    }
}

/// A rate in MiB/s.
fn mib_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / time.as_secs_f64().max(1e-9)
}

/// `a / b`, of two durations.
fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// A duration in milliseconds.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
