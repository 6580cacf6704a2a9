//! A client's outgoing queue, bounded in bytes, that the agent reader fills
//! without ever waiting and the client's writer drains.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use relay_codec::FrameHeader;
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

/// What one queued frame costs beyond its wire bytes: its slot in the queue
/// (an [`Item`], twice over while the deque's capacity is a power of two
/// above its length) and the allocator's header on the frame's own
/// allocation (glibc's smallest chunk is 32 bytes, its header 8). Budgets
/// charge it so that a flood of tiny frames cannot make the relay hold many
/// times the memory its configuration states.
pub(crate) const FRAME_OVERHEAD: usize = 2 * std::mem::size_of::<Item>() + 32;

/// What a frame of `len` wire bytes is charged against the budgets.
pub(crate) const fn charge(len: usize) -> usize {
    len + FRAME_OVERHEAD
}

/// A drained queue keeps at most this many slots of capacity.
const KEEP_CAPACITY: usize = 1024;

/// Queues longer than this are freed on a blocking thread when dropped: a
/// cut-off client may hold millions of tiny frames, and freeing them on the
/// relay's thread would stall every other client meanwhile.
const FREE_OFF_THREAD: usize = 4096;

/// One queued item: bytes for the socket, and the frame header to credit
/// back to the agent once they leave (with flow control on).
#[derive(Debug)]
struct Item {
    bytes: Bytes,
    credit: Option<FrameHeader>,
}

/// Frames that left an outbox without being written, to credit back.
pub(crate) type Released = Vec<(FrameHeader, usize)>;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Item>,
    queued: usize,
    in_flight: usize,
    /// The in-flight bytes were already taken out of the relay-wide total
    /// (by an abort), so [`Outbox::written`] must not take them again.
    in_flight_released: bool,
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
    /// `credit` is the header to credit back once the bytes leave.
    pub(crate) fn push(
        &self,
        bytes: Bytes,
        credit: Option<FrameHeader>,
        total: &AtomicUsize,
    ) -> Push {
        let cost = charge(bytes.len());
        let mut state = self.state();
        if state.close.is_some() {
            return Push::Closed;
        }
        if state.queued + state.in_flight + cost > self.budget {
            return Push::OverBudget;
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(Item { bytes, credit });
        state.queued += cost;
        total.fetch_add(cost, Ordering::Relaxed);
        drop(state);
        if was_empty {
            // The writer drains everything once woken, so one wakeup per
            // empty-to-non-empty transition is enough.
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Moves up to `max` queued items into `batch` for writing, and the
    /// headers to credit once they are written into `credits`. The batch's
    /// charge (wire bytes and overhead) goes back with [`Outbox::written`].
    pub(crate) fn take(&self, max: usize, batch: &mut Vec<Bytes>, credits: &mut Released) -> Take {
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
        let mut charged = 0;
        for item in state.queue.drain(..n) {
            charged += charge(item.bytes.len());
            if let Some(header) = item.credit {
                credits.push((header, item.bytes.len()));
            }
            batch.push(item.bytes);
        }
        if state.queue.is_empty() && state.queue.capacity() > KEEP_CAPACITY {
            // The capacity a burst left behind is memory nobody charges.
            state.queue = VecDeque::new();
        }
        state.queued -= charged;
        state.in_flight += charged;
        Take::Batch(charged)
    }

    /// The writer finished (or gave up on) a batch charged `bytes`.
    pub(crate) fn written(&self, bytes: usize, total: &AtomicUsize) {
        let mut state = self.state();
        state.in_flight -= bytes;
        if !state.in_flight_released {
            total.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Closes the outbox. With [`Close::Abort`] the queue is dropped; the
    /// number of frames dropped is returned, and the headers to credit.
    pub(crate) fn close(&self, mode: Close, total: &AtomicUsize) -> (usize, Released) {
        let mut state = self.state();
        let dropped = match (state.close, mode) {
            (Some(Close::Abort), _) => (0, Vec::new()),
            (_, Close::Abort) => {
                let queue = std::mem::take(&mut state.queue);
                let count = queue.len();
                let released = queue
                    .iter()
                    .filter_map(|item| item.credit.map(|h| (h, item.bytes.len())))
                    .collect();
                free(queue);
                // The batch being written is abandoned too: release it now,
                // so the relay-wide total is right the moment a client is
                // cut off (the total-budget check runs right after).
                total.fetch_sub(state.queued + state.in_flight, Ordering::Relaxed);
                state.queued = 0;
                state.in_flight_released = true;
                state.close = Some(Close::Abort);
                (count, released)
            }
            (_, Close::Flush) => {
                state.close = Some(Close::Flush);
                (0, Vec::new())
            }
        };
        drop(state);
        self.wake.notify_one();
        dropped
    }

    /// Bytes charged for what is queued or being written, as counted in the
    /// relay-wide total.
    pub(crate) fn pending_bytes(&self) -> usize {
        let state = self.state();
        if state.in_flight_released {
            state.queued
        } else {
            state.queued + state.in_flight
        }
    }

    /// Waits until something is pushed or the outbox is closed.
    pub(crate) async fn notified(&self) {
        self.wake.notified().await;
    }
}

/// Drops a queue, on a blocking thread when it is long.
fn free(queue: VecDeque<Item>) {
    if queue.len() > FREE_OFF_THREAD
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        drop(runtime.spawn_blocking(move || drop(queue)));
    } else {
        drop(queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget for `frames` frames of `len` bytes each.
    fn room(frames: usize, len: usize) -> usize {
        frames * charge(len)
    }

    fn item(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn push_counts_bytes_here_and_in_the_total_until_written() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(1000);
        assert_eq!(outbox.push(item(30), None, &total), Push::Queued);
        assert_eq!(outbox.push(item(20), None, &total), Push::Queued);
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        let charged = charge(30) + charge(20);
        assert_eq!(
            outbox.take(8, &mut batch, &mut credits),
            Take::Batch(charged)
        );
        assert_eq!(
            outbox.pending_bytes(),
            charged,
            "in-flight bytes still count"
        );
        assert_eq!(total.load(Ordering::Relaxed), charged);
        outbox.written(charged, &total);
        assert_eq!(outbox.pending_bytes(), 0);
        assert_eq!(total.load(Ordering::Relaxed), 0);
        assert_eq!(outbox.take(8, &mut batch, &mut credits), Take::Idle);
    }

    #[test]
    fn a_push_past_the_budget_queues_nothing() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(charge(60) + charge(40));
        assert_eq!(outbox.push(item(60), None, &total), Push::Queued);
        assert_eq!(outbox.push(item(41), None, &total), Push::OverBudget);
        assert_eq!(outbox.push(item(40), None, &total), Push::Queued);
        assert_eq!(total.load(Ordering::Relaxed), charge(60) + charge(40));
    }

    #[test]
    fn tiny_frames_are_charged_what_they_cost_not_their_wire_bytes() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(10_000);
        let mut queued = 0;
        while outbox.push(item(10), None, &total) == Push::Queued {
            queued += 1;
        }
        assert_eq!(queued, 10_000 / charge(10), "not 1,000 frames");
        assert_eq!(
            FRAME_OVERHEAD, 128,
            "two 48-byte deque slots and an allocation"
        );
    }

    #[test]
    fn a_drained_queue_gives_back_the_capacity_a_burst_left() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(usize::MAX);
        for _ in 0..100_000 {
            outbox.push(item(1), None, &total);
        }
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        while let Take::Batch(charged) = outbox.take(1024, &mut batch, &mut credits) {
            outbox.written(charged, &total);
            batch.clear();
        }
        assert!(outbox.state().queue.capacity() <= KEEP_CAPACITY);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn abort_drops_the_queue_and_releases_its_bytes() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(room(3, 30));
        outbox.push(item(10), None, &total);
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        outbox.take(1, &mut batch, &mut credits);
        outbox.push(item(20), None, &total);
        outbox.push(item(30), None, &total);
        assert_eq!(outbox.close(Close::Abort, &total).0, 2);
        assert_eq!(
            total.load(Ordering::Relaxed),
            0,
            "the abandoned batch in flight is released at once"
        );
        assert_eq!(outbox.push(item(1), None, &total), Push::Closed);
        assert_eq!(outbox.take(8, &mut batch, &mut credits), Take::Done);
        outbox.written(charge(10), &total);
        assert_eq!(total.load(Ordering::Relaxed), 0, "and not twice");
    }

    #[test]
    fn credited_items_report_their_headers_when_taken_or_dropped() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(room(3, 20));
        let header = FrameHeader {
            id: 7,
            flags: relay_codec::Flags::NONE,
        };
        outbox.push(item(10), Some(header), &total);
        outbox.push(item(5), None, &total);
        outbox.push(item(20), Some(header), &total);
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        assert_eq!(
            outbox.take(2, &mut batch, &mut credits),
            Take::Batch(charge(10) + charge(5))
        );
        assert_eq!(credits, vec![(header, 10)]);
        let (dropped, released) = outbox.close(Close::Abort, &total);
        assert_eq!((dropped, released), (1, vec![(header, 20)]));
    }

    #[test]
    fn flush_lets_the_writer_drain_before_it_is_done() {
        let total = AtomicUsize::new(0);
        let outbox = Outbox::new(room(1, 10));
        outbox.push(item(10), None, &total);
        outbox.close(Close::Flush, &total);
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        assert_eq!(
            outbox.take(8, &mut batch, &mut credits),
            Take::Batch(charge(10))
        );
        outbox.written(charge(10), &total);
        assert_eq!(outbox.take(8, &mut batch, &mut credits), Take::Done);
    }
}
