//! The agent reader: one task that assembles every frame the agent sends
//! and routes it. It never waits for a client.

use std::sync::Arc;
use std::time::Instant;

use relay_codec::payload::FlowCredit;
use relay_codec::{Envelope, Frame, FrameAssembler, FrameCodec, FrameError, Message, MessageType};
use relay_router::{AgentVerdict, DropReason, ReadyOutcome};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::RelayError;
use crate::state::{Note, RelayState, Switchboard};
use crate::stats::Counters;

/// Bytes the agent reader takes per read.
const READ_CHUNK: usize = 64 * 1024;

/// Where the agent reader gets the guest's bytes.
pub(crate) enum AgentSource {
    /// The relay end of a ring: frames are assembled straight from the ring
    /// memory (`peek`/`consume`), without a staging copy.
    Ring(relay_ring::RelayReader),
    /// Any other byte stream, read through a staging buffer.
    Stream {
        reader: Box<dyn AsyncRead + Send + Unpin>,
        staging: Vec<u8>,
    },
}

/// What one read gave.
struct Read {
    /// Bytes taken from the stream (0: it ended).
    taken: usize,
    /// The error that stopped assembling; the frames before it are good.
    malformed: Option<FrameError>,
}

impl AgentSource {
    /// Any byte stream.
    pub(crate) fn stream(reader: Box<dyn AsyncRead + Send + Unpin>) -> AgentSource {
        AgentSource::Stream {
            reader,
            staging: vec![0u8; READ_CHUNK],
        }
    }

    /// Waits for guest bytes and feeds at most [`READ_CHUNK`] of them to the
    /// assembler, collecting whole frames in `frames`.
    async fn read_into(
        &mut self,
        assembler: &mut FrameAssembler,
        frames: &mut Vec<Frame>,
    ) -> std::io::Result<Read> {
        match self {
            AgentSource::Ring(reader) => {
                if reader.fill(1).await? == 0 {
                    return Ok(Read {
                        taken: 0,
                        malformed: None,
                    });
                }
                let (first, second) = reader.peek();
                let mut taken = 0;
                let mut malformed = None;
                for part in [first, second] {
                    let part = &part[..part.len().min(READ_CHUNK - taken)];
                    let (used, error) = assemble(assembler, part, frames);
                    taken += used;
                    if error.is_some() {
                        malformed = error;
                        break;
                    }
                }
                reader.consume(taken);
                // A malformed first byte took nothing but is not the end.
                let taken = taken.max(usize::from(malformed.is_some()));
                Ok(Read { taken, malformed })
            }
            AgentSource::Stream { reader, staging } => {
                let n = reader.read(staging).await?;
                let (_, malformed) = assemble(assembler, &staging[..n], frames);
                Ok(Read {
                    taken: n,
                    malformed,
                })
            }
        }
    }
}

/// Feeds `input` to the assembler; returns the bytes it took.
fn assemble(
    assembler: &mut FrameAssembler,
    mut input: &[u8],
    frames: &mut Vec<Frame>,
) -> (usize, Option<FrameError>) {
    let mut taken = 0;
    while !input.is_empty() {
        match assembler.push(input) {
            Ok((used, frame)) => {
                input = &input[used..];
                taken += used;
                frames.extend(frame);
            }
            Err(error) => return (taken, Some(error)),
        }
    }
    (taken, None)
}

/// Reads frames from the agent and routes them; never waits for a client.
pub(crate) async fn run_agent_reader(
    shared: Arc<RelayState>,
    mut source: AgentSource,
) -> Result<(), RelayError> {
    let mut assembler = FrameAssembler::new(FrameCodec::new());
    let mut frames = Vec::new();
    loop {
        let read = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return Ok(()),
            read = source.read_into(&mut assembler, &mut frames) => read.map_err(RelayError::AgentIo)?,
        };
        if read.taken == 0 {
            assembler.finish().map_err(RelayError::AgentProtocol)?;
            tracing::warn!("agent stream ended");
            return Err(RelayError::AgentClosed);
        }
        route(&shared, &mut frames);
        if let Some(error) = read.malformed {
            return Err(RelayError::AgentProtocol(error));
        }
        // A full read: more guest bytes are probably waiting. Let the tasks
        // this batch woke (client writers, the agent writer) run before
        // taking them: the ring's `poll_read` does not spend tokio's coop
        // budget while it has data, so without this a streaming guest keeps
        // this task polling while a woken writer waits, its outbox grows to
        // the budget and a client that reads as fast as it can is cut off.
        // This takes turns; it never waits for a client.
        if read.taken == READ_CHUNK {
            tokio::task::yield_now().await;
        }
    }
}

/// What a control frame means to the relay, read from its body.
enum ForRelay {
    /// A `core.ready`, with the window it offers (`None`: no offer).
    Ready(Option<u32>),
    /// A `core.flow.credit`.
    Credit(FlowCredit),
    /// Anything else.
    Other,
}

impl ForRelay {
    fn of(frame: &Frame) -> ForRelay {
        let Ok(envelope) = Envelope::parse(frame.body()) else {
            return ForRelay::Other;
        };
        match MessageType::from_wire_name(&envelope.message_type) {
            Some(MessageType::Ready) => match Message::from_frame(frame) {
                Ok(Message::Ready(ready)) => ForRelay::Ready(ready.flow.map(|flow| flow.window)),
                // A ready whose payload we cannot read still means ready:
                // serve it as it is, without flow control.
                _ => ForRelay::Ready(None),
            },
            Some(MessageType::FlowCredit) => match Message::from_frame(frame) {
                Ok(Message::FlowCredit(credit)) => ForRelay::Credit(credit),
                _ => ForRelay::Other,
            },
            _ => ForRelay::Other,
        }
    }
}

/// Routes a batch of agent frames under one lock of the board.
fn route(shared: &RelayState, frames: &mut Vec<Frame>) {
    if frames.is_empty() {
        return;
    }
    let counters = &shared.counters;
    let now = Instant::now();
    let mut board = shared.board();
    let board = &mut *board;
    for frame in frames.drain(..) {
        Counters::inc(&counters.agent_frames);
        Counters::add(&counters.agent_bytes, frame.wire_len() as u64);
        if !board.router.is_ready() {
            match ForRelay::of(&frame) {
                ForRelay::Ready(offer) => first_ready(shared, board, offer, frame),
                _ => Counters::inc(&counters.pre_ready_discarded),
            }
            continue;
        }
        let header = frame.header();
        let len = frame.wire_len();
        match board.router.agent_frame(header, len, now) {
            AgentVerdict::Deliver { client, credited } => {
                let pushed = board.attached(client).is_some_and(|attached| {
                    attached
                        .outbox
                        .push(frame.into_wire(), credited.then_some(header))
                });
                if !pushed {
                    // Its connection is going: the router learns of it
                    // when its task finishes; the charge goes back now.
                    Counters::inc(&counters.dropped_client_gone);
                    board
                        .router
                        .frames_left(client, crate::outbox::charge(len), &[]);
                }
            }
            AgentVerdict::Control => match ForRelay::of(&frame) {
                ForRelay::Ready(_) => ready_again(shared, board, frame),
                ForRelay::Credit(credit) if board.router.flow_window().is_some() => {
                    Counters::inc(&counters.credits_received);
                    board.router.agent_credit(credit.id, credit.bytes);
                }
                _ => Counters::inc(&counters.control_discarded),
            },
            AgentVerdict::Drop(DropReason::CutOff) => {
                Counters::inc(&counters.dropped_slow_consumer);
            }
            AgentVerdict::Drop(reason) => {
                tracing::trace!(id = header.id, %reason, "dropping agent frame");
            }
        }
    }
    shared.carry_out(board);
}

/// The first `core.ready`: serve clients, once the acceptance of a flow
/// offer is on its way to the agent ahead of every client frame.
fn first_ready(shared: &RelayState, board: &mut Switchboard, offer: Option<u32>, frame: Frame) {
    let ReadyOutcome::First { accept } = board.router.agent_ready(offer) else {
        unreachable!("the router was not ready");
    };
    tracing::info!(offered = ?offer, accepted = ?accept, "agent ready");
    board.ready = Some(frame);
    match accept {
        // The agent writer writes the acceptance, then opens the doors.
        Some(window) => board.accept = Some(window),
        None => {
            shared.ready_tx.send_replace(true);
        }
    }
}

/// A `core.ready` after the first: a restarted agent, or a confused one.
/// The router ends every session and cuts their clients off; the new frame
/// is cached for clients that connect from now on.
fn ready_again(shared: &RelayState, board: &mut Switchboard, frame: Frame) {
    board.router.agent_ready(None);
    board.ready = Some(frame);
    if board.accept.take().is_some() {
        // Restarted before the acceptance went out: there is no flow
        // control to accept any more.
        shared.ready_tx.send_replace(true);
    }
    Counters::inc(&shared.counters.ready_replaced);
    board.note(Note::ReadyAgain);
}
