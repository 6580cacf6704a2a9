//! The low-level single-producer single-consumer byte ring: wait-free, allocation-free, never waits.
//!
//! [`channel`] returns a [`Producer`] and a [`Consumer`]. Both sides copy
//! slices in and out ([`Producer::push`], [`Consumer::pop`]) or work in place
//! on the ring memory through two slices that split at the wrap point
//! ([`Producer::spare_slices`] + [`Producer::commit`],
//! [`Consumer::peek`] + [`Consumer::consume`]). Every operation finishes in a
//! bounded number of steps whatever the other thread does: there is no lock,
//! no retry loop and no waiting. Waiting for data or space is the job of the
//! layers above (the [`DeviceEnd`](crate::DeviceEnd),
//! [`RelayEnd`](crate::RelayEnd) and [`pipe`](crate::pipe()) halves), which
//! pair this ring with eventfds.
//!
//! # Layout
//!
//! `head` (next byte to read, written only by the consumer) and `tail` (next
//! byte to write, written only by the producer) are free-running positions
//! that wrap at `usize::MAX`; the byte at position `p` lives at index
//! `p & (capacity - 1)`, which is why the capacity is a power of two. The
//! ring holds `tail - head` bytes. Each side keeps a private copy of the
//! other side's index and reloads it only when the copy says "empty" or
//! "full", so in steady state a push or a pop touches one shared cache line.

use std::io;

use crate::raw::{RawRing, Rx, Tx};
use crate::sync::Arc;

/// A ring capacity that [`channel`] or [`duplex`](crate::duplex) cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapacityError {
    /// The capacity is zero or not a power of two.
    #[error("ring capacity must be a non-zero power of two, got {capacity} bytes")]
    NotPowerOfTwo {
        /// The rejected capacity.
        capacity: usize,
    },
    /// The allocator could not provide the ring memory.
    #[error("cannot allocate a ring of {capacity} bytes")]
    OutOfMemory {
        /// The requested capacity.
        capacity: usize,
    },
}

impl From<CapacityError> for io::Error {
    fn from(err: CapacityError) -> Self {
        let kind = match err {
            CapacityError::NotPowerOfTwo { .. } => io::ErrorKind::InvalidInput,
            CapacityError::OutOfMemory { .. } => io::ErrorKind::OutOfMemory,
        };
        io::Error::new(kind, err)
    }
}

/// Creates a ring of `capacity` bytes and returns its two ends.
///
/// This is the only allocation the ring ever makes.
///
/// # Errors
///
/// [`CapacityError::NotPowerOfTwo`] when `capacity` is zero or not a power of
/// two, [`CapacityError::OutOfMemory`] when the memory cannot be allocated.
///
/// # Example
///
/// ```
/// let (mut tx, mut rx) = relay_ring::ring::channel(8)?;
/// assert_eq!(tx.push(b"hello, world"), 8); // a partial write: the ring is full
/// let mut out = [0; 5];
/// assert_eq!(rx.pop(&mut out), 5);
/// assert_eq!(&out, b"hello");
/// assert_eq!(tx.push(b"!!!"), 3); // wraps around the end of the memory
/// let (first, second) = rx.peek();
/// assert_eq!((first, second), (&b", w"[..], &b"!!!"[..]));
/// rx.consume(first.len() + second.len());
/// # Ok::<(), relay_ring::CapacityError>(())
/// ```
pub fn channel(capacity: usize) -> Result<(Producer, Consumer), CapacityError> {
    let ring = Arc::new(RawRing::new(capacity)?);
    // SAFETY: the ring was just created; these are its only producer and
    // consumer cursors, and `Producer`/`Consumer` are neither `Clone` nor `Copy`.
    let (tx, rx) = unsafe { (Tx::new(Arc::clone(&ring)), Rx::new(ring)) };
    Ok((Producer { tx }, Consumer { rx }))
}

/// The writing end of a [`channel`].
///
/// Dropping it marks the ring abandoned for the consumer
/// ([`Consumer::is_abandoned`]).
pub struct Producer {
    tx: Tx<Arc<RawRing>>,
}

impl Producer {
    /// Total size of the ring in bytes.
    pub fn capacity(&self) -> usize {
        self.tx.ring().capacity()
    }

    /// Bytes that can be written right now.
    pub fn free_len(&mut self) -> usize {
        self.tx.free_len()
    }

    /// Copies as much of `data` as fits and returns how many bytes that was (0 when full).
    pub fn push(&mut self, data: &[u8]) -> usize {
        self.tx.push(data)
    }

    /// The free space of the ring as two slices, in ring order: write into
    /// them, then publish what was written with [`commit`](Self::commit).
    ///
    /// The second slice is non-empty only when the free space wraps around the
    /// end of the ring memory. The slices may hold stale bytes.
    pub fn spare_slices(&mut self) -> (&mut [u8], &mut [u8]) {
        self.tx.spare()
    }

    /// Publishes the first `n` bytes of the space returned by
    /// [`spare_slices`](Self::spare_slices) to the consumer.
    ///
    /// # Panics
    ///
    /// If `n` is larger than the free space.
    pub fn commit(&mut self, n: usize) {
        self.tx.commit(n);
    }

    /// Whether the [`Consumer`] was dropped.
    pub fn is_abandoned(&self) -> bool {
        self.tx.ring().is_consumer_closed()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.tx.ring().close_producer();
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("ring", self.tx.ring())
            .finish()
    }
}

/// The reading end of a [`channel`].
///
/// Dropping it marks the ring abandoned for the producer
/// ([`Producer::is_abandoned`]).
pub struct Consumer {
    rx: Rx<Arc<RawRing>>,
}

impl Consumer {
    /// Total size of the ring in bytes.
    pub fn capacity(&self) -> usize {
        self.rx.ring().capacity()
    }

    /// Bytes that can be read right now.
    pub fn len(&mut self) -> usize {
        self.rx.len()
    }

    /// Whether there is nothing to read right now.
    pub fn is_empty(&mut self) -> bool {
        self.rx.len() == 0
    }

    /// Moves up to `buf.len()` bytes out of the ring into `buf` and returns
    /// how many that was (0 when empty).
    pub fn pop(&mut self, buf: &mut [u8]) -> usize {
        self.rx.pop(buf)
    }

    /// Everything readable right now as two slices, in order; the second is
    /// non-empty only when the data wraps around the end of the ring memory.
    /// Release bytes with [`consume`](Self::consume).
    pub fn peek(&self) -> (&[u8], &[u8]) {
        self.rx.peek()
    }

    /// Releases the first `n` readable bytes back to the producer.
    ///
    /// # Panics
    ///
    /// If fewer than `n` bytes are readable.
    pub fn consume(&mut self, n: usize) {
        self.rx.consume(n);
    }

    /// Whether the [`Producer`] was dropped. Bytes it wrote before that stay
    /// readable.
    pub fn is_abandoned(&self) -> bool {
        self.rx.ring().is_producer_closed()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.rx.ring().close_consumer();
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("ring", self.rx.ring())
            .finish()
    }
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    /// A ring whose positions start `before_wrap` bytes short of `usize::MAX`.
    fn ring_near_index_wrap(
        capacity: usize,
        before_wrap: usize,
    ) -> (Tx<Arc<RawRing>>, Rx<Arc<RawRing>>) {
        let ring =
            Arc::new(RawRing::starting_at(capacity, 0usize.wrapping_sub(before_wrap)).unwrap());
        // SAFETY: fresh ring, one cursor of each kind.
        unsafe { (Tx::new(Arc::clone(&ring)), Rx::new(ring)) }
    }

    fn drain(rx: &mut Consumer) -> Vec<u8> {
        let (a, b) = rx.peek();
        let out = [a, b].concat();
        rx.consume(out.len());
        out
    }

    #[test]
    fn capacities_that_are_not_powers_of_two_are_rejected() {
        for capacity in [0, 3, 6, 1000, (1 << 20) + 1] {
            let err = channel(capacity).unwrap_err();
            assert_eq!(err, CapacityError::NotPowerOfTwo { capacity });
            assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn a_ring_of_one_byte_works() {
        let (mut tx, mut rx) = channel(1).unwrap();
        for byte in 0..=255u8 {
            assert_eq!(tx.push(&[byte, byte]), 1);
            assert_eq!(tx.push(&[byte]), 0);
            let mut out = [0; 2];
            assert_eq!(rx.pop(&mut out), 1);
            assert_eq!(out[0], byte);
        }
    }

    #[test]
    fn pushed_bytes_come_out_in_order() {
        let (mut tx, mut rx) = channel(16).unwrap();
        assert_eq!(tx.push(b"abc"), 3);
        assert_eq!(tx.push(b"def"), 3);
        let mut out = [0; 16];
        assert_eq!(rx.pop(&mut out), 6);
        assert_eq!(&out[..6], b"abcdef");
    }

    #[test]
    fn push_into_a_nearly_full_ring_writes_only_what_fits() {
        let (mut tx, mut rx) = channel(8).unwrap();
        assert_eq!(tx.push(b"12345"), 5);
        assert_eq!(tx.push(b"abcdef"), 3);
        assert_eq!(tx.free_len(), 0);
        assert_eq!(tx.push(b"x"), 0);
        assert_eq!(drain(&mut rx), b"12345abc");
    }

    #[test]
    fn pop_from_an_empty_ring_returns_zero() {
        let (_tx, mut rx) = channel(8).unwrap();
        let mut out = [0; 4];
        assert_eq!(rx.pop(&mut out), 0);
        assert!(rx.is_empty());
        assert_eq!(rx.peek(), (&[][..], &[][..]));
    }

    #[test]
    fn zero_length_push_and_pop_change_nothing() {
        let (mut tx, mut rx) = channel(4).unwrap();
        assert_eq!(tx.push(&[]), 0);
        assert_eq!(rx.pop(&mut []), 0);
        tx.push(b"abcd");
        assert_eq!(tx.push(&[]), 0);
        assert_eq!(rx.pop(&mut []), 0);
        tx.commit(0);
        rx.consume(0);
        assert_eq!(rx.len(), 4);
    }

    #[test]
    fn data_that_wraps_is_seen_as_two_slices() {
        let (mut tx, mut rx) = channel(8).unwrap();
        tx.push(b"123456");
        rx.consume(5);
        assert_eq!(tx.push(b"abcde"), 5);
        let (first, second) = rx.peek();
        assert_eq!(first, b"6ab");
        assert_eq!(second, b"cde");
        let mut out = [0; 8];
        assert_eq!(rx.pop(&mut out), 6);
        assert_eq!(&out[..6], b"6abcde");
    }

    #[test]
    fn free_space_that_wraps_is_offered_as_two_slices() {
        let (mut tx, mut rx) = channel(8).unwrap();
        tx.push(b"123456");
        rx.consume(4);
        let (first, second) = tx.spare_slices();
        assert_eq!((first.len(), second.len()), (2, 4));
        first.copy_from_slice(b"ab");
        second[..3].copy_from_slice(b"cde");
        tx.commit(5);
        assert_eq!(drain(&mut rx), b"56abcde");
    }

    #[test]
    fn committed_bytes_are_invisible_until_commit() {
        let (mut tx, mut rx) = channel(8).unwrap();
        tx.spare_slices().0[..3].copy_from_slice(b"xyz");
        assert!(rx.is_empty());
        tx.commit(3);
        assert_eq!(drain(&mut rx), b"xyz");
    }

    #[test]
    fn positions_keep_working_across_usize_overflow() {
        let (mut tx, mut rx) = ring_near_index_wrap(8, 3);
        let mut expected = VecDeque::new();
        let mut next = 0u8;
        for round in 0..40 {
            let chunk: Vec<u8> = (0..(round % 7))
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            let n = tx.push(&chunk);
            expected.extend(&chunk[..n]);
            let mut out = vec![0; round % 5];
            let m = rx.pop(&mut out);
            for byte in &out[..m] {
                assert_eq!(Some(*byte), expected.pop_front());
            }
        }
        // Both positions started 3 bytes short of `usize::MAX` and are now past it.
        assert!(tx.ring().produced_total() < 1000);
        assert!(tx.ring().consumed_total() < 1000);
    }

    #[test]
    fn ends_report_when_the_other_end_is_dropped() {
        let (tx, rx) = channel(4).unwrap();
        assert!(!rx.is_abandoned());
        drop(tx);
        assert!(rx.is_abandoned());
        let (tx, rx) = channel(4).unwrap();
        drop(rx);
        assert!(tx.is_abandoned());
    }

    #[test]
    fn bytes_pushed_before_the_producer_is_dropped_stay_readable() {
        let (mut tx, mut rx) = channel(4).unwrap();
        tx.push(b"ab");
        drop(tx);
        assert_eq!(drain(&mut rx), b"ab");
    }

    #[test]
    fn the_ring_moves_data_between_threads() {
        let (mut tx, mut rx) = channel(64).unwrap();
        let total = 1 << 20;
        let producer = std::thread::spawn(move || {
            let mut sent = 0usize;
            while sent < total {
                let chunk: Vec<u8> = (sent..(sent + 37).min(total)).map(|i| i as u8).collect();
                let mut done = 0;
                while done < chunk.len() {
                    done += tx.push(&chunk[done..]);
                    std::hint::spin_loop();
                }
                sent += chunk.len();
            }
        });
        let mut received = 0usize;
        let mut buf = [0u8; 29];
        while received < total {
            let n = rx.pop(&mut buf);
            for (i, byte) in buf[..n].iter().enumerate() {
                assert_eq!(*byte, (received + i) as u8);
            }
            received += n;
            std::hint::spin_loop();
        }
        producer.join().unwrap();
    }

    /// One step of the model-based test.
    #[derive(Debug, Clone)]
    enum Op {
        Push(Vec<u8>),
        Pop(usize),
        WriteInPlace(Vec<u8>),
        ReadInPlace(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Op::Push),
            (0usize..20).prop_map(Op::Pop),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Op::WriteInPlace),
            (0usize..20).prop_map(Op::ReadInPlace),
        ]
    }

    proptest! {
        #[test]
        fn any_sequence_of_operations_behaves_like_a_bounded_queue(
            capacity_log in 0u32..5,
            before_wrap in 0usize..40,
            ops in prop::collection::vec(op(), 0..100),
        ) {
            let capacity = 1usize << capacity_log;
            let (mut tx, mut rx) = ring_near_index_wrap(capacity, before_wrap);
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(data) => {
                        let n = tx.push(&data);
                        prop_assert_eq!(n, data.len().min(capacity - model.len()));
                        model.extend(&data[..n]);
                    }
                    Op::Pop(len) => {
                        let mut out = vec![0; len];
                        let n = rx.pop(&mut out);
                        prop_assert_eq!(n, len.min(model.len()));
                        let expected: Vec<u8> = model.drain(..n).collect();
                        prop_assert_eq!(&out[..n], &expected[..]);
                    }
                    Op::WriteInPlace(data) => {
                        let (first, second) = tx.spare();
                        prop_assert_eq!(first.len() + second.len(), capacity - model.len());
                        let n = data.len().min(first.len() + second.len());
                        let split = n.min(first.len());
                        first[..split].copy_from_slice(&data[..split]);
                        second[..n - split].copy_from_slice(&data[split..n]);
                        tx.commit(n);
                        model.extend(&data[..n]);
                    }
                    Op::ReadInPlace(len) => {
                        let (first, second) = rx.peek();
                        prop_assert_eq!(first.len() + second.len(), model.len());
                        prop_assert!(second.is_empty() || first.len() + second.len() > 0);
                        let seen: Vec<u8> = [first, second].concat();
                        let expected: Vec<u8> = model.iter().copied().collect();
                        prop_assert_eq!(seen, expected);
                        let n = len.min(model.len());
                        rx.consume(n);
                        model.drain(..n);
                    }
                }
                prop_assert_eq!(tx.ring().occupancy(), model.len());
            }
        }
    }
}
