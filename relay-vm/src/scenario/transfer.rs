//! Bulk both ways, checked by hash: a stream of stdout out of the guest,
//! and a file put into it and got back through fs.

use std::time::Instant;

use relay_client::{Client, ExecEvent, ExecRequest};
use sha2::{Digest, Sha256};

use super::guest::{exec_ok, hex, test_bytes, within_step_guard};
use super::report::Report;
use crate::error::VmError;

/// The streamed stdout transfer.
pub(super) const STDOUT_BYTES: usize = 20 * 1024 * 1024;
/// Where the guest keeps the streamed file (the raw baseline streams it
/// again).
pub(super) const BIG_FILE: &str = "/tmp/big";
/// The fs put/get transfer.
const FS_BYTES: usize = 5 * 1024 * 1024;

/// A random file written and hashed in the guest, streamed out by `cat`
/// and hashed on the host.
pub(super) async fn stdout_transfer(client: &Client, report: &mut Report) -> Result<(), VmError> {
    let step = "20 MiB stdout";
    let script =
        format!("head -c {STDOUT_BYTES} /dev/urandom > {BIG_FILE} && sha256sum {BIG_FILE}");
    let guest_sum = exec_ok(client, step, "sh", &["-c", &script]).await?;
    let guest_sum = guest_sum
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();

    let start = Instant::now();
    let mut session = client
        .exec(ExecRequest::new("cat", [BIG_FILE]))
        .await
        .map_err(VmError::client(step))?;
    let (bytes, sum, code) = within_step_guard(step, "the stream", async {
        let mut hasher = Sha256::new();
        let mut bytes = 0usize;
        loop {
            match session.next_event().await.map_err(VmError::client(step))? {
                Some(ExecEvent::Stdout(data)) => {
                    bytes += data.len();
                    hasher.update(&data);
                }
                Some(ExecEvent::Exited(status)) => {
                    break Ok((bytes, hex(&hasher.finalize()), status.code));
                }
                Some(_) => {}
                None => {
                    break Err(VmError::check(
                        step,
                        "the session ended without an exit code",
                    ));
                }
            }
        }
    })
    .await?;
    report.stdout_time = start.elapsed();
    report.stdout_bytes = bytes;
    if code != 0 || bytes != STDOUT_BYTES || sum != guest_sum {
        return Err(VmError::check(
            step,
            format!(
                "got {bytes} bytes with SHA-256 {sum} and code {code}; \
                 the guest wrote {STDOUT_BYTES} bytes with SHA-256 {guest_sum}"
            ),
        ));
    }
    // The file stays for the raw baseline, which streams it again.
    Ok(())
}

/// A file put into the guest and got back, hashed on both sides.
pub(super) async fn fs_transfer(client: &Client, report: &mut Report) -> Result<(), VmError> {
    let step = "fs put/get";
    let data = test_bytes(FS_BYTES, 2);
    let sum = hex(&Sha256::digest(&data));
    let path = "/tmp/put.bin";
    let start = Instant::now();
    within_step_guard(step, "the put", async {
        client
            .fs()
            .write(path, Some(0o644), &data)
            .await
            .map_err(VmError::client(step))
    })
    .await?;
    report.put_time = start.elapsed();
    let guest_sum = exec_ok(client, step, "sha256sum", &[path]).await?;
    if guest_sum.split_whitespace().next() != Some(sum.as_str()) {
        return Err(VmError::check(
            step,
            format!("the guest's file hashes to {guest_sum}, the host's data to {sum}"),
        ));
    }
    let start = Instant::now();
    let back = within_step_guard(step, "the get", async {
        client
            .fs()
            .read_all(path)
            .await
            .map_err(VmError::client(step))
    })
    .await?;
    report.get_time = start.elapsed();
    report.fs_bytes = data.len();
    if back != data {
        return Err(VmError::check(
            step,
            format!("got {} bytes back, not the {} put", back.len(), data.len()),
        ));
    }
    client
        .fs()
        .remove(path)
        .await
        .map_err(VmError::client(step))?;
    Ok(())
}
