//! The per-session credit rules both ends of the relay–agent link follow
//! (the extension described in `docs/flow-control.md`). One module, used by
//! the relay's core, the reference agent and the bench agent, so the two
//! sides cannot drift apart.
//!
//! - The agent offers a window in `core.ready`; the relay answers
//!   `core.flow.accept` with [`accepted_window`] of the offer. Only then is
//!   anything charged.
//! - A sender may send on a session while its [`Credit`] is positive; one
//!   frame may overshoot. Every frame except terminal frames and frames on
//!   [`CONNECTION_ID`] is charged its wire length ([`is_charged`]).
//! - A receiver returns credit for frames that have left it, in
//!   `core.flow.credit` frames on [`CONNECTION_ID`], once
//!   [`return_threshold`] bytes are owed on the session.

use crate::payload::{FlowAccept, FlowCredit};
use crate::{CONNECTION_ID, Flags, Frame, FrameHeader, Message};

/// The smallest window the relay accepts: a guest that offers less would
/// make the relay return credit for nearly every frame.
pub const MIN_WINDOW: u32 = 64 * 1024;

/// The largest window the relay accepts: the credit a guest holds is memory
/// it may make the relay hold for each session.
pub const MAX_WINDOW: u32 = 64 * 1024 * 1024;

/// The window the relay uses for an agent's offer.
pub fn accepted_window(offered: u32) -> u32 {
    offered.clamp(MIN_WINDOW, MAX_WINDOW)
}

/// Whether a frame counts against its session's credit: terminal frames are
/// free (a session can always end), and so is the connection id.
pub fn is_charged(header: FrameHeader) -> bool {
    header.id != CONNECTION_ID && !header.flags.contains(Flags::TERMINAL)
}

/// Owed bytes at which a receiver sends credit back: half a window.
pub fn return_threshold(window: u32) -> u64 {
    u64::from(window / 2).max(1)
}

/// The `core.flow.accept` frame for `window`.
pub fn accept_frame(window: u32) -> Frame {
    Message::FlowAccept(FlowAccept { window })
        .to_frame(CONNECTION_ID)
        .unwrap_or_else(|_| unreachable!("a four-byte payload always fits a frame"))
}

/// The `core.flow.credit` frames granting `bytes` on session `id` (more
/// than one only past `u32::MAX` bytes).
pub fn credit_frames(id: u32, mut bytes: u64) -> impl Iterator<Item = Frame> {
    std::iter::from_fn(move || {
        let chunk = u32::try_from(bytes).unwrap_or(u32::MAX);
        (chunk > 0).then(|| {
            bytes -= u64::from(chunk);
            Message::FlowCredit(FlowCredit { id, bytes: chunk })
                .to_frame(CONNECTION_ID)
                .unwrap_or_else(|_| unreachable!("an eight-byte payload always fits a frame"))
        })
    })
}

/// One session's credit in one direction, as its sender keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    avail: i64,
}

impl Credit {
    /// A session's starting credit: one window.
    pub fn new(window: u32) -> Credit {
        Credit {
            avail: i64::from(window),
        }
    }

    /// Whether a frame may be sent now (the credit is positive).
    pub fn may_send(self) -> bool {
        self.avail > 0
    }

    /// Bytes that may still be sent; negative after an overshoot.
    pub fn available(self) -> i64 {
        self.avail
    }

    /// A frame of `len` wire bytes was sent.
    pub fn spend(&mut self, len: usize) {
        self.avail = self
            .avail
            .saturating_sub(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// The peer granted `bytes` more.
    pub fn grant(&mut self, bytes: u32) {
        self.avail = self.avail.saturating_add(i64::from(bytes));
    }
}

/// Bytes a receiver owes one session's sender, returned in whole credit
/// frames once the threshold is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owed {
    bytes: u64,
}

impl Owed {
    /// `len` more bytes left the receiver. Returns the bytes to credit back
    /// now, if the threshold for `window` is reached.
    pub fn add(&mut self, len: usize, window: u32) -> Option<u64> {
        self.bytes = self.bytes.saturating_add(len as u64);
        (self.bytes >= return_threshold(window)).then(|| std::mem::take(&mut self.bytes))
    }

    /// Bytes owed and not yet due.
    pub fn bytes(self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_windows_are_clamped() {
        assert_eq!(accepted_window(1), MIN_WINDOW);
        assert_eq!(accepted_window(1 << 20), 1 << 20);
        assert_eq!(accepted_window(u32::MAX), MAX_WINDOW);
    }

    #[test]
    fn terminal_and_connection_frames_are_free() {
        let header = |id, flags| FrameHeader { id, flags };
        assert!(is_charged(header(5, Flags::BULK)));
        assert!(!is_charged(header(5, Flags::TERMINAL)));
        assert!(!is_charged(header(CONNECTION_ID, Flags::NONE)));
    }

    #[test]
    fn credit_may_overshoot_by_one_frame_then_waits_for_a_grant() {
        let mut credit = Credit::new(100);
        credit.spend(60);
        assert!(credit.may_send());
        credit.spend(60);
        assert!(!credit.may_send());
        assert_eq!(credit.available(), -20);
        credit.grant(21);
        assert!(credit.may_send());
    }

    #[test]
    fn owed_bytes_come_due_at_half_a_window() {
        let mut owed = Owed::default();
        assert_eq!(owed.add(30, 100), None);
        assert_eq!(owed.add(20, 100), Some(50));
        assert_eq!(owed.bytes(), 0);
        assert_eq!(owed.add(1, 1), Some(1), "a window of 1 still returns");
    }

    #[test]
    fn huge_credit_is_split_into_frames_that_each_fit_a_u32() {
        let frames: Vec<(u32, u32)> = credit_frames(9, u64::from(u32::MAX) + 5)
            .map(|f| match Message::from_frame(&f).unwrap() {
                Message::FlowCredit(c) => (c.id, c.bytes),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(frames, vec![(9, u32::MAX), (9, 5)]);
        assert_eq!(credit_frames(9, 0).count(), 0);
    }
}
