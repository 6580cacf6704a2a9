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
use crate::shared::Shared;
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
    closed: bool,
}

/// The clients' lanes toward the agent.
pub(crate) struct Lanes {
    queue: Mutex<Queue>,
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
    pub(crate) fn new(slots: usize, turn_bytes: usize) -> Lanes {
        Lanes {
            queue: Mutex::new(Queue {
                line: VecDeque::with_capacity(slots),
                waiting: (0..slots).map(|_| None).collect(),
                closed: false,
            }),
            wake: Notify::new(),
            turn_bytes: turn_bytes.max(1),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the writer (control frames are due, or a batch was submitted).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Hands a batch to the writer and waits until it is written whole.
    /// Returns the emptied batch. If this future is dropped, the batch
    /// stays queued until [`Lanes::withdraw`].
    pub(crate) async fn submit(
        &self,
        client: ClientId,
        frames: Vec<Frame>,
    ) -> Result<Vec<Frame>, WriterGone> {
        let (done, written) = oneshot::channel();
        {
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
                next: 0,
                done,
            });
            queue.line.push_back(slot);
        }
        self.wake();
        written.await.map_err(|_| WriterGone)
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
            let mut bytes = 0;
            let wire: Vec<Bytes> = submission.frames[submission.next..]
                .iter()
                .take_while(|frame| {
                    let first = bytes == 0;
                    bytes += frame.wire_len();
                    first || bytes <= self.turn_bytes
                })
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

/// Writes to the agent until `finish` (after the clients are done) or a
/// failure; then ends the agent's stream.
pub(crate) async fn run_agent_writer(
    shared: Arc<Shared>,
    mut stream: AgentStream,
    finish: CancellationToken,
) {
    let result = write_loop(&shared, &mut stream, &finish).await;
    shared.lanes.close();
    match result {
        Ok(()) => {
            // End the agent's stream (EOF) rather than leave it open until
            // the last handle to this relay goes.
            let deadline = shared.config.shutdown_flush_deadline;
            let _ = tokio::time::timeout(deadline, stream.shutdown()).await;
        }
        Err(None) => {}
        Err(Some(error)) => shared.fail(if error.kind() == io::ErrorKind::BrokenPipe {
            RelayError::AgentClosed
        } else {
            RelayError::AgentIo(error)
        }),
    }
}

/// `Err(None)`: abandoned at the flush deadline.
async fn write_loop(
    shared: &Shared,
    stream: &mut AgentStream,
    finish: &CancellationToken,
) -> Result<(), Option<io::Error>> {
    let lanes = &shared.lanes;
    loop {
        if write_control(shared, stream).await? {
            continue;
        }
        if let Some(turn) = lanes.next_turn() {
            write(shared, stream, &turn.wire).await?;
            let bytes: usize = turn.wire.iter().map(Bytes::len).sum();
            Counters::add(&shared.counters.client_frames, turn.wire.len() as u64);
            Counters::add(&shared.counters.client_bytes, bytes as u64);
            lanes.turn_written(&turn);
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

/// Writes what the relay itself owes the agent. Returns whether there was any.
async fn write_control(
    shared: &Shared,
    stream: &mut AgentStream,
) -> Result<bool, Option<io::Error>> {
    let (batch, accept) = {
        let mut hub = shared.hub();
        (hub.router.take_control(), hub.accept.take())
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
        let mut hub = shared.hub();
        hub.router.kills_written(&batch.kills, Instant::now());
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
    shared: &Shared,
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
