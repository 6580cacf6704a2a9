//! What the harness checks after every event: the actions both sides left
//! behind, and every query and counter of the router against the model.

use super::Violation;
use super::state::{Holder, MSession, MSlot, Model, expires};
use crate::{Action, Router, RouterCounters};

pub(super) fn check_actions(router: &mut Router, model: &mut Model) -> Result<(), Violation> {
    let mut got = Vec::new();
    while let Some(action) = router.poll_action() {
        got.push(action);
    }
    let expected: Vec<Action> = model.actions.drain(..).collect();
    for action in &expected {
        if let Action::Wake(client) = action
            && let Holder::Client {
                id, wake_queued, ..
            } = &mut model.slots[client.slot() as usize].holder
            && id == client
        {
            *wake_queued = false;
        }
    }
    if got != expected {
        return Err(format!("actions {got:?}, expected {expected:?}"));
    }
    Ok(())
}

pub(super) fn check_state(
    router: &Router,
    model: &Model,
    previous: &RouterCounters,
) -> Result<(), Violation> {
    let connected = router.clients_connected();
    if connected != model.connected() || connected > model.config.max_clients {
        return Err(format!(
            "{connected} connected; model {}",
            model.connected()
        ));
    }
    if router.slots_quarantined() != model.resting() {
        return Err(format!(
            "{} slots resting, model {}",
            router.slots_quarantined(),
            model.resting()
        ));
    }
    let sessions = model.known_sessions().len();
    let tombstones: usize = model.slots.iter().map(MSlot::tombstones).sum();
    if router.sessions_open() != sessions || router.sessions_tombstoned() != tombstones {
        return Err(format!(
            "sessions {}/{} tombstoned, model {sessions}/{tombstones}",
            router.sessions_open(),
            router.sessions_tombstoned()
        ));
    }
    if router.control_backlog() > sessions {
        return Err(format!(
            "{} control entries for {sessions} sessions",
            router.control_backlog()
        ));
    }
    let queued = router.queued_bytes();
    if queued != model.queued_total() || queued > model.config.total_queue_budget {
        return Err(format!(
            "{queued} bytes charged, model {}, budget {}",
            model.queued_total(),
            model.config.total_queue_budget
        ));
    }
    for known in &model.clients {
        let holds = model.holds(known.id);
        if router.is_connected(known.id) != holds {
            return Err(format!("{:?} connected: router says {}", known.id, !holds));
        }
        let slot = &model.slots[known.id.slot() as usize];
        let (expected, charged): (Vec<u32>, usize) = if holds {
            let open = slot
                .sessions
                .iter()
                .filter(|(_, s)| matches!(s, MSession::Open { .. }))
                .map(|(&id, _)| id)
                .collect();
            (open, slot.queued())
        } else {
            (Vec::new(), 0)
        };
        if router.sessions_of(known.id) != expected {
            return Err(format!(
                "sessions of {:?}: {:?}, model {expected:?}",
                known.id,
                router.sessions_of(known.id)
            ));
        }
        let got = router.queued_bytes_of(known.id);
        if got != charged || got > model.config.client_queue_budget {
            return Err(format!("{:?} charged {got}, model {charged}", known.id));
        }
    }
    let grace = model.config.quarantine_grace;
    let deadline = model
        .slots
        .iter()
        .flat_map(|s| s.sessions.values())
        .filter_map(|s| match *s {
            MSession::Killed { killed_at, last } => expires(killed_at, last, grace),
            MSession::Open { .. } => None,
        })
        .min();
    if router.next_deadline() != deadline {
        return Err(format!(
            "next deadline {:?}, model {deadline:?}",
            router.next_deadline()
        ));
    }
    let c = router.counters();
    if c != model.counters {
        return Err(format!("counters {c:?}\n model {:?}", model.counters));
    }
    let adds_up = c.clients_admitted - c.clients_disconnected == u64::from(connected)
        && c.sessions_opened
            == c.sessions_closed + c.sessions_abandoned + router.sessions_open() as u64;
    if !adds_up {
        return Err(format!("counters do not add up: {c:?}"));
    }
    if went_down(previous, &c) {
        return Err(format!("a counter went down: {previous:?} -> {c:?}"));
    }
    Ok(())
}

/// Whether any counter decreased (every field is a `u64` that only grows).
pub(super) fn went_down(before: &RouterCounters, after: &RouterCounters) -> bool {
    let fields = |c: &RouterCounters| {
        [
            c.clients_admitted,
            c.clients_admitted_beside_tombstones,
            c.clients_refused,
            c.clients_rejected,
            c.clients_cut_off,
            c.clients_disconnected,
            c.sessions_opened,
            c.sessions_refused,
            c.sessions_closed,
            c.sessions_killed,
            c.sessions_abandoned,
            c.client_frames_forwarded,
            c.shutdown_requests,
            c.agent_frames_delivered,
            c.agent_control_frames,
            c.agent_frames_dropped_free,
            c.agent_frames_dropped_quarantined,
            c.agent_frames_dropped_no_slot,
            c.agent_frames_dropped_reserved,
            c.agent_frames_dropped_tombstoned,
            c.agent_frames_dropped_cut_off,
            c.quarantines_ended,
            c.agent_restarts,
            c.credits_ignored,
            c.client_frames_held,
        ]
    };
    fields(after)
        .iter()
        .zip(fields(before))
        .any(|(now, then)| *now < then)
}
