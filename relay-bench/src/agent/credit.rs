//! Per-session credit as the bench agent keeps it once the relay has
//! accepted its flow-control offer: what it may still send on each
//! session, and what it owes the relay for the client frames it read. The
//! arithmetic is `relay_codec::flow`'s, the same the relay and the
//! reference agent use.

use std::collections::HashMap;

use relay_codec::flow::{Credit, Owed};

/// What a batch of reads means for flow control, in the order read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlowEvent {
    /// The relay granted `bytes` more on session `id`.
    Granted { id: u32, bytes: u32 },
    /// A client frame of `len` wire bytes arrived on `id` (and, read, was
    /// delivered).
    Delivered { id: u32, len: usize },
    /// An echo of `len` wire bytes on `id` is about to be written.
    Echoed { id: u32, len: usize },
}

/// One session's credit both ways.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// What the agent may still send (may go negative by one frame).
    sending: Credit,
    /// Client bytes delivered and not yet credited back.
    owed: Owed,
}

/// What a batch of [`FlowEvent`]s came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Applied {
    /// A grant reached an open session: a stream waiting for credit may go.
    pub(super) granted: bool,
    /// Credit to return to the relay, `(session, bytes)`.
    pub(super) due: Vec<(u32, u64)>,
}

/// The credit of every open session.
///
/// Like the relay, the agent keeps a session's credit until the session
/// ends: a `TERMINAL` frame (which the bench never sends) or, here, the
/// relay's kill. A repeated `SESSION_START` on an open session does not
/// refill it (the relay does not either), so a client may run one stream
/// after another on the same id. Frames on ids that are no session are
/// neither held nor charged.
#[derive(Debug)]
pub(super) struct SessionCredit {
    window: u32,
    sessions: HashMap<u32, Session>,
}

impl SessionCredit {
    /// Credit with the window the relay accepted.
    pub(super) fn new(window: u32) -> SessionCredit {
        SessionCredit {
            window: window.max(1),
            sessions: HashMap::new(),
        }
    }

    /// A client frame with `SESSION_START` arrived on `id`: a new session
    /// starts with a window of credit, an open one keeps its own.
    pub(super) fn open(&mut self, id: u32) {
        let window = self.window;
        self.sessions.entry(id).or_insert(Session {
            sending: Credit::new(window),
            owed: Owed::default(),
        });
    }

    /// The session `id` ended: its credit is forgotten.
    pub(super) fn end(&mut self, id: u32) {
        self.sessions.remove(&id);
    }

    /// Whether a frame on `id` may go: always, unless it is a session out
    /// of credit.
    pub(super) fn may_send(&self, id: u32) -> bool {
        self.sessions.get(&id).is_none_or(|s| s.sending.may_send())
    }

    /// Spends `len` bytes of a session's credit (nothing outside sessions).
    pub(super) fn charge(&mut self, id: u32, len: usize) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.sending.spend(len);
        }
    }

    /// Applies a batch of reads' events in order.
    pub(super) fn apply(&mut self, events: &[FlowEvent]) -> Applied {
        let mut applied = Applied::default();
        for &event in events {
            match event {
                FlowEvent::Granted { id, bytes } => {
                    if let Some(session) = self.sessions.get_mut(&id) {
                        session.sending.grant(bytes);
                        applied.granted = true;
                    }
                }
                FlowEvent::Echoed { id, len } => self.charge(id, len),
                FlowEvent::Delivered { id, len } => {
                    if let Some(session) = self.sessions.get_mut(&id)
                        && let Some(bytes) = session.owed.add(len, self.window)
                    {
                        applied.due.push((id, bytes));
                    }
                }
            }
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(id: u32, len: usize) -> FlowEvent {
        FlowEvent::Delivered { id, len }
    }

    #[test]
    fn client_frames_of_a_session_are_credited_back_in_half_windows() {
        let mut credit = SessionCredit::new(1000);
        credit.open(3);
        assert_eq!(
            credit.apply(&[delivered(3, 300), delivered(9, 5000)]).due,
            [],
            "under half a window owed, and id 9 is no session"
        );
        assert_eq!(
            credit.apply(&[delivered(3, 300), delivered(3, 10)]).due,
            [(3, 600)]
        );
        assert_eq!(credit.apply(&[delivered(3, 500)]).due, [(3, 510)]);
    }

    #[test]
    fn only_a_grant_to_an_open_session_counts_as_one() {
        let mut credit = SessionCredit::new(100);
        credit.open(1);
        let to_nobody = credit.apply(&[FlowEvent::Granted { id: 2, bytes: 50 }]);
        assert!(!to_nobody.granted);
        let to_one = credit.apply(&[FlowEvent::Granted { id: 1, bytes: 50 }]);
        assert!(to_one.granted);
        credit.end(1);
        assert!(credit.may_send(1), "an ended session is no longer held");
    }

    #[test]
    fn a_session_may_overshoot_by_one_frame_then_waits() {
        let mut credit = SessionCredit::new(100);
        credit.open(1);
        credit.charge(1, 60);
        assert!(credit.may_send(1));
        credit.charge(1, 60);
        assert!(!credit.may_send(1));
        credit.apply(&[FlowEvent::Echoed { id: 1, len: 1 }]);
        credit.apply(&[FlowEvent::Granted { id: 1, bytes: 21 }]);
        assert!(!credit.may_send(1), "-20 - 1 + 21 is not positive");
        credit.apply(&[FlowEvent::Granted { id: 1, bytes: 1 }]);
        assert!(credit.may_send(1));
    }
}
