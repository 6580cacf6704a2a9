//! The agent side: one reader that routes every frame the agent sends and
//! never waits for a client, and the task that returns flow credit.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use relay_codec::payload::FlowCredit;
use relay_codec::{
    Envelope, Flags, Frame, FrameAssembler, FrameCodec, FrameError, Message, MessageType,
};
use relay_router::{AgentVerdict, ClientId};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{ClientFault, RelayError};
use crate::flow::{self, Flow};
use crate::outbox::{self, Push};
use crate::ratelog::limited;
use crate::relay::{Hub, Shared};
use crate::stats::Counters;

/// Bytes the agent reader asks for per read.
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

impl AgentSource {
    /// Any byte stream.
    pub(crate) fn stream(reader: Box<dyn AsyncRead + Send + Unpin>) -> AgentSource {
        AgentSource::Stream {
            reader,
            staging: vec![0u8; READ_CHUNK],
        }
    }

    /// Waits for guest bytes and feeds at most [`READ_CHUNK`] of them to the
    /// assembler, collecting whole frames in `frames`. Returns the bytes
    /// taken (0 at end of stream) and the error that stopped assembling, if
    /// any (the frames before it are in `frames`).
    async fn read_into(
        &mut self,
        assembler: &mut FrameAssembler,
        frames: &mut Vec<Frame>,
    ) -> std::io::Result<(usize, Option<FrameError>)> {
        match self {
            AgentSource::Ring(reader) => {
                if reader.fill(1).await? == 0 {
                    return Ok((0, None));
                }
                let (first, second) = reader.peek();
                let mut taken = 0;
                let mut malformed = None;
                'parts: for part in [first, second] {
                    let mut input = &part[..part.len().min(READ_CHUNK - taken)];
                    while !input.is_empty() {
                        match assembler.push(input) {
                            Ok((used, frame)) => {
                                input = &input[used..];
                                taken += used;
                                frames.extend(frame);
                            }
                            Err(error) => {
                                malformed = Some(error);
                                break 'parts;
                            }
                        }
                    }
                }
                reader.consume(taken);
                // A malformed first byte took nothing but is not the end.
                Ok((taken.max(usize::from(malformed.is_some())), malformed))
            }
            AgentSource::Stream { reader, staging } => {
                let n = reader.read(staging).await?;
                let mut input = &staging[..n];
                while !input.is_empty() {
                    match assembler.push(input) {
                        Ok((used, frame)) => {
                            input = &input[used..];
                            frames.extend(frame);
                        }
                        Err(error) => return Ok((n, Some(error))),
                    }
                }
                Ok((n, None))
            }
        }
    }
}

/// Reads frames from the agent and routes them; never waits for a client.
pub(crate) async fn run_agent_reader(
    shared: Arc<Shared>,
    mut source: AgentSource,
) -> Result<(), RelayError> {
    let mut assembler = FrameAssembler::new(FrameCodec::new());
    let mut frames = Vec::new();
    loop {
        let (n, malformed) = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return Ok(()),
            read = source.read_into(&mut assembler, &mut frames) => read.map_err(RelayError::AgentIo)?,
        };
        if n == 0 {
            assembler.finish().map_err(RelayError::AgentProtocol)?;
            tracing::warn!("agent stream ended");
            return Err(RelayError::AgentClosed);
        }
        if let Some(window) = route(&shared, &mut frames) {
            // Written before any client is greeted: the agent must see the
            // acceptance before the first session it is to charge.
            if shared
                .write_to_agent(&[flow::accept_frame(window)])
                .await
                .is_err()
            {
                return Ok(());
            }
            shared.ready_tx.send_replace(true);
        }
        if let Some(error) = malformed {
            return Err(RelayError::AgentProtocol(error));
        }
        // A full read: more guest bytes are probably waiting. Let the tasks
        // this batch woke (client writers) run before taking them. The
        // ring's `poll_read` does not spend tokio's coop budget while it
        // has data, so without this a streaming guest keeps this task
        // polling while a woken writer waits in this worker's LIFO slot,
        // which other workers cannot steal: its outbox grows to the budget
        // and a client that reads as fast as it can is cut off. This takes
        // turns; it never waits for a client.
        if n == READ_CHUNK {
            tokio::task::yield_now().await;
        }
    }
}

/// What an agent frame means to the relay itself, read from its body.
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

/// Routes a batch of agent frames under one lock of the hub. Returns the
/// window to accept when this batch held the first `core.ready` and it
/// offered flow control: the caller writes `core.flow.accept` before any
/// client is greeted, so the agent sees it before every session.
fn route(shared: &Shared, frames: &mut Vec<Frame>) -> Option<u32> {
    let mut accept = None;
    if frames.is_empty() {
        return accept;
    }
    let counters = &shared.counters;
    let mut hub = shared.hub();
    let hub = &mut *hub;
    for frame in frames.drain(..) {
        Counters::inc(&counters.agent_frames);
        Counters::add(&counters.agent_bytes, frame.wire_len() as u64);
        let header = frame.header();
        if hub.ready.is_none() {
            match ForRelay::of(&frame) {
                ForRelay::Ready(offer) => {
                    let window = offer.map(flow::accepted_window);
                    tracing::info!(offered = ?offer, accepted = ?window, "agent ready");
                    hub.flow = window.map(Flow::new);
                    hub.ready = Some(frame);
                    match window {
                        Some(window) => accept = Some(window),
                        None => {
                            shared.ready_tx.send_replace(true);
                        }
                    }
                }
                _ => Counters::inc(&counters.pre_ready_discarded),
            }
            continue;
        }
        match hub.router.agent_frame(header) {
            AgentVerdict::Deliver(client) => deliver(shared, hub, client, frame),
            AgentVerdict::Control => match ForRelay::of(&frame) {
                ForRelay::Ready(_) => replace_ready(shared, hub, frame),
                ForRelay::Credit(credit) if hub.flow.is_some() => {
                    take_credit(shared, hub, credit);
                }
                _ => Counters::inc(&counters.control_discarded),
            },
            AgentVerdict::Drop(reason) => {
                tracing::debug!(id = header.id, %reason, "dropping agent frame");
                if let Some(flow) = hub.flow.as_mut() {
                    flow.released(header, frame.wire_len());
                }
            }
        }
        if header.flags.contains(Flags::TERMINAL)
            && let Some(flow) = hub.flow.as_mut()
        {
            flow.session_ended(header.id);
            // Its client may hold a frame for that session's credit, which
            // will never come now: let it send the frame (the agent ignores it).
            wake_owner(hub, header.id);
        }
    }
    shared.wake_credit_task(hub);
    accept
}

/// A `core.ready` after the first: a restarted agent, or a confused one.
/// The new one is cached for clients that connect from now on. Flow control
/// ends here for good: a restarted agent waits for an acceptance that
/// clients may already have overtaken, so both sides fall back to plain
/// generation 1 rather than disagree about which sessions carry credit.
fn replace_ready(shared: &Shared, hub: &mut Hub, frame: Frame) {
    limited!(
        info,
        "agent sent core.ready again; replacing the cached one"
    );
    hub.ready = Some(frame);
    Counters::inc(&shared.counters.ready_replaced);
    // The sessions open now died with the old agent: end their clients'
    // connections rather than leave them waiting for ever.
    for (client, sessions) in hub.router.agent_restarted() {
        shared.cut_off(hub, client, ClientFault::AgentRestarted { sessions });
    }
    if hub.flow.take().is_some() {
        // A frame held for credit must look again: nothing is held now.
        for attached in hub.clients.iter().flatten() {
            attached.credit.notify_one();
        }
    }
}

/// A `core.flow.credit` from the agent: more room for a session's client frames.
fn take_credit(shared: &Shared, hub: &mut Hub, credit: FlowCredit) {
    Counters::inc(&shared.counters.credits_received);
    if let Some(flow) = hub.flow.as_mut() {
        flow.credit_from_agent(credit.id, credit.bytes);
    }
    wake_owner(hub, credit.id);
}

/// Wakes the client owning `id` if it waits for credit.
fn wake_owner(hub: &Hub, id: u32) {
    if let Some(owner) = hub.router.owner(id)
        && let Some(attached) = hub.clients[owner.slot() as usize].as_ref()
    {
        attached.credit.notify_one();
    }
}

/// Queues a frame for its client, enforcing the per-client and total budgets.
fn deliver(shared: &Shared, hub: &mut Hub, client: ClientId, frame: Frame) {
    let len = frame.wire_len();
    let header = frame.header();
    let budget = shared.config.total_queue_budget;
    while shared.total_queued.load(Ordering::Relaxed) + outbox::charge(len) > budget {
        let victim = hub
            .clients
            .iter()
            .flatten()
            .filter(|a| a.fault.is_none())
            .max_by_key(|a| a.outbox.pending_bytes())
            .map(|a| (a.id, a.outbox.pending_bytes()));
        let Some((victim, queued)) = victim else {
            break;
        };
        shared.cut_off(hub, victim, ClientFault::TotalBudget { queued });
    }
    let credit = (hub.flow.is_some() && Flow::is_charged(header)).then_some(header);
    let pushed = match hub.clients[client.slot() as usize]
        .as_ref()
        .filter(|a| a.id == client)
    {
        Some(attached) => {
            let pushed = attached
                .outbox
                .push(frame.into_wire(), credit, &shared.total_queued);
            (pushed, attached.fault.is_some())
        }
        None => (Push::Closed, false),
    };
    match pushed {
        (Push::Queued, _) => return,
        (Push::Closed, true) => Counters::inc(&shared.counters.dropped_slow_consumer),
        (Push::Closed, false) => Counters::inc(&shared.counters.dropped_client_gone),
        (Push::OverBudget, _) => {
            let budget = shared.config.client_queue_budget;
            shared.cut_off(hub, client, ClientFault::OverBudget { budget });
            Counters::inc(&shared.counters.dropped_slow_consumer);
        }
    }
    // The frame was discarded: it has left the relay.
    if let Some(flow) = hub.flow.as_mut() {
        flow.released(header, len);
    }
}

/// Writes credit frames to the agent as they become due.
pub(crate) async fn run_credit_writer(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = shared.credit_due.notified() => {}
        }
        let frames = {
            let mut hub = shared.hub();
            hub.flow
                .as_mut()
                .map(Flow::take_pending)
                .unwrap_or_default()
        };
        if frames.is_empty() {
            continue;
        }
        let sent = frames.len() as u64;
        if shared.write_to_agent(&frames).await.is_err() {
            return;
        }
        Counters::add(&shared.counters.credits_sent, sent);
    }
}
