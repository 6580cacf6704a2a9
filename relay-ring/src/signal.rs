//! [`Signal`]: one coalesced wakeup channel (a parked flag plus an eventfd) between a notifier and a waiter.
//!
//! Each ring has two: *data available* (the producer notifies, the consumer
//! waits) and *space available* (the consumer notifies, the producer waits).
//!
//! # Protocol
//!
//! Waiter, when its condition (data, space, or the peer closed) is false:
//! 1. [`arm`](Signal::arm): drain tokens left by earlier wakeups, set
//!    `parked`, then a `SeqCst` fence;
//! 2. re-check the condition; if it now holds, [`disarm`](Signal::disarm)
//!    and go on without waiting;
//! 3. otherwise wait for the eventfd to become readable (poll(2), tokio's
//!    reactor, or a VMM's event loop), then start over.
//!
//! Notifier, after making the condition true (a release store of `tail` or
//! `head`, or of a closed flag): [`notify`](Signal::notify) issues a `SeqCst`
//! fence, then, only if `parked` is set, swaps it to false and writes the
//! eventfd.
//!
//! No lost wakeup: the two fences are ordered in the single total order of
//! `SeqCst` operations. If the waiter's fence comes first, the notifier's load
//! of `parked` sees `true` (or a later value written by the waiter itself,
//! which only happens after the waiter saw the condition hold). If the
//! notifier's fence comes first, the waiter's re-check sees the notifier's
//! store. Either the waiter does not sleep, or the notifier writes the eventfd.
//! The loom tests in `loom_tests.rs` check this exhaustively on small rings.
//!
//! Coalescing: the swap lets exactly one notification consume each arming,
//! so a producer that pushes a thousand chunks while the consumer sleeps
//! writes the eventfd once, and a producer that never finds the consumer
//! parked never makes a syscall at all.

use crate::event::Event;
use crate::sync::{AtomicBool, AtomicU64, Ordering, fence};

/// A parked flag and the eventfd it guards.
#[derive(Debug)]
pub(crate) struct Signal {
    /// Set by the waiter before its final re-check; taken by the notifier.
    parked: AtomicBool,
    /// Eventfd writes so far. Incremented before each write, so a waiter that
    /// drained fewer tokens than this knows one is pending or in flight.
    wakeups: AtomicU64,
    /// Times the waiter set `parked` (from false). Each wakeup consumes one,
    /// so `wakeups <= parks` always: the measure of coalescing.
    parks: AtomicU64,
    /// The fd the waiter sleeps on.
    event: Event,
}

/// State private to the one waiter of a [`Signal`].
#[derive(Debug, Default)]
pub(crate) struct Waiter {
    /// Tokens this waiter has drained from the eventfd so far.
    drained: u64,
}

impl Signal {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Self {
            parked: AtomicBool::new(false),
            wakeups: AtomicU64::new(0),
            parks: AtomicU64::new(0),
            event: Event::new()?,
        })
    }

    /// The eventfd.
    pub(crate) fn event(&self) -> &Event {
        &self.event
    }

    /// Eventfd writes so far.
    pub(crate) fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// Armings so far.
    pub(crate) fn parks(&self) -> u64 {
        self.parks.load(Ordering::Relaxed)
    }

    /// Notifier: wakes the waiter if it is parked. Call after the release
    /// store that made the waiter's condition true.
    #[inline]
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        // The relaxed load keeps the common case (nobody parked) free of
        // read-modify-write operations; the swap makes sure only one
        // notification consumes each arming.
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::Relaxed) {
            // Count before writing, so that a waiter never sees a token it
            // cannot account for (see `Waiter::drained`).
            self.wakeups.fetch_add(1, Ordering::Release);
            self.event.signal();
        }
    }

    /// Waiter: announces that it is about to sleep. The caller must re-check
    /// its condition afterwards.
    pub(crate) fn arm(&self, waiter: &mut Waiter) {
        // Tokens left by earlier wakeups would make the fd readable although
        // nothing happened since this arming: drain them, so that the fd stays
        // quiet until a notifier takes this arming. A token still in flight
        // (counted, not yet written) causes at most one spurious wakeup, and
        // the next arming drains it.
        if self.wakeups.load(Ordering::Acquire) != waiter.drained {
            waiter.drained += self.event.drain();
        }
        // A swap rather than a store so that each new arming is counted
        // exactly once (re-arming while still armed is the same arming).
        if !self.parked.swap(true, Ordering::Relaxed) {
            self.parks.fetch_add(1, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
    }

    /// Waiter: takes back an arming after its re-check found the condition
    /// true, sparing the notifier a needless eventfd write. If a notifier took
    /// the arming already, its token is drained by the next `arm`.
    pub(crate) fn disarm(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }
}
