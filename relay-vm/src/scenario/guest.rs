//! Talking to the guest under hang guards: commands through the client
//! library and the CLI, waiting for a guest process to go, and the test
//! data the steps send.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use relay_client::{Client, ExecRequest, Output};

use crate::error::VmError;
use crate::machine::Machine;

/// Guard for the guest to boot and greet.
const BOOT_GUARD: Duration = Duration::from_secs(120);
/// Guard for any one exec or fs operation.
const STEP_GUARD: Duration = Duration::from_secs(120);
/// Guard for a process to disappear from the guest.
const GONE_GUARD: Duration = Duration::from_secs(30);

/// `future`, failing the step if it takes longer than the step guard.
pub(super) async fn within_step_guard<T>(
    step: &'static str,
    what: &'static str,
    future: impl Future<Output = Result<T, VmError>>,
) -> Result<T, VmError> {
    match tokio::time::timeout(STEP_GUARD, future).await {
        Ok(result) => result,
        Err(_) => Err(VmError::Timeout {
            step,
            what,
            after: STEP_GUARD,
        }),
    }
}

/// Runs a command to completion with `stdin`.
pub(super) async fn exec(
    client: &Client,
    step: &'static str,
    cmd: &str,
    args: &[&str],
    stdin: Option<Bytes>,
) -> Result<Output, VmError> {
    let request = ExecRequest::new(cmd, args.iter().copied());
    within_step_guard(step, "an exec", async {
        client
            .exec_output(request, stdin)
            .await
            .map_err(VmError::client(step))
    })
    .await
}

/// [`exec`] that must exit 0; its stdout as text.
pub(super) async fn exec_ok(
    client: &Client,
    step: &'static str,
    cmd: &str,
    args: &[&str],
) -> Result<String, VmError> {
    let out = exec(client, step, cmd, args, None).await?;
    if out.code != 0 {
        return Err(VmError::check(
            step,
            format!(
                "`{cmd} {}` exited {}: {}",
                args.join(" "),
                out.code,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Connects once the relay greets (it does after the guest's `core.ready`).
pub(super) async fn connect_when_ready(
    socket: &Path,
    step: &'static str,
) -> Result<Client, VmError> {
    let start = Instant::now();
    loop {
        match Client::connect(socket).await {
            Ok(client) => return Ok(client),
            Err(_) if start.elapsed() < BOOT_GUARD => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(source) => return Err(VmError::Client { step, source }),
        }
    }
}

/// Runs `agent-relay ARGS` against the machine's relay; its stdout.
pub(super) async fn run_cli(
    machine: &Machine,
    step: &'static str,
    args: &[&str],
) -> Result<String, VmError> {
    let mut cmd = tokio::process::Command::new(machine.agent_relay());
    cmd.args(args)
        .env("AGENT_RELAY_SOCKET", machine.socket())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let shown = format!("agent-relay {}", args.join(" "));
    let out = within_step_guard(step, "an agent-relay command", async {
        cmd.output().await.map_err(|err| VmError::Command {
            command: shown.clone(),
            detail: format!("cannot start: {err}"),
        })
    })
    .await?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: shown,
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `/proc/<pid>` exists in the guest.
pub(super) async fn guest_has_pid(
    client: &Client,
    step: &'static str,
    pid: u32,
) -> Result<bool, VmError> {
    let out = exec(client, step, "test", &["-d", &format!("/proc/{pid}")], None).await?;
    Ok(out.code == 0)
}

/// Polls until `/proc/<pid>` is gone from the guest.
pub(super) async fn wait_gone(
    client: &Client,
    step: &'static str,
    pid: u32,
    what: &'static str,
) -> Result<(), VmError> {
    let start = Instant::now();
    while guest_has_pid(client, step, pid).await? {
        if start.elapsed() >= GONE_GUARD {
            let stat = exec(client, step, "cat", &[&format!("/proc/{pid}/stat")], None).await?;
            return Err(VmError::check(
                step,
                format!(
                    "{what} did not happen within {GONE_GUARD:?}: /proc/{pid}/stat is {:?}",
                    String::from_utf8_lossy(&stat.stdout).trim()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Deterministic bytes that do not repeat in any short period (xorshift64*).
pub(super) fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Lower-case hex, as `sha256sum` prints digests.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bytes_differ_by_seed_and_have_the_length_asked() {
        assert_eq!(test_bytes(13, 1).len(), 13);
        assert_ne!(test_bytes(64, 1), test_bytes(64, 2));
        assert_eq!(test_bytes(64, 1), test_bytes(64, 1));
    }
}
