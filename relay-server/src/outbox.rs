//! A client's outgoing queue that the agent reader fills without ever
//! waiting and the client's writer drains. The router decides what may be
//! queued and charges it; the queue only holds and counts.

use std::collections::VecDeque;
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

/// What the writer should do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Write the bytes moved into the batch; report their charge (this
    /// value) to the router once they have left.
    Write(usize),
    /// Nothing queued: wait for [`Outbox::notified`].
    Idle,
    /// Closed and nothing more to write.
    Done,
}

/// What one queued frame costs beyond its wire bytes: its slot in the queue
/// (an [`Item`], twice over while the deque's capacity is a power of two
/// above its length) and the allocator's header on the frame's own
/// allocation (glibc's smallest chunk is 32 bytes, its header 8). The
/// router charges it so that a flood of tiny frames cannot make the relay
/// hold many times the memory its configuration states.
pub(crate) const FRAME_OVERHEAD: usize = 2 * std::mem::size_of::<Item>() + 32;

/// What a frame of `len` wire bytes is charged against the budgets.
pub(crate) const fn charge(len: usize) -> usize {
    len + FRAME_OVERHEAD
}

/// A drained queue keeps at most this many slots of capacity.
const KEEP_CAPACITY: usize = 1024;

/// Queues longer than this are freed in pieces of this many frames, one
/// piece per turn of the relay's thread: a cut-off client may hold
/// millions of tiny frames, and freeing them at once would stall every
/// other client meanwhile (freeing them on other threads instead makes
/// those threads fight the relay's for the allocator's lock).
const FREE_PIECE: usize = 4096;

/// One queued item: bytes for the socket, and the frame header to credit
/// back to the agent once they are written (with flow control on).
#[derive(Debug)]
struct Item {
    bytes: Bytes,
    credit: Option<FrameHeader>,
}

/// Headers and wire lengths of written frames to credit back.
pub(crate) type Credited = Vec<(FrameHeader, usize)>;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Item>,
    close: Option<Close>,
}

/// The queue itself.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    wake: Notify,
}

impl Outbox {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only counters behind; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues bytes the router has charged. Never waits. Returns `false`
    /// if the outbox is closed (nothing was queued).
    pub(crate) fn push(&self, bytes: Bytes, credit: Option<FrameHeader>) -> bool {
        let mut state = self.state();
        if state.close.is_some() {
            return false;
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(Item { bytes, credit });
        drop(state);
        if was_empty {
            // The writer drains everything once woken, so one wakeup per
            // empty-to-non-empty transition is enough.
            self.wake.notify_one();
        }
        true
    }

    /// Moves up to `max` queued items into `batch` for writing, and the
    /// headers to credit once they are written into `credits`.
    pub(crate) fn take(&self, max: usize, batch: &mut Vec<Bytes>, credits: &mut Credited) -> Take {
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
        Take::Write(charged)
    }

    /// Closes the outbox. With [`Close::Abort`] the queue is dropped and
    /// the number of frames dropped is returned.
    pub(crate) fn close(&self, mode: Close) -> usize {
        let mut state = self.state();
        let dropped = match (state.close, mode) {
            (Some(Close::Abort), _) => 0,
            (_, Close::Abort) => {
                let queue = std::mem::take(&mut state.queue);
                let count = queue.len();
                free(queue);
                state.close = Some(Close::Abort);
                count
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

    /// Waits until something is pushed or the outbox is closed.
    pub(crate) async fn notified(&self) {
        self.wake.notified().await;
    }
}

/// Drops a queue, in pieces between other tasks' turns when it is long.
fn free(mut queue: VecDeque<Item>) {
    if queue.len() > FREE_PIECE
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        drop(runtime.spawn(async move {
            while !queue.is_empty() {
                queue.drain(..queue.len().min(FREE_PIECE)).for_each(drop);
                tokio::task::yield_now().await;
            }
        }));
    } else {
        drop(queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn a_batch_reports_the_charge_of_what_it_took() {
        let outbox = Outbox::default();
        assert!(outbox.push(item(30), None));
        assert!(outbox.push(item(20), None));
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        assert_eq!(
            outbox.take(8, &mut batch, &mut credits),
            Take::Write(charge(30) + charge(20))
        );
        assert_eq!(batch.len(), 2);
        assert_eq!(outbox.take(8, &mut batch, &mut credits), Take::Idle);
    }

    #[test]
    fn the_overhead_is_two_queue_slots_and_an_allocation() {
        assert_eq!(FRAME_OVERHEAD, 128, "two 48-byte deque slots and 32 bytes");
    }

    #[test]
    fn a_drained_queue_gives_back_the_capacity_a_burst_left() {
        let outbox = Outbox::default();
        for _ in 0..100_000 {
            outbox.push(item(1), None);
        }
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        while let Take::Write(_) = outbox.take(1024, &mut batch, &mut credits) {
            batch.clear();
        }
        assert!(outbox.state().queue.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn abort_drops_the_queue_and_closes_it() {
        let outbox = Outbox::default();
        outbox.push(item(10), None);
        outbox.push(item(20), None);
        assert_eq!(outbox.close(Close::Abort), 2);
        assert!(!outbox.push(item(1), None));
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        assert_eq!(outbox.take(8, &mut batch, &mut credits), Take::Done);
        assert_eq!(outbox.close(Close::Abort), 0, "and only once");
    }

    #[test]
    fn credited_items_report_their_headers_when_taken() {
        let outbox = Outbox::default();
        let header = FrameHeader {
            id: 7,
            flags: relay_codec::Flags::NONE,
        };
        outbox.push(item(10), Some(header));
        outbox.push(item(5), None);
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        outbox.take(2, &mut batch, &mut credits);
        assert_eq!(credits, vec![(header, 10)]);
    }

    #[test]
    fn flush_lets_the_writer_drain_before_it_is_done() {
        let outbox = Outbox::default();
        outbox.push(item(10), None);
        outbox.close(Close::Flush);
        let mut batch = Vec::new();
        let mut credits = Vec::new();
        assert_eq!(
            outbox.take(8, &mut batch, &mut credits),
            Take::Write(charge(10))
        );
        assert_eq!(outbox.take(8, &mut batch, &mut credits), Take::Done);
    }
}
