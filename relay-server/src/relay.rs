//! The relay's tasks: the agent reader, the accept loop, and a reader and a
//! writer per client, with the supervisor that starts and stops them.

use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use relay_codec::{
    CodecError, Envelope, Frame, FrameAssembler, FrameCodec, Message, MessageType,
    payload::ExecSignal,
};
use relay_router::{AgentVerdict, ClientId, ClientVerdict, Router};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::RelayConfig;
use crate::error::{ClientFault, RelayError};
use crate::outbox::{Close, Outbox, Push, Take};
use crate::socket::{self, SocketFile};
use crate::stats::{Counters, RingOccupancy, StatsSnapshot};

/// Bytes a client reader asks for per read, and the agent reader's staging size.
const READ_CHUNK: usize = 64 * 1024;
/// Most queued frames a client writer hands to one `writev`.
const WRITE_BATCH: usize = 64;

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
        Relay::start_with_probe(config, reader, writer, Some(probe))
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
            }),
            counters: Counters::default(),
            total_queued: AtomicUsize::new(0),
            agent_tx: tokio::sync::Mutex::new(Box::new(agent_writer)),
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
        let agent = tokio::spawn(
            run_agent_reader(shared.clone(), Box::new(agent_reader)).instrument(span.clone()),
        );
        let control = control.map(|(listener, file)| {
            let task =
                tokio::spawn(control_loop(shared.clone(), listener).instrument(span.clone()));
            (task, file)
        });
        let task = tokio::spawn(
            supervise(shared.clone(), listener, socket_file, agent, control).instrument(span),
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

struct Shared {
    config: RelayConfig,
    hub: Mutex<Hub>,
    counters: Counters,
    total_queued: AtomicUsize,
    /// Whoever holds this lock writes whole frames to the agent. Tokio's
    /// mutex is fair (FIFO), so clients take turns for ring space.
    agent_tx: tokio::sync::Mutex<AgentWriter>,
    /// Stop accepting and reading (graceful shutdown or a fatal error).
    stop: CancellationToken,
    /// Abandon writes in progress (the flush deadline passed).
    hard_stop: CancellationToken,
    failure: Mutex<Option<RelayError>>,
    ready_tx: watch::Sender<bool>,
    drain_tx: watch::Sender<u64>,
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

/// State that must change together: the router and the client table.
struct Hub {
    router: Router,
    /// Indexed by slot.
    clients: Vec<Option<Attached>>,
    /// The latest `core.ready` frame, exactly as the agent sent it.
    ready: Option<Frame>,
}

struct Attached {
    id: ClientId,
    outbox: Arc<Outbox>,
    /// Stops the client's reader.
    stop_reading: CancellationToken,
    /// Abandons the client's writer's current write.
    abort_writing: CancellationToken,
    /// Set when the relay cut the client off.
    fault: Option<ClientFault>,
}

impl Shared {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        // Hub updates are written to keep it consistent at every step, so a
        // panic elsewhere does not make it unusable.
        self.hub
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stats(&self) -> StatsSnapshot {
        let (router, connected, quarantined, sessions) = {
            let mut hub = self.hub();
            hub.router.tick(Instant::now());
            (
                hub.router.counters(),
                hub.router.clients_connected(),
                hub.router.slots_quarantined(),
                hub.router.sessions_open(),
            )
        };
        StatsSnapshot::build(
            &self.counters,
            router,
            connected,
            quarantined,
            sessions,
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
    async fn write_to_agent<T: AsRef<[u8]>>(&self, frames: &[T]) -> Result<(), ()> {
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
    fn cut_off(&self, attached: &mut Attached, fault: ClientFault) {
        if attached.fault.is_some() {
            return;
        }
        let counter = match fault {
            ClientFault::TotalBudget { .. } => &self.counters.slow_total_budget,
            ClientFault::Stalled { .. } => &self.counters.slow_stalled,
            _ => &self.counters.slow_over_budget,
        };
        Counters::inc(counter);
        let dropped = attached.outbox.close(Close::Abort, &self.total_queued);
        Counters::add(&self.counters.dropped_slow_consumer, dropped as u64);
        tracing::warn!(
            slot = attached.id.slot(),
            %fault,
            dropped_frames = dropped,
            "disconnecting slow consumer"
        );
        attached.fault = Some(fault);
        attached.stop_reading.cancel();
        attached.abort_writing.cancel();
    }
}

/// Starts the relay's tasks and shuts them down in order.
async fn supervise(
    shared: Arc<Shared>,
    listener: tokio::net::UnixListener,
    socket_file: SocketFile,
    mut agent: JoinHandle<Result<(), RelayError>>,
    control: Option<(JoinHandle<()>, SocketFile)>,
) -> Result<RelayExit, RelayError> {
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
            attached.outbox.close(Close::Flush, &shared.total_queued);
        }
    }
    let deadline = shared.config.shutdown_flush_deadline;
    if tokio::time::timeout(deadline, drain(&mut clients))
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
                let dropped = attached.outbox.close(Close::Abort, &shared.total_queued);
                Counters::add(&shared.counters.dropped_client_gone, dropped as u64);
                attached.abort_writing.cancel();
            }
        }
        drain(&mut clients).await;
    }
    shared.hard_stop.cancel();
    agent.abort();
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

/// Accepts clients until the relay stops. Never returns otherwise.
async fn accept_loop(
    shared: &Arc<Shared>,
    listener: &tokio::net::UnixListener,
    clients: &mut JoinSet<()>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept:
                    // not fatal. Pause briefly so a persistent error cannot spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            Some(_) = clients.join_next() => continue,
        };
        match stream.peer_cred() {
            Ok(cred)
                if shared
                    .config
                    .allowed_peers
                    .allows(cred.uid(), shared.own_uid) => {}
            Ok(cred) => {
                Counters::inc(&shared.counters.peers_refused);
                tracing::warn!(
                    uid = cred.uid(),
                    "refusing a peer with a uid that is not allowed"
                );
                continue;
            }
            Err(error) => {
                Counters::inc(&shared.counters.peers_refused);
                tracing::warn!(%error, "refusing a peer whose credentials cannot be read");
                continue;
            }
        }
        let Some((client, span)) = admit(shared) else {
            continue;
        };
        clients.spawn(serve_client(shared.clone(), stream, client).instrument(span));
    }
}

/// Answers each connection on the control socket with one JSON line of stats.
async fn control_loop(shared: Arc<Shared>, listener: tokio::net::UnixListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let allowed = stream.peer_cred().is_ok_and(|cred| {
            shared
                .config
                .allowed_peers
                .allows(cred.uid(), shared.own_uid)
        });
        if !allowed {
            Counters::inc(&shared.counters.peers_refused);
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

/// Lets a client in: takes a slot and queues its handshake.
fn admit(shared: &Shared) -> Option<(ClientId, tracing::Span)> {
    let mut hub = shared.hub();
    let admission = match hub.router.connect(Instant::now()) {
        Ok(admission) => admission,
        Err(refusal) => {
            tracing::warn!(%refusal, "refusing connection");
            return None;
        }
    };
    let Some(ready) = hub.ready.clone() else {
        unreachable!("clients are accepted only after core.ready");
    };
    let mut greeting = BytesMut::new();
    admission.handshake.encode(&ready, &mut greeting);
    let outbox = Arc::new(Outbox::new(shared.config.client_queue_budget));
    if outbox.push(greeting.freeze(), &shared.total_queued) != Push::Queued {
        tracing::error!("client queue budget is smaller than the handshake; refusing");
        hub.router.disconnect(admission.client, Instant::now());
        return None;
    }
    let slot = admission.client.slot();
    let span = tracing::info_span!(
        "client",
        slot,
        first_id = admission.ids.first(),
        last_id = admission.ids.last(),
    );
    tracing::debug!(parent: &span, "client admitted");
    hub.clients[slot as usize] = Some(Attached {
        id: admission.client,
        outbox,
        stop_reading: shared.stop.child_token(),
        abort_writing: CancellationToken::new(),
        fault: None,
    });
    Some((admission.client, span))
}

/// Why a client's reader stopped.
enum ReaderEnd {
    Eof,
    Io(io::Error),
    Fault(ClientFault),
    Stopped,
}

async fn serve_client(shared: Arc<Shared>, stream: UnixStream, client: ClientId) {
    let Some((outbox, stop_reading, abort_writing)) = ({
        let hub = shared.hub();
        hub.clients[client.slot() as usize]
            .as_ref()
            .filter(|a| a.id == client)
            .map(|a| {
                (
                    a.outbox.clone(),
                    a.stop_reading.clone(),
                    a.abort_writing.clone(),
                )
            })
    }) else {
        return;
    };
    let (rd, wr) = stream.into_split();
    let writer = tokio::spawn(
        run_client_writer(
            shared.clone(),
            wr,
            client,
            outbox.clone(),
            abort_writing,
            stop_reading.clone(),
        )
        .in_current_span(),
    );
    let end = run_client_reader(&shared, rd, client, &stop_reading).await;

    let fault = match &end {
        ReaderEnd::Fault(fault) => {
            if matches!(fault, ClientFault::Malformed(_)) {
                Counters::inc(&shared.counters.clients_malformed);
            }
            tracing::warn!(%fault, "disconnecting client");
            Some(*fault)
        }
        ReaderEnd::Io(error) => {
            tracing::debug!(%error, "client connection failed");
            None
        }
        ReaderEnd::Eof => {
            tracing::debug!("client disconnected");
            None
        }
        ReaderEnd::Stopped => None,
    };
    let shutting_down = shared.stop.is_cancelled();
    let kills = {
        let mut hub = shared.hub();
        let kills = hub.router.disconnect(client, Instant::now());
        let mode = if shutting_down && fault.is_none() {
            Close::Flush
        } else {
            Close::Abort
        };
        let dropped = outbox.close(mode, &shared.total_queued);
        Counters::add(&shared.counters.dropped_client_gone, dropped as u64);
        let slot = &mut hub.clients[client.slot() as usize];
        if slot.as_ref().is_some_and(|a| a.id == client) {
            *slot = None;
        }
        kills
    };
    if !kills.is_empty() {
        tracing::info!(sessions = ?kills, "killing the sessions of a departed client");
        let frames: Vec<Frame> = kills
            .iter()
            .filter_map(|&id| {
                Message::ExecSignal(ExecSignal { signal: 9 })
                    .to_frame(id)
                    .ok()
            })
            .collect();
        if shared.write_to_agent(&frames).await.is_ok() {
            Counters::add(&shared.counters.kills_sent, frames.len() as u64);
        }
    }
    if writer.await.is_err() {
        tracing::error!("client writer task failed");
    }
}

async fn run_client_reader(
    shared: &Shared,
    mut rd: OwnedReadHalf,
    client: ClientId,
    stop: &CancellationToken,
) -> ReaderEnd {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut codec = FrameCodec::new();
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            () = stop.cancelled() => return ReaderEnd::Stopped,
            read = rd.read_buf(&mut buf) => read,
        };
        let eof = match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => return ReaderEnd::Io(error),
        };
        let mut malformed = None;
        loop {
            let decoded = if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match decoded {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(CodecError::Frame(error)) => {
                    malformed = Some(ClientFault::Malformed(error.into()));
                    break;
                }
                Err(CodecError::Io(error)) => return ReaderEnd::Io(error),
            }
        }
        // Frames before a malformed one are valid and still go through.
        if let Some(fault) = forward(shared, client, &mut frames).await {
            return ReaderEnd::Fault(fault);
        }
        if let Some(fault) = malformed {
            return ReaderEnd::Fault(fault);
        }
        if eof {
            return ReaderEnd::Eof;
        }
    }
}

/// Checks a batch of client frames with the router and writes the
/// accepted ones to the agent. Returns the fault that ends the client.
async fn forward(
    shared: &Shared,
    client: ClientId,
    frames: &mut Vec<Frame>,
) -> Option<ClientFault> {
    if frames.is_empty() {
        return None;
    }
    let mut shutdowns = 0u64;
    let mut fault = None;
    {
        let mut hub = shared.hub();
        let mut keep = 0;
        for frame in frames.iter() {
            match hub.router.client_frame(client, frame.header()) {
                ClientVerdict::Forward { shutdown } => {
                    keep += 1;
                    shutdowns += u64::from(shutdown);
                }
                ClientVerdict::Reject(reason) => {
                    fault = Some(ClientFault::Rejected(reason));
                    break;
                }
                ClientVerdict::Stale => break,
            }
        }
        frames.truncate(keep);
    }
    if !frames.is_empty() {
        let bytes: usize = frames.iter().map(Frame::wire_len).sum();
        if shared.write_to_agent(frames).await.is_err() {
            frames.clear();
            return fault;
        }
        Counters::add(&shared.counters.client_frames, frames.len() as u64);
        Counters::add(&shared.counters.client_bytes, bytes as u64);
    }
    frames.clear();
    if shutdowns > 0 {
        tracing::info!("client requested sandbox shutdown");
        shared.drain_tx.send_modify(|n| *n += shutdowns);
    }
    fault
}

async fn run_client_writer(
    shared: Arc<Shared>,
    mut wr: OwnedWriteHalf,
    client: ClientId,
    outbox: Arc<Outbox>,
    abort: CancellationToken,
    stop_reading: CancellationToken,
) {
    let stall = shared.config.stall_timeout;
    let mut batch: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH);
    loop {
        let bytes = match outbox.take(WRITE_BATCH, &mut batch) {
            Take::Batch(bytes) => bytes,
            Take::Idle => {
                tokio::select! {
                    () = outbox.notified() => {}
                    () = abort.cancelled() => break,
                }
                continue;
            }
            Take::Done => break,
        };
        let frames = batch.len();
        let result = tokio::select! {
            result = write_batch(&mut wr, &batch, stall) => result,
            () = abort.cancelled() => Err(WriteEnd::Aborted),
        };
        batch.clear();
        outbox.written(bytes, &shared.total_queued);
        match result {
            Ok(()) => {
                Counters::add(&shared.counters.delivered_frames, frames as u64);
                Counters::add(&shared.counters.delivered_bytes, bytes as u64);
            }
            Err(WriteEnd::Stalled) => {
                let mut hub = shared.hub();
                if let Some(attached) = hub.clients[client.slot() as usize]
                    .as_mut()
                    .filter(|a| a.id == client)
                {
                    shared.cut_off(attached, ClientFault::Stalled { timeout: stall });
                }
                break;
            }
            Err(WriteEnd::Io(error)) => {
                tracing::debug!(%error, "client write failed");
                break;
            }
            Err(WriteEnd::Aborted) => break,
        }
    }
    // Whatever ended the writer, the reader has no reason to go on.
    stop_reading.cancel();
    let _ = wr.shutdown().await;
}

enum WriteEnd {
    Stalled,
    Io(io::Error),
    Aborted,
}

/// Writes a batch with `writev`, failing if no byte moves for `stall`.
async fn write_batch(
    wr: &mut OwnedWriteHalf,
    batch: &[Bytes],
    stall: std::time::Duration,
) -> Result<(), WriteEnd> {
    let mut index = 0;
    let mut offset = 0;
    while index < batch.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&batch[index][offset..])
            .chain(batch[index + 1..].iter().map(|b| &b[..]))
            .map(IoSlice::new)
            .collect();
        let written = match tokio::time::timeout(stall, wr.write_vectored(&slices)).await {
            Err(_) => return Err(WriteEnd::Stalled),
            Ok(Err(error)) => return Err(WriteEnd::Io(error)),
            Ok(Ok(0)) => return Err(WriteEnd::Io(io::ErrorKind::WriteZero.into())),
            Ok(Ok(n)) => n,
        };
        advance(batch, &mut index, &mut offset, written);
    }
    Ok(())
}

/// Moves a (buffer index, offset) cursor forward by `n` bytes.
fn advance<T: AsRef<[u8]>>(batch: &[T], index: &mut usize, offset: &mut usize, mut n: usize) {
    while n > 0 && *index < batch.len() {
        let left = batch[*index].as_ref().len() - *offset;
        if n < left {
            *offset += n;
            return;
        }
        n -= left;
        *index += 1;
        *offset = 0;
    }
}

/// Writes every buffer completely, in order.
async fn write_all_vectored<W: AsyncWrite + Unpin + ?Sized, T: AsRef<[u8]>>(
    writer: &mut W,
    frames: &[T],
) -> io::Result<()> {
    let mut index = 0;
    let mut offset = 0;
    while index < frames.len() {
        let slices: Vec<IoSlice<'_>> = std::iter::once(&frames[index].as_ref()[offset..])
            .chain(
                frames[index + 1..]
                    .iter()
                    .take(WRITE_BATCH)
                    .map(AsRef::as_ref),
            )
            .map(IoSlice::new)
            .collect();
        let written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        advance(frames, &mut index, &mut offset, written);
    }
    Ok(())
}

/// Reads frames from the agent and routes them; never waits for a client.
async fn run_agent_reader(
    shared: Arc<Shared>,
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
) -> Result<(), RelayError> {
    let mut staging = vec![0u8; READ_CHUNK];
    let mut assembler = FrameAssembler::new(FrameCodec::new());
    let mut frames = Vec::new();
    loop {
        let n = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return Ok(()),
            read = reader.read(&mut staging) => read.map_err(RelayError::AgentIo)?,
        };
        if n == 0 {
            assembler.finish().map_err(RelayError::AgentProtocol)?;
            tracing::warn!("agent stream ended");
            return Err(RelayError::AgentClosed);
        }
        let mut input = &staging[..n];
        let mut malformed = None;
        while !input.is_empty() {
            match assembler.push(input) {
                Ok((used, frame)) => {
                    input = &input[used..];
                    frames.extend(frame);
                }
                Err(error) => {
                    malformed = Some(error);
                    break;
                }
            }
        }
        route(&shared, &mut frames);
        if let Some(error) = malformed {
            return Err(RelayError::AgentProtocol(error));
        }
    }
}

fn is_ready(frame: &Frame) -> bool {
    Envelope::parse(frame.body())
        .is_ok_and(|envelope| envelope.message_type == MessageType::Ready.wire_name())
}

/// Routes a batch of agent frames under one lock of the hub.
fn route(shared: &Shared, frames: &mut Vec<Frame>) {
    if frames.is_empty() {
        return;
    }
    let counters = &shared.counters;
    let mut hub = shared.hub();
    for frame in frames.drain(..) {
        Counters::inc(&counters.agent_frames);
        Counters::add(&counters.agent_bytes, frame.wire_len() as u64);
        if hub.ready.is_none() {
            if is_ready(&frame) {
                hub.ready = Some(frame);
                shared.ready_tx.send_replace(true);
            } else {
                Counters::inc(&counters.pre_ready_discarded);
            }
            continue;
        }
        match hub.router.agent_frame(frame.header()) {
            AgentVerdict::Deliver(client) => deliver(shared, &mut hub, client, frame),
            AgentVerdict::Control => {
                if is_ready(&frame) {
                    tracing::info!("agent sent core.ready again; replacing the cached one");
                    hub.ready = Some(frame);
                    Counters::inc(&counters.ready_replaced);
                } else {
                    Counters::inc(&counters.control_discarded);
                }
            }
            AgentVerdict::Drop(reason) => {
                tracing::debug!(id = frame.id(), %reason, "dropping agent frame");
            }
        }
    }
}

/// Queues a frame for its client, enforcing the per-client and total budgets.
fn deliver(shared: &Shared, hub: &mut Hub, client: ClientId, frame: Frame) {
    let len = frame.wire_len();
    let budget = shared.config.total_queue_budget;
    while shared.total_queued.load(Ordering::Relaxed) + len > budget {
        let victim = hub
            .clients
            .iter_mut()
            .flatten()
            .filter(|a| a.fault.is_none())
            .max_by_key(|a| a.outbox.pending_bytes());
        let Some(victim) = victim else { break };
        let queued = victim.outbox.pending_bytes();
        shared.cut_off(victim, ClientFault::TotalBudget { queued });
    }
    let Some(attached) = hub.clients[client.slot() as usize]
        .as_mut()
        .filter(|a| a.id == client)
    else {
        Counters::inc(&shared.counters.dropped_client_gone);
        return;
    };
    match attached
        .outbox
        .push(frame.into_wire(), &shared.total_queued)
    {
        Push::Queued => {}
        Push::Closed if attached.fault.is_some() => {
            Counters::inc(&shared.counters.dropped_slow_consumer);
        }
        Push::Closed => Counters::inc(&shared.counters.dropped_client_gone),
        Push::OverBudget => {
            let budget = shared.config.client_queue_budget;
            shared.cut_off(attached, ClientFault::OverBudget { budget });
            Counters::inc(&shared.counters.dropped_slow_consumer);
        }
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
