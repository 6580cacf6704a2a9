//! The listening socket: created safely, never stolen from a live relay,
//! removed on the way out only if it is still ours.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::error::RelayError;

/// The bound socket file; removes it when dropped if it is still the one we made.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Another relay may have replaced a stale file since; leave theirs alone.
        if let Ok(meta) = fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Binds `path`: creates a missing parent directory with mode 0700, replaces
/// an existing socket file only if nothing accepts connections on it, and
/// sets `mode` on the new socket before it appears at `path` (it is bound
/// under a temporary name, given its mode, then linked into place, which
/// fails rather than replace a socket another relay made meanwhile).
pub(crate) fn bind(path: &Path, mode: u32) -> Result<(UnixListener, SocketFile), RelayError> {
    let bind_error = |source: io::Error| RelayError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(bind_error)?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(RelayError::AlreadyServing {
                        path: path.to_owned(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale socket file");
                    fs::remove_file(path).map_err(bind_error)?;
                }
                Err(e) => return Err(bind_error(e)),
            }
        }
        Ok(_) => {
            return Err(RelayError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_error(e)),
    }
    let temporary = temporary_name(path);
    let _ = fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary).map_err(bind_error)?;
    let placed = fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))
        .and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    match placed {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(RelayError::AlreadyServing {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(bind_error(e)),
    }
    let meta = fs::symlink_metadata(path).map_err(bind_error)?;
    let file = SocketFile {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok((listener, file))
}

/// A sibling of `path` private to this process.
fn temporary_name(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.binding", std::process::id()));
    path.with_file_name(name)
}

/// The uid this process runs as.
pub(crate) fn own_uid() -> u32 {
    #[allow(unsafe_code, reason = "the one libc call of this crate, wrapped once")]
    // SAFETY: getuid(2) has no preconditions, cannot fail and touches no memory.
    unsafe {
        libc::getuid()
    }
}
