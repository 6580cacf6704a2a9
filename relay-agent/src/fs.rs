//! Fs sessions: one `core.fs.request`, data streamed in `core.fs.data`
//! chunks (either way), then one terminal `core.fs.response`.
//!
//! Failures answer `ok: false` with `"OP PATH: REASON"` (for example
//! `stat /nope: No such file or directory`). A write whose file cannot be
//! opened is answered at once; the upload chunks that follow are discarded.

use std::fs::{Metadata, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use relay_codec::payload::{FsEntry, FsOp, FsRequest, FsResponse, FsResponseData};
use relay_codec::{FS_CHUNK_SIZE, Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::exec::log_send_error;
use crate::outbound::{SendError, SessionOut};
use crate::queue::InputReceiver;
use crate::spawn::describe;

/// Mode of a file created by a write without `mode`.
const DEFAULT_FILE_MODE: u32 = 0o644;

/// Runs one fs session. `upload` is the session's input queue (only a
/// write reads it). `cancel` (a signal on the session) stops the operation,
/// answered with `ok: false`.
pub(crate) async fn run(
    req: FsRequest,
    out: SessionOut,
    upload: InputReceiver,
    chunk: usize,
    cancel: CancellationToken,
) {
    let what = op_name(&req.op);
    let operation = operate(req.op, &out, upload, chunk);
    let response = tokio::select! {
        biased;
        () = out.cancel_token().cancelled() => return debug!("fs request ended by shutdown"),
        () = cancel.cancelled() => FsResponse::failed(format!("{what}: cancelled by a signal")),
        response = operation => match response {
            Ok(response) => response,
            Err(err) => return log_send_error(&err),
        },
    };
    if let Some(error) = &response.error {
        debug!(%error, "fs request failed");
    }
    if let Err(err) = out.terminal(&Message::FsResponse(response)).await {
        log_send_error(&err);
    }
}

/// The operation's name in error texts.
fn op_name(op: &FsOp) -> &'static str {
    match op {
        FsOp::Stat { .. } => "stat",
        FsOp::List { .. } => "list",
        FsOp::Read { .. } => "read",
        FsOp::Write { .. } => "write",
        FsOp::Mkdir { .. } => "mkdir",
        FsOp::Remove { .. } => "remove",
        FsOp::RemoveDir { .. } => "rmdir",
        FsOp::Copy { .. } => "copy",
        FsOp::Rename { .. } => "rename",
    }
}

/// Carries out one operation. Only a read that cannot send is an `Err`.
async fn operate(
    op: FsOp,
    out: &SessionOut,
    upload: InputReceiver,
    chunk: usize,
) -> Result<FsResponse, SendError> {
    Ok(match op {
        FsOp::Stat { path } => stat(&path).await,
        FsOp::List { path } => list(&path).await,
        FsOp::Read { path } => read(out, &path, chunk).await?,
        FsOp::Write { path, mode } => write(&path, mode, upload).await,
        FsOp::Mkdir { path } => done("mkdir", &path, tokio::fs::create_dir_all(&path).await),
        FsOp::Remove { path } => done("remove", &path, tokio::fs::remove_file(&path).await),
        FsOp::RemoveDir { path } => done("rmdir", &path, tokio::fs::remove_dir_all(&path).await),
        FsOp::Copy { src, dst } => {
            let copied = tokio::fs::copy(&src, &dst).await.map(drop);
            done("copy", &format!("{src} to {dst}"), copied)
        }
        FsOp::Rename { src, dst } => {
            let renamed = tokio::fs::rename(&src, &dst).await;
            done("rename", &format!("{src} to {dst}"), renamed)
        }
    })
}

/// Answers a malformed fs request on its id.
pub(crate) async fn malformed(out: &SessionOut, reason: &str) {
    let response = FsResponse::failed(format!("malformed request: {reason}"));
    if let Err(err) = out.terminal(&Message::FsResponse(response)).await {
        log_send_error(&err);
    }
}

fn failed(op: &str, what: &str, err: &io::Error) -> FsResponse {
    FsResponse::failed(format!("{op} {what}: {}", describe(err)))
}

fn done(op: &str, what: &str, result: io::Result<()>) -> FsResponse {
    match result {
        Ok(()) => FsResponse::ok(),
        Err(err) => failed(op, what, &err),
    }
}

/// Metadata of `path` itself (a symlink is reported as one, not followed).
async fn stat(path: &str) -> FsResponse {
    match tokio::fs::symlink_metadata(path).await {
        Ok(meta) => FsResponse {
            ok: true,
            error: None,
            data: Some(FsResponseData::Stat(entry(path.to_owned(), &meta))),
        },
        Err(err) => failed("stat", path, &err),
    }
}

/// Entries of a directory with their full paths, sorted by name. An entry
/// removed while the list is made is left out.
async fn list(path: &str) -> FsResponse {
    let dir = PathBuf::from(path);
    let listed = tokio::task::spawn_blocking(move || list_blocking(&dir)).await;
    match listed {
        Ok(Ok(entries)) => FsResponse {
            ok: true,
            error: None,
            data: Some(FsResponseData::List(entries)),
        },
        Ok(Err(err)) => failed("list", path, &err),
        Err(join) => failed("list", path, &io::Error::other(join)),
    }
}

fn list_blocking(dir: &Path) -> io::Result<Vec<FsEntry>> {
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let full = item.path();
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        entries.push((
            item.file_name(),
            entry(full.to_string_lossy().into_owned(), &meta),
        ));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries.into_iter().map(|(_, entry)| entry).collect())
}

fn entry(path: String, meta: &Metadata) -> FsEntry {
    let file_type = meta.file_type();
    let kind = if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_dir() {
        "dir"
    } else if file_type.is_file() {
        "file"
    } else {
        "other"
    };
    FsEntry {
        path,
        kind: kind.to_owned(),
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        modified: Some(meta.mtime()),
    }
}

/// Streams a file as data chunks of `chunk` bytes (the last may be
/// shorter), then answers. Only a shutdown or a dead console is an `Err`:
/// then nothing more is sent.
async fn read(out: &SessionOut, path: &str, chunk: usize) -> Result<FsResponse, SendError> {
    let chunk = chunk.clamp(1, FS_CHUNK_SIZE);
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(err) => return Ok(failed("read", path, &err)),
    };
    file.set_max_buf_size(chunk);
    let mut buf = vec![0; chunk];
    loop {
        let mut filled = 0;
        while filled < chunk {
            match file.read(&mut buf[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Ok(failed("read", path, &err)),
            }
        }
        if filled == 0 {
            return Ok(FsResponse::ok());
        }
        out.data(MessageType::FsData, &buf[..filled]).await?;
        if filled < chunk {
            return Ok(FsResponse::ok());
        }
    }
}

/// Receives the upload into the file until the empty chunk. `mode`, when
/// given, is the file's mode afterwards (new or not); a new file without it
/// gets 0644 less the umask.
async fn write(path: &str, mode: Option<u32>, mut upload: InputReceiver) -> FsResponse {
    let opened = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode.unwrap_or(DEFAULT_FILE_MODE))
        .open(path)
        .await;
    let mut file = match opened {
        Ok(file) => file,
        Err(err) => return failed("write", path, &err),
    };
    loop {
        let Some(chunk) = upload.recv().await else {
            return FsResponse::failed(format!(
                "write {path}: upload ended without its last chunk"
            ));
        };
        if chunk.is_end() {
            break;
        }
        if let Err(err) = file.write_all(chunk.data()).await {
            return failed("write", path, &err);
        }
    }
    // Dropping the queue discards anything sent after the last chunk.
    drop(upload);
    if let Err(err) = file.flush().await {
        return failed("write", path, &err);
    }
    if let Some(mode) = mode
        && let Err(err) = tokio::fs::set_permissions(path, Permissions::from_mode(mode)).await
    {
        return failed("chmod", path, &err);
    }
    FsResponse::ok()
}
