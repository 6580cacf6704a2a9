//! Commands in the guest: exit codes (plain, missing program, signal
//! death), stdin and the two output streams kept apart, and round trips.

use std::time::{Duration, Instant};

use bytes::Bytes;
use relay_client::{Client, ExecEvent, ExecRequest};

use super::guest::{exec, exec_ok, test_bytes, within_step_guard};
use super::report::Report;
use crate::error::VmError;

/// Sequential `true` execs measured.
pub(super) const EXEC_ROUNDS: u32 = 20;
/// Echoes measured in one session.
pub(super) const ECHO_ROUNDS: u32 = 50;

/// Exit codes as the guest's processes ended.
pub(super) async fn exit_codes(client: &Client) -> Result<(), VmError> {
    let step = "exit codes";
    let cases: [(&str, &[&str], i32); 4] = [
        ("sh", &["-c", "exit 7"], 7),
        ("false", &[], 1),
        ("/no/such/program", &[], 127),
        ("sh", &["-c", "kill -9 $$"], 128 + 9),
    ];
    for (cmd, args, expected) in cases {
        let out = exec(client, step, cmd, args, None).await?;
        if out.code != expected {
            return Err(VmError::check(
                step,
                format!(
                    "`{cmd} {}` exited {}, expected {expected}",
                    args.join(" "),
                    out.code
                ),
            ));
        }
    }
    Ok(())
}

/// Stdin echoed by `cat`; stdout and stderr kept apart.
pub(super) async fn stdio(client: &Client) -> Result<(), VmError> {
    let step = "stdio";
    let data = Bytes::from(test_bytes(256 * 1024, 1));
    let out = exec(client, step, "cat", &[], Some(data.clone())).await?;
    if out.code != 0 || out.stdout != data || !out.stderr.is_empty() {
        return Err(VmError::check(
            step,
            format!(
                "`cat` gave code {} and {} of {} bytes back",
                out.code,
                out.stdout.len(),
                data.len()
            ),
        ));
    }
    let out = exec(
        client,
        step,
        "sh",
        &["-c", "echo out; echo err >&2; exit 3"],
        None,
    )
    .await?;
    if (out.stdout.as_slice(), out.stderr.as_slice(), out.code) != (b"out\n", b"err\n", 3) {
        return Err(VmError::check(
            step,
            format!("stdout and stderr mixed up: {out:?}"),
        ));
    }
    Ok(())
}

/// The line of echo `round` (16 bytes).
pub(super) fn echo_line(round: u32) -> String {
    format!("echo {round:>9} ..\n")
}

/// Sequential execs of `true`, and echoes through one running `cat`.
pub(super) async fn round_trips(client: &Client, report: &mut Report) -> Result<(), VmError> {
    let step = "round trips";
    let mut total = Duration::ZERO;
    let mut min = Duration::MAX;
    for _ in 0..EXEC_ROUNDS {
        let start = Instant::now();
        exec_ok(client, step, "true", &[]).await?;
        let took = start.elapsed();
        total += took;
        min = min.min(took);
    }
    report.exec_rtt = total / EXEC_ROUNDS;
    report.exec_rtt_min = min;

    let mut session = client
        .exec(ExecRequest::new("cat", Vec::<String>::new()))
        .await
        .map_err(VmError::client(step))?;
    let start = Instant::now();
    let echoed = within_step_guard(step, "echoes through `cat`", async {
        for round in 0..ECHO_ROUNDS {
            let line = echo_line(round);
            session
                .write_stdin(line.as_bytes())
                .await
                .map_err(VmError::client(step))?;
            let mut got = Vec::new();
            while got.len() < line.len() {
                match session.next_event().await.map_err(VmError::client(step))? {
                    Some(ExecEvent::Stdout(data)) => got.extend_from_slice(&data),
                    Some(ExecEvent::Started { .. }) => {}
                    other => {
                        return Err(VmError::check(step, format!("`cat` sent {other:?}")));
                    }
                }
            }
            if got != line.as_bytes() {
                return Err(VmError::check(
                    step,
                    format!("echo {round} came back as {got:?}"),
                ));
            }
        }
        Ok(start.elapsed())
    })
    .await?;
    report.echo_rtt = echoed / ECHO_ROUNDS;
    session.close_stdin().await.map_err(VmError::client(step))?;
    let status = within_step_guard(step, "`cat` to exit", async {
        session.wait().await.map_err(VmError::client(step))
    })
    .await?;
    if !status.success() {
        return Err(VmError::check(
            step,
            format!("`cat` exited {}", status.code),
        ));
    }
    Ok(())
}
