//! The session table: which ids are in flight, where their frames go, and id allocation.
//!
//! A session is *in flight* from the moment its id is handed out until its
//! TERMINAL frame arrives (or the connection ends), whether or not anyone
//! still holds its handle. Only ids not in flight are handed out, so a late
//! reply can never reach a newer session that reused the id.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use relay_codec::{Flags, Frame, IdRange};
use tokio::sync::mpsc;

use crate::error::{ClientError, Disconnect};

/// Shared by the reader task and every session handle. The lock is never
/// held across an `.await`.
#[derive(Debug)]
pub(crate) struct SessionTable {
    state: Mutex<State>,
}

/// What a new session gets: its id, the generation that tells it apart from
/// earlier sessions on the same id, and its incoming frames.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) id: u32,
    pub(crate) generation: u64,
    pub(crate) frames: mpsc::Receiver<Frame>,
}

#[derive(Debug)]
struct State {
    ids: Allocator,
    routes: HashMap<u32, Route>,
    next_generation: u64,
    closed: Option<Disconnect>,
}

#[derive(Debug)]
struct Route {
    frames: mpsc::Sender<Frame>,
    generation: u64,
}

impl SessionTable {
    pub(crate) fn new(ids: IdRange) -> SessionTable {
        SessionTable {
            state: Mutex::new(State {
                ids: Allocator::new(ids),
                routes: HashMap::new(),
                next_generation: 0,
                closed: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands out an id not in flight and opens its route, with a channel of
    /// `capacity` frames.
    pub(crate) fn register(
        &self,
        capacity: usize,
        max_sessions: Option<usize>,
    ) -> Result<Registration, ClientError> {
        let mut state = self.lock();
        if let Some(reason) = &state.closed {
            return Err(ClientError::Disconnected(reason.clone()));
        }
        let State { ids, routes, .. } = &mut *state;
        if let Some(limit) = max_sessions
            && routes.len() >= limit
        {
            return Err(ClientError::SessionLimit { limit });
        }
        let id = ids
            .allocate(|id| routes.contains_key(&id))
            .ok_or(ClientError::IdsExhausted {
                in_flight: routes.len(),
            })?;
        let generation = state.next_generation;
        state.next_generation += 1;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        state.routes.insert(
            id,
            Route {
                frames: tx,
                generation,
            },
        );
        Ok(Registration {
            id,
            generation,
            frames: rx,
        })
    }

    /// Forgets a session whose request never reached the wire.
    pub(crate) fn release(&self, id: u32, generation: u64) {
        let mut state = self.lock();
        if state
            .routes
            .get(&id)
            .is_some_and(|route| route.generation == generation)
        {
            state.routes.remove(&id);
        }
    }

    /// Where a frame from the relay goes. A TERMINAL frame ends the session:
    /// its id is free again once this returns.
    pub(crate) fn route(&self, id: u32, flags: Flags) -> Option<mpsc::Sender<Frame>> {
        let mut state = self.lock();
        if flags.contains(Flags::TERMINAL) {
            state.routes.remove(&id).map(|route| route.frames)
        } else {
            state.routes.get(&id).map(|route| route.frames.clone())
        }
    }

    /// Whether session `id` of `generation` is still in flight.
    pub(crate) fn is_live(&self, id: u32, generation: u64) -> bool {
        self.lock()
            .routes
            .get(&id)
            .is_some_and(|route| route.generation == generation)
    }

    /// Ends every session: their channels close once drained, and their
    /// handles report `reason`. The first reason is kept.
    pub(crate) fn close(&self, reason: Disconnect) {
        let routes = {
            let mut state = self.lock();
            state.closed.get_or_insert(reason);
            std::mem::take(&mut state.routes)
        };
        // Dropped outside the lock: dropping a sender may wake a task.
        drop(routes);
    }

    /// Why the connection ended, if it has.
    pub(crate) fn closed(&self) -> Option<Disconnect> {
        self.lock().closed.clone()
    }

    /// Sessions in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().routes.len()
    }
}

/// Round-robin allocation over an inclusive id range.
#[derive(Debug)]
struct Allocator {
    range: IdRange,
    next: u32,
}

impl Allocator {
    fn new(range: IdRange) -> Allocator {
        Allocator {
            range,
            next: range.first(),
        }
    }

    /// The next id, in range order and wrapping around, for which `busy` is
    /// false; `None` when every id of the range is busy.
    ///
    /// The scan is bounded by the range size, and in practice by the number
    /// of sessions in flight plus one.
    fn allocate(&mut self, busy: impl Fn(u32) -> bool) -> Option<u32> {
        let mut candidate = self.next;
        for _ in 0..self.range.len() {
            let following = if candidate == self.range.last() {
                self.range.first()
            } else {
                candidate + 1
            };
            if !busy(candidate) {
                self.next = following;
                return Some(candidate);
            }
            candidate = following;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use std::collections::HashSet;

    use super::*;

    #[test]
    fn allocation_wraps_at_the_top_of_the_id_space_without_overflow() {
        let mut ids = Allocator::new(IdRange::new(u32::MAX - 2, u32::MAX).unwrap());
        let got: Vec<u32> = (0..5).map(|_| ids.allocate(|_| false).unwrap()).collect();
        assert_eq!(
            got,
            [
                u32::MAX - 2,
                u32::MAX - 1,
                u32::MAX,
                u32::MAX - 2,
                u32::MAX - 1
            ]
        );
    }

    #[test]
    fn allocation_skips_busy_ids_and_reports_a_full_range() {
        let mut ids = Allocator::new(IdRange::new(10, 13).unwrap());
        let mut busy = HashSet::new();
        for expected in [10, 11, 12, 13] {
            let id = ids.allocate(|id| busy.contains(&id)).unwrap();
            assert_eq!(id, expected);
            busy.insert(id);
        }
        assert_eq!(ids.allocate(|id| busy.contains(&id)), None);
        busy.remove(&12);
        assert_eq!(ids.allocate(|id| busy.contains(&id)), Some(12));
        busy.insert(12);
        busy.remove(&10);
        assert_eq!(ids.allocate(|id| busy.contains(&id)), Some(10));
    }

    #[test]
    fn a_terminal_frame_frees_the_id_and_a_stale_generation_cannot_release_it() {
        let sessions = SessionTable::new(IdRange::new(1, 1).unwrap());
        let first = sessions.register(1, None).unwrap();
        assert!(matches!(
            sessions.register(1, None),
            Err(ClientError::IdsExhausted { in_flight: 1 })
        ));
        assert!(sessions.route(1, Flags::NONE).is_some());
        assert!(sessions.route(1, Flags::TERMINAL).is_some());
        assert!(sessions.route(1, Flags::NONE).is_none());
        assert!(!sessions.is_live(1, first.generation));
        let second = sessions.register(1, None).unwrap();
        assert_eq!(second.id, 1);
        sessions.release(1, first.generation);
        assert!(sessions.is_live(1, second.generation));
    }

    #[test]
    fn past_the_session_limit_registration_fails_with_the_limit_until_one_ends() {
        let sessions = SessionTable::new(IdRange::new(1, 100).unwrap());
        sessions.register(1, Some(2)).unwrap();
        sessions.register(1, Some(2)).unwrap();
        assert!(matches!(
            sessions.register(1, Some(2)),
            Err(ClientError::SessionLimit { limit: 2 })
        ));
        assert!(sessions.route(1, Flags::TERMINAL).is_some());
        assert!(sessions.register(1, Some(2)).is_ok());
    }
}
