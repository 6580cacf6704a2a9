//! The agent side: one reader that routes every frame the agent sends and
//! never waits for a client, and the task that returns flow credit.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use relay_codec::{
    Envelope, Flags, Frame, FrameAssembler, FrameCodec, FrameError, Message, MessageType,
};
use relay_router::{AgentVerdict, ClientId};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{ClientFault, RelayError};
use crate::flow::Flow;
use crate::outbox::Push;
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
        route(&shared, &mut frames);
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

/// The flow offer of a `core.ready` frame: `None` if the frame is not a
/// `core.ready`, `Some(window)` otherwise (`window` is `None` without an offer).
fn ready_offer(frame: &Frame) -> Option<Option<u32>> {
    let envelope = Envelope::parse(frame.body()).ok()?;
    if envelope.message_type != MessageType::Ready.wire_name() {
        return None;
    }
    match Message::from_frame(frame) {
        Ok(Message::Ready(ready)) => Some(ready.flow.map(|flow| flow.window)),
        // A ready whose payload we cannot read still means ready: serve it
        // as it is, without flow control.
        _ => Some(None),
    }
}

/// Routes a batch of agent frames under one lock of the hub.
fn route(shared: &Shared, frames: &mut Vec<Frame>) {
    if frames.is_empty() {
        return;
    }
    let counters = &shared.counters;
    let mut hub = shared.hub();
    let hub = &mut *hub;
    for frame in frames.drain(..) {
        Counters::inc(&counters.agent_frames);
        Counters::add(&counters.agent_bytes, frame.wire_len() as u64);
        let header = frame.header();
        if hub.ready.is_none() {
            match ready_offer(&frame) {
                Some(window) => {
                    hub.flow = window.map(Flow::new);
                    tracing::info!(flow_window = ?window, "agent ready");
                    hub.ready = Some(frame);
                    shared.ready_tx.send_replace(true);
                }
                None => Counters::inc(&counters.pre_ready_discarded),
            }
            continue;
        }
        if header.flags.contains(Flags::FLOW_CONTROL) {
            // Never for clients: credit when negotiated, dropped otherwise.
            if hub.flow.is_some() {
                take_credit(shared, hub, &frame);
            } else {
                Counters::inc(&counters.control_discarded);
            }
            continue;
        }
        match hub.router.agent_frame(header) {
            AgentVerdict::Deliver(client) => deliver(shared, hub, client, frame),
            AgentVerdict::Control => match ready_offer(&frame) {
                Some(window) => {
                    tracing::info!(flow_window = ?window, "agent sent core.ready again; replacing the cached one");
                    hub.flow = window.map(Flow::new);
                    hub.ready = Some(frame);
                    Counters::inc(&counters.ready_replaced);
                    // A frame held for credit of the old agent's sessions
                    // must look again: those sessions are gone.
                    for attached in hub.clients.iter().flatten() {
                        attached.credit.notify_one();
                    }
                }
                None => Counters::inc(&counters.control_discarded),
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
}

/// A `core.flow.credit` from the agent: more room for a session's client frames.
fn take_credit(shared: &Shared, hub: &mut Hub, frame: &Frame) {
    let Ok(Message::FlowCredit(credit)) = Message::from_frame(frame) else {
        tracing::warn!(
            id = frame.id(),
            "ignoring a malformed flow-control frame from the agent"
        );
        return;
    };
    Counters::inc(&shared.counters.credits_received);
    if let Some(flow) = hub.flow.as_mut() {
        flow.credit_from_agent(frame.id(), credit.bytes);
    }
    wake_owner(hub, frame.id());
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
    while shared.total_queued.load(Ordering::Relaxed) + len > budget {
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
