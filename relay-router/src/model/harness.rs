//! Plays a router against the model, event by event, and checks both.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use relay_codec::flow::accepted_window;
use relay_codec::{Flags, FrameHeader, Handshake};

use super::checks::{check_actions, check_state};
use super::state::{
    Holder, Known, MSession, Model, Queued, credit, expected_agent_verdict, expected_client_verdict,
};
use super::{Event, Report, Scenario, Violation};
use crate::{
    Action, AgentVerdict, ClientId, ClientVerdict, ControlBatch, CutReason, ReadyOutcome, Router,
    RouterCounters, SlotLayout,
};

/// Feeds every event of `scenario` to a router and checks it against the
/// model after each one.
pub fn run(scenario: &Scenario) -> Result<Report, Violation> {
    let mut router = Router::new(scenario.config.clone())
        .map_err(|e| format!("a valid configuration was refused: {e}"))?;
    let mut model = Model::new(&scenario.config);
    let mut now = Instant::now();
    let mut previous = RouterCounters::default();
    let mut peak_queued = 0;
    for (step, event) in scenario.events.iter().enumerate() {
        apply(&mut router, &mut model, *event, &mut now)
            .map_err(|v| format!("event {step} ({event:?}): {v}"))?;
        check_actions(&mut router, &mut model)
            .map_err(|v| format!("actions after event {step} ({event:?}): {v}"))?;
        check_state(&router, &model, &previous)
            .map_err(|v| format!("after event {step} ({event:?}): {v}"))?;
        previous = router.counters();
        peak_queued = peak_queued.max(router.queued_bytes());
    }
    Ok(Report {
        events: scenario.events.len(),
        counters: router.counters(),
        peak_queued,
    })
}

fn apply(
    router: &mut Router,
    model: &mut Model,
    event: Event,
    now: &mut Instant,
) -> Result<(), Violation> {
    match event {
        Event::Connect => connect(router, model, *now),
        Event::Disconnect { client } => match model.nth_client(client) {
            Some(known) => disconnect(router, model, known.id),
            None => Ok(()),
        },
        Event::ClientFrame {
            client,
            id,
            flags,
            len,
        } => {
            let Some(known) = model.nth_client(client) else {
                return Ok(());
            };
            let header = FrameHeader {
                id: model.pick(id),
                flags: Flags::from_bits(flags),
            };
            client_frame(router, model, known, header, usize::from(len))
        }
        Event::AgentFrame { id, flags, len } => {
            let header = FrameHeader {
                id: model.pick(id),
                flags: Flags::from_bits(flags),
            };
            agent_frame(router, model, header, usize::from(len), *now)
        }
        Event::Drain {
            client,
            frames,
            written,
        } => match model.nth_client(client) {
            Some(known) => drain(router, model, known.id, usize::from(frames), written),
            None => Ok(()),
        },
        Event::QueueOwn { client, len } => {
            let Some(known) = model.nth_client(client) else {
                return Ok(());
            };
            let cost = usize::from(len);
            let slot = known.id.slot() as usize;
            let expected = model.holds(known.id) && model.charge(slot, cost);
            if expected {
                let header = FrameHeader {
                    id: 0,
                    flags: Flags::NONE,
                };
                model.push(
                    slot,
                    Queued {
                        cost,
                        header,
                        len: 0,
                        credited: false,
                    },
                );
            }
            let got = router.queue_own(known.id, cost);
            if got != expected {
                return Err(format!("queue_own: {got}, expected {expected}"));
            }
            Ok(())
        }
        Event::Stall { client } => {
            let Some(known) = model.nth_client(client) else {
                return Ok(());
            };
            let expected = model.holds(known.id) && !model.is_cut(known.id);
            if expected {
                model.cut(known.id.slot() as usize, CutReason::Stalled);
            }
            let got = router.cut_off(known.id, CutReason::Stalled);
            if got != expected {
                return Err(format!("cut_off: {got}, expected {expected}"));
            }
            Ok(())
        }
        Event::WriteControl => write_control(router, model, *now),
        Event::Ready { offer } => ready(router, model, offer),
        Event::Credit { id, bytes } => {
            let id = model.pick(id);
            let expected = credit(model, id, bytes);
            let got = router.agent_credit(id, bytes);
            if got != expected {
                return Err(format!("credit for {id}: {got}, expected {expected}"));
            }
            Ok(())
        }
        Event::Tick { millis } => {
            *now += Duration::from_millis(u64::from(millis));
            let expected = model.expire(*now);
            let freed = router.tick(*now);
            if freed != expected {
                return Err(format!("tick freed {freed} slots, expected {expected}"));
            }
            Ok(())
        }
    }
}

fn connect(router: &mut Router, model: &mut Model, now: Instant) -> Result<(), Violation> {
    model.expire(now);
    let connected = model.connected();
    let grace = model.config.quarantine_grace;
    let slot = if connected < model.config.max_clients {
        model.free.pop_front().or_else(|| {
            let mut best: Option<(usize, usize)> = None;
            for (index, s) in model.slots.iter().enumerate() {
                let reusable = s.holder == Holder::Resting
                    && s.sessions.values().all(|session| match *session {
                        MSession::Killed { killed_at, .. } => {
                            killed_at.is_some_and(|k| k + grace <= now)
                        }
                        MSession::Open { .. } => false,
                    });
                if reusable && best.is_none_or(|(_, t)| s.tombstones() < t) {
                    best = Some((index, s.tombstones()));
                }
            }
            best.map(|(index, _)| index)
        })
    } else {
        None
    };
    match (router.connect(now), slot) {
        (Ok(admission), Some(slot)) => {
            let client = admission.client;
            if client.slot() as usize != slot {
                return Err(format!(
                    "admitted to slot {}, expected {slot}",
                    client.slot()
                ));
            }
            if client.generation() <= model.last_generation {
                return Err(format!("generation {client:?} was used before"));
            }
            let range = model.slots[slot].range;
            let expected = match model.config.layout {
                SlotLayout::Legacy => Handshake::Legacy {
                    offset: range.first(),
                },
                SlotLayout::Bounds { .. } => Handshake::Bounds { range },
            };
            if admission.handshake != expected {
                return Err(format!(
                    "slot {slot} greeted with {:?}, expected {expected:?}",
                    admission.handshake
                ));
            }
            let ids = admission.ids;
            if Some(ids) != expected.client_ids() || ids.contains(0) || !range.contains(ids.last())
            {
                return Err(format!("slot {slot} ({range:?}) gave ids {ids:?}"));
            }
            if model.slots[slot].holder == Holder::Resting {
                model.counters.clients_admitted_beside_tombstones += 1;
            }
            model.last_generation = client.generation();
            model.slots[slot].holder = Holder::Client {
                id: client,
                queue: VecDeque::new(),
                cut: false,
                wake_queued: false,
            };
            model.clients.push(Known { id: client, ids });
            model.counters.clients_admitted += 1;
            Ok(())
        }
        (Err(refusal), None) => {
            if refusal.connected != connected
                || refusal.quarantined != model.resting()
                || refusal.max_clients != model.config.max_clients
            {
                return Err(format!("refusal {refusal:?} misreports the state"));
            }
            model.counters.clients_refused += 1;
            Ok(())
        }
        (got, expected) => Err(format!("connect: {got:?}, expected slot {expected:?}")),
    }
}

fn disconnect(router: &mut Router, model: &mut Model, client: ClientId) -> Result<(), Violation> {
    let killed = router.disconnect(client);
    if !model.holds(client) {
        return match killed {
            0 => Ok(()),
            n => Err(format!("a client already gone had {n} kills")),
        };
    }
    let slot = client.slot() as usize;
    let mut expected = 0;
    for (&id, session) in &mut model.slots[slot].sessions {
        if matches!(session, MSession::Open { .. }) {
            *session = MSession::Killed {
                killed_at: None,
                last: None,
            };
            model.credit_due.remove(&id);
            model.kills.insert(id);
            if !model.killed.insert((client.generation(), id)) {
                return Err(format!("session {id} of {client:?} killed twice"));
            }
            expected += 1;
        }
    }
    if killed != expected {
        return Err(format!("{killed} kills, {expected} open sessions"));
    }
    model.counters.clients_disconnected += 1;
    model.counters.sessions_killed += killed as u64;
    if model.slots[slot].tombstones() == 0 {
        model.slots[slot].holder = Holder::Free;
        model.free.push_back(slot);
    } else {
        model.slots[slot].holder = Holder::Resting;
    }
    model.actions.retain(|action| match action {
        Action::CutOff { client: c, .. } | Action::Wake(c) => *c != client,
    });
    Ok(())
}

fn client_frame(
    router: &mut Router,
    model: &mut Model,
    client: Known,
    header: FrameHeader,
    len: usize,
) -> Result<(), Violation> {
    let verdict = router.client_frame(client.id, header, len);
    let expected = expected_client_verdict(model, client, header, len);
    if verdict != expected {
        return Err(format!(
            "client frame {header:?}: {verdict:?}, expected {expected:?}"
        ));
    }
    if matches!(verdict, ClientVerdict::Reject(_)) {
        // The relay disconnects a client on the frame it rejects.
        disconnect(router, model, client.id)?;
    }
    Ok(())
}

fn agent_frame(
    router: &mut Router,
    model: &mut Model,
    header: FrameHeader,
    len: usize,
    now: Instant,
) -> Result<(), Violation> {
    let verdict = router.agent_frame(header, len, now);
    let killed_before = model.slot_of(header.id).is_some_and(|slot| {
        matches!(
            model.slots[slot].sessions.get(&header.id),
            Some(MSession::Killed { .. })
        )
    });
    let expected = expected_agent_verdict(model, header, len, now);
    if let AgentVerdict::Deliver { client, .. } = verdict {
        // Stated on its own, whatever the model expected: only the
        // current holder of the id's slot may receive the frame, and
        // never one of a killed session.
        let owns = model.holds(client)
            && model.slots[client.slot() as usize]
                .range
                .contains(header.id);
        if !owns || killed_before {
            return Err(format!(
                "frame {} delivered to {client:?}, who may not have it",
                header.id
            ));
        }
    }
    if verdict != expected {
        return Err(format!(
            "agent frame {header:?}: {verdict:?}, expected {expected:?}"
        ));
    }
    Ok(())
}

fn drain(
    router: &mut Router,
    model: &mut Model,
    client: ClientId,
    frames: usize,
    written: bool,
) -> Result<(), Violation> {
    let slot = client.slot() as usize;
    let window = model.window;
    let taken: Vec<Queued> = match &mut model.slots[slot].holder {
        Holder::Client { id, queue, .. } if *id == client => {
            let n = frames.min(queue.len());
            queue.drain(..n).collect()
        }
        _ => return Ok(()),
    };
    let charged = taken.iter().map(|q| q.cost).sum();
    let credited: Vec<(FrameHeader, usize)> = taken
        .iter()
        .filter(|q| written && q.credited)
        .map(|q| (q.header, q.len))
        .collect();
    if let Some(window) = window {
        for &(header, len) in &credited {
            if let Some(MSession::Open { owed, due, .. }) =
                model.slots[slot].sessions.get_mut(&header.id)
                && let Some(bytes) = owed.add(len, window)
            {
                *due += bytes;
                model.credit_due.insert(header.id);
            }
        }
    }
    router.frames_left(client, charged, &credited);
    Ok(())
}

fn write_control(router: &mut Router, model: &mut Model, now: Instant) -> Result<(), Violation> {
    let got = router.take_control();
    let kills: Vec<u32> = std::mem::take(&mut model.kills).into_iter().collect();
    let mut credits = Vec::new();
    for id in std::mem::take(&mut model.credit_due) {
        if let Some(slot) = model.slot_of(id)
            && let Some(MSession::Open { due, .. }) = model.slots[slot].sessions.get_mut(&id)
            && *due > 0
        {
            credits.push((id, std::mem::take(due)));
        }
    }
    let expected = ControlBatch { kills, credits };
    if got != expected {
        return Err(format!("control {got:?}, expected {expected:?}"));
    }
    router.kills_written(&got.kills, now);
    for id in &got.kills {
        if let Some(slot) = model.slot_of(*id)
            && let Some(MSession::Killed { killed_at, .. }) = model.slots[slot].sessions.get_mut(id)
            && killed_at.is_none()
        {
            *killed_at = Some(now);
        }
    }
    Ok(())
}

fn ready(router: &mut Router, model: &mut Model, offer: Option<u32>) -> Result<(), Violation> {
    let got = router.agent_ready(offer);
    let expected = if !model.ready {
        model.ready = true;
        model.window = offer.map(accepted_window);
        ReadyOutcome::First {
            accept: model.window,
        }
    } else {
        model.counters.agent_restarts += 1;
        let mut forgotten = 0;
        for slot in 0..model.slots.len() {
            let open = model.slots[slot]
                .sessions
                .values()
                .filter(|s| matches!(s, MSession::Open { .. }))
                .count();
            forgotten += model.slots[slot].sessions.len();
            model.slots[slot].sessions.clear();
            model.release_if_done(slot);
            if open > 0 {
                model.cut(slot, CutReason::AgentRestarted { sessions: open });
            }
        }
        model.counters.sessions_abandoned += forgotten as u64;
        model.kills.clear();
        model.credit_due.clear();
        if model.window.take().is_some() {
            for slot in 0..model.slots.len() {
                model.wake_owner(slot);
            }
        }
        ReadyOutcome::Restarted {
            sessions: forgotten,
        }
    };
    if got != expected {
        return Err(format!("ready: {got:?}, expected {expected:?}"));
    }
    Ok(())
}
