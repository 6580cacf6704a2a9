//! The client side: the accept loop, and per client a reader task (frames
//! to the agent) and a writer task (its outbox to its socket).

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use relay_codec::payload::{Data, ExecExited, ExecSignal, FsResponse};
use relay_codec::{CodecError, Envelope, Flags, Frame, FrameCodec, Message, MessageType};
use relay_router::{ClientId, ClientVerdict, RejectReason};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::ClientFault;
use crate::flow::Admit;
use crate::outbox::{Close, Outbox, Push, Released, Take};
use crate::ratelog::limited;
use crate::relay::{Attached, Hub, Shared};
use crate::stats::Counters;

/// Bytes a client reader asks for per read.
const READ_CHUNK: usize = 64 * 1024;
/// Most queued frames a client writer hands to one `writev`.
pub(crate) const WRITE_BATCH: usize = 64;

/// Accepts clients until the relay stops. Never returns otherwise.
pub(crate) async fn accept_loop(
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
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            Some(_) = clients.join_next() => continue,
        };
        if !shared.peer_allowed(&stream) {
            continue;
        }
        let Some((client, span)) = admit(shared) else {
            continue;
        };
        clients.spawn(serve_client(shared.clone(), stream, client).instrument(span));
    }
}

/// Lets a client in: takes a slot and queues its handshake.
fn admit(shared: &Shared) -> Option<(ClientId, tracing::Span)> {
    let mut hub = shared.hub();
    let admission = match hub.router.connect(Instant::now()) {
        Ok(admission) => admission,
        Err(refusal) => {
            limited!(warn, %refusal, "refusing connection");
            return None;
        }
    };
    let Some(ready) = hub.ready.clone() else {
        unreachable!("clients are accepted only after core.ready");
    };
    let mut prefix = BytesMut::new();
    admission.handshake.encode_prefix(&mut prefix);
    let outbox = Arc::new(Outbox::new(shared.config.client_queue_budget));
    // The cached ready frame is shared, not copied, by every greeting.
    let greeted = [prefix.freeze(), ready.into_wire()]
        .into_iter()
        .all(|part| outbox.push(part, None, &shared.total_queued) == Push::Queued);
    if !greeted {
        tracing::error!("client queue budget is smaller than the handshake; refusing");
        hub.router.disconnect(admission.client, Instant::now());
        return None;
    }
    let slot = admission.client.slot();
    let range = hub.router.slot_range(slot);
    if let (Some(flow), Some(range)) = (hub.flow.as_mut(), range) {
        flow.forget_range(range);
    }
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
        credit: Arc::new(Notify::new()),
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

/// What a client task needs of its entry in the hub.
struct Handles {
    outbox: Arc<Outbox>,
    stop_reading: CancellationToken,
    abort_writing: CancellationToken,
    credit: Arc<Notify>,
}

async fn serve_client(shared: Arc<Shared>, stream: UnixStream, client: ClientId) {
    let Some(handles) = ({
        let hub = shared.hub();
        hub.clients[client.slot() as usize]
            .as_ref()
            .filter(|a| a.id == client)
            .map(|a| Handles {
                outbox: a.outbox.clone(),
                stop_reading: a.stop_reading.clone(),
                abort_writing: a.abort_writing.clone(),
                credit: a.credit.clone(),
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
            handles.outbox.clone(),
            handles.abort_writing,
            handles.stop_reading.clone(),
        )
        .in_current_span(),
    );
    let mut reader = ClientReader {
        shared: &shared,
        client,
        stop: &handles.stop_reading,
        credit: &handles.credit,
    };
    let end = reader.run(rd).await;

    let fault = match &end {
        ReaderEnd::Fault(fault) => {
            if matches!(fault, ClientFault::Malformed(_)) {
                Counters::inc(&shared.counters.clients_malformed);
            }
            limited!(warn, %fault, "disconnecting client");
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
    let mode = if shared.stop.is_cancelled() && fault.is_none() {
        Close::Flush
    } else {
        Close::Abort
    };
    let kills = {
        let mut hub = shared.hub();
        let kills = hub.router.disconnect(client, Instant::now());
        let (dropped, released) = handles.outbox.close(mode, &shared.total_queued);
        Counters::add(&shared.counters.dropped_client_gone, dropped as u64);
        shared.release_credit(&mut hub, &released);
        // A departed client's sessions earn no more credit: what the agent
        // still sends for them is discarded, so a guest that keeps
        // streaming to nobody gains nothing, and the credit table holds
        // only sessions of connected clients.
        if let (Some(range), Some(flow)) = (hub.router.slot_range(client.slot()), hub.flow.as_mut())
        {
            flow.forget_range(range);
        }
        let slot = &mut hub.clients[client.slot() as usize];
        if slot.as_ref().is_some_and(|a| a.id == client) {
            *slot = None;
        }
        kills
    };
    if !kills.is_empty() {
        limited!(
            info,
            sessions = kills.len(),
            "killing the sessions of a departed client"
        );
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

/// Reads a client's frames and forwards them to the agent.
struct ClientReader<'a> {
    shared: &'a Shared,
    client: ClientId,
    stop: &'a CancellationToken,
    /// Woken when the agent returns credit to one of this client's sessions.
    credit: &'a Notify,
}

impl ClientReader<'_> {
    async fn run(&mut self, mut rd: OwnedReadHalf) -> ReaderEnd {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut codec = FrameCodec::new();
        let mut frames: Vec<Frame> = Vec::new();
        loop {
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let read = tokio::select! {
                biased;
                () = self.stop.cancelled() => return ReaderEnd::Stopped,
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
            match self.forward(&mut frames).await {
                Ok(()) => {}
                Err(None) => return ReaderEnd::Stopped,
                Err(Some(fault)) => return ReaderEnd::Fault(fault),
            }
            if let Some(fault) = malformed {
                return ReaderEnd::Fault(fault);
            }
            if eof {
                return ReaderEnd::Eof;
            }
        }
    }

    /// Checks a batch of frames with the router and writes the accepted ones
    /// to the agent, holding a frame (and the rest of the batch) while its
    /// session has no credit. `Err(Some)` is a fault that ends the client;
    /// `Err(None)` means the relay or the client is stopping.
    async fn forward(&mut self, frames: &mut Vec<Frame>) -> Result<(), Option<ClientFault>> {
        let mut start = 0;
        // A frame held for credit was already checked by the router.
        let mut routed = false;
        while start < frames.len() {
            let (end, outcome) = self.admit(&frames[start..], routed);
            routed = false;
            let end = start + end;
            self.send(&frames[start..end]).await?;
            start = end;
            match outcome {
                Batch::Done => {}
                Batch::Fault(fault) => {
                    frames.clear();
                    return Err(fault);
                }
                Batch::Answered => start += 1,
                Batch::Wait => {
                    Counters::inc(&self.shared.counters.flow_waits);
                    // Credit that arrived since the check left a permit.
                    tokio::select! {
                        biased;
                        () = self.stop.cancelled() => {
                            frames.clear();
                            return Err(None);
                        }
                        () = self.credit.notified() => routed = true,
                    }
                }
            }
        }
        frames.clear();
        Ok(())
    }

    /// Decides, under one lock of the hub, how many of `frames` may go now
    /// and what stops the rest.
    fn admit(&self, frames: &[Frame], first_routed: bool) -> (usize, Batch) {
        let mut hub = self.shared.hub();
        let hub = &mut *hub;
        let mut shutdowns = 0u64;
        let mut outcome = Batch::Done;
        let mut count = 0;
        for (n, frame) in frames.iter().enumerate() {
            let header = frame.header();
            // Every flag bit passes: credit travels on the connection id,
            // which no client owns, so the router rejects a client's credit.
            let verdict = if n == 0 && first_routed {
                ClientVerdict::Forward {
                    shutdown: header.flags.contains(Flags::SHUTDOWN),
                }
            } else {
                hub.router.client_frame(self.client, header)
            };
            match verdict {
                ClientVerdict::Forward { shutdown } => {
                    if let Some(flow) = hub.flow.as_mut()
                        && flow.admit_client_frame(header, frame.wire_len()) == Admit::Wait
                    {
                        outcome = Batch::Wait;
                        break;
                    }
                    shutdowns += u64::from(shutdown);
                    count += 1;
                }
                ClientVerdict::RefuseSession { limit } => {
                    outcome = match refusal(frame, limit) {
                        Some(reply) => {
                            self.answer(hub, reply);
                            Batch::Answered
                        }
                        // A request of a type we cannot answer in the
                        // agent's place: the client goes, as before.
                        None => Batch::Fault(Some(ClientFault::Rejected(
                            RejectReason::TooManySessions { limit },
                        ))),
                    };
                    break;
                }
                ClientVerdict::Reject(reason) => {
                    outcome = Batch::Fault(Some(ClientFault::Rejected(reason)));
                    break;
                }
                ClientVerdict::Stale => {
                    outcome = Batch::Fault(None);
                    break;
                }
            }
        }
        if shutdowns > 0 {
            limited!(info, "client requested sandbox shutdown");
            self.shared.drain_tx.send_modify(|n| *n += shutdowns);
        }
        (count, outcome)
    }

    /// Queues the relay's own answer for this client, as if from the agent.
    fn answer(&self, hub: &mut Hub, reply: Vec<Frame>) {
        let Some(attached) = hub.clients[self.client.slot() as usize]
            .as_ref()
            .filter(|a| a.id == self.client)
        else {
            return;
        };
        let outbox = Arc::clone(&attached.outbox);
        for frame in reply {
            if outbox.push(frame.into_wire(), None, &self.shared.total_queued) == Push::OverBudget {
                let budget = self.shared.config.client_queue_budget;
                self.shared
                    .cut_off(hub, self.client, ClientFault::OverBudget { budget });
                return;
            }
        }
    }

    /// Writes admitted frames to the agent, whole.
    async fn send(&self, frames: &[Frame]) -> Result<(), Option<ClientFault>> {
        if frames.is_empty() {
            return Ok(());
        }
        let bytes: usize = frames.iter().map(Frame::wire_len).sum();
        self.shared
            .write_to_agent(frames)
            .await
            .map_err(|()| None)?;
        Counters::add(&self.shared.counters.client_frames, frames.len() as u64);
        Counters::add(&self.shared.counters.client_bytes, bytes as u64);
        Ok(())
    }
}

/// Why [`ClientReader::admit`] stopped early.
enum Batch {
    /// Every frame may go.
    Done,
    /// The client must go (with its fault, or none if it is already gone).
    Fault(Option<ClientFault>),
    /// The next frame was answered by the relay itself and is not forwarded.
    Answered,
    /// The next frame waits for credit.
    Wait,
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
    let mut credits: Released = Vec::new();
    let mut prefix_queued = true;
    loop {
        let charged = match outbox.take(WRITE_BATCH, &mut batch, &mut credits) {
            Take::Batch(charged) => charged,
            Take::Idle => {
                tokio::select! {
                    () = outbox.notified() => {}
                    () = abort.cancelled() => break,
                    () = shared.hard_stop.cancelled() => break,
                }
                continue;
            }
            Take::Done => break,
        };
        // The first item ever queued is the greeting's id prefix, not a frame.
        let frames = batch.len() - usize::from(std::mem::take(&mut prefix_queued));
        let wire_bytes: usize = batch.iter().map(Bytes::len).sum();
        let result = tokio::select! {
            result = write_batch(&mut wr, &batch, stall) => result,
            () = abort.cancelled() => Err(WriteEnd::Aborted),
            // The shutdown's flush deadline passed.
            () = shared.hard_stop.cancelled() => Err(WriteEnd::Aborted),
        };
        batch.clear();
        outbox.written(charged, &shared.total_queued);
        if !credits.is_empty() {
            // Written or abandoned, these frames have left the relay.
            let mut hub = shared.hub();
            shared.release_credit(&mut hub, &credits);
            credits.clear();
        }
        match result {
            Ok(()) => {
                Counters::add(&shared.counters.delivered_frames, frames as u64);
                Counters::add(&shared.counters.delivered_bytes, wire_bytes as u64);
            }
            Err(WriteEnd::Stalled) => {
                let mut hub = shared.hub();
                shared.cut_off(&mut hub, client, ClientFault::Stalled { timeout: stall });
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
    stall: Duration,
) -> Result<(), WriteEnd> {
    let mut cursor = Cursor::default();
    while cursor.index < batch.len() {
        let slices = cursor.slices(batch);
        let written = match tokio::time::timeout(stall, wr.write_vectored(&slices)).await {
            Err(_) => return Err(WriteEnd::Stalled),
            Ok(Err(error)) => return Err(WriteEnd::Io(error)),
            Ok(Ok(0)) => return Err(WriteEnd::Io(io::ErrorKind::WriteZero.into())),
            Ok(Ok(n)) => n,
        };
        cursor.advance(batch, written);
    }
    Ok(())
}

/// Writes every buffer completely, in order.
pub(crate) async fn write_all_vectored<W, T>(writer: &mut W, buffers: &[T]) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: AsRef<[u8]>,
{
    let mut cursor = Cursor::default();
    while cursor.index < buffers.len() {
        let slices = cursor.slices(buffers);
        let written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        cursor.advance(buffers, written);
    }
    Ok(())
}

/// A position in a list of buffers: which buffer, and how far into it.
#[derive(Debug, Default)]
struct Cursor {
    index: usize,
    offset: usize,
}

impl Cursor {
    /// The unwritten rest, as at most [`WRITE_BATCH`] slices.
    fn slices<'b, T: AsRef<[u8]>>(&self, buffers: &'b [T]) -> Vec<IoSlice<'b>> {
        std::iter::once(&buffers[self.index].as_ref()[self.offset..])
            .chain(
                buffers[self.index + 1..]
                    .iter()
                    .take(WRITE_BATCH - 1)
                    .map(AsRef::as_ref),
            )
            .map(IoSlice::new)
            .collect()
    }

    /// Moves forward by `n` bytes.
    fn advance<T: AsRef<[u8]>>(&mut self, buffers: &[T], mut n: usize) {
        while n > 0 && self.index < buffers.len() {
            let left = buffers[self.index].as_ref().len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.index += 1;
            self.offset = 0;
        }
    }
}

/// The terminal error the relay sends in the agent's place when a client
/// asks for a session past its limit: what our agent answers when it is
/// full itself (exec: a stderr line and exit code 126; fs: `ok: false`).
/// `None` for a type the relay cannot answer.
fn refusal(request: &Frame, limit: usize) -> Option<Vec<Frame>> {
    let text = format!(
        "agent-relay: this connection already has {limit} sessions open (the relay's limit)"
    );
    let id = request.id();
    let envelope = Envelope::parse(request.body()).ok()?;
    let messages = match MessageType::from_wire_name(&envelope.message_type)? {
        MessageType::ExecRequest => vec![
            Message::ExecStderr(Data {
                data: format!("{text}\n").into_bytes(),
            }),
            Message::ExecExited(ExecExited {
                code: SESSION_LIMIT_EXIT_CODE,
            }),
        ],
        MessageType::FsRequest => vec![Message::FsResponse(FsResponse {
            ok: false,
            error: Some(text),
            data: None,
        })],
        _ => return None,
    };
    messages.iter().map(|m| m.to_frame(id).ok()).collect()
}

/// The exit code of an exec the relay refused for the session limit, as
/// for a command that cannot run.
pub(crate) const SESSION_LIMIT_EXIT_CODE: i32 = 126;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_walks_across_buffers_and_partial_writes() {
        let buffers = [&b"abc"[..], b"", b"defg", b"h"];
        let mut cursor = Cursor::default();
        cursor.advance(&buffers, 2);
        assert_eq!(cursor.slices(&buffers)[0].as_ref(), b"c");
        cursor.advance(&buffers, 3);
        assert_eq!((cursor.index, cursor.offset), (2, 2));
        assert_eq!(cursor.slices(&buffers).len(), 2);
        cursor.advance(&buffers, 3);
        assert_eq!(cursor.index, 4);
    }
}
