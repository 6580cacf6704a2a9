//! Events on the clients' side: connections, their frames, their queues
//! draining, their departures.

use std::time::Instant;

use relay_codec::flow::{self, Credit, Owed};
use relay_codec::{Flags, FrameHeader};

use crate::{
    Action, Admission, ClientId, ClientVerdict, CutReason, EXEMPT_LEN, OVERDRAFT, Occupant,
    Refusal, RefuseReason, RejectReason, Router, Session, SlotState, Tomb,
};

impl Router {
    /// A new connection arrives.
    pub fn connect(&mut self, now: Instant) -> Result<Admission, Refusal> {
        self.tick(now);
        let slot = if self.connected < self.config.max_clients {
            self.free.pop_front().or_else(|| self.reusable_slot(now))
        } else {
            None
        };
        let Some(slot) = slot else {
            self.counters.clients_refused += 1;
            return Err(Refusal {
                connected: self.connected,
                quarantined: self.resting,
                max_clients: self.config.max_clients,
            });
        };
        let client = ClientId {
            slot,
            generation: self.next_generation,
        };
        self.next_generation += 1;
        let entry = &mut self.slots[slot as usize];
        if matches!(entry.state, SlotState::Resting) {
            self.resting -= 1;
            self.counters.clients_admitted_beside_tombstones += 1;
        }
        debug_assert!(entry.open_sessions() == 0);
        entry.state = SlotState::Occupied(Occupant {
            client,
            queued: 0,
            cut: false,
            wake_queued: false,
        });
        self.connected += 1;
        self.counters.clients_admitted += 1;
        Ok(Admission {
            client,
            handshake: self.config.layout.handshake(slot, entry.range),
            ids: entry.ids,
        })
    }

    /// With no free slot: a resting one whose every kill was written a
    /// grace period ago (its tombstones only last because the agent keeps
    /// sending for them), the one with the fewest tombstones.
    fn reusable_slot(&self, now: Instant) -> Option<u32> {
        let grace = self.config.quarantine_grace;
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.state, SlotState::Resting))
            .filter(|(_, s)| {
                s.sessions.values().all(|session| match session {
                    Session::Killed(tomb) => tomb.killed_at.is_some_and(|k| k + grace <= now),
                    Session::Open { .. } => false,
                })
            })
            .min_by_key(|(_, s)| s.tombstones)
            .and_then(|(slot, _)| u32::try_from(slot).ok())
    }

    /// A client sent a frame with this header and wire length.
    pub fn client_frame(
        &mut self,
        client: ClientId,
        header: FrameHeader,
        len: usize,
    ) -> ClientVerdict {
        let Some(slot) = self.owned_slot(client) else {
            return ClientVerdict::Stale;
        };
        let window = self.window;
        let limit = self.config.max_sessions_per_client;
        let entry = &mut self.slots[slot as usize];
        if entry.occupant(client).is_some_and(|o| o.cut) {
            return ClientVerdict::Stale;
        }
        let FrameHeader { id, flags } = header;
        let shutdown = flags.contains(Flags::SHUTDOWN);
        if !(entry.ids.contains(id) || (shutdown && id == 0)) {
            self.counters.clients_rejected += 1;
            return ClientVerdict::Reject(RejectReason::IdOutOfRange {
                id,
                first: entry.ids.first(),
                last: entry.ids.last(),
            });
        }
        let starts =
            id != 0 && flags.contains(Flags::SESSION_START) && !flags.contains(Flags::TERMINAL);
        match entry.sessions.get_mut(&id) {
            Some(Session::Killed(_)) if starts => {
                self.counters.sessions_refused += 1;
                return ClientVerdict::RefuseSession(RefuseReason::IdInUse { id });
            }
            None if starts => {
                if entry.sessions.len() >= limit {
                    self.counters.sessions_refused += 1;
                    return ClientVerdict::RefuseSession(RefuseReason::Limit { limit });
                }
                entry.sessions.insert(
                    id,
                    Session::Open {
                        send: window.map(Credit::new),
                        owed: Owed::default(),
                        due: 0,
                    },
                );
                self.counters.sessions_opened += 1;
            }
            _ => {}
        }
        // A repeated request on an open session does not refill its credit:
        // the agent ignores it.
        if flow::is_charged(header)
            && let Some(Session::Open {
                send: Some(credit), ..
            }) = entry.sessions.get_mut(&id)
        {
            if !credit.may_send() && (len > EXEMPT_LEN || credit.available() <= -OVERDRAFT) {
                self.counters.client_frames_held += 1;
                return ClientVerdict::Hold;
            }
            credit.spend(len);
        }
        if flags.contains(Flags::TERMINAL)
            && matches!(entry.sessions.get(&id), Some(Session::Open { .. }))
        {
            self.remove_session(slot, id);
            self.counters.sessions_closed += 1;
        }
        if shutdown {
            self.counters.shutdown_requests += 1;
        }
        self.counters.client_frames_forwarded += 1;
        ClientVerdict::Forward { shutdown }
    }

    /// Frames charged `charged` bytes in all left the client's queue
    /// (written to its socket, or abandoned); `credited` are the headers
    /// and wire lengths of those [`AgentVerdict::Deliver`](crate::AgentVerdict)
    /// marked to credit, and that were written.
    pub fn frames_left(
        &mut self,
        client: ClientId,
        charged: usize,
        credited: &[(FrameHeader, usize)],
    ) {
        let Some(slot) = self.owned_slot(client) else {
            return;
        };
        let entry = &mut self.slots[slot as usize];
        let Some(occupant) = entry.occupant(client) else {
            return;
        };
        if occupant.cut {
            // Its charge was released when it was cut off.
            return;
        }
        let charged = charged.min(occupant.queued);
        occupant.queued -= charged;
        self.queued_total -= charged;
        let Some(window) = self.window else {
            return;
        };
        for &(header, len) in credited {
            if let Some(Session::Open { owed, due, .. }) = entry.sessions.get_mut(&header.id)
                && let Some(bytes) = owed.add(len, window)
            {
                *due += bytes;
                self.credit_due.insert(header.id);
            }
        }
    }

    /// The relay queues bytes of its own for the client (its greeting, or
    /// an answer in the agent's place), charged `cost` like any frame.
    /// Returns `false` if the client is not served, or the charge cut it off.
    pub fn queue_own(&mut self, client: ClientId, cost: usize) -> bool {
        self.owned_slot(client)
            .is_some_and(|slot| self.charge_to(slot, cost))
    }

    /// Cuts a client off (the router's own reasons come as actions; the
    /// server reports [`CutReason::Stalled`] here). Its queue's charge is
    /// released at once. Returns whether it was served until now.
    pub fn cut_off(&mut self, client: ClientId, reason: CutReason) -> bool {
        let Some(slot) = self.owned_slot(client) else {
            return false;
        };
        self.cut(slot, reason)
    }

    pub(crate) fn cut(&mut self, slot: u32, reason: CutReason) -> bool {
        let SlotState::Occupied(occupant) = &mut self.slots[slot as usize].state else {
            return false;
        };
        if occupant.cut {
            return false;
        }
        occupant.cut = true;
        self.queued_total -= std::mem::take(&mut occupant.queued);
        self.counters.clients_cut_off += 1;
        self.actions.push_back(Action::CutOff {
            client: occupant.client,
            reason,
        });
        true
    }

    /// A client has gone (closed, rejected or cut off). Its open sessions
    /// become tombstones and their kills are queued for
    /// [`take_control`](Router::take_control); returns how many. Calling
    /// it again for the same client does nothing.
    pub fn disconnect(&mut self, client: ClientId) -> usize {
        let Some(slot) = self.owned_slot(client) else {
            return 0;
        };
        let entry = &mut self.slots[slot as usize];
        if let SlotState::Occupied(occupant) = &entry.state {
            self.queued_total -= occupant.queued;
        }
        self.connected -= 1;
        self.counters.clients_disconnected += 1;
        let mut killed = 0;
        for (&id, session) in &mut entry.sessions {
            if matches!(session, Session::Open { .. }) {
                *session = Session::Killed(Tomb {
                    killed_at: None,
                    last_frame: None,
                });
                entry.tombstones += 1;
                self.credit_due.remove(&id);
                self.kills.insert(id);
                killed += 1;
            }
        }
        self.counters.sessions_killed += killed as u64;
        if entry.tombstones == 0 {
            entry.state = SlotState::Free;
            self.free.push_back(slot);
        } else {
            entry.state = SlotState::Resting;
            self.resting += 1;
        }
        self.actions.retain(|action| match action {
            Action::CutOff { client: c, .. } | Action::Wake(c) => *c != client,
        });
        killed
    }
}
