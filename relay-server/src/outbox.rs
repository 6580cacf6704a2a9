//! A client's outgoing queue, bounded in bytes, that the agent reader fills
//! without ever waiting and the client's writer drains.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// How a closed outbox ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// Write what is queued, then end (graceful shutdown).
    Flush,
    /// Drop what is queued and end now.
    Abort,
}

/// Result of [`Outbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// The outbox is closed; the bytes were not queued.
    Closed,
    /// Queuing would exceed the client's budget; nothing was queued.
    OverBudget,
}

/// What the writer should do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Write these bytes, then call [`Outbox::written`] with their length.
    Batch(usize),
    /// Nothing queued: wait for [`Outbox::notified`].
    Idle,
    /// Closed and nothing more to write.
    Done,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    queued: usize,
    in_flight: usize,
    close: Option<Close>,
}

/// The queue itself. Bytes are counted from [`push`](Outbox::push) until the
/// writer reports them [`written`](Outbox::written), both here and in the
/// relay-wide total.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    budget: usize,
}

impl Outbox {
    pub(crate) fn new(budget: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            budget,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only counters behind; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `bytes` unless that would exceed the budget. Never waits.
    pub(crate) fn push(&self, bytes: Bytes, total: &AtomicUsize) -> Push {
        let len = bytes.len();
        let mut state = self.state();
        if state.close.is_some() {
            return Push::Closed;
        }
        if state.queued + state.in_flight + len > self.budget {
            return Push::OverBudget;
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(bytes);
        state.queued += len;
        total.fetch_add(len, Ordering::Relaxed);
        drop(state);
        if was_empty {
            // The writer drains everything once woken, so one wakeup per
            // empty-to-non-empty transition is enough.
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Moves up to `max` queued items into `batch` for writing.
    pub(crate) fn take(&self, max: usize, batch: &mut Vec<Bytes>) -> Take {
        let mut state = self.state();
        if state.close == Some(Close::Abort) {
            return Take::Done;
        }
        let n = max.min(state.queue.len());
        if n == 0 {
            return if state.close.is_some() {
                Take::Done
            } else {
                Take::Idle
            };
        }
        let mut bytes = 0;
        for item in state.queue.drain(..n) {
            bytes += item.len();
            batch.push(item);
        }
        state.queued -= bytes;
        state.in_flight += bytes;
        Take::Batch(bytes)
    }

    /// The writer finished (or gave up on) a batch of `bytes`.
    pub(crate) fn written(&self, bytes: usize, total: &AtomicUsize) {
        let mut state = self.state();
        state.in_flight -= bytes;
        total.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Closes the outbox. With [`Close::Abort`] the queue is dropped and the
    /// number of frames dropped is returned.
    pub(crate) fn close(&self, mode: Close, total: &AtomicUsize) -> usize {
        let mut state = self.state();
        let dropped = match (state.close, mode) {
            (Some(Close::Abort), _) => 0,
            (_, Close::Abort) => {
                let dropped = state.queue.len();
                state.queue.clear();
                total.fetch_sub(state.queued, Ordering::Relaxed);
                state.queued = 0;
                state.close = Some(Close::Abort);
                dropped
            }
            (_, Close::Flush) => {
                state.close = Some(Close::Flush);
                0
            }
        };
        drop(state);
        self.wake.notify_one();
        dropped
    }

    /// Bytes queued or being written.
    pub(crate) fn pending_bytes(&self) -> usize {
        let state = self.state();
        state.queued + state.in_flight
    }

    /// Waits until something is pushed or the outbox is closed.
    pub(crate) async fn notified(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn push_counts_bytes_here_and_in_the_total_until_written() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(100);
        assert_eq!(outbox.push(item(30), &total), Push::Queued);
        assert_eq!(outbox.push(item(20), &total), Push::Queued);
        let mut batch = Vec::new();
        assert_eq!(outbox.take(8, &mut batch), Take::Batch(50));
        assert_eq!(outbox.pending_bytes(), 50, "in-flight bytes still count");
        assert_eq!(total.load(Ordering::Relaxed), 50);
        outbox.written(50, &total);
        assert_eq!(outbox.pending_bytes(), 0);
        assert_eq!(total.load(Ordering::Relaxed), 0);
        assert_eq!(outbox.take(8, &mut batch), Take::Idle);
    }

    #[test]
    fn a_push_past_the_budget_queues_nothing() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(100);
        assert_eq!(outbox.push(item(60), &total), Push::Queued);
        assert_eq!(outbox.push(item(41), &total), Push::OverBudget);
        assert_eq!(outbox.push(item(40), &total), Push::Queued);
        assert_eq!(total.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn abort_drops_the_queue_and_releases_its_bytes() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(100);
        outbox.push(item(10), &total);
        let mut batch = Vec::new();
        outbox.take(1, &mut batch);
        outbox.push(item(20), &total);
        outbox.push(item(30), &total);
        assert_eq!(outbox.close(Close::Abort, &total), 2);
        assert_eq!(
            total.load(Ordering::Relaxed),
            10,
            "the batch in flight is still counted"
        );
        assert_eq!(outbox.push(item(1), &total), Push::Closed);
        assert_eq!(outbox.take(8, &mut batch), Take::Done);
        outbox.written(10, &total);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn flush_lets_the_writer_drain_before_it_is_done() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(100);
        outbox.push(item(10), &total);
        outbox.close(Close::Flush, &total);
        let mut batch = Vec::new();
        assert_eq!(outbox.take(8, &mut batch), Take::Batch(10));
        outbox.written(10, &total);
        assert_eq!(outbox.take(8, &mut batch), Take::Done);
    }
}
