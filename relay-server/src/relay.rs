//! The running relay: its handle for the owner, the state its tasks
//! share, and the supervisor that starts and stops them in order.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use relay_codec::Frame;
use relay_router::{ClientId, Router};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent::{AgentSource, run_agent_reader, run_credit_writer};
use crate::client::{accept_loop, write_all_vectored};
use crate::config::RelayConfig;
use crate::error::{ClientFault, RelayError};
use crate::flow::Flow;
use crate::outbox::{Close, Outbox, Released};
use crate::ratelog::limited;
use crate::socket::{self, SocketFile};
use crate::stats::{Counters, HubView, RingOccupancy, StatsSnapshot};

/// Reports ring occupancy for the stats snapshot.
pub type RingProbe = Box<dyn Fn() -> RingOccupancy + Send + Sync>;

type AgentWriter = Box<dyn AsyncWrite + Send + Unpin>;

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
        agent_writer: AgentWriter,
        ring: Option<RingProbe>,
    ) -> Result<RelayHandle, RelayError> {
        let router = Router::new(config.router_config())?;
        let slots = router.config().layout.slots() as usize;
        let (listener, socket_file) = socket::bind(&config.socket_path, config.socket_mode)?;
        let control = match &config.control_socket {
            Some(path) => Some(socket::bind(path, config.socket_mode)?),
            None => None,
        };
        let (ready_tx, ready_rx) = watch::channel(false);
        let (drain_tx, drain_rx) = watch::channel(0);
        let span = tracing::info_span!("relay", socket = %config.socket_path.display());
        let shared = Arc::new(Shared {
            hub: Mutex::new(Hub {
                router,
                clients: (0..slots).map(|_| None).collect(),
                ready: None,
                flow: None,
            }),
            credit_due: Notify::new(),
            counters: Counters::default(),
            total_queued: AtomicUsize::new(0),
            agent_tx: tokio::sync::Mutex::new(agent_writer),
            stop: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            failure: Mutex::new(None),
            ready_tx,
            drain_tx,
            own_uid: socket::own_uid(),
            ring,
            config,
        });
        tracing::info!(parent: &span, "relay bound; waiting for core.ready");
        let agent = tokio::spawn(run_agent_reader(shared.clone(), source).instrument(span.clone()));
        let credit = tokio::spawn(run_credit_writer(shared.clone()).instrument(span.clone()));
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
                credit,
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
    shared: Arc<Shared>,
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
    shared: Arc<Shared>,
}

impl StatsHandle {
    /// Statistics now.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats()
    }
}

/// What every task of a relay shares.
pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    hub: Mutex<Hub>,
    pub(crate) counters: Counters,
    /// Bytes queued toward all clients.
    pub(crate) total_queued: AtomicUsize,
    /// Whoever holds this lock writes whole frames to the agent. Tokio's
    /// mutex is fair (FIFO), so clients take turns for ring space.
    agent_tx: tokio::sync::Mutex<AgentWriter>,
    /// Stop accepting and reading (graceful shutdown or a fatal error).
    pub(crate) stop: CancellationToken,
    /// Abandon writes in progress (the flush deadline passed).
    pub(crate) hard_stop: CancellationToken,
    failure: Mutex<Option<RelayError>>,
    pub(crate) ready_tx: watch::Sender<bool>,
    pub(crate) drain_tx: watch::Sender<u64>,
    /// Credit frames are waiting in the hub's [`Flow`].
    pub(crate) credit_due: Notify,
    own_uid: u32,
    ring: Option<RingProbe>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("socket", &self.config.socket_path)
            .finish_non_exhaustive()
    }
}

/// State that must change together: the router, the client table and the
/// flow credit of every session.
pub(crate) struct Hub {
    pub(crate) router: Router,
    /// Indexed by slot.
    pub(crate) clients: Vec<Option<Attached>>,
    /// The latest `core.ready` frame, exactly as the agent sent it.
    pub(crate) ready: Option<Frame>,
    /// Session credit, when the agent offered flow control.
    pub(crate) flow: Option<Flow>,
}

/// A connected client as the hub sees it.
pub(crate) struct Attached {
    pub(crate) id: ClientId,
    pub(crate) outbox: Arc<Outbox>,
    /// Stops the client's reader.
    pub(crate) stop_reading: CancellationToken,
    /// Abandons the client's writer's current write.
    pub(crate) abort_writing: CancellationToken,
    /// Woken when the agent returns credit to one of its sessions.
    pub(crate) credit: Arc<Notify>,
    /// Set when the relay cut the client off.
    pub(crate) fault: Option<ClientFault>,
}

impl Shared {
    pub(crate) fn hub(&self) -> MutexGuard<'_, Hub> {
        // Hub updates are written to keep it consistent at every step, so a
        // panic elsewhere does not make it unusable.
        self.hub
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stats(&self) -> StatsSnapshot {
        let view = {
            let mut hub = self.hub();
            hub.router.tick(Instant::now());
            HubView {
                router: hub.router.counters(),
                connected: hub.router.clients_connected(),
                quarantined: hub.router.slots_quarantined(),
                sessions_open: hub.router.sessions_open(),
                flow: hub.flow.as_ref().map(|f| (f.window(), f.sessions())),
            }
        };
        StatsSnapshot::build(
            &self.counters,
            view,
            self.total_queued.load(Ordering::Relaxed),
            self.ring.as_ref().map(|probe| probe()),
        )
    }

    /// Records a fatal error (the first one wins) and stops the relay.
    fn fail(&self, error: RelayError) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            tracing::error!(%error, "relay failing");
            *failure = Some(error);
        }
        drop(failure);
        self.stop.cancel();
    }

    fn take_failure(&self) -> Option<RelayError> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Writes whole frames to the agent, in order, as one turn.
    pub(crate) async fn write_to_agent<T: AsRef<[u8]>>(&self, frames: &[T]) -> Result<(), ()> {
        let write = async {
            let mut agent = self.agent_tx.lock().await;
            write_all_vectored(&mut **agent, frames).await?;
            agent.flush().await
        };
        let result = tokio::select! {
            result = write => result,
            () = self.hard_stop.cancelled() => return Err(()),
        };
        result.map_err(|error| {
            self.fail(if error.kind() == io::ErrorKind::BrokenPipe {
                RelayError::AgentClosed
            } else {
                RelayError::AgentIo(error)
            });
        })
    }

    /// Cuts a client off as a slow consumer. Never waits.
    pub(crate) fn cut_off(&self, hub: &mut Hub, client: ClientId, fault: ClientFault) {
        let Some(attached) = hub.clients[client.slot() as usize]
            .as_mut()
            .filter(|a| a.id == client && a.fault.is_none())
        else {
            return;
        };
        let (counter, dropped_counter) = match fault {
            ClientFault::TotalBudget { .. } => (
                &self.counters.slow_total_budget,
                &self.counters.dropped_slow_consumer,
            ),
            ClientFault::Stalled { .. } => (
                &self.counters.slow_stalled,
                &self.counters.dropped_slow_consumer,
            ),
            ClientFault::AgentRestarted { .. } => (
                &self.counters.restart_disconnects,
                &self.counters.dropped_client_gone,
            ),
            _ => (
                &self.counters.slow_over_budget,
                &self.counters.dropped_slow_consumer,
            ),
        };
        Counters::inc(counter);
        let (dropped, released) = attached.outbox.close(Close::Abort, &self.total_queued);
        Counters::add(dropped_counter, dropped as u64);
        limited!(
            warn,
            slot = attached.id.slot(),
            %fault,
            dropped_frames = dropped,
            "disconnecting client"
        );
        attached.fault = Some(fault);
        attached.stop_reading.cancel();
        attached.abort_writing.cancel();
        self.release_credit(hub, &released);
    }

    /// Agent frames that left the relay (written or discarded): their
    /// credit goes back to the agent.
    pub(crate) fn release_credit(&self, hub: &mut Hub, released: &Released) {
        let Some(flow) = hub.flow.as_mut() else {
            return;
        };
        for &(header, len) in released {
            flow.released(header, len);
        }
        self.wake_credit_task(hub);
    }

    /// Wakes the credit writer if credit frames are due.
    pub(crate) fn wake_credit_task(&self, hub: &Hub) {
        if hub.flow.as_ref().is_some_and(Flow::has_pending) {
            self.credit_due.notify_one();
        }
    }

    /// Whether a connecting peer's uid is allowed; counts and logs refusals.
    pub(crate) fn peer_allowed(&self, stream: &UnixStream) -> bool {
        match stream.peer_cred() {
            Ok(cred) if self.config.allowed_peers.allows(cred.uid(), self.own_uid) => true,
            Ok(cred) => {
                Counters::inc(&self.counters.peers_refused);
                limited!(
                    warn,
                    uid = cred.uid(),
                    "refusing a peer with a uid that is not allowed"
                );
                false
            }
            Err(error) => {
                Counters::inc(&self.counters.peers_refused);
                limited!(warn, %error, "refusing a peer whose credentials cannot be read");
                false
            }
        }
    }
}

/// Starts the relay's tasks and shuts them down in order.
/// What the supervisor runs and stops.
struct Tasks {
    shared: Arc<Shared>,
    listener: tokio::net::UnixListener,
    socket_file: SocketFile,
    agent: JoinHandle<Result<(), RelayError>>,
    credit: JoinHandle<()>,
    control: Option<(JoinHandle<()>, SocketFile)>,
}

async fn supervise(tasks: Tasks) -> Result<RelayExit, RelayError> {
    let Tasks {
        shared,
        listener,
        socket_file,
        mut agent,
        mut credit,
        control,
    } = tasks;
    let mut clients = JoinSet::new();
    let mut ready = shared.ready_tx.subscribe();
    let timeout = shared.config.ready_timeout;
    let ready = tokio::select! {
        biased;
        () = shared.stop.cancelled() => Err(None),
        result = &mut agent => Err(Some(agent_outcome(result))),
        () = tokio::time::sleep(timeout) => Err(Some(RelayError::ReadyTimeout { timeout })),
        ready = ready.wait_for(|ready| *ready) => Ok(ready.is_ok()),
    };
    let outcome = match ready {
        Ok(_) => {
            tracing::info!("agent ready; serving clients");
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => Ok(RelayExit::Shutdown),
                result = &mut agent => Err(agent_outcome(result)),
                () = accept_loop(&shared, &listener, &mut clients) => Ok(RelayExit::Shutdown),
            }
        }
        Err(None) => Ok(RelayExit::Shutdown),
        Err(Some(error)) => Err(error),
    };
    let outcome = match shared.take_failure() {
        Some(error) => Err(error),
        None => outcome,
    };
    shared.stop.cancel();
    drop(listener);
    drop(socket_file);
    if let Some((task, file)) = control {
        task.abort();
        drop(file);
    }

    // Readers stop; writers flush what is queued, then close their sockets.
    {
        let hub = shared.hub();
        for attached in hub.clients.iter().flatten() {
            let _ = attached.outbox.close(Close::Flush, &shared.total_queued);
        }
    }
    let deadline = shared.config.shutdown_flush_deadline;
    let deadline_at = tokio::time::Instant::now() + deadline;
    if tokio::time::timeout_at(deadline_at, drain(&mut clients))
        .await
        .is_err()
    {
        tracing::warn!(
            ?deadline,
            "flush deadline passed; dropping what is still queued"
        );
        shared.hard_stop.cancel();
        {
            let hub = shared.hub();
            for attached in hub.clients.iter().flatten() {
                let (dropped, _) = attached.outbox.close(Close::Abort, &shared.total_queued);
                Counters::add(&shared.counters.dropped_client_gone, dropped as u64);
                attached.abort_writing.cancel();
            }
        }
        drain(&mut clients).await;
    }
    // The credit writer ends between frames once stopped; past the deadline
    // a write it cannot finish is abandoned.
    if tokio::time::timeout_at(deadline_at, &mut credit)
        .await
        .is_err()
    {
        shared.hard_stop.cancel();
        let _ = credit.await;
    }
    shared.hard_stop.cancel();
    agent.abort();
    // Every writer is done: end the agent's stream (EOF) rather than leave it
    // open until the last handle to this relay goes.
    {
        let mut writer = shared.agent_tx.lock().await;
        let _ = tokio::time::timeout(deadline, writer.shutdown()).await;
    }
    tracing::info!(?outcome, "relay stopped");
    outcome
}

fn agent_outcome(joined: Result<Result<(), RelayError>, tokio::task::JoinError>) -> RelayError {
    match joined {
        Ok(Ok(())) => RelayError::AgentClosed,
        Ok(Err(error)) => error,
        Err(source) => RelayError::Task {
            task: "agent reader",
            source,
        },
    }
}

async fn drain(clients: &mut JoinSet<()>) {
    while clients.join_next().await.is_some() {}
}

/// Answers each connection on the control socket with one JSON line of stats.
async fn control_loop(shared: Arc<Shared>, listener: tokio::net::UnixListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        if !shared.peer_allowed(&stream) {
            continue;
        }
        let mut line = serde_json::to_vec(&shared.stats()).unwrap_or_default();
        line.push(b'\n');
        // A reader that does not take one small line is not waited for.
        let write =
            tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&line));
        let _ = write.await;
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
