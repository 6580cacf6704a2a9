//! A client's connection: its reader (frames to the agent, through the
//! router and the agent lanes), its writer task, and what happens when it
//! goes.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use relay_codec::payload::{Data, ExecExited, FsResponse};
use relay_codec::{CodecError, Envelope, Frame, FrameCodec, Message, MessageType};
use relay_router::{ClientId, ClientVerdict, RefuseReason, RejectReason};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::Notify;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent_writer;
use crate::client_writer::{WriterParts, run_client_writer};
use crate::error::ClientFault;
use crate::outbox::{Close, charge};
use crate::ratelog::limited;
use crate::state::{Note, RelayState, Switchboard};
use crate::stats::Counters;

/// Bytes a client reader asks for per read.
const READ_CHUNK: usize = 64 * 1024;

/// The exit code of an exec the relay refused, as for a command that
/// cannot run.
pub(crate) const SESSION_LIMIT_EXIT_CODE: i32 = 126;

/// Why a client's reader stopped.
enum ReaderEnd {
    Eof,
    Io(io::Error),
    Fault(ClientFault),
    Stopped,
}

/// Serves one admitted client until it goes, then tells the router.
pub(crate) async fn serve_client(shared: Arc<RelayState>, stream: UnixStream, client: ClientId) {
    let Some((parts, credit)) = ({
        let board = shared.board();
        board.attached(client).map(|a| {
            let parts = WriterParts {
                client,
                outbox: a.outbox.clone(),
                abort: a.abort_writing.clone(),
                stop_reading: a.stop_reading.clone(),
            };
            (parts, a.credit.clone())
        })
    }) else {
        return;
    };
    let outbox = parts.outbox.clone();
    let stop = parts.stop_reading.clone();
    let (rd, wr) = stream.into_split();
    let writer = tokio::spawn(run_client_writer(shared.clone(), wr, parts).in_current_span());
    let mut reader = ClientReader {
        shared: &shared,
        client,
        stop: &stop,
        credit: &credit,
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
    {
        // Nothing of the client's may reach the agent after its kills.
        shared.lanes.withdraw(client);
        let mut board = shared.board();
        let killed = board.router.disconnect(client);
        let dropped = outbox.close(mode);
        Counters::add(&shared.counters.dropped_client_gone, dropped as u64);
        let slot = &mut board.clients[client.slot() as usize];
        if slot.as_ref().is_some_and(|a| a.id == client) {
            *slot = None;
        }
        shared.carry_out(&mut board);
        drop(board);
        if killed > 0 {
            limited!(
                info,
                sessions = killed,
                "killing the sessions of a departed client"
            );
        }
    }
    if writer.await.is_err() {
        tracing::error!("client writer task failed");
    }
}

/// Reads a client's frames and forwards them to the agent.
struct ClientReader<'a> {
    shared: &'a RelayState,
    client: ClientId,
    stop: &'a CancellationToken,
    /// Woken when a frame held for credit may go.
    credit: &'a Notify,
}

impl ClientReader<'_> {
    async fn run(&mut self, mut rd: OwnedReadHalf) -> ReaderEnd {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut codec = FrameCodec::new();
        let mut frames = VecDeque::new();
        let mut batch = Vec::new();
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
                    Ok(Some(frame)) => frames.push_back(frame),
                    Ok(None) => break,
                    Err(CodecError::Frame(error)) => {
                        malformed = Some(ClientFault::Malformed(error.into()));
                        break;
                    }
                    Err(CodecError::Io(error)) => return ReaderEnd::Io(error),
                }
            }
            // Frames before a malformed one are valid and still go through.
            match self.forward(&mut frames, &mut batch).await {
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

    /// Checks the frames with the router and hands the accepted ones to the
    /// agent writer, waiting while a frame's session has no credit.
    /// `Err(Some)` is a fault that ends the client; `Err(None)` means the
    /// relay or the client is stopping.
    async fn forward(
        &mut self,
        frames: &mut VecDeque<Frame>,
        batch: &mut Vec<Frame>,
    ) -> Result<(), Option<ClientFault>> {
        while !frames.is_empty() {
            let stop = self.admit(frames, batch);
            // What was accepted before a fault still goes.
            if !batch.is_empty() {
                // Not raced against the stop: a frame may be half written.
                // The relay's flush deadline ends the wait if it must.
                let submitted = std::mem::take(batch);
                *batch = agent_writer::submit(self.shared, self.client, submitted)
                    .await
                    .map_err(|_| None)?;
            }
            match stop {
                Stop::Drained => {}
                Stop::Held => {
                    Counters::inc(&self.shared.counters.flow_waits);
                    // A wake that came since the verdict left a permit.
                    tokio::select! {
                        biased;
                        () = self.stop.cancelled() => return Err(None),
                        () = self.credit.notified() => {}
                    }
                }
                Stop::End(fault) => {
                    frames.clear();
                    return Err(fault);
                }
            }
        }
        Ok(())
    }

    /// Moves the frames the router accepts from the front of `frames` into
    /// `batch`, under one lock of the board, and says what stopped it.
    fn admit(&self, frames: &mut VecDeque<Frame>, batch: &mut Vec<Frame>) -> Stop {
        let mut board = self.shared.board();
        let board = &mut *board;
        let mut stop = Stop::Drained;
        while let Some(frame) = frames.front() {
            match board
                .router
                .client_frame(self.client, frame.header(), frame.wire_len())
            {
                ClientVerdict::Forward { shutdown } => {
                    if shutdown {
                        board.note(Note::ShutdownRequested);
                        self.shared.drain_tx.send_modify(|n| *n += 1);
                    }
                    batch.extend(frames.pop_front());
                }
                ClientVerdict::Hold => {
                    stop = Stop::Held;
                    break;
                }
                ClientVerdict::RefuseSession(reason) => {
                    let Some(request) = frames.pop_front() else {
                        break;
                    };
                    if let Some(reply) = refusal(&request, reason) {
                        self.answer(board, reply);
                        continue;
                    }
                    // A request of a type we cannot answer in the agent's
                    // place: the client goes.
                    let reject = match reason {
                        RefuseReason::Limit { limit } => RejectReason::TooManySessions { limit },
                        RefuseReason::IdInUse { id } => RejectReason::IdInUse { id },
                    };
                    stop = Stop::End(Some(ClientFault::Rejected(reject)));
                    break;
                }
                ClientVerdict::Reject(reason) => {
                    stop = Stop::End(Some(ClientFault::Rejected(reason)));
                    break;
                }
                ClientVerdict::Stale => {
                    stop = Stop::End(None);
                    break;
                }
            }
        }
        self.shared.carry_out(board);
        stop
    }

    /// Queues the relay's own answer for this client, as if from the agent.
    fn answer(&self, board: &mut Switchboard, reply: Vec<Frame>) {
        let Some(outbox) = board.attached(self.client).map(|a| Arc::clone(&a.outbox)) else {
            return;
        };
        for frame in reply {
            if !board
                .router
                .queue_own(self.client, charge(frame.wire_len()))
            {
                return;
            }
            outbox.push(frame.into_wire(), None);
        }
    }
}

/// Why [`ClientReader::admit`] stopped taking frames.
enum Stop {
    /// Every frame was taken (forwarded or answered).
    Drained,
    /// The next frame waits for credit.
    Held,
    /// The client must go (with its fault, or none if it is already gone).
    End(Option<ClientFault>),
}

/// The terminal error the relay sends in the agent's place for a session
/// it will not open: what our agent answers when it is full itself (exec:
/// a stderr line and exit code 126; fs: `ok: false`). `None` for a type the
/// relay cannot answer.
fn refusal(request: &Frame, reason: RefuseReason) -> Option<Vec<Frame>> {
    let text = format!("agent-relay: {reason}");
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
