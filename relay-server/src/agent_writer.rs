//! The one task that writes to the agent, and the lanes that feed it.
//!
//! The scheduler (after h2's `Prioritize`): each pass writes the control
//! lane first (the relay's `core.flow.accept`, kills of departed clients'
//! sessions, credit due), then one turn of one client: whole frames of the
//! batch its reader submitted, up to [`Lanes`]' turn size, clients taken
//! round robin. A client whose batch is not done goes to the back of the
//! line, so a bulk upload holds neither a kill nor another client's ping
//! behind more than one turn. A reader waits for its batch to be written
//! before it reads its socket again: backpressure, never a drop.
//!
//! When nothing waits (no control frame due, no other client's batch) and
//! the stream is free, a reader writes its first turn itself instead of
//! handing it to the writer task: the same order the scheduler would give,
//! without a task switch on every round trip.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use relay_codec::payload::ExecSignal;
use relay_codec::{Frame, Message, flow};
use relay_router::ClientId;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::RelayError;
use crate::state::RelayState;
use crate::stats::Counters;
use crate::vectored::write_all_vectored;

/// The agent stream's write half.
pub(crate) type AgentStream = Box<dyn AsyncWrite + Send + Unpin>;

/// A client's batch of frames the router accepted, waiting for its turns.
struct Submission {
    client: ClientId,
    frames: Vec<Frame>,
    /// Frames written so far.
    next: usize,
    /// Gets the batch back (for its allocation) once it is all written.
    done: oneshot::Sender<Vec<Frame>>,
}

#[derive(Default)]
struct Queue {
    /// Slots with a submission waiting, in turn order. A slot being written
    /// is in neither this line nor free to be taken again.
    line: VecDeque<u32>,
    /// Indexed by slot.
    waiting: Vec<Option<Submission>>,
    /// The router may have control frames to write.
    control_due: bool,
    closed: bool,
}

/// The clients' lanes toward the agent.
pub(crate) struct Lanes {
    queue: Mutex<Queue>,
    /// The agent stream; `None` once it was shut down.
    stream: tokio::sync::Mutex<Option<AgentStream>>,
    wake: Notify,
    /// Most bytes of one client's frames written in one turn (at least one
    /// frame is, whatever its size).
    turn_bytes: usize,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("turn_bytes", &self.turn_bytes)
            .finish_non_exhaustive()
    }
}

/// The writer is gone (the relay is stopping or failed).
#[derive(Debug)]
pub(crate) struct WriterGone;

/// One client's frames to write now.
struct Turn {
    slot: u32,
    client: ClientId,
    wire: Vec<Bytes>,
}

impl Lanes {
    pub(crate) fn new(stream: AgentStream, slots: usize, turn_bytes: usize) -> Lanes {
        Lanes {
            queue: Mutex::new(Queue {
                line: VecDeque::with_capacity(slots),
                waiting: (0..slots).map(|_| None).collect(),
                control_due: false,
                closed: false,
            }),
            stream: tokio::sync::Mutex::new(Some(stream)),
            wake: Notify::new(),
            turn_bytes: turn_bytes.max(1),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the writer: control frames are due.
    pub(crate) fn control_due(&self) {
        self.queue().control_due = true;
        self.wake.notify_one();
    }

    /// How many of `frames` (at least one) make one turn.
    fn turn_len(&self, frames: &[Frame]) -> usize {
        let mut bytes = 0;
        frames
            .iter()
            .take_while(|frame| {
                let first = bytes == 0;
                bytes += frame.wire_len();
                first || bytes <= self.turn_bytes
            })
            .count()
    }

    /// Queues the rest of a batch (from `next`) for its turns.
    fn enqueue(
        &self,
        client: ClientId,
        frames: Vec<Frame>,
        next: usize,
    ) -> Result<oneshot::Receiver<Vec<Frame>>, WriterGone> {
        let (done, written) = oneshot::channel();
        let mut queue = self.queue();
        if queue.closed {
            return Err(WriterGone);
        }
        let slot = client.slot();
        let entry = &mut queue.waiting[slot as usize];
        debug_assert!(entry.is_none(), "one batch per client at a time");
        *entry = Some(Submission {
            client,
            frames,
            next,
            done,
        });
        queue.line.push_back(slot);
        drop(queue);
        self.wake.notify_one();
        Ok(written)
    }

    /// Whether a reader may write its own turn now: nothing else waits.
    fn is_idle(&self) -> bool {
        let queue = self.queue();
        !queue.closed && !queue.control_due && queue.line.is_empty()
    }

    /// Drops what a departing client still has queued (its sessions are
    /// being killed: nothing of theirs may follow the kills).
    pub(crate) fn withdraw(&self, client: ClientId) {
        let mut queue = self.queue();
        let slot = client.slot() as usize;
        if queue.waiting[slot]
            .as_ref()
            .is_some_and(|s| s.client == client)
        {
            queue.waiting[slot] = None;
            queue.line.retain(|&s| s as usize != slot);
        }
    }

    /// The next client's turn: whole frames up to the turn size.
    fn next_turn(&self) -> Option<Turn> {
        let mut queue = self.queue();
        while let Some(slot) = queue.line.pop_front() {
            let Some(submission) = queue.waiting[slot as usize].as_ref() else {
                continue;
            };
            let rest = &submission.frames[submission.next..];
            let wire: Vec<Bytes> = rest[..self.turn_len(rest)]
                .iter()
                .map(|frame| frame.clone().into_wire())
                .collect();
            return Some(Turn {
                slot,
                client: submission.client,
                wire,
            });
        }
        None
    }

    /// A turn is on the wire: the batch is done, or waits for its next turn.
    fn turn_written(&self, turn: &Turn) {
        let mut queue = self.queue();
        let entry = &mut queue.waiting[turn.slot as usize];
        let Some(submission) = entry.as_mut().filter(|s| s.client == turn.client) else {
            // Withdrawn while being written.
            return;
        };
        submission.next += turn.wire.len();
        if submission.next < submission.frames.len() {
            queue.line.push_back(turn.slot);
            return;
        }
        if let Some(submission) = entry.take() {
            let mut frames = submission.frames;
            frames.clear();
            let _ = submission.done.send(frames);
        }
    }

    /// The writer stops: every waiting reader gets [`WriterGone`].
    fn close(&self) {
        let mut queue = self.queue();
        queue.closed = true;
        queue.line.clear();
        for entry in &mut queue.waiting {
            *entry = None;
        }
    }
}

/// Hands a client's batch to the agent and waits until it is written
/// whole; returns the emptied batch. Not to be cancelled: a frame may be
/// half written. The relay's flush deadline (hard stop) ends the wait.
pub(crate) async fn submit(
    shared: &RelayState,
    client: ClientId,
    mut frames: Vec<Frame>,
) -> Result<Vec<Frame>, WriterGone> {
    let lanes = &shared.lanes;
    let mut next = 0;
    if lanes.is_idle()
        && let Ok(mut stream) = lanes.stream.try_lock()
        && let Some(stream) = stream.as_mut()
    {
        next = lanes.turn_len(&frames);
        let turn = &frames[..next];
        match write(shared, stream, turn).await {
            Ok(()) => count(shared, turn),
            Err(error) => {
                failed(shared, error);
                return Err(WriterGone);
            }
        }
        if next == frames.len() {
            frames.clear();
            return Ok(frames);
        }
    }
    let written = lanes.enqueue(client, frames, next)?;
    written.await.map_err(|_| WriterGone)
}

fn count<T: AsRef<[u8]>>(shared: &RelayState, frames: &[T]) {
    let bytes: usize = frames.iter().map(|f| f.as_ref().len()).sum();
    Counters::add(&shared.counters.client_frames, frames.len() as u64);
    Counters::add(&shared.counters.client_bytes, bytes as u64);
}

/// A write failed: the relay cannot go on without its agent.
fn failed(shared: &RelayState, error: Option<io::Error>) {
    if let Some(error) = error {
        shared.fail(if error.kind() == io::ErrorKind::BrokenPipe {
            RelayError::AgentClosed
        } else {
            RelayError::AgentIo(error)
        });
    }
}

/// Writes to the agent until `finish` (after the clients are done) or a
/// failure; then ends the agent's stream.
pub(crate) async fn run_agent_writer(shared: Arc<RelayState>, finish: CancellationToken) {
    let result = write_loop(&shared, &finish).await;
    shared.lanes.close();
    match result {
        Ok(()) => {
            // End the agent's stream (EOF) rather than leave it open until
            // the last handle to this relay goes.
            let deadline = shared.config.shutdown_flush_deadline;
            if let Some(mut stream) = shared.lanes.stream.lock().await.take() {
                let _ = tokio::time::timeout(deadline, stream.shutdown()).await;
            }
        }
        Err(error) => failed(&shared, error),
    }
}

/// `Err(None)`: abandoned at the flush deadline.
async fn write_loop(
    shared: &RelayState,
    finish: &CancellationToken,
) -> Result<(), Option<io::Error>> {
    let lanes = &shared.lanes;
    loop {
        if pass(shared).await? {
            continue;
        }
        if finish.is_cancelled() {
            return Ok(());
        }
        tokio::select! {
            () = lanes.wake.notified() => {}
            () = finish.cancelled() => {}
            () = shared.hard_stop.cancelled() => return Err(None),
        }
    }
}

/// One pass of the scheduler: the control lane if anything is due, then
/// one client's turn. Returns whether it wrote anything.
async fn pass(shared: &RelayState) -> Result<bool, Option<io::Error>> {
    let lanes = &shared.lanes;
    let mut stream = tokio::select! {
        stream = lanes.stream.lock() => stream,
        () = shared.hard_stop.cancelled() => return Err(None),
    };
    let Some(stream) = stream.as_mut() else {
        return Ok(false);
    };
    let control_due = std::mem::take(&mut lanes.queue().control_due);
    if control_due && write_control(shared, stream).await? {
        return Ok(true);
    }
    let Some(turn) = lanes.next_turn() else {
        return Ok(false);
    };
    write(shared, stream, &turn.wire).await?;
    count(shared, &turn.wire);
    lanes.turn_written(&turn);
    Ok(true)
}

/// Writes what the relay itself owes the agent. Returns whether there was any.
async fn write_control(
    shared: &RelayState,
    stream: &mut AgentStream,
) -> Result<bool, Option<io::Error>> {
    let (batch, accept) = {
        let mut board = shared.board();
        (board.router.take_control(), board.accept.take())
    };
    if batch.is_empty() && accept.is_none() {
        return Ok(false);
    }
    let mut frames: Vec<Frame> = Vec::new();
    frames.extend(accept.map(flow::accept_frame));
    frames.extend(batch.kills.iter().filter_map(|&id| {
        Message::ExecSignal(ExecSignal { signal: 9 })
            .to_frame(id)
            .ok()
    }));
    for &(id, bytes) in &batch.credits {
        frames.extend(flow::credit_frames(id, bytes));
    }
    let credits = frames.len() - batch.kills.len() - usize::from(accept.is_some());
    write(shared, stream, &frames).await?;
    if !batch.kills.is_empty() {
        let mut board = shared.board();
        board.router.kills_written(&batch.kills, Instant::now());
    }
    Counters::add(&shared.counters.kills_sent, batch.kills.len() as u64);
    Counters::add(&shared.counters.credits_sent, credits as u64);
    if accept.is_some() {
        // The agent sees the acceptance before any client's first frame.
        shared.ready_tx.send_replace(true);
    }
    Ok(true)
}

async fn write<T: AsRef<[u8]>>(
    shared: &RelayState,
    stream: &mut AgentStream,
    frames: &[T],
) -> Result<(), Option<io::Error>> {
    let write = async {
        write_all_vectored(&mut **stream, frames).await?;
        stream.flush().await
    };
    tokio::select! {
        result = write => result.map_err(Some),
        () = shared.hard_stop.cancelled() => Err(None),
    }
}
