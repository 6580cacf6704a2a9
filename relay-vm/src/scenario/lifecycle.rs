//! Processes and machines coming and going: PID 1 adopts and reaps an
//! orphan, the guest agent serves a restarted relay, and a shutdown
//! through the CLI ends QEMU and the relay cleanly.

use std::time::{Duration, Instant};

use relay_client::Client;

use super::guest::{connect_when_ready, exec, exec_ok, run_cli, wait_gone};
use super::raw;
use super::report::Report;
use crate::error::VmError;
use crate::machine::Machine;

/// Guard for QEMU and the relay to exit after `core.shutdown` or `SIGTERM`.
const EXIT_GUARD: Duration = Duration::from_secs(60);

/// A background `sleep` whose shell exits: PID 1 adopts it and reaps it.
pub(super) async fn orphan_reaped(client: &Client) -> Result<(), VmError> {
    let step = "orphan";
    let out = exec_ok(
        client,
        step,
        "sh",
        &["-c", "sleep 2 </dev/null >/dev/null 2>&1 & echo $!"],
    )
    .await?;
    let pid: u32 = out
        .trim()
        .parse()
        .map_err(|_| VmError::check(step, format!("no pid from the shell: {out:?}")))?;
    // The shell has exited: the `sleep` now belongs to PID 1.
    let stat = exec(client, step, "cat", &[&format!("/proc/{pid}/stat")], None).await?;
    let stat = String::from_utf8_lossy(&stat.stdout).into_owned();
    let ppid = stat
        .rfind(')')
        .and_then(|at| stat[at + 1..].split_whitespace().nth(1))
        .unwrap_or_default();
    if !stat.is_empty() && ppid != "1" {
        return Err(VmError::check(
            step,
            format!("the orphan's parent is {ppid}, not PID 1 ({stat:?})"),
        ));
    }
    wait_gone(client, step, pid, "PID 1 reaping the orphan").await
}

/// The relay stops, the host speaks to the agent on the chardev itself
/// (the raw baseline), and a new relay starts; the guest agent serves each
/// host that comes.
pub(super) async fn relay_restart(
    machine: &mut Machine,
    report: &mut Report,
) -> Result<(), VmError> {
    let step = "relay restart";
    match machine.stop_relay(EXIT_GUARD).await? {
        Some(status) if status.success() => {}
        Some(status) => {
            return Err(VmError::check(
                step,
                format!("the old relay exited with {status}"),
            ));
        }
        None => {
            return Err(VmError::Timeout {
                step,
                what: "the old relay's exit after SIGTERM",
                after: EXIT_GUARD,
            });
        }
    }
    raw::baseline(&machine.chardev(), report).await?;
    machine.start_relay()?;
    let client = connect_when_ready(machine.socket(), step).await?;
    let said = exec_ok(&client, step, "echo", &["served", "again"]).await?;
    if said != "served again\n" {
        return Err(VmError::check(step, format!("`echo` said {said:?}")));
    }
    Ok(())
}

/// `agent-relay shutdown`: QEMU and the relay exit with status 0.
pub(super) async fn shutdown(machine: &mut Machine, report: &mut Report) -> Result<(), VmError> {
    let step = "shutdown";
    let start = Instant::now();
    run_cli(machine, step, &["shutdown"]).await?;
    let qemu = machine.wait_qemu(EXIT_GUARD).await?;
    report.shutdown_time = start.elapsed();
    match qemu {
        Some(status) if status.success() => {}
        Some(status) => {
            return Err(VmError::check(step, format!("QEMU exited with {status}")));
        }
        None => {
            return Err(VmError::Timeout {
                step,
                what: "QEMU's exit",
                after: EXIT_GUARD,
            });
        }
    }
    match machine.wait_relay(EXIT_GUARD).await? {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(VmError::check(
            step,
            format!("the relay exited with {status}"),
        )),
        None => Err(VmError::Timeout {
            step,
            what: "the relay's exit",
            after: EXIT_GUARD,
        }),
    }
}
