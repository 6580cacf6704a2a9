//! Starting a relay, and the handles its owner keeps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use relay_router::Router;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent_reader::{AgentSource, run_agent_reader};
use crate::agent_writer::{AgentStream, run_agent_writer};
use crate::config::RelayConfig;
use crate::control::control_loop;
use crate::error::RelayError;
use crate::socket;
use crate::state::RelayState;
pub use crate::state::RingProbe;
use crate::stats::{RingOccupancy, StatsSnapshot};
use crate::supervisor::{Tasks, supervise};

/// Bytes of one client's frames the agent writer writes per turn when the
/// agent stream is not a ring (with a ring: a quarter of its capacity).
const DEFAULT_TURN_BYTES: usize = 64 * 1024;

/// How a relay ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayExit {
    /// [`RelayHandle::shutdown`] was called.
    Shutdown,
}

/// A running relay.
pub struct Relay;

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relay")
    }
}

impl Relay {
    /// Binds the socket and starts the relay over an agent byte stream (the
    /// relay end of a ring, a QEMU chardev socket, a child's stdio...).
    ///
    /// Binding errors are returned here; everything after (waiting for
    /// `core.ready`, serving, the agent stream ending) is reported by
    /// [`RelayHandle::join`]. Must be called within a Tokio runtime.
    pub fn start<R, W>(
        config: RelayConfig,
        agent_reader: R,
        agent_writer: W,
    ) -> Result<RelayHandle, RelayError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        Relay::start_with_probe(config, agent_reader, agent_writer, None)
    }

    /// Starts the relay over the relay end of a ring pair; the stats then
    /// include ring occupancy.
    pub fn start_on_ring(
        config: RelayConfig,
        ring: relay_ring::RelayEnd,
    ) -> Result<RelayHandle, RelayError> {
        let monitor = ring.monitor();
        let (reader, writer) = ring.into_split().map_err(RelayError::RingSetup)?;
        let probe: RingProbe = Box::new(move || {
            let stats = monitor.snapshot();
            RingOccupancy {
                guest_to_host: stats.guest_to_host.len,
                host_to_guest: stats.host_to_guest.len,
                capacity: stats.guest_to_host.capacity,
            }
        });
        Relay::start_inner(
            config,
            AgentSource::Ring(reader),
            Box::new(writer),
            Some(probe),
        )
    }

    /// Like [`Relay::start`], with a probe for ring occupancy in the stats.
    pub fn start_with_probe<R, W>(
        config: RelayConfig,
        agent_reader: R,
        agent_writer: W,
        ring: Option<RingProbe>,
    ) -> Result<RelayHandle, RelayError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let source = AgentSource::stream(Box::new(agent_reader));
        Relay::start_inner(config, source, Box::new(agent_writer), ring)
    }

    fn start_inner(
        config: RelayConfig,
        source: AgentSource,
        agent_writer: AgentStream,
        ring: Option<RingProbe>,
    ) -> Result<RelayHandle, RelayError> {
        let router = Router::new(config.router_config())?;
        let (listener, socket_file) = socket::bind(&config.socket_path, config.socket_mode)?;
        let control = match &config.control_socket {
            Some(path) => Some(socket::bind(path, config.socket_mode)?),
            None => None,
        };
        // A turn of a quarter ring lets a ping in beside a bulk upload
        // without cutting the upload into writes too small to be cheap.
        let turn_bytes = ring.as_ref().map_or(DEFAULT_TURN_BYTES, |probe| {
            (probe().capacity / 4).clamp(4096, 1 << 20)
        });
        let span = tracing::info_span!("relay", socket = %config.socket_path.display());
        let (shared, ready_rx, drain_rx) =
            RelayState::new(config, router, agent_writer, turn_bytes, ring);
        let shared = Arc::new(shared);
        tracing::info!(parent: &span, "relay bound; waiting for core.ready");
        let agent = tokio::spawn(run_agent_reader(shared.clone(), source).instrument(span.clone()));
        let finish = CancellationToken::new();
        let writer =
            tokio::spawn(run_agent_writer(shared.clone(), finish.clone()).instrument(span.clone()));
        let control = control.map(|(listener, file)| {
            let task =
                tokio::spawn(control_loop(shared.clone(), listener).instrument(span.clone()));
            (task, file)
        });
        let task = tokio::spawn(
            supervise(Tasks {
                shared: shared.clone(),
                listener,
                socket_file,
                agent,
                writer,
                finish,
                control,
            })
            .instrument(span),
        );
        Ok(RelayHandle {
            shared,
            task,
            ready: ready_rx,
            drain: drain_rx,
        })
    }
}

/// The owner's side of a running relay.
#[derive(Debug)]
pub struct RelayHandle {
    shared: Arc<RelayState>,
    task: JoinHandle<Result<RelayExit, RelayError>>,
    ready: watch::Receiver<bool>,
    drain: watch::Receiver<u64>,
}

impl RelayHandle {
    /// Waits until the agent's `core.ready` has arrived and clients are
    /// served. Returns `false` if the relay stopped first.
    pub async fn ready(&mut self) -> bool {
        let stopped = tokio::select! {
            ready = self.ready.wait_for(|ready| *ready) => return ready.is_ok(),
            () = self.shared.stop.cancelled() => true,
        };
        stopped && *self.ready.borrow()
    }

    /// A receiver whose value counts the `SHUTDOWN` frames clients have sent;
    /// it changes on each one (the VMM starts its stop sequence).
    pub fn drain_requests(&self) -> watch::Receiver<u64> {
        self.drain.clone()
    }

    /// Statistics now.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats()
    }

    /// A cheap handle for reading statistics from elsewhere.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            shared: self.shared.clone(),
        }
    }

    /// The socket path clients connect to.
    pub fn socket_path(&self) -> &Path {
        &self.shared.config.socket_path
    }

    /// Starts a graceful shutdown: stop accepting and reading, flush queued
    /// frames within the configured deadline, remove the socket file.
    /// [`join`](RelayHandle::join) returns when it is done.
    pub fn shutdown(&self) {
        self.shared.stop.cancel();
    }

    /// A handle that can start the shutdown from elsewhere (a signal handler).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            stop: self.shared.stop.clone(),
        }
    }

    /// Waits for the relay to end and returns why.
    pub async fn join(self) -> Result<RelayExit, RelayError> {
        match self.task.await {
            Ok(result) => result,
            Err(source) => Err(RelayError::Task {
                task: "supervisor",
                source,
            }),
        }
    }
}

/// Starts a relay's graceful shutdown.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    stop: CancellationToken,
}

impl ShutdownHandle {
    /// Same as [`RelayHandle::shutdown`].
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// Reads a relay's statistics; stays usable after the relay has ended.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    shared: Arc<RelayState>,
}

impl StatsHandle {
    /// Statistics now.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats()
    }
}

/// The path a relay would use by default: `$XDG_RUNTIME_DIR/agent-relay/agent.sock`,
/// or the temporary directory when that is unset.
pub fn default_socket_path() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join("agent-relay").join("agent.sock")
}
