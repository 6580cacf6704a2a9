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

use crate::sync::{Arc, AtomicBool, AtomicUsize, ByteCells, CachePadded, Ordering};

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

/// The state the producer and the consumer share.
pub(crate) struct RawRing {
    /// Position of the next byte to read. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Position of the next byte to write. Written by the producer only.
    tail: CachePadded<AtomicUsize>,
    /// Set once the producer is gone or closed; never cleared.
    producer_closed: AtomicBool,
    /// Set once the consumer is gone; never cleared.
    consumer_closed: AtomicBool,
    /// `capacity - 1`.
    mask: usize,
    cells: ByteCells,
}

// SAFETY: the ring is shared between exactly one producer thread and one
// consumer thread at a time (`Tx::new` and `Rx::new` are unsafe and called
// once per ring). The bytes in `[head, tail)` belong to the consumer thread and
// the bytes in `[tail, head + capacity)` to the producer thread; a byte changes
// hands only through a release store of `tail` (producer to consumer) or
// `head` (consumer to producer), paired with an acquire load on the other
// side. So no byte is ever accessed by two threads without that
// happens-before edge, and everything else in the struct is atomic or
// immutable after construction.
unsafe impl Sync for RawRing {}

impl RawRing {
    /// Allocates a ring whose positions start at zero.
    pub(crate) fn new(capacity: usize) -> Result<Self, CapacityError> {
        Self::starting_at(capacity, 0)
    }

    /// Allocates a ring whose positions start at `position` (tests use a
    /// position close to `usize::MAX` to exercise index wrap-around).
    pub(crate) fn starting_at(capacity: usize, position: usize) -> Result<Self, CapacityError> {
        if !capacity.is_power_of_two() {
            return Err(CapacityError::NotPowerOfTwo { capacity });
        }
        let cells =
            ByteCells::try_new(capacity).map_err(|_| CapacityError::OutOfMemory { capacity })?;
        Ok(Self {
            head: CachePadded(AtomicUsize::new(position)),
            tail: CachePadded(AtomicUsize::new(position)),
            producer_closed: AtomicBool::new(false),
            consumer_closed: AtomicBool::new(false),
            mask: capacity - 1,
            cells,
        })
    }

    /// Total size in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.cells.len()
    }

    /// Bytes in the ring as seen by a third thread (for statistics): a
    /// snapshot that may be stale by the time it is returned.
    pub(crate) fn occupancy(&self) -> usize {
        // Head first: the tail loaded afterwards is at least as new, so the
        // difference cannot underflow; it can overshoot if the producer refilled
        // in between, hence the clamp.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.capacity())
    }

    /// Total bytes ever consumed (wrapping).
    pub(crate) fn consumed_total(&self) -> usize {
        self.head.load(Ordering::Relaxed)
    }

    /// Total bytes ever produced (wrapping).
    pub(crate) fn produced_total(&self) -> usize {
        self.tail.load(Ordering::Relaxed)
    }

    /// Marks the producer side closed. The release pairs with the consumer's
    /// acquire load in [`is_producer_closed`](Self::is_producer_closed), which
    /// makes every byte published before the close visible to a consumer that
    /// sees the flag.
    pub(crate) fn close_producer(&self) {
        self.producer_closed.store(true, Ordering::Release);
    }

    /// Marks the consumer side closed.
    pub(crate) fn close_consumer(&self) {
        self.consumer_closed.store(true, Ordering::Release);
    }

    /// Whether the producer side is closed.
    pub(crate) fn is_producer_closed(&self) -> bool {
        self.producer_closed.load(Ordering::Acquire)
    }

    /// Whether the consumer side is closed.
    pub(crate) fn is_consumer_closed(&self) -> bool {
        self.consumer_closed.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for RawRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRing")
            .field("capacity", &self.capacity())
            .field("occupancy", &self.occupancy())
            .field(
                "producer_closed",
                &self.producer_closed.load(Ordering::Relaxed),
            )
            .field(
                "consumer_closed",
                &self.consumer_closed.load(Ordering::Relaxed),
            )
            .finish()
    }
}

/// Something that owns (a share of) a [`RawRing`]: the plain ring's `Arc`, or
/// the pipe that pairs a ring with its notifications.
pub(crate) trait RingOwner {
    /// The ring.
    fn ring(&self) -> &RawRing;
}

impl RingOwner for Arc<RawRing> {
    fn ring(&self) -> &RawRing {
        self
    }
}

/// The producer's cursor: the only code that writes ring bytes or `tail`.
#[derive(Debug)]
pub(crate) struct Tx<R: RingOwner> {
    owner: R,
    /// Private copy of `ring.tail` (only this cursor writes it).
    tail: usize,
    /// Last value of `ring.head` this cursor loaded; the true head is never
    /// behind it, so the free space it implies is a lower bound.
    head_cache: usize,
}

impl<R: RingOwner> Tx<R> {
    /// Takes the producer role of `owner`'s ring.
    ///
    /// # Safety
    ///
    /// At most one `Tx` may exist for a ring, ever (dropping one does not
    /// allow creating another: its writes may still be unpublished).
    pub(crate) unsafe fn new(owner: R) -> Self {
        let ring = owner.ring();
        let tail = ring.tail.load(Ordering::Relaxed);
        let head_cache = ring.head.load(Ordering::Acquire);
        Self {
            owner,
            tail,
            head_cache,
        }
    }

    pub(crate) fn owner(&self) -> &R {
        &self.owner
    }

    pub(crate) fn ring(&self) -> &RawRing {
        self.owner.ring()
    }

    /// Free space, reloading the consumer's head only if the cached value
    /// shows less than `wanted` bytes.
    pub(crate) fn free_at_least(&mut self, wanted: usize) -> usize {
        let capacity = self.ring().capacity();
        let free = capacity - self.tail.wrapping_sub(self.head_cache);
        if free >= wanted {
            return free;
        }
        // Acquire: the consumer's reads of the bytes it released happen before
        // we overwrite them.
        self.head_cache = self.ring().head.load(Ordering::Acquire);
        capacity - self.tail.wrapping_sub(self.head_cache)
    }

    /// Free space right now.
    pub(crate) fn free_len(&mut self) -> usize {
        self.free_at_least(usize::MAX)
    }

    /// Raw views of `n` free bytes from the tail, split at the wrap.
    ///
    /// `n` must not exceed the free space last computed.
    fn spare_exact(&mut self, n: usize) -> (&mut [u8], &mut [u8]) {
        let ring = self.owner.ring();
        let start = self.tail & ring.mask;
        let first = n.min(ring.capacity() - start);
        debug_assert!(n <= ring.capacity() - self.tail.wrapping_sub(self.head_cache));
        // SAFETY: `[tail, tail + n)` lies in the producer's share
        // `[tail, head + capacity)` (n is at most the free space computed from
        // a head the true head is never behind), which the consumer does not
        // touch until `tail` is published past it. The two index ranges,
        // `[start, start + first)` and `[0, n - first)`, are in bounds and
        // disjoint because `n <= capacity`. `&mut self` keeps `commit` and any
        // other view away while the slices live.
        unsafe {
            (
                ring.cells.slice_mut(start, first),
                ring.cells.slice_mut(0, n - first),
            )
        }
    }

    /// All free space as two slices.
    pub(crate) fn spare(&mut self) -> (&mut [u8], &mut [u8]) {
        let free = self.free_len();
        self.spare_exact(free)
    }

    /// Publishes `n` written bytes.
    ///
    /// # Panics
    ///
    /// If `n` exceeds the free space.
    pub(crate) fn commit(&mut self, n: usize) {
        let free = self.free_at_least(n);
        assert!(
            n <= free,
            "commit of {n} bytes exceeds the {free} free bytes of the ring"
        );
        self.publish(n);
    }

    fn publish(&mut self, n: usize) {
        self.tail = self.tail.wrapping_add(n);
        // Release: the bytes written above become visible to a consumer that
        // acquires this tail.
        self.ring().tail.store(self.tail, Ordering::Release);
    }

    /// Copies as much of `data` as fits; returns the number of bytes copied.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free_at_least(data.len()));
        if n == 0 {
            return 0;
        }
        let (first, second) = self.spare_exact(n);
        let (a, b) = data[..n].split_at(first.len());
        first.copy_from_slice(a);
        second.copy_from_slice(b);
        self.publish(n);
        n
    }
}

/// The consumer's cursor: the only code that reads ring bytes or writes `head`.
#[derive(Debug)]
pub(crate) struct Rx<R: RingOwner> {
    owner: R,
    /// Private copy of `ring.head` (only this cursor writes it).
    head: usize,
    /// Last value of `ring.tail` this cursor loaded; the true tail is never
    /// behind it.
    tail_cache: usize,
}

impl<R: RingOwner> Rx<R> {
    /// Takes the consumer role of `owner`'s ring.
    ///
    /// # Safety
    ///
    /// At most one `Rx` may exist for a ring, ever.
    pub(crate) unsafe fn new(owner: R) -> Self {
        let ring = owner.ring();
        let head = ring.head.load(Ordering::Relaxed);
        let tail_cache = ring.tail.load(Ordering::Acquire);
        Self {
            owner,
            head,
            tail_cache,
        }
    }

    pub(crate) fn owner(&self) -> &R {
        &self.owner
    }

    pub(crate) fn ring(&self) -> &RawRing {
        self.owner.ring()
    }

    /// Readable bytes, reloading the producer's tail only if the cached value
    /// shows less than `wanted` bytes.
    pub(crate) fn len_at_least(&mut self, wanted: usize) -> usize {
        let len = self.tail_cache.wrapping_sub(self.head);
        if len >= wanted {
            return len;
        }
        // Acquire: the producer's writes of the published bytes happen before
        // we read them.
        self.tail_cache = self.ring().tail.load(Ordering::Acquire);
        self.tail_cache.wrapping_sub(self.head)
    }

    /// Readable bytes right now.
    pub(crate) fn len(&mut self) -> usize {
        self.len_at_least(usize::MAX)
    }

    /// Views of `n` readable bytes from `head`, split at the wrap.
    ///
    /// `n` must not exceed `tail - head` for a tail this thread has acquired.
    fn readable_exact(&self, n: usize) -> (&[u8], &[u8]) {
        let ring = self.owner.ring();
        let start = self.head & ring.mask;
        let first = n.min(ring.capacity() - start);
        // SAFETY: `[head, head + n)` lies in the consumer's share
        // `[head, tail)` for a tail this thread acquired (caller contract), so
        // the producer finished writing it and will not write it again until
        // `head` is published past it, which needs `&mut self`. The index
        // ranges are in bounds and `n <= capacity`.
        unsafe {
            (
                ring.cells.slice(start, first),
                ring.cells.slice(0, n - first),
            )
        }
    }

    /// Everything readable right now as two slices.
    pub(crate) fn peek(&self) -> (&[u8], &[u8]) {
        let tail = self.ring().tail.load(Ordering::Acquire);
        self.readable_exact(tail.wrapping_sub(self.head))
    }

    /// Releases `n` bytes to the producer.
    ///
    /// # Panics
    ///
    /// If fewer than `n` bytes are readable.
    pub(crate) fn consume(&mut self, n: usize) {
        let len = self.len_at_least(n);
        assert!(
            n <= len,
            "consume of {n} bytes exceeds the {len} readable bytes of the ring"
        );
        self.release(n);
    }

    fn release(&mut self, n: usize) {
        self.head = self.head.wrapping_add(n);
        // Release: our reads of these bytes happen before the producer reuses them.
        self.ring().head.store(self.head, Ordering::Release);
    }

    /// Copies up to `buf.len()` bytes out; returns the number copied.
    pub(crate) fn pop(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.len_at_least(buf.len()));
        if n == 0 {
            return 0;
        }
        let (first, second) = self.readable_exact(n);
        let (a, b) = buf[..n].split_at_mut(first.len());
        a.copy_from_slice(first);
        b.copy_from_slice(second);
        self.release(n);
        n
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
