//! The ring's shared state and its two cursors: [`RawRing`] (the memory and
//! the `head`/`tail` positions), [`Tx`] (the one producer) and [`Rx`] (the
//! one consumer), generic over who owns the ring so the public ends in
//! [`ring`](crate::ring) and the pipe halves in `pipe` share one
//! implementation of the memory ordering.

use crate::ring::CapacityError;
use crate::sync::{Arc, AtomicBool, AtomicUsize, ByteCells, CachePadded, Ordering};

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
