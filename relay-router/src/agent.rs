//! Events on the agent's side: its frames, its `core.ready` and credit,
//! the control frames the relay owes it, and time passing.

use std::time::Instant;

use relay_codec::flow::{self, accepted_window};
use relay_codec::{Flags, FrameHeader, RUNTIME_RESERVED_ID};

use crate::{
    AgentVerdict, ControlBatch, CutReason, DropReason, ReadyOutcome, Router, Session, SlotState,
};

impl Router {
    /// The agent sent a frame with this header and wire length.
    pub fn agent_frame(&mut self, header: FrameHeader, len: usize, now: Instant) -> AgentVerdict {
        let FrameHeader { id, flags } = header;
        if id == 0 {
            self.counters.agent_control_frames += 1;
            return AgentVerdict::Control;
        }
        if id == RUNTIME_RESERVED_ID {
            // microsandbox 0.7's agent speaks to its own runtime here; in the
            // legacy layout the id would otherwise fall into the last slot.
            self.counters.agent_frames_dropped_reserved += 1;
            return AgentVerdict::Drop(DropReason::Reserved);
        }
        let Some(slot) = self.config.layout.slot_of(id) else {
            self.counters.agent_frames_dropped_no_slot += 1;
            return AgentVerdict::Drop(DropReason::NoSlot);
        };
        let terminal = flags.contains(Flags::TERMINAL);
        let entry = &mut self.slots[slot as usize];
        let mut credited = false;
        match entry.sessions.get_mut(&id) {
            Some(Session::Killed(tomb)) => {
                if terminal {
                    self.remove_session(slot, id);
                    self.counters.sessions_closed += 1;
                } else if tomb.killed_at.is_some() {
                    tomb.last_frame = Some(now);
                }
                self.counters.agent_frames_dropped_tombstoned += 1;
                return AgentVerdict::Drop(DropReason::Tombstoned);
            }
            Some(Session::Open { .. }) if terminal => {
                self.remove_session(slot, id);
                self.counters.sessions_closed += 1;
                // Its client may hold a frame for credit that will never
                // come now: let it send the frame (the agent ignores it).
                if self.window.is_some() {
                    self.wake_owner(slot);
                }
            }
            Some(Session::Open { .. }) => {
                credited = self.window.is_some() && flow::is_charged(header)
            }
            None => {}
        }
        match &self.slots[slot as usize].state {
            SlotState::Free => {
                self.counters.agent_frames_dropped_free += 1;
                AgentVerdict::Drop(DropReason::SlotFree)
            }
            SlotState::Resting => {
                self.counters.agent_frames_dropped_quarantined += 1;
                AgentVerdict::Drop(DropReason::SlotQuarantined)
            }
            SlotState::Occupied(occupant) => {
                let client = occupant.client;
                if self.charge_to(slot, self.config.charge(len)) {
                    self.counters.agent_frames_delivered += 1;
                    AgentVerdict::Deliver { client, credited }
                } else {
                    self.counters.agent_frames_dropped_cut_off += 1;
                    AgentVerdict::Drop(DropReason::CutOff)
                }
            }
        }
    }

    /// Charges `cost` to the slot's client, cutting off whoever the budgets
    /// say must go. Returns whether the client is still served and charged.
    pub(crate) fn charge_to(&mut self, slot: u32, cost: usize) -> bool {
        let SlotState::Occupied(occupant) = &self.slots[slot as usize].state else {
            return false;
        };
        if occupant.cut {
            return false;
        }
        if occupant.queued.saturating_add(cost) > self.config.client_queue_budget {
            let budget = self.config.client_queue_budget;
            self.cut(slot, CutReason::OverBudget { budget });
            return false;
        }
        while self.queued_total.saturating_add(cost) > self.config.total_queue_budget {
            let Some((victim, queued)) = self.largest_queue() else {
                break;
            };
            self.cut(victim, CutReason::TotalBudget { queued });
            if victim == slot {
                return false;
            }
        }
        let SlotState::Occupied(occupant) = &mut self.slots[slot as usize].state else {
            unreachable!("checked above");
        };
        occupant.queued += cost;
        self.queued_total += cost;
        true
    }

    /// The served client with the most bytes queued, and how many.
    fn largest_queue(&self) -> Option<(u32, usize)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, s)| match &s.state {
                SlotState::Occupied(o) if !o.cut => Some((u32::try_from(slot).ok()?, o.queued)),
                _ => None,
            })
            .max_by_key(|&(_, queued)| queued)
    }

    /// The agent sent `core.ready`, offering `offer` as its window (or no
    /// flow control). The first one starts service; any later one is a
    /// restarted (or confused) agent that knows none of the open sessions:
    /// they are all forgotten, clients that had some are cut off, resting
    /// slots are freed, and flow control ends for good (a restarted agent
    /// waits for an acceptance that clients may already have overtaken, so
    /// both sides fall back to plain generation 1).
    pub fn agent_ready(&mut self, offer: Option<u32>) -> ReadyOutcome {
        if !self.ready {
            self.ready = true;
            self.window = offer.map(accepted_window);
            return ReadyOutcome::First {
                accept: self.window,
            };
        }
        self.counters.agent_restarts += 1;
        let mut forgotten = 0;
        for slot in 0..self.slots.len() {
            let slot = u32::try_from(slot).unwrap_or_else(|_| unreachable!("slots fit a u32"));
            let entry = &mut self.slots[slot as usize];
            let open = entry.open_sessions();
            forgotten += entry.sessions.len();
            entry.sessions.clear();
            entry.tombstones = 0;
            self.release_if_done(slot);
            if open > 0 {
                self.cut(slot, CutReason::AgentRestarted { sessions: open });
            }
        }
        self.counters.sessions_abandoned += forgotten as u64;
        self.kills.clear();
        self.credit_due.clear();
        if self.window.take().is_some() {
            // A frame held for credit must look again: nothing is held now.
            for slot in 0..self.slots.len() as u32 {
                self.wake_owner(slot);
            }
        }
        ReadyOutcome::Restarted {
            sessions: forgotten,
        }
    }

    /// The agent granted `bytes` more credit on session `id`. Returns
    /// whether a session took it (credit for anything else is counted and
    /// ignored).
    pub fn agent_credit(&mut self, id: u32, bytes: u32) -> bool {
        let slot = self
            .config
            .layout
            .slot_of(id)
            .filter(|_| self.window.is_some());
        let taken =
            slot.is_some_and(
                |slot| match self.slots[slot as usize].sessions.get_mut(&id) {
                    Some(Session::Open {
                        send: Some(credit), ..
                    }) => {
                        let was_out = !credit.may_send();
                        credit.grant(bytes);
                        if was_out {
                            self.wake_owner(slot);
                        }
                        true
                    }
                    _ => false,
                },
            );
        if !taken {
            self.counters.credits_ignored += 1;
        }
        taken
    }

    /// Whether control frames wait to be written.
    pub fn has_control(&self) -> bool {
        !self.kills.is_empty() || !self.credit_due.is_empty()
    }

    /// The control frames the relay owes the agent now: kills of departed
    /// clients' sessions and credit due, one entry per session.
    pub fn take_control(&mut self) -> ControlBatch {
        let kills = std::mem::take(&mut self.kills).into_iter().collect();
        let mut credits = Vec::with_capacity(self.credit_due.len());
        for id in std::mem::take(&mut self.credit_due) {
            let Some(slot) = self.config.layout.slot_of(id) else {
                continue;
            };
            if let Some(Session::Open { due, .. }) = self.slots[slot as usize].sessions.get_mut(&id)
                && *due > 0
            {
                credits.push((id, std::mem::take(due)));
            }
        }
        ControlBatch { kills, credits }
    }

    /// These kills are on the wire: their sessions' grace starts at `now`.
    pub fn kills_written(&mut self, ids: &[u32], now: Instant) {
        for &id in ids {
            let Some(slot) = self.config.layout.slot_of(id) else {
                continue;
            };
            if let Some(Session::Killed(tomb)) = self.slots[slot as usize].sessions.get_mut(&id)
                && tomb.killed_at.is_none()
            {
                tomb.killed_at = Some(now);
            }
        }
    }

    /// Forgets every tombstone whose grace has passed at `now`, freeing the
    /// slots left without any. Returns how many slots became free.
    pub fn tick(&mut self, now: Instant) -> usize {
        let grace = self.config.quarantine_grace;
        let mut freed = 0;
        for slot in 0..self.slots.len() {
            let slot = u32::try_from(slot).unwrap_or_else(|_| unreachable!("slots fit a u32"));
            let entry = &mut self.slots[slot as usize];
            if entry.tombstones == 0 {
                continue;
            }
            let before = entry.sessions.len();
            entry.sessions.retain(|_, session| match session {
                Session::Killed(tomb) => tomb.expires(grace).is_none_or(|at| at > now),
                Session::Open { .. } => true,
            });
            let expired = before - entry.sessions.len();
            entry.tombstones -= expired;
            self.counters.sessions_abandoned += expired as u64;
            if expired > 0 && entry.tombstones == 0 && matches!(entry.state, SlotState::Resting) {
                freed += 1;
            }
            self.release_if_done(slot);
        }
        freed
    }
}
