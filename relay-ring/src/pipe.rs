//! One direction of the duplex: a [`RawRing`] with its two [`Signal`]s, and the non-blocking reader and writer logic both ends share.
//!
//! [`PipeReader`] and [`PipeWriter`] implement the contract of the public
//! halves: an operation either makes progress or returns `WouldBlock` having
//! armed the matching signal, so the fd becomes readable when it can make
//! progress again; closing is sticky and wakes a parked peer.

use std::io;
use std::time::{Duration, Instant};

use crate::raw::{RawRing, RingOwner, Rx, Tx};
use crate::signal::{Signal, Waiter};
use crate::stats::RingStats;
use crate::sync::{Arc, CachePadded};

/// A ring and its notifications, shared by one reader and one writer.
#[derive(Debug)]
pub(crate) struct Pipe {
    ring: RawRing,
    /// Data available: the writer notifies, the reader waits.
    data: CachePadded<Signal>,
    /// Space available: the reader notifies, the writer waits.
    space: CachePadded<Signal>,
}

impl RingOwner for Arc<Pipe> {
    fn ring(&self) -> &RawRing {
        &self.ring
    }
}

impl Pipe {
    /// Allocates the ring and creates both eventfds.
    pub(crate) fn new(capacity: usize) -> io::Result<Arc<Self>> {
        let ring = RawRing::new(capacity).map_err(io::Error::from)?;
        Ok(Arc::new(Self {
            ring,
            data: CachePadded(Signal::new()?),
            space: CachePadded(Signal::new()?),
        }))
    }

    /// Creates the pipe and its only reader and writer.
    pub(crate) fn pair(capacity: usize) -> io::Result<(PipeWriter, PipeReader)> {
        let pipe = Self::new(capacity)?;
        // SAFETY: the pipe was just created; these are its only cursors.
        let (tx, rx) = unsafe { (Tx::new(Arc::clone(&pipe)), Rx::new(pipe)) };
        Ok((
            PipeWriter {
                tx,
                waiter: Waiter::default(),
                closed: false,
            },
            PipeReader {
                rx,
                waiter: Waiter::default(),
            },
        ))
    }

    /// The data-available signal (the reader waits on it).
    pub(crate) fn data(&self) -> &Signal {
        &self.data
    }

    /// The space-available signal (the writer waits on it).
    pub(crate) fn space(&self) -> &Signal {
        &self.space
    }

    /// A statistics snapshot.
    pub(crate) fn stats(&self) -> RingStats {
        RingStats {
            capacity: self.ring.capacity(),
            len: self.ring.occupancy(),
            bytes_written: self.ring.produced_total() as u64,
            bytes_read: self.ring.consumed_total() as u64,
            data_parks: self.data.parks(),
            data_wakeups: self.data.wakeups(),
            space_parks: self.space.parks(),
            space_wakeups: self.space.wakeups(),
            writer_closed: self.ring.is_producer_closed(),
            reader_closed: self.ring.is_consumer_closed(),
        }
    }
}

/// An optional point in time for the `wait_*` helpers.
struct Deadline(Option<Instant>);

impl Deadline {
    fn after(timeout: Option<Duration>) -> Self {
        Self(timeout.map(|timeout| Instant::now() + timeout))
    }

    /// Time left (`None`: no limit).
    fn left(&self) -> Option<Duration> {
        self.0
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }
}

/// How long the blocking helpers keep looking at the ring (with a CPU pause
/// between looks) before they park on the eventfd. Parking costs a poll(2)
/// sleep and an eventfd write to end it: tens of microseconds on a virtual
/// machine, paid by both sides. A streaming peer usually adds data or frees
/// space much sooner, so spinning for about the cost of one parking avoids
/// most of them (in the 4 KiB-ring stress test, 1 GiB needs a few hundred
/// parkings instead of half a million) while bounding the CPU time a spin can
/// waste. Not under loom, which cannot explore spin loops.
#[cfg(not(loom))]
const SPIN_BUDGET: Duration = Duration::from_micros(20);

/// Whether this thread may run on more than one CPU. On one CPU a spin
/// only keeps the peer it waits for from running: measured with the bench's
/// pinned 64-byte round trip, spinning device threads took it from 13-18 us
/// to 40 us. Read once per thread (affinity rarely changes; the syscall
/// costs more than a look at the ring).
#[cfg(not(loom))]
fn may_spin() -> bool {
    thread_local! {
        static MAY_SPIN: bool = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    }
    MAY_SPIN.with(|may| *may)
}

/// Spins until `ready` holds or [`SPIN_BUDGET`] has passed; at once when
/// the thread has only one CPU to run on.
#[cfg(not(loom))]
fn spin_until(mut ready: impl FnMut() -> bool) {
    if ready() || !may_spin() {
        return;
    }
    let start = Instant::now();
    loop {
        // Read the clock only every few looks: it costs more than a look.
        for _ in 0..16 {
            std::hint::spin_loop();
            if ready() {
                return;
            }
        }
        if start.elapsed() >= SPIN_BUDGET {
            return;
        }
    }
}

/// Under loom the helpers park at once.
#[cfg(loom)]
fn spin_until(_ready: impl FnMut() -> bool) {}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

fn broken_pipe() -> io::Error {
    io::ErrorKind::BrokenPipe.into()
}

/// The writing half of a [`Pipe`].
#[derive(Debug)]
pub(crate) struct PipeWriter {
    tx: Tx<Arc<Pipe>>,
    waiter: Waiter,
    /// Set by [`close`](Self::close); writes fail from then on.
    closed: bool,
}

impl PipeWriter {
    pub(crate) fn pipe(&self) -> &Arc<Pipe> {
        self.tx.owner()
    }

    /// Whether writes would fail: this writer closed, or the reader is gone.
    fn is_broken(&self) -> bool {
        self.closed || self.tx.ring().is_consumer_closed()
    }

    /// Free space after making sure there is some: `Ok(n)` with `n > 0`;
    /// `BrokenPipe` when closed; `WouldBlock` when full, with the
    /// space-available eventfd armed.
    pub(crate) fn reserve(&mut self) -> io::Result<usize> {
        if let Some(ready) = self.space_or_broken() {
            return ready;
        }
        self.tx.owner().space().arm(&mut self.waiter);
        if let Some(ready) = self.space_or_broken() {
            self.pipe().space().disarm();
            return ready;
        }
        Err(would_block())
    }

    fn space_or_broken(&mut self) -> Option<io::Result<usize>> {
        if self.is_broken() {
            return Some(Err(broken_pipe()));
        }
        match self.tx.free_len() {
            0 => None,
            free => Some(Ok(free)),
        }
    }

    /// Runs `fill`, which must write at least one byte whenever the ring has
    /// free space, and wakes the reader. `WouldBlock` (armed) when full.
    ///
    /// The caller handles empty input itself: `fill` returning 0 is taken to
    /// mean "full".
    pub(crate) fn write_with(
        &mut self,
        mut fill: impl FnMut(&mut Tx<Arc<Pipe>>) -> usize,
    ) -> io::Result<usize> {
        if self.is_broken() {
            return Err(broken_pipe());
        }
        let mut written = fill(&mut self.tx);
        if written == 0 {
            // Full, as far as the cached head knows: `reserve` reloads it and
            // arms if the ring really is full.
            self.reserve()?;
            written = fill(&mut self.tx);
        }
        self.pipe().data().notify();
        Ok(written)
    }

    /// Non-blocking write of as much of `buf` as fits.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.write_with(|tx| tx.push(buf))
    }

    /// Non-blocking gathered write: fills the ring from the slices in order.
    pub(crate) fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if bufs.iter().all(|buf| buf.is_empty()) {
            return Ok(0);
        }
        self.write_with(|tx| {
            let mut total = 0;
            for buf in bufs {
                let n = tx.push(buf);
                total += n;
                if n < buf.len() {
                    break;
                }
            }
            total
        })
    }

    /// The free space as two slices (empty when full); see [`commit`](Self::commit).
    pub(crate) fn spare_slices(&mut self) -> (&mut [u8], &mut [u8]) {
        self.tx.spare()
    }

    /// Publishes `n` bytes written into [`spare_slices`](Self::spare_slices) and wakes the reader.
    ///
    /// # Panics
    ///
    /// If `n` exceeds the free space.
    pub(crate) fn commit(&mut self, n: usize) {
        self.tx.commit(n);
        if n > 0 {
            self.pipe().data().notify();
        }
    }

    /// Blocks on the space-available eventfd until a write can make progress.
    pub(crate) fn wait_writable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = Deadline::after(timeout);
        loop {
            match self.reserve() {
                Ok(_) => return Ok(true),
                // A closed pipe is "writable": the next write reports BrokenPipe.
                Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(true),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
            // A stale token can wake us without space: then look again.
            if !self.pipe().space().event().wait(deadline.left())? {
                return Ok(false);
            }
        }
    }

    /// Blocking write of all of `buf`.
    pub(crate) fn write_all_blocking(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write_blocking(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Blocking write of at least one byte of a non-empty `buf`.
    pub(crate) fn write_blocking(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            spin_until(|| self.is_broken() || self.tx.free_at_least(1) > 0);
            match self.write(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.pipe().space().event().wait(None)?;
                }
                result => return result,
            }
        }
    }

    /// Closes the writing side: the reader sees end-of-file once it drained
    /// the ring. Idempotent; later writes fail with `BrokenPipe`.
    pub(crate) fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.tx.ring().close_producer();
            self.pipe().data().notify();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        // A loom model that failed unwinds through here; touching loom
        // objects again would turn its report into an abort.
        #[cfg(loom)]
        if std::thread::panicking() {
            return;
        }
        self.close();
    }
}

/// The reading half of a [`Pipe`].
#[derive(Debug)]
pub(crate) struct PipeReader {
    rx: Rx<Arc<Pipe>>,
    waiter: Waiter,
}

impl PipeReader {
    pub(crate) fn pipe(&self) -> &Arc<Pipe> {
        self.rx.owner()
    }

    /// Readable bytes after making sure there are at least `min` (capped at
    /// the capacity): `Ok(n)` with `n >= min`, or any `n` (0 when drained)
    /// once the writer closed; `WouldBlock` otherwise, with the
    /// data-available eventfd armed.
    pub(crate) fn fill(&mut self, min: usize) -> io::Result<usize> {
        let min = min.clamp(1, self.rx.ring().capacity());
        if let Some(ready) = self.data_or_eof(min) {
            return Ok(ready);
        }
        self.rx.owner().data().arm(&mut self.waiter);
        if let Some(ready) = self.data_or_eof(min) {
            self.pipe().data().disarm();
            return Ok(ready);
        }
        Err(would_block())
    }

    fn data_or_eof(&mut self, min: usize) -> Option<usize> {
        let len = self.rx.len();
        if len >= min {
            return Some(len);
        }
        if self.rx.ring().is_producer_closed() {
            // The writer published its last bytes before closing, and the
            // acquire load of the flag makes them visible: load the tail again.
            return Some(self.rx.len());
        }
        None
    }

    /// Non-blocking read: `Ok(0)` means end-of-file (or an empty `buf`).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut read = self.rx.pop(buf);
        if read == 0 {
            if self.fill(1)? == 0 {
                return Ok(0);
            }
            read = self.rx.pop(buf);
        }
        self.pipe().space().notify();
        Ok(read)
    }

    /// Everything readable right now, as two slices in order.
    pub(crate) fn peek(&self) -> (&[u8], &[u8]) {
        self.rx.peek()
    }

    /// Releases `n` peeked bytes and wakes the writer.
    ///
    /// # Panics
    ///
    /// If fewer than `n` bytes are readable.
    pub(crate) fn consume(&mut self, n: usize) {
        self.rx.consume(n);
        if n > 0 {
            self.pipe().space().notify();
        }
    }

    /// Blocks on the data-available eventfd until a read can make progress.
    pub(crate) fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = Deadline::after(timeout);
        loop {
            match self.fill(1) {
                Ok(_) => return Ok(true),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
            // A stale token can wake us without data: then look again.
            if !self.pipe().data().event().wait(deadline.left())? {
                return Ok(false);
            }
        }
    }

    /// Blocking read: waits for data or end-of-file.
    pub(crate) fn read_blocking(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            spin_until(|| self.rx.len_at_least(1) > 0 || self.is_writer_closed());
            match self.read(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.pipe().data().event().wait(None)?;
                }
                result => return result,
            }
        }
    }

    /// Whether the writer closed or was dropped (bytes may still be readable).
    pub(crate) fn is_writer_closed(&self) -> bool {
        self.rx.ring().is_producer_closed()
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        #[cfg(loom)]
        if std::thread::panicking() {
            return;
        }
        self.rx.ring().close_consumer();
        self.pipe().space().notify();
    }
}
