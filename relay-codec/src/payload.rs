//! Payload structs of the generation-1 messages (the CBOR inside `"p"`).
//!
//! Field names, order and optional-field encoding match microsandbox-protocol
//! 0.4.3 exactly, so both sides produce identical bytes.

use serde::{Deserialize, Serialize};

/// `core.ready`: the agent is up. Times are nanoseconds since the guest booted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// When the kernel started.
    pub boot_time_ns: u64,
    /// When the agent's process started.
    pub init_time_ns: u64,
    /// When the agent was ready to serve.
    pub ready_time_ns: u64,
    /// The agent offers per-session credit flow control (an extension: it is
    /// left out of the encoding when absent, so the payload stays
    /// byte-identical to generation 1, and older decoders skip it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowWindow>,
}

/// The flow-control offer in `core.ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowWindow {
    /// Bytes of credit per session and direction.
    pub window: u32,
}

/// `core.flow.accept`: the relay takes up the agent's flow-control offer,
/// with the window both will use (the relay may clamp the offer). Sent on
/// [`CONNECTION_ID`](crate::CONNECTION_ID) before any client frame; until
/// it arrives the agent speaks plain generation 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowAccept {
    /// Bytes of credit per session and direction.
    pub window: u32,
}

/// `core.flow.credit`: lets the peer send `bytes` more bytes of frames on
/// session `id`. Travels on [`CONNECTION_ID`](crate::CONNECTION_ID),
/// between relay and agent only, after `core.flow.accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCredit {
    /// The session credited.
    pub id: u32,
    /// Bytes of frames granted.
    pub bytes: u32,
}

/// `core.exec.request`: run a command; opens a session on the frame's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program to run (looked up in `PATH` when it has no slash).
    pub cmd: String,
    /// Arguments after the program name.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment entries, each `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User to run as (name or numeric uid).
    #[serde(default)]
    pub user: Option<String>,
    /// Run under a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
    /// Terminal rows (with `tty`).
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// Terminal columns (with `tty`).
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// Resource limits to set before the program starts.
    #[serde(default)]
    pub rlimits: Vec<ExecRlimit>,
}

impl ExecRequest {
    /// A request for `cmd` with `args` and every other field at its default.
    pub fn new(cmd: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ExecRequest {
            cmd: cmd.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            user: None,
            tty: false,
            rows: default_rows(),
            cols: default_cols(),
            rlimits: Vec::new(),
        }
    }
}

fn default_rows() -> u16 {
    24
}

fn default_cols() -> u16 {
    80
}

/// One resource limit of an [`ExecRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRlimit {
    /// Lower-case resource name as in `setrlimit(2)` without `RLIMIT_` (`nofile`, `nproc`...).
    pub resource: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// `core.exec.started`: the process is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStarted {
    /// Process id in the guest.
    pub pid: u32,
}

/// A chunk of bytes: `core.exec.stdin`, `core.exec.stdout`, `core.exec.stderr`
/// and `core.fs.data` all carry this payload.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// The bytes (an empty chunk ends stdin or an fs upload).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Data")
            .field("len", &self.data.len())
            .finish()
    }
}

impl From<Vec<u8>> for Data {
    fn from(data: Vec<u8>) -> Data {
        Data { data }
    }
}

/// `core.exec.exited`: the process ended; closes the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExited {
    /// Exit status; 128 + signal number when a signal ended the process.
    pub code: i32,
}

/// `core.exec.resize`: new terminal size of a tty session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// `core.exec.signal`: deliver a signal to the session's process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSignal {
    /// Signal number (9 is SIGKILL).
    pub signal: i32,
}

/// The filesystem operation of a `core.fs.request` (an externally tagged enum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsOp {
    /// Metadata of one path.
    Stat {
        /// Path in the guest.
        path: String,
    },
    /// Entries of a directory.
    List {
        /// Directory path.
        path: String,
    },
    /// Read a file: the agent streams `core.fs.data` chunks, then a response.
    Read {
        /// File path.
        path: String,
    },
    /// Write a file: the client streams `core.fs.data` chunks, an empty one last.
    Write {
        /// File path.
        path: String,
        /// Permission bits for a new file.
        #[serde(default)]
        mode: Option<u32>,
    },
    /// Create a directory and its parents.
    Mkdir {
        /// Directory path.
        path: String,
    },
    /// Remove a file.
    Remove {
        /// File path.
        path: String,
    },
    /// Remove a directory and everything under it.
    RemoveDir {
        /// Directory path.
        path: String,
    },
    /// Copy a file.
    Copy {
        /// Source path.
        src: String,
        /// Destination path.
        dst: String,
    },
    /// Rename (move) a path.
    Rename {
        /// Source path.
        src: String,
        /// Destination path.
        dst: String,
    },
}

/// `core.fs.request`: opens a session on the frame's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRequest {
    /// What to do.
    pub op: FsOp,
}

/// Metadata of one filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsEntry {
    /// The path as requested (stat) or the entry's full path (list).
    pub path: String,
    /// `"file"`, `"dir"`, `"symlink"` or `"other"`.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time in seconds since the Unix epoch.
    pub modified: Option<i64>,
}

/// Data of a successful `core.fs.response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsResponseData {
    /// Answer to [`FsOp::Stat`].
    Stat(FsEntry),
    /// Answer to [`FsOp::List`].
    List(Vec<FsEntry>),
}

/// `core.fs.response`: the end of an fs session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsResponse {
    /// Whether the operation succeeded.
    pub ok: bool,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// What it returned (stat and list).
    #[serde(default)]
    pub data: Option<FsResponseData>,
}

impl FsResponse {
    /// A success with no data.
    pub fn ok() -> FsResponse {
        FsResponse {
            ok: true,
            error: None,
            data: None,
        }
    }

    /// A failure with its reason.
    pub fn failed(error: impl Into<String>) -> FsResponse {
        FsResponse {
            ok: false,
            error: Some(error.into()),
            data: None,
        }
    }
}
