//! The model's state and its plain re-statement of the router's rules.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

use relay_codec::flow::{Credit, Owed, is_charged};
use relay_codec::{Flags, FrameHeader, IdRange, RUNTIME_RESERVED_ID};

use super::IdPick;
use crate::{
    Action, AgentVerdict, ClientId, ClientVerdict, CutReason, DropReason, EXEMPT_LEN, OVERDRAFT,
    RefuseReason, RejectReason, RouterConfig, RouterCounters, SlotLayout,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Queued {
    pub(super) cost: usize,
    pub(super) header: FrameHeader,
    pub(super) len: usize,
    pub(super) credited: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Holder {
    Free,
    Client {
        id: ClientId,
        queue: VecDeque<Queued>,
        cut: bool,
        wake_queued: bool,
    },
    Resting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MSession {
    Open {
        send: Option<Credit>,
        owed: Owed,
        due: u64,
    },
    Killed {
        killed_at: Option<Instant>,
        last: Option<Instant>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct MSlot {
    pub(super) holder: Holder,
    pub(super) range: IdRange,
    pub(super) sessions: BTreeMap<u32, MSession>,
}

impl MSlot {
    pub(super) fn queued(&self) -> usize {
        match &self.holder {
            Holder::Client { queue, .. } => queue.iter().map(|q| q.cost).sum(),
            _ => 0,
        }
    }

    pub(super) fn tombstones(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| matches!(s, MSession::Killed { .. }))
            .count()
    }
}

/// A client the harness has seen admitted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Known {
    pub(super) id: ClientId,
    pub(super) ids: IdRange,
}

/// The reference model of the router's state.
#[derive(Debug)]
pub(super) struct Model {
    pub(super) config: RouterConfig,
    pub(super) slots: Vec<MSlot>,
    pub(super) free: VecDeque<usize>,
    pub(super) clients: Vec<Known>,
    pub(super) killed: HashSet<(u64, u32)>,
    pub(super) counters: RouterCounters,
    pub(super) last_generation: u64,
    pub(super) ready: bool,
    pub(super) window: Option<u32>,
    pub(super) kills: BTreeSet<u32>,
    pub(super) credit_due: BTreeSet<u32>,
    pub(super) actions: VecDeque<Action>,
}

/// Every id of slot `slot`, derived from the specification's arithmetic.
pub(super) fn slot_range(layout: SlotLayout, slot: u32) -> IdRange {
    let (first, last) = match layout {
        SlotLayout::Legacy => {
            let step = u32::MAX / 16;
            let first = slot * step;
            (
                first,
                if slot == 15 {
                    u32::MAX
                } else {
                    first + step - 1
                },
            )
        }
        SlotLayout::Bounds { slots } => {
            // microsandbox 0.7's canonical ranges: [k*S + 1, (k+1)*S) with
            // S = u32::MAX / slots; the multiples of S and the tail belong to none.
            let step = u32::MAX / slots;
            (slot * step + 1, slot * step + step - 1)
        }
    };
    IdRange::new(first, last).unwrap_or_else(|| unreachable!("slot ranges are never empty"))
}

pub(super) fn expires(
    killed_at: Option<Instant>,
    last: Option<Instant>,
    grace: Duration,
) -> Option<Instant> {
    let killed = killed_at?;
    Some(last.map_or(killed, |l| l.max(killed)) + grace)
}

impl Model {
    pub(super) fn new(config: &RouterConfig) -> Model {
        let slots = (0..config.layout.slots())
            .map(|slot| MSlot {
                holder: Holder::Free,
                range: slot_range(config.layout, slot),
                sessions: BTreeMap::new(),
            })
            .collect::<Vec<_>>();
        Model {
            free: (0..slots.len()).collect(),
            slots,
            config: config.clone(),
            clients: Vec::new(),
            killed: HashSet::new(),
            counters: RouterCounters::default(),
            last_generation: 0,
            ready: false,
            window: None,
            kills: BTreeSet::new(),
            credit_due: BTreeSet::new(),
            actions: VecDeque::new(),
        }
    }

    pub(super) fn slot_of(&self, id: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.range.contains(id))
    }

    pub(super) fn connected(&self) -> u32 {
        self.slots
            .iter()
            .filter(|s| matches!(s.holder, Holder::Client { .. }))
            .count() as u32
    }

    pub(super) fn resting(&self) -> u32 {
        self.slots
            .iter()
            .filter(|s| s.holder == Holder::Resting)
            .count() as u32
    }

    pub(super) fn holder_of(&self, slot: usize) -> Option<ClientId> {
        match &self.slots[slot].holder {
            Holder::Client { id, .. } => Some(*id),
            _ => None,
        }
    }

    pub(super) fn holds(&self, client: ClientId) -> bool {
        self.holder_of(client.slot() as usize) == Some(client)
    }

    pub(super) fn is_cut(&self, client: ClientId) -> bool {
        matches!(&self.slots[client.slot() as usize].holder, Holder::Client { id, cut: true, .. } if *id == client)
    }

    pub(super) fn queued_total(&self) -> usize {
        self.slots.iter().map(MSlot::queued).sum()
    }

    pub(super) fn known_sessions(&self) -> Vec<u32> {
        self.slots
            .iter()
            .flat_map(|s| s.sessions.keys().copied())
            .collect()
    }

    pub(super) fn release_if_done(&mut self, slot: usize) {
        if self.slots[slot].holder == Holder::Resting && self.slots[slot].tombstones() == 0 {
            self.slots[slot].holder = Holder::Free;
            self.counters.quarantines_ended += 1;
            self.free.push_back(slot);
        }
    }

    pub(super) fn remove_session(&mut self, slot: usize, id: u32) {
        if let Some(session) = self.slots[slot].sessions.remove(&id) {
            match session {
                MSession::Killed { .. } => {
                    self.kills.remove(&id);
                    self.release_if_done(slot);
                }
                MSession::Open { .. } => {
                    self.credit_due.remove(&id);
                }
            }
        }
    }

    pub(super) fn wake_owner(&mut self, slot: usize) {
        if let Holder::Client {
            id,
            cut: false,
            wake_queued,
            ..
        } = &mut self.slots[slot].holder
            && !*wake_queued
        {
            *wake_queued = true;
            self.actions.push_back(Action::Wake(*id));
        }
    }

    pub(super) fn cut(&mut self, slot: usize, reason: CutReason) {
        if let Holder::Client { id, queue, cut, .. } = &mut self.slots[slot].holder
            && !*cut
        {
            *cut = true;
            queue.clear();
            self.counters.clients_cut_off += 1;
            self.actions.push_back(Action::CutOff {
                client: *id,
                reason,
            });
        }
    }

    /// Charges `cost` to the slot's client as the budgets allow.
    pub(super) fn charge(&mut self, slot: usize, cost: usize) -> bool {
        let Holder::Client { cut: false, .. } = &self.slots[slot].holder else {
            return false;
        };
        if self.slots[slot].queued().saturating_add(cost) > self.config.client_queue_budget {
            let budget = self.config.client_queue_budget;
            self.cut(slot, CutReason::OverBudget { budget });
            return false;
        }
        while self.queued_total().saturating_add(cost) > self.config.total_queue_budget {
            // The largest queue goes; of equal ones, the last slot's.
            let mut victim: Option<(usize, usize)> = None;
            for (index, s) in self.slots.iter().enumerate() {
                if matches!(s.holder, Holder::Client { cut: false, .. })
                    && victim.is_none_or(|(_, q)| s.queued() >= q)
                {
                    victim = Some((index, s.queued()));
                }
            }
            let Some((victim, queued)) = victim else {
                break;
            };
            self.cut(victim, CutReason::TotalBudget { queued });
            if victim == slot {
                return false;
            }
        }
        true
    }

    pub(super) fn push(&mut self, slot: usize, item: Queued) {
        if let Holder::Client { queue, .. } = &mut self.slots[slot].holder {
            queue.push_back(item);
        }
    }

    pub(super) fn expire(&mut self, now: Instant) -> usize {
        let grace = self.config.quarantine_grace;
        let mut freed = 0;
        for slot in 0..self.slots.len() {
            let before = self.slots[slot].sessions.len();
            self.slots[slot].sessions.retain(|_, s| match *s {
                MSession::Killed { killed_at, last } => {
                    expires(killed_at, last, grace).is_none_or(|at| at > now)
                }
                MSession::Open { .. } => true,
            });
            let expired = before - self.slots[slot].sessions.len();
            self.counters.sessions_abandoned += expired as u64;
            if expired > 0
                && self.slots[slot].tombstones() == 0
                && self.slots[slot].holder == Holder::Resting
            {
                freed += 1;
            }
            self.release_if_done(slot);
        }
        freed
    }

    pub(super) fn pick(&self, pick: IdPick) -> u32 {
        let client = |n: u8| {
            (!self.clients.is_empty()).then(|| self.clients[usize::from(n) % self.clients.len()])
        };
        match pick {
            IdPick::Own { client: n, offset } => {
                client(n).map_or(1, |c| c.ids.first().saturating_add(u32::from(offset)))
            }
            IdPick::OwnEnd { client: n, offset } => {
                client(n).map_or(u32::MAX, |c| c.ids.last().saturating_add(u32::from(offset)))
            }
            IdPick::Session { index } => {
                let known = self.known_sessions();
                if known.is_empty() {
                    1
                } else {
                    known[usize::from(index) % known.len()]
                }
            }
            IdPick::SlotStart { slot } => self.slots[usize::from(slot) % self.slots.len()]
                .range
                .first(),
            IdPick::Zero => 0,
            IdPick::Max => RUNTIME_RESERVED_ID,
            IdPick::Any(id) => id,
        }
    }

    pub(super) fn nth_client(&self, n: u8) -> Option<Known> {
        (!self.clients.is_empty()).then(|| self.clients[usize::from(n) % self.clients.len()])
    }
}

pub(super) fn expected_client_verdict(
    model: &mut Model,
    client: Known,
    header: FrameHeader,
    len: usize,
) -> ClientVerdict {
    if !model.holds(client.id) || model.is_cut(client.id) {
        return ClientVerdict::Stale;
    }
    let FrameHeader { id, flags } = header;
    let shutdown = flags.contains(Flags::SHUTDOWN);
    if !(client.ids.contains(id) || (shutdown && id == 0)) {
        model.counters.clients_rejected += 1;
        return ClientVerdict::Reject(RejectReason::IdOutOfRange {
            id,
            first: client.ids.first(),
            last: client.ids.last(),
        });
    }
    let limit = model.config.max_sessions_per_client;
    let window = model.window;
    let slot = client.id.slot() as usize;
    let sessions = &mut model.slots[slot].sessions;
    let starts =
        id != 0 && flags.contains(Flags::SESSION_START) && !flags.contains(Flags::TERMINAL);
    match sessions.get(&id) {
        Some(MSession::Killed { .. }) if starts => {
            model.counters.sessions_refused += 1;
            return ClientVerdict::RefuseSession(RefuseReason::IdInUse { id });
        }
        None if starts => {
            if sessions.len() >= limit {
                model.counters.sessions_refused += 1;
                return ClientVerdict::RefuseSession(RefuseReason::Limit { limit });
            }
            sessions.insert(
                id,
                MSession::Open {
                    send: window.map(Credit::new),
                    owed: Owed::default(),
                    due: 0,
                },
            );
            model.counters.sessions_opened += 1;
        }
        _ => {}
    }
    if is_charged(header)
        && let Some(MSession::Open {
            send: Some(credit), ..
        }) = sessions.get_mut(&id)
    {
        if !credit.may_send() && (len > EXEMPT_LEN || credit.available() <= -OVERDRAFT) {
            model.counters.client_frames_held += 1;
            return ClientVerdict::Hold;
        }
        credit.spend(len);
    }
    if flags.contains(Flags::TERMINAL) && matches!(sessions.get(&id), Some(MSession::Open { .. })) {
        model.remove_session(slot, id);
        model.counters.sessions_closed += 1;
    }
    model.counters.shutdown_requests += u64::from(shutdown);
    model.counters.client_frames_forwarded += 1;
    ClientVerdict::Forward { shutdown }
}

pub(super) fn expected_agent_verdict(
    model: &mut Model,
    header: FrameHeader,
    len: usize,
    now: Instant,
) -> AgentVerdict {
    let FrameHeader { id, flags } = header;
    if id == 0 {
        model.counters.agent_control_frames += 1;
        return AgentVerdict::Control;
    }
    if id == RUNTIME_RESERVED_ID {
        model.counters.agent_frames_dropped_reserved += 1;
        return AgentVerdict::Drop(DropReason::Reserved);
    }
    let Some(slot) = model.slot_of(id) else {
        model.counters.agent_frames_dropped_no_slot += 1;
        return AgentVerdict::Drop(DropReason::NoSlot);
    };
    let terminal = flags.contains(Flags::TERMINAL);
    let mut credited = false;
    match model.slots[slot].sessions.get_mut(&id) {
        Some(MSession::Killed { killed_at, last }) => {
            if terminal {
                model.remove_session(slot, id);
                model.counters.sessions_closed += 1;
            } else if killed_at.is_some() {
                *last = Some(now);
            }
            model.counters.agent_frames_dropped_tombstoned += 1;
            return AgentVerdict::Drop(DropReason::Tombstoned);
        }
        Some(MSession::Open { .. }) if terminal => {
            model.remove_session(slot, id);
            model.counters.sessions_closed += 1;
            if model.window.is_some() {
                model.wake_owner(slot);
            }
        }
        Some(MSession::Open { .. }) => credited = model.window.is_some() && is_charged(header),
        None => {}
    }
    match model.slots[slot].holder.clone() {
        Holder::Free => {
            model.counters.agent_frames_dropped_free += 1;
            AgentVerdict::Drop(DropReason::SlotFree)
        }
        Holder::Resting => {
            model.counters.agent_frames_dropped_quarantined += 1;
            AgentVerdict::Drop(DropReason::SlotQuarantined)
        }
        Holder::Client { id: client, .. } => {
            let cost = model.config.charge(len);
            if model.charge(slot, cost) {
                model.push(
                    slot,
                    Queued {
                        cost,
                        header,
                        len,
                        credited,
                    },
                );
                model.counters.agent_frames_delivered += 1;
                AgentVerdict::Deliver { client, credited }
            } else {
                model.counters.agent_frames_dropped_cut_off += 1;
                AgentVerdict::Drop(DropReason::CutOff)
            }
        }
    }
}

pub(super) fn credit(model: &mut Model, id: u32, bytes: u32) -> bool {
    let slot = model.slot_of(id).filter(|_| model.window.is_some());
    let taken = slot.is_some_and(|slot| match model.slots[slot].sessions.get_mut(&id) {
        Some(MSession::Open {
            send: Some(credit), ..
        }) => {
            let was_out = !credit.may_send();
            credit.grant(bytes);
            if was_out {
                model.wake_owner(slot);
            }
            true
        }
        _ => false,
    });
    if !taken {
        model.counters.credits_ignored += 1;
    }
    taken
}
