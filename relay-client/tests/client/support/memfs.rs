//! The fake agent's file system: directories and files in memory, answering
//! `core.fs.request` operations the way the reference agent does.

use std::collections::{BTreeMap, BTreeSet};

use relay_codec::payload::{FsEntry, FsOp, FsResponse, FsResponseData};

pub(super) const NO_SUCH_FILE: &str = "No such file or directory (os error 2)";

/// What an operation asks of the agent beyond its response.
pub(super) enum FsOutcome {
    /// Answered at once.
    Done(FsResponse),
    /// A read: these bytes in `core.fs.data` chunks, then success.
    Download(Vec<u8>),
    /// A write: take the upload that follows into this path.
    Upload(String),
}

/// Directories and files, by absolute path.
pub(super) struct MemFs {
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
}

impl MemFs {
    /// `/` and `/tmp`, empty.
    pub(super) fn new() -> MemFs {
        MemFs {
            files: BTreeMap::new(),
            dirs: ["/", "/tmp"].into_iter().map(String::from).collect(),
        }
    }

    /// Carries out one operation.
    pub(super) fn apply(&mut self, op: FsOp) -> FsOutcome {
        let response = match op {
            FsOp::Stat { path } => match self.entry(&path) {
                Some(entry) => found(FsResponseData::Stat(entry)),
                None => FsResponse::failed(NO_SUCH_FILE),
            },
            FsOp::List { path } => self.list(&path),
            FsOp::Read { path } => {
                return match self.files.get(&path) {
                    Some(data) => FsOutcome::Download(data.clone()),
                    None => FsOutcome::Done(FsResponse::failed(NO_SUCH_FILE)),
                };
            }
            FsOp::Write { path, .. } => {
                if path.starts_with("/readonly/") {
                    FsResponse::failed("Read-only file system (os error 30)")
                } else if !self.dirs.contains(&parent(&path)) {
                    FsResponse::failed(NO_SUCH_FILE)
                } else {
                    return FsOutcome::Upload(path);
                }
            }
            FsOp::Mkdir { path } => {
                let mut dir = path;
                while dir != "/" {
                    let up = parent(&dir);
                    self.dirs.insert(dir);
                    dir = up;
                }
                FsResponse::ok()
            }
            FsOp::Remove { path } => match self.files.remove(&path) {
                Some(_) => FsResponse::ok(),
                None => FsResponse::failed(NO_SUCH_FILE),
            },
            FsOp::RemoveDir { path } => self.remove_dir(&path),
            FsOp::Copy { src, dst } => match self.files.get(&src).cloned() {
                Some(data) if self.dirs.contains(&parent(&dst)) => {
                    self.files.insert(dst, data);
                    FsResponse::ok()
                }
                _ => FsResponse::failed(NO_SUCH_FILE),
            },
            FsOp::Rename { src, dst } => match self.files.remove(&src) {
                Some(data) => {
                    self.files.insert(dst, data);
                    FsResponse::ok()
                }
                None => FsResponse::failed(NO_SUCH_FILE),
            },
        };
        FsOutcome::Done(response)
    }

    /// Keeps a finished upload.
    pub(super) fn store(&mut self, path: String, data: Vec<u8>) {
        self.files.insert(path, data);
    }

    fn list(&self, path: &str) -> FsResponse {
        if !self.dirs.contains(path) {
            return FsResponse::failed(NO_SUCH_FILE);
        }
        let entries = self
            .dirs
            .iter()
            .chain(self.files.keys())
            .filter(|child| *child != "/" && parent(child) == path)
            .filter_map(|child| self.entry(child))
            .collect();
        found(FsResponseData::List(entries))
    }

    fn remove_dir(&mut self, path: &str) -> FsResponse {
        if !self.dirs.remove(path) {
            return FsResponse::failed(NO_SUCH_FILE);
        }
        let prefix = format!("{path}/");
        self.dirs.retain(|dir| !dir.starts_with(&prefix));
        self.files.retain(|file, _| !file.starts_with(&prefix));
        FsResponse::ok()
    }

    fn entry(&self, path: &str) -> Option<FsEntry> {
        let (kind, size) = if self.dirs.contains(path) {
            ("dir", 0)
        } else {
            ("file", self.files.get(path)?.len() as u64)
        };
        Some(FsEntry {
            path: path.to_owned(),
            kind: kind.to_owned(),
            size,
            mode: 0o644,
            modified: Some(1_700_000_000),
        })
    }
}

fn found(data: FsResponseData) -> FsResponse {
    FsResponse {
        ok: true,
        error: None,
        data: Some(data),
    }
}

fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_owned(),
        Some((up, _)) => up.to_owned(),
    }
}
