//! The way out: a channel of frames bounded in bytes, the task that writes
//! it to the console, and the per-session [`SessionOut`] that sessions send
//! through.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use relay_codec::{Frame, Message, MessageError, MessageType, data_frame};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::flow::SessionFlow;

/// Buffer of the console writer: small frames are gathered into one write,
/// larger ones go straight through.
const WRITE_BUFFER: usize = 64 * 1024;

/// Most frames queued at once, whatever their size (the byte budget is the
/// real bound; this keeps a flood of tiny frames from costing more).
const MAX_QUEUED_FRAMES: usize = 4096;

/// A frame waiting for the console, holding its share of the byte budget.
#[derive(Debug)]
pub(crate) struct Queued {
    frame: Frame,
    _budget: OwnedSemaphorePermit,
}

/// The sending side of the console writer's channel. Cloned by every session.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    budget_bytes: u32,
}

/// The console writer is gone (it failed, or the agent is ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriterGone;

impl Outbound {
    /// A channel holding at most `budget_bytes` bytes of frames.
    pub(crate) fn new(budget_bytes: usize) -> (Outbound, mpsc::Receiver<Queued>) {
        let budget_bytes = u32::try_from(budget_bytes.max(1)).unwrap_or(u32::MAX);
        let (tx, rx) = mpsc::channel(MAX_QUEUED_FRAMES);
        let outbound = Outbound {
            tx,
            budget: Arc::new(Semaphore::new(budget_bytes as usize)),
            budget_bytes,
        };
        (outbound, rx)
    }

    /// Queues a frame, waiting while the budget is spent. A frame larger
    /// than the whole budget takes all of it.
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), WriterGone> {
        let cost = u32::try_from(frame.wire_len())
            .unwrap_or(u32::MAX)
            .min(self.budget_bytes);
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(cost)
            .await
            .map_err(|_| WriterGone)?;
        self.tx
            .send(Queued {
                frame,
                _budget: permit,
            })
            .await
            .map_err(|_| WriterGone)
    }
}

/// Writes queued frames to the console until every sender is gone, then
/// flushes and shuts the write side down.
///
/// Each frame's budget is released once its bytes are written (to the
/// console or to the small write buffer), so a slow console holds back the
/// senders.
pub(crate) async fn write_frames<W>(mut rx: mpsc::Receiver<Queued>, writer: W) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, writer);
    while let Some(queued) = rx.recv().await {
        out.write_all(queued.frame.as_wire()).await?;
        drop(queued);
        // Gather what is already queued into the same flush.
        while let Ok(queued) = rx.try_recv() {
            out.write_all(queued.frame.as_wire()).await?;
        }
        out.flush().await?;
    }
    out.shutdown().await
}

/// State a session shares with the console reader.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    closed: AtomicBool,
    /// Credit with the relay, when flow control is on.
    flow: Option<Arc<SessionFlow>>,
}

impl SessionState {
    pub(crate) fn new(flow: Option<Arc<SessionFlow>>) -> SessionState {
        SessionState {
            closed: AtomicBool::new(false),
            flow,
        }
    }

    /// The session's credit, when flow control is on.
    pub(crate) fn flow(&self) -> Option<&Arc<SessionFlow>> {
        self.flow.as_ref()
    }

    /// Whether the session's terminal frame has been queued: its id may be
    /// reused by the client from then on.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(flow) = &self.flow {
            flow.close();
        }
    }
}

/// Why a session could not send.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The agent is shutting down: the session must stop and send nothing.
    Cancelled,
    /// The console writer is gone.
    WriterGone,
    /// The message could not be encoded (a bug: our messages always fit).
    Encode(MessageError),
}

/// A session's way out: every frame it sends carries its id.
///
/// With flow control on, every frame but the terminal one first takes its
/// size from the session's credit, so a session whose client is behind
/// stops reading its pipe while the others go on.
#[derive(Debug)]
pub(crate) struct SessionOut {
    id: u32,
    outbound: Outbound,
    cancel: CancellationToken,
    state: Arc<SessionState>,
}

impl SessionOut {
    pub(crate) fn new(
        id: u32,
        outbound: Outbound,
        cancel: CancellationToken,
        state: Arc<SessionState>,
    ) -> SessionOut {
        SessionOut {
            id,
            outbound,
            cancel,
            state,
        }
    }

    /// The token that is cancelled when the agent shuts down.
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Sends a data message (stdout, stderr, fs data) built straight from
    /// `bytes`.
    pub(crate) async fn data(&self, t: MessageType, bytes: &[u8]) -> Result<(), SendError> {
        let frame = data_frame(t, self.id, bytes).map_err(SendError::Encode)?;
        self.send(frame).await
    }

    /// Sends a non-terminal message.
    pub(crate) async fn message(&self, message: &Message) -> Result<(), SendError> {
        let frame = message.to_frame(self.id).map_err(SendError::Encode)?;
        self.send(frame).await
    }

    /// Sends the session's terminal message, marking the session closed
    /// first: once the client can see the terminal frame, the reader must
    /// already treat the id as free.
    pub(crate) async fn terminal(&self, message: &Message) -> Result<(), SendError> {
        let frame = message.to_frame(self.id).map_err(SendError::Encode)?;
        if self.cancel.is_cancelled() {
            return Err(SendError::Cancelled);
        }
        self.state.close();
        self.queue(frame).await
    }

    async fn send(&self, frame: Frame) -> Result<(), SendError> {
        if let Some(flow) = self.state.flow() {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(SendError::Cancelled),
                () = flow.acquire(frame.wire_len()) => {}
            }
        }
        self.queue(frame).await
    }

    async fn queue(&self, frame: Frame) -> Result<(), SendError> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(SendError::Cancelled),
            sent = self.outbound.send(frame) => sent.map_err(|WriterGone| SendError::WriterGone),
        }
    }
}
