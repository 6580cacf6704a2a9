//! Several clients: each its own id range and its own output, and a
//! client that goes away has its running command killed in the guest.

use std::path::Path;

use bytes::Bytes;
use relay_client::{Client, ExecEvent, ExecRequest};

use super::guest::{exec, exec_ok, guest_has_pid, test_bytes, wait_gone, within_step_guard};
use super::report::Report;
use crate::error::VmError;

/// Concurrent clients.
pub(super) const CLIENTS: usize = 8;

/// Clients at once: disjoint id ranges, and each gets its own output.
pub(super) async fn concurrent_clients(socket: &Path, report: &mut Report) -> Result<(), VmError> {
    let step = "8 clients";
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(
            Client::connect(socket)
                .await
                .map_err(VmError::client(step))?,
        );
    }
    let mut ranges: Vec<(u32, u32)> = clients
        .iter()
        .map(|c| (c.ids().first(), c.ids().last()))
        .collect();
    ranges.sort_unstable();
    if ranges.windows(2).any(|pair| pair[0].1 >= pair[1].0) {
        return Err(VmError::check(
            step,
            format!("id ranges overlap: {ranges:?}"),
        ));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        tasks.spawn(async move {
            let data = Bytes::from(test_bytes(128 * 1024, 100 + index as u64));
            let echo = exec(&client, step, "cat", &[], Some(data.clone())).await?;
            let tag = format!("client {index}");
            let said = exec_ok(&client, step, "sh", &["-c", "echo $0", &tag]).await?;
            if echo.code != 0 || echo.stdout != data || said.trim() != tag {
                return Err(VmError::check(
                    step,
                    format!("client {index} got someone else's or partial output"),
                ));
            }
            Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|err| VmError::check(step, format!("a client task failed: {err}")))??;
    }
    report.clients = CLIENTS;
    Ok(())
}

/// A client that goes away with `sleep` running: the guest kills it.
pub(super) async fn disconnect_kills(socket: &Path, watcher: &Client) -> Result<(), VmError> {
    let step = "disconnect";
    let doomed = Client::connect(socket)
        .await
        .map_err(VmError::client(step))?;
    let mut session = doomed
        .exec(ExecRequest::new("sleep", ["1000"]))
        .await
        .map_err(VmError::client(step))?;
    let pid = within_step_guard(step, "`sleep` to start", async {
        match session.next_event().await.map_err(VmError::client(step))? {
            Some(ExecEvent::Started { pid }) => Ok(pid),
            other => Err(VmError::check(
                step,
                format!("expected Started, got {other:?}"),
            )),
        }
    })
    .await?;
    if !guest_has_pid(watcher, step, pid).await? {
        return Err(VmError::check(
            step,
            format!("`sleep` (pid {pid}) is not running"),
        ));
    }
    // The connection closes when its last handle goes.
    drop(session);
    drop(doomed);
    wait_gone(
        watcher,
        step,
        pid,
        "killing the disconnected client's `sleep`",
    )
    .await
}
