//! Relay settings, with defaults a sandbox can use as they are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_router::{RouterConfig, SlotLayout};

/// Which peers may connect, by uid (checked with `SO_PEERCRED`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedPeers {
    /// The relay's own uid and root (the default).
    OwnerAndRoot,
    /// Exactly these uids.
    Uids(Vec<u32>),
    /// Anyone who can open the socket (its file mode still applies).
    Any,
}

impl AllowedPeers {
    pub(crate) fn allows(&self, uid: u32, own_uid: u32) -> bool {
        match self {
            AllowedPeers::OwnerAndRoot => uid == own_uid || uid == 0,
            AllowedPeers::Uids(uids) => uids.contains(&uid),
            AllowedPeers::Any => true,
        }
    }
}

/// The handshake a client receives, which also decides how ids are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeForm {
    /// The 4-byte offset of microsandbox 0.4.x: 16 slots (the default).
    Legacy,
    /// The 8-byte `[start, end)` form of microsandbox 0.5+, with `slots` ranges.
    Bounds {
        /// Number of id ranges (and so the most clients at once).
        slots: u32,
    },
}

/// Settings of a relay. Build with [`RelayConfig::new`] and the `with_*`
/// methods; every field has a documented default.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub(crate) socket_path: PathBuf,
    pub(crate) socket_mode: u32,
    pub(crate) allowed_peers: AllowedPeers,
    pub(crate) handshake: HandshakeForm,
    pub(crate) max_clients: Option<u32>,
    pub(crate) client_queue_budget: usize,
    pub(crate) total_queue_budget: usize,
    pub(crate) stall_timeout: Duration,
    pub(crate) ready_timeout: Duration,
    pub(crate) quarantine_grace: Duration,
    pub(crate) shutdown_flush_deadline: Duration,
    pub(crate) max_sessions_per_client: usize,
    pub(crate) control_socket: Option<PathBuf>,
}

impl RelayConfig {
    /// Defaults for a relay listening at `socket_path`:
    ///
    /// | setting | default |
    /// |---|---|
    /// | socket mode | `0o600` |
    /// | allowed peers | the relay's uid and root |
    /// | handshake | legacy (16 slots) |
    /// | max clients | every slot of the handshake form |
    /// | per-client queue | 16 MiB |
    /// | all queues together | 256 MiB |
    /// | stall timeout | 5 s |
    /// | ready timeout | 60 s |
    /// | quarantine grace | 10 s |
    /// | shutdown flush deadline | 5 s |
    /// | sessions per client | 1024 |
    /// | control socket | none |
    pub fn new(socket_path: impl Into<PathBuf>) -> RelayConfig {
        RelayConfig {
            socket_path: socket_path.into(),
            socket_mode: 0o600,
            allowed_peers: AllowedPeers::OwnerAndRoot,
            handshake: HandshakeForm::Legacy,
            max_clients: None,
            client_queue_budget: 16 << 20,
            total_queue_budget: 256 << 20,
            stall_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(60),
            quarantine_grace: Duration::from_secs(10),
            shutdown_flush_deadline: Duration::from_secs(5),
            max_sessions_per_client: 1024,
            control_socket: None,
        }
    }

    /// Where the socket lives.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Permission bits of the socket file.
    pub fn with_socket_mode(mut self, mode: u32) -> Self {
        self.socket_mode = mode;
        self
    }

    /// Which peer uids may connect.
    pub fn with_allowed_peers(mut self, peers: AllowedPeers) -> Self {
        self.allowed_peers = peers;
        self
    }

    /// The handshake form (and id layout).
    pub fn with_handshake(mut self, form: HandshakeForm) -> Self {
        self.handshake = form;
        self
    }

    /// Most clients connected at once (at most the form's slot count).
    pub fn with_max_clients(mut self, max: u32) -> Self {
        self.max_clients = Some(max);
        self
    }

    /// Bytes queued toward one client before it is cut off as a slow
    /// consumer. A queued frame counts its wire bytes plus a fixed 128
    /// bytes, what its queue slot and allocation cost, so the budget bounds
    /// memory for tiny frames too.
    pub fn with_client_queue_budget(mut self, bytes: usize) -> Self {
        self.client_queue_budget = bytes;
        self
    }

    /// Bytes queued toward all clients together, counted the same way;
    /// past it, the client with the largest queue is cut off.
    pub fn with_total_queue_budget(mut self, bytes: usize) -> Self {
        self.total_queue_budget = bytes;
        self
    }

    /// How long a client's queue may make no progress before it is cut off.
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// How long to wait for the agent's `core.ready` before giving up.
    pub fn with_ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long a departed client's slot waits for its sessions to end.
    pub fn with_quarantine_grace(mut self, grace: Duration) -> Self {
        self.quarantine_grace = grace;
        self
    }

    /// How long a graceful shutdown may spend flushing queued frames.
    pub fn with_shutdown_flush_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_flush_deadline = deadline;
        self
    }

    /// Most sessions one client may have open.
    pub fn with_max_sessions_per_client(mut self, max: usize) -> Self {
        self.max_sessions_per_client = max;
        self
    }

    /// Also listen on `path` for operators: each connection receives one
    /// line of JSON, the [`StatsSnapshot`](crate::StatsSnapshot), and is
    /// closed. Created and checked like the main socket.
    pub fn with_control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.control_socket = Some(path.into());
        self
    }

    pub(crate) fn router_config(&self) -> RouterConfig {
        let layout = match self.handshake {
            HandshakeForm::Legacy => SlotLayout::Legacy,
            HandshakeForm::Bounds { slots } => SlotLayout::Bounds { slots },
        };
        RouterConfig {
            layout,
            max_clients: self.max_clients.unwrap_or_else(|| layout.slots()),
            quarantine_grace: self.quarantine_grace,
            max_sessions_per_client: self.max_sessions_per_client,
            client_queue_budget: self.client_queue_budget,
            total_queue_budget: self.total_queue_budget,
            frame_overhead: crate::outbox::FRAME_OVERHEAD,
        }
    }
}
