//! The scenario run against a booted VM, and the figures it reports.
//!
//! In order, each step a function of the module named in brackets (`guest`
//! holds what they share, `report` the figures):
//!
//! 1. **boot** (`boot`): connect through the relay (which greets only after the
//!    guest's `core.ready`): boot-to-ready time, and the guest's own boot,
//!    init and ready times from `core.ready`.
//! 2. **uname** (`boot`) through the CLI (`agent-relay exec -- uname -a`): the
//!    release must be the guest kernel's, not the host's.
//! 3. **exit codes** (`exec`): a plain exit code, `false`, a missing program (127), a
//!    signal death (128 + 9).
//! 4. **stdio** (`exec`): stdin echoed by `cat`, stdout and stderr kept apart.
//! 5. **round trips** (`exec`): sequential execs of `true`, and 16-byte echoes
//!    through one `cat` session.
//! 6. **20 MiB stdout** (`transfer`): the guest writes 20 MiB of random bytes to a file
//!    and hashes it; `cat` streams it out and the host's SHA-256 must match.
//! 7. **fs** (`transfer`): a 5 MiB file put and got back, hashed on both sides.
//! 8. **8 clients** (`clients`) at once, each with its own id range, each echoing its
//!    own data through `cat`.
//! 9. **disconnect** (`clients`): a client starts `sleep 1000` and goes away; a second
//!    client watches `/proc/<pid>` in the guest until it is gone.
//! 10. **orphan** (`lifecycle`): a background `sleep` whose shell exits is re-parented to
//!     PID 1 (checked in `/proc/<pid>/stat`), and PID 1 reaps it when it
//!     ends (its `/proc` entry goes away instead of staying a zombie).
//! 11. **relay restart** (`lifecycle`, `raw`): the relay stops (`SIGTERM`) while the VM
//!     runs; the host speaks to the agent on QEMU's chardev socket itself, the
//!     raw baseline (the echoes of step 5 and the stream of step 6 with no
//!     relay, reported beside the relay's); then a new relay starts on the
//!     same chardev; the guest's agent, having seen each host go, serves the
//!     next one (a fresh `core.ready`), and a command runs through it.
//! 12. **shutdown** (`lifecycle`) through the CLI (`agent-relay shutdown`): QEMU must
//!     exit with status 0, and the relay too.
//!
//! Waits are hang guards, never thresholds.

mod boot;
mod clients;
mod exec;
mod guest;
mod lifecycle;
mod raw;
mod report;
mod transfer;

pub use self::report::Report;
use self::report::ms;
use crate::error::VmError;
use crate::machine::{Machine, MachineConfig};
use crate::{Progress, host};

/// Boots the VM and runs every step. On failure the error says which step,
/// and the guest's and the relay's last log lines are reported through
/// `progress`.
pub async fn run(config: &MachineConfig, progress: Progress<'_>) -> Result<Report, VmError> {
    let mut machine = Machine::boot(config)?;
    let result = steps(&mut machine, config, progress).await;
    if result.is_err() {
        progress(&format!(
            "guest console (last lines):\n{}",
            host::tail(&machine.serial(), 30)
        ));
        progress(&format!(
            "relay log (last lines):\n{}",
            host::tail(&machine.relay_log(), 15)
        ));
    }
    progress(&format!("logs kept in {}", machine.kept_logs().display()));
    result
}

/// The steps in order, each failing the run with the step's name.
async fn steps(
    machine: &mut Machine,
    config: &MachineConfig,
    progress: Progress<'_>,
) -> Result<Report, VmError> {
    let mut report = Report::default();
    let client = boot::first_greeting(machine, &mut report).await?;
    progress(&format!(
        "guest ready {:.0} ms after QEMU started",
        ms(report.boot_to_ready)
    ));
    report.kernel_line = boot::kernel_line(&machine.serial());
    boot::uname(machine, config, &mut report).await?;
    progress(&format!("uname -a: {}", report.uname));
    exec::exit_codes(&client).await?;
    exec::stdio(&client).await?;
    exec::round_trips(&client, &mut report).await?;
    progress("exit codes, stdio and round trips checked");
    transfer::stdout_transfer(&client, &mut report).await?;
    progress(&format!(
        "{} MiB streamed on stdout, SHA-256 matched",
        report.stdout_bytes >> 20
    ));
    transfer::fs_transfer(&client, &mut report).await?;
    progress(&format!(
        "{} MiB put and got back, SHA-256 matched",
        report.fs_bytes >> 20
    ));
    clients::concurrent_clients(machine.socket(), &mut report).await?;
    progress(&format!("{} concurrent clients checked", clients::CLIENTS));
    clients::disconnect_kills(machine.socket(), &client).await?;
    progress("a disconnected client's `sleep` was killed in the guest");
    lifecycle::orphan_reaped(&client).await?;
    progress("an orphan was re-parented to PID 1 and reaped");
    drop(client);
    lifecycle::relay_restart(machine, &mut report).await?;
    progress("the guest agent served the host on its chardev, then a restarted relay");
    lifecycle::shutdown(machine, &mut report).await?;
    Ok(report)
}
