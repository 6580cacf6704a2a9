//! What every task of a relay shares: the switchboard (the router and the client
//! table under one lock), the agent lanes, counters and stop tokens; and
//! carrying out the router's actions.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use relay_codec::Frame;
use relay_router::{Action, ClientId, CutReason, Refusal, Router};
use tokio::net::UnixStream;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::agent_writer::{AgentStream, Lanes};
use crate::config::RelayConfig;
use crate::error::{ClientFault, RelayError};
use crate::outbox::{Close, Outbox};
use crate::ratelog::limited;
use crate::stats::{BoardView, Counters, RingOccupancy, StatsSnapshot};

/// Reports ring occupancy for the stats snapshot.
pub type RingProbe = Box<dyn Fn() -> RingOccupancy + Send + Sync>;

/// What every task of a relay shares.
pub(crate) struct RelayState {
    pub(crate) config: RelayConfig,
    board: Mutex<Switchboard>,
    pub(crate) counters: Counters,
    pub(crate) lanes: Lanes,
    /// Stop accepting and reading (graceful shutdown or a fatal error).
    pub(crate) stop: CancellationToken,
    /// Abandon writes in progress (the flush deadline passed).
    pub(crate) hard_stop: CancellationToken,
    failure: Mutex<Option<RelayError>>,
    pub(crate) ready_tx: watch::Sender<bool>,
    pub(crate) drain_tx: watch::Sender<u64>,
    own_uid: u32,
    ring: Option<RingProbe>,
}

impl std::fmt::Debug for RelayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayState")
            .field("socket", &self.config.socket_path)
            .finish_non_exhaustive()
    }
}

/// State that must change together: the router and the client table.
pub(crate) struct Switchboard {
    pub(crate) router: Router,
    /// Indexed by slot.
    pub(crate) clients: Vec<Option<ClientEntry>>,
    /// The latest `core.ready` frame, exactly as the agent sent it.
    pub(crate) ready: Option<Frame>,
    /// The window to accept, until the agent writer has written it.
    pub(crate) accept: Option<u32>,
    /// Log lines to write once the lock is released.
    notes: Vec<Note>,
}

/// A connected client as the board sees it.
pub(crate) struct ClientEntry {
    pub(crate) id: ClientId,
    pub(crate) outbox: Arc<Outbox>,
    /// Stops the client's reader.
    pub(crate) stop_reading: CancellationToken,
    /// Abandons the client's writer's current write.
    pub(crate) abort_writing: CancellationToken,
    /// Woken when a frame its reader holds for credit may go.
    pub(crate) credit: Arc<Notify>,
    /// Set when the relay cut the client off.
    pub(crate) fault: Option<ClientFault>,
}

impl Switchboard {
    /// The client's entry, if it is still the one attached to its slot.
    pub(crate) fn attached(&self, client: ClientId) -> Option<&ClientEntry> {
        self.clients[client.slot() as usize]
            .as_ref()
            .filter(|a| a.id == client)
    }

    /// A log line for after the lock is released.
    pub(crate) fn note(&mut self, note: Note) {
        self.notes.push(note);
    }
}

/// Something worth a log line that happened under the board's lock.
#[derive(Debug)]
pub(crate) enum Note {
    CutOff {
        slot: u32,
        fault: ClientFault,
        dropped: usize,
    },
    Refused(Refusal),
    ReadyAgain,
    ShutdownRequested,
}

impl Note {
    fn log(self) {
        match self {
            Note::CutOff {
                slot,
                fault,
                dropped,
            } => limited!(warn, slot, %fault, dropped_frames = dropped, "disconnecting client"),
            Note::Refused(refusal) => limited!(warn, %refusal, "refusing connection"),
            Note::ReadyAgain => limited!(
                info,
                "agent sent core.ready again; ending its sessions and replacing the cached one"
            ),
            Note::ShutdownRequested => limited!(info, "client requested sandbox shutdown"),
        }
    }
}

/// The board, locked. Log lines noted meanwhile are written after the lock
/// is released, so a peer that makes the relay log never makes every other
/// path wait on stderr.
pub(crate) struct BoardGuard<'a> {
    guard: Option<MutexGuard<'a, Switchboard>>,
}

impl std::ops::Deref for BoardGuard<'_> {
    type Target = Switchboard;
    fn deref(&self) -> &Switchboard {
        self.guard
            .as_ref()
            .unwrap_or_else(|| unreachable!("held until drop"))
    }
}

impl std::ops::DerefMut for BoardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Switchboard {
        self.guard
            .as_mut()
            .unwrap_or_else(|| unreachable!("held until drop"))
    }
}

impl Drop for BoardGuard<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let notes = std::mem::take(&mut guard.notes);
        drop(guard);
        for note in notes {
            note.log();
        }
    }
}

impl RelayState {
    pub(crate) fn new(
        config: RelayConfig,
        router: Router,
        agent: AgentStream,
        turn_bytes: usize,
        ring: Option<RingProbe>,
    ) -> (RelayState, watch::Receiver<bool>, watch::Receiver<u64>) {
        let slots = router.config().layout.slots() as usize;
        let (ready_tx, ready_rx) = watch::channel(false);
        let (drain_tx, drain_rx) = watch::channel(0);
        let shared = RelayState {
            board: Mutex::new(Switchboard {
                router,
                clients: (0..slots).map(|_| None).collect(),
                ready: None,
                accept: None,
                notes: Vec::new(),
            }),
            counters: Counters::default(),
            lanes: Lanes::new(agent, slots, turn_bytes),
            stop: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            failure: Mutex::new(None),
            ready_tx,
            drain_tx,
            own_uid: crate::socket::own_uid(),
            ring,
            config,
        };
        (shared, ready_rx, drain_rx)
    }

    pub(crate) fn board(&self) -> BoardGuard<'_> {
        // Switchboard updates are written to keep it consistent at every step, so a
        // panic elsewhere does not make it unusable.
        BoardGuard {
            guard: Some(
                self.board
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            ),
        }
    }

    pub(crate) fn stats(&self) -> StatsSnapshot {
        let view = {
            let mut board = self.board();
            board.router.tick(Instant::now());
            BoardView {
                router: board.router.counters(),
                connected: board.router.clients_connected(),
                quarantined: board.router.slots_quarantined(),
                sessions_open: board.router.sessions_open(),
                sessions_tombstoned: board.router.sessions_tombstoned(),
                queued_bytes: board.router.queued_bytes(),
                flow: board.router.flow_window().map(|window| {
                    let open = board.router.sessions_open() - board.router.sessions_tombstoned();
                    (window, open)
                }),
            }
        };
        StatsSnapshot::build(
            &self.counters,
            view,
            self.ring.as_ref().map(|probe| probe()),
        )
    }

    /// Records a fatal error (the first one wins) and stops the relay.
    pub(crate) fn fail(&self, error: RelayError) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            tracing::error!(%error, "relay failing");
            *failure = Some(error);
        }
        drop(failure);
        self.stop.cancel();
    }

    pub(crate) fn take_failure(&self) -> Option<RelayError> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Carries out what the router decided since the last call: cut-offs
    /// and wakes; and wakes the agent writer if control frames are due.
    pub(crate) fn carry_out(&self, board: &mut Switchboard) {
        while let Some(action) = board.router.poll_action() {
            match action {
                Action::Wake(client) => {
                    if let Some(attached) = board.attached(client) {
                        attached.credit.notify_one();
                    }
                }
                Action::CutOff { client, reason } => {
                    let fault = match reason {
                        CutReason::OverBudget { budget } => ClientFault::OverBudget { budget },
                        CutReason::TotalBudget { queued } => ClientFault::TotalBudget { queued },
                        CutReason::Stalled => ClientFault::Stalled {
                            timeout: self.config.stall_timeout,
                        },
                        CutReason::AgentRestarted { sessions } => {
                            ClientFault::AgentRestarted { sessions }
                        }
                    };
                    self.cut_off(board, client, fault);
                }
            }
        }
        if board.router.has_control() || board.accept.is_some() {
            self.lanes.control_due();
        }
    }

    /// Stops serving a client the router cut off. Never waits.
    fn cut_off(&self, board: &mut Switchboard, client: ClientId, fault: ClientFault) {
        let Some(attached) = board.clients[client.slot() as usize]
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
        let dropped = attached.outbox.close(Close::Abort);
        Counters::add(dropped_counter, dropped as u64);
        attached.fault = Some(fault);
        attached.stop_reading.cancel();
        attached.abort_writing.cancel();
        board.note(Note::CutOff {
            slot: client.slot(),
            fault,
            dropped,
        });
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
