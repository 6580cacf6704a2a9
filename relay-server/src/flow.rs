//! Per-session credit between relay and agent, when the agent offers it in
//! `core.ready` (`flow: {window}`). Pure bookkeeping; the tasks in `relay`
//! act on its answers.
//!
//! - **Agent to client.** The agent has at most `window` bytes of a
//!   session's frames in flight toward the relay, plus the credit returned
//!   so far. The relay returns credit as those frames leave it (written to
//!   the client's socket, or discarded), in `core.flow.credit` frames sent
//!   once half a window is owed. A session whose client reads slowly thus
//!   stalls only its own process, on its own pipe.
//! - **Client to agent.** The relay may send a session's client frames
//!   while its credit is positive (one frame may overshoot); the agent
//!   returns credit as it delivers them. Out of credit, the relay holds the
//!   client's next frame and stops reading its socket. Frames of at most
//!   [`EXEMPT_LEN`] bytes (signals, resizes, end of stdin) are not held
//!   until the session is [`OVERDRAFT`] bytes below zero, though they are
//!   charged: a signal sent before a large stdin frame still reaches a
//!   process that stopped reading, and the agent's input queue stays
//!   bounded. (A frame held for credit holds everything the client sent
//!   after it: a client's stream is ordered.)
//!
//! Terminal frames are neither charged nor credited: a session can always
//! end. Flow-control frames travel on [`CONNECTION_ID`], which no client
//! owns: they are told apart by the header, claim no flag bit, and clients
//! never see one. The relay takes up an offer with `core.flow.accept`,
//! clamping the window to [`MIN_WINDOW`]..=[`MAX_WINDOW`].

use std::collections::HashMap;

use relay_codec::payload::{FlowAccept, FlowCredit};
use relay_codec::{CONNECTION_ID, Flags, Frame, FrameHeader, IdRange, Message};

/// The smallest window the relay accepts: a guest that offers less would
/// make the relay return credit for nearly every frame.
pub(crate) const MIN_WINDOW: u32 = 64 * 1024;

/// The largest window the relay accepts: the credit the guest holds is
/// memory the guest may make the relay hold for each session.
pub(crate) const MAX_WINDOW: u32 = 64 * 1024 * 1024;

/// The window the relay uses for an agent's offer.
pub(crate) fn accepted_window(offered: u32) -> u32 {
    offered.clamp(MIN_WINDOW, MAX_WINDOW)
}

/// The `core.flow.accept` frame for `window`.
pub(crate) fn accept_frame(window: u32) -> Frame {
    Message::FlowAccept(FlowAccept { window })
        .to_frame(CONNECTION_ID)
        .unwrap_or_else(|_| unreachable!("a four-byte payload always fits a frame"))
}

/// Client frames up to this size are not held for lack of credit...
pub(crate) const EXEMPT_LEN: usize = 256;

/// ...until their session's credit is this far below zero. The agent's
/// input queue has this much room beyond a window and a maximal frame.
pub(crate) const OVERDRAFT: i64 = 64 * 1024;

#[derive(Debug, Default, Clone, Copy)]
struct SessionCredit {
    /// Bytes the relay may still send to the agent (may go negative by one frame).
    send: i64,
    /// Bytes of agent frames that left the relay and are not credited back yet.
    owed: u64,
}

/// Whether a client frame may go to the agent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Send it (its cost is charged).
    Go,
    /// Hold it until the agent returns credit for its session.
    Wait,
}

/// Credit state of every session while flow control is on.
#[derive(Debug)]
pub(crate) struct Flow {
    window: u32,
    sessions: HashMap<u32, SessionCredit>,
    /// Credit due to the agent, by session: one entry per session however
    /// long the agent leaves it unsent, so it stays O(sessions).
    pending: HashMap<u32, u64>,
}

impl Flow {
    pub(crate) fn new(window: u32) -> Flow {
        Flow {
            window: window.max(1),
            sessions: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// A client frame is about to go to the agent.
    pub(crate) fn admit_client_frame(&mut self, header: FrameHeader, len: usize) -> Admit {
        let FrameHeader { id, flags } = header;
        if id == 0 || flags.contains(Flags::TERMINAL) {
            return Admit::Go;
        }
        if flags.contains(Flags::SESSION_START) {
            // A repeated request on an open session does not refill its
            // credit: the agent ignores it.
            self.sessions.entry(id).or_insert(SessionCredit {
                send: i64::from(self.window),
                owed: 0,
            });
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return Admit::Go;
        };
        if session.send <= 0 && (len > EXEMPT_LEN || session.send <= -OVERDRAFT) {
            return Admit::Wait;
        }
        session.send -= len as i64;
        Admit::Go
    }

    /// The agent granted `bytes` more on session `id`.
    pub(crate) fn credit_from_agent(&mut self, id: u32, bytes: u32) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.send = session.send.saturating_add(i64::from(bytes));
        }
    }

    /// An agent frame left the relay (written to its client or discarded);
    /// queues a credit frame once half a window is owed.
    pub(crate) fn released(&mut self, header: FrameHeader, len: usize) {
        if !Self::is_charged(header) {
            return;
        }
        let id = header.id;
        // A session that has ended needs no credit: its frames may still be
        // leaving after its terminal frame went by.
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.owed += len as u64;
        if session.owed >= u64::from(self.window / 2).max(1) {
            *self.pending.entry(id).or_default() += std::mem::take(&mut session.owed);
        }
    }

    /// Whether an agent frame counts against its session's credit.
    pub(crate) fn is_charged(header: FrameHeader) -> bool {
        header.id != CONNECTION_ID && !header.flags.contains(Flags::TERMINAL)
    }

    /// The agent ended session `id`.
    pub(crate) fn session_ended(&mut self, id: u32) {
        self.sessions.remove(&id);
        self.pending.remove(&id);
    }

    /// A slot changes hands: forget every session of its range.
    pub(crate) fn forget_range(&mut self, range: IdRange) {
        self.sessions.retain(|id, _| !range.contains(*id));
        self.pending.retain(|id, _| !range.contains(*id));
    }

    /// Credit frames to write to the agent, one per session due.
    pub(crate) fn take_pending(&mut self) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(self.pending.len());
        for (id, mut owed) in self.pending.drain() {
            while owed > 0 {
                let bytes = u32::try_from(owed).unwrap_or(u32::MAX);
                owed -= u64::from(bytes);
                frames.push(
                    Message::FlowCredit(FlowCredit { id, bytes })
                        .to_frame(CONNECTION_ID)
                        .unwrap_or_else(|_| {
                            unreachable!("an eight-byte payload always fits a frame")
                        }),
                );
            }
        }
        frames
    }

    /// Bytes of credit per session and direction.
    pub(crate) fn window(&self) -> u32 {
        self.window
    }

    /// Whether credit frames wait to be written.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sessions tracked.
    pub(crate) fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: u32, flags: Flags) -> FrameHeader {
        FrameHeader { id, flags }
    }

    fn credits(frames: Vec<Frame>) -> Vec<(u32, u32)> {
        frames
            .into_iter()
            .map(|f| match Message::from_frame(&f).unwrap() {
                Message::FlowCredit(c) if f.id() == CONNECTION_ID => (c.id, c.bytes),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_session_may_send_while_its_credit_is_positive_then_waits() {
        let mut flow = Flow::new(1000);
        assert_eq!(
            flow.admit_client_frame(header(5, Flags::SESSION_START), 100),
            Admit::Go
        );
        assert_eq!(
            flow.admit_client_frame(header(5, Flags::NONE), 850),
            Admit::Go
        );
        assert_eq!(
            flow.admit_client_frame(header(5, Flags::NONE), 600),
            Admit::Go,
            "one frame may overshoot"
        );
        assert_eq!(
            flow.admit_client_frame(header(5, Flags::NONE), 600),
            Admit::Wait
        );
        flow.credit_from_agent(5, 700);
        assert_eq!(
            flow.admit_client_frame(header(5, Flags::NONE), 600),
            Admit::Go
        );
    }

    #[test]
    fn small_frames_pass_without_credit_but_are_charged() {
        let mut flow = Flow::new(300);
        flow.admit_client_frame(header(5, Flags::SESSION_START), 300);
        assert_eq!(
            flow.admit_client_frame(header(5, Flags::NONE), EXEMPT_LEN),
            Admit::Go
        );
        flow.credit_from_agent(5, 200);
        assert_eq!(
            flow.admit_client_frame(header(5, Flags::NONE), 1000),
            Admit::Wait,
            "the small frame was charged"
        );
    }

    #[test]
    fn frames_of_unknown_sessions_and_terminal_frames_pass() {
        let mut flow = Flow::new(10);
        assert_eq!(
            flow.admit_client_frame(header(7, Flags::NONE), 10_000),
            Admit::Go
        );
        assert_eq!(
            flow.admit_client_frame(header(0, Flags::SHUTDOWN), 10_000),
            Admit::Go
        );
    }

    #[test]
    fn small_frames_are_held_too_once_the_overdraft_is_spent() {
        let mut flow = Flow::new(100);
        flow.admit_client_frame(header(5, Flags::SESSION_START), 100);
        let mut passed = 0;
        while flow.admit_client_frame(header(5, Flags::NONE), 50) == Admit::Go {
            passed += 50;
        }
        let overdraft = OVERDRAFT as usize;
        assert!((overdraft..overdraft + 50).contains(&passed), "{passed}");
    }

    #[test]
    fn a_repeated_request_does_not_refill_credit() {
        let mut flow = Flow::new(100);
        flow.admit_client_frame(header(5, Flags::SESSION_START), 100);
        flow.admit_client_frame(header(5, Flags::SESSION_START), 100);
        assert_eq!(
            flow.admit_client_frame(header(5, Flags::NONE), 1000),
            Admit::Wait
        );
    }

    #[test]
    fn frames_of_ended_sessions_owe_nothing() {
        let mut flow = Flow::new(100);
        flow.released(header(9, Flags::NONE), 5000);
        assert!(flow.take_pending().is_empty());
        assert_eq!(
            flow.sessions(),
            0,
            "no entry is made for an unknown session"
        );
    }

    #[test]
    fn credit_is_returned_once_half_a_window_has_left_the_relay() {
        let mut flow = Flow::new(1000);
        flow.admit_client_frame(header(9, Flags::SESSION_START), 10);
        flow.released(header(9, Flags::NONE), 300);
        assert!(flow.take_pending().is_empty());
        flow.released(header(9, Flags::NONE), 300);
        assert_eq!(credits(flow.take_pending()), vec![(9, 600)]);
        flow.released(header(9, Flags::TERMINAL), 5000);
        flow.released(header(0, Flags::NONE), 5000);
        assert!(
            flow.take_pending().is_empty(),
            "terminal and connection-id frames are free"
        );
    }

    #[test]
    fn credit_left_unsent_stays_one_entry_per_session() {
        let mut flow = Flow::new(2);
        flow.admit_client_frame(header(9, Flags::SESSION_START), 10);
        for _ in 0..10_000 {
            flow.released(header(9, Flags::BULK), 42);
        }
        assert_eq!(flow.pending.len(), 1);
        assert_eq!(credits(flow.take_pending()), vec![(9, 420_000)]);
    }

    #[test]
    fn offered_windows_are_clamped() {
        assert_eq!(accepted_window(1), MIN_WINDOW);
        assert_eq!(accepted_window(1 << 20), 1 << 20);
        assert_eq!(accepted_window(u32::MAX), MAX_WINDOW);
    }

    #[test]
    fn a_session_ends_with_its_terminal_frame_and_a_new_owner_starts_clean() {
        let mut flow = Flow::new(1000);
        flow.admit_client_frame(header(3, Flags::SESSION_START), 10);
        flow.admit_client_frame(header(4, Flags::SESSION_START), 10);
        flow.session_ended(3);
        assert_eq!(flow.sessions(), 1);
        flow.forget_range(IdRange::new(1, 100).unwrap());
        assert_eq!(flow.sessions(), 0);
    }
}
