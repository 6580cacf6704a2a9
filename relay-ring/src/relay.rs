//! The relay end: tokio halves ([`RelayReader`]: `AsyncRead` plus a zero-copy fill/peek/consume API, [`RelayWriter`]: `AsyncWrite`) woken through `AsyncFd` on the eventfds.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use crate::pipe::{Pipe, PipeReader, PipeWriter};
use crate::signal::Signal;
use crate::stats::{RingMonitor, RingStats};
use crate::sync::Arc;

/// The relay's end of a [`duplex`](crate::duplex): reads what the device
/// writes (guest to host) and writes what the device reads (host to guest).
///
/// Created anywhere; [`into_split`](Self::into_split) registers its eventfds
/// with the tokio runtime it is called from.
#[derive(Debug)]
pub struct RelayEnd {
    reader: PipeReader,
    writer: PipeWriter,
}

impl RelayEnd {
    pub(crate) fn new(reader: PipeReader, writer: PipeWriter) -> Self {
        Self { reader, writer }
    }

    /// Splits into the async reading half (guest to host) and the async
    /// writing half (host to guest), registering each half's eventfd with the
    /// current tokio runtime's reactor.
    ///
    /// # Errors
    ///
    /// When called outside a tokio runtime, or if the reactor cannot register
    /// the fds (for example, out of memory in epoll).
    ///
    /// # Panics
    ///
    /// Inside a runtime built without IO enabled, like tokio's own
    /// `from_std` constructors.
    pub fn into_split(self) -> io::Result<(RelayReader, RelayWriter)> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "RelayEnd::into_split must be called from within a tokio runtime",
            ));
        }
        let reader_fd = Readiness::register(self.reader.pipe(), Pipe::data)?;
        let writer_fd = Readiness::register(self.writer.pipe(), Pipe::space)?;
        Ok((
            RelayReader {
                inner: self.reader,
                ready: reader_fd,
            },
            RelayWriter {
                inner: self.writer,
                ready: writer_fd,
            },
        ))
    }

    /// A handle for statistics on both rings.
    pub fn monitor(&self) -> RingMonitor {
        RingMonitor::new(self.reader.pipe().clone(), self.writer.pipe().clone())
    }
}

/// An eventfd as registered with the reactor. Holding the pipe keeps the fd
/// open for as long as the registration exists.
#[derive(Debug)]
struct Readiness {
    fd: RawFd,
    _pipe: Arc<Pipe>,
}

impl Readiness {
    /// Registers the eventfd of `pipe`'s signal chosen by `signal`.
    fn register(pipe: &Arc<Pipe>, signal: fn(&Pipe) -> &Signal) -> io::Result<AsyncFd<Self>> {
        let fd = signal(pipe).event().as_raw_fd();
        let readiness = Self {
            fd,
            _pipe: Arc::clone(pipe),
        };
        // SAFETY: `fd` is an eventfd owned by `pipe`, and `readiness` holds a
        // share of `pipe`, so the fd stays open and refers to the same eventfd
        // for as long as the `AsyncFd` owns `readiness`; `as_raw_fd` always
        // returns that fd.
        let registered = unsafe { AsyncFd::register_with_interest(readiness, Interest::READABLE) };
        Ok(registered?)
    }
}

impl AsRawFd for Readiness {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

fn is_would_block<T>(result: &io::Result<T>) -> bool {
    matches!(result, Err(err) if err.kind() == io::ErrorKind::WouldBlock)
}

/// Drives a non-blocking ring operation that arms its eventfd before
/// returning `WouldBlock`: try first, wait for readiness only after
/// `WouldBlock`, and clear readiness only after a retry under that readiness
/// also returned `WouldBlock` (tokio then keeps any newer event).
fn poll_io<T>(
    fd: &AsyncFd<Readiness>,
    cx: &mut Context<'_>,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    let mut result = op();
    loop {
        if !is_would_block(&result) {
            return Poll::Ready(result);
        }
        let mut guard = ready!(fd.poll_read_ready(cx))?;
        result = op();
        if is_would_block(&result) {
            guard.clear_ready();
        }
    }
}

/// The relay's reading half: guest-to-host bytes.
///
/// Besides [`AsyncRead`] it offers a zero-copy API for parsers that work
/// straight on the ring memory: [`poll_fill`](Self::poll_fill) (or
/// [`fill`](Self::fill)) waits until enough bytes are readable,
/// [`peek`](Self::peek) shows them in place as two slices, and
/// [`consume`](Self::consume) releases them.
///
/// Reads end (`Ok(0)`, or a fill short of its minimum) once the device's
/// writer closed and everything it wrote was read. Dropping this half makes
/// the device's writes fail with `BrokenPipe`.
///
/// # Example
///
/// Reading one length-prefixed message into an allocation of exactly its size:
///
/// ```
/// use relay_ring::RelayReader;
///
/// /// `Ok(None)` at a clean end of stream.
/// async fn read_message(reader: &mut RelayReader) -> std::io::Result<Option<Vec<u8>>> {
///     if reader.fill(4).await? < 4 {
///         return Ok(None); // end of stream (a real parser would reject 1..=3 stray bytes)
///     }
///     let (first, second) = reader.peek();
///     let mut prefix = [0u8; 4];
///     for (slot, byte) in prefix.iter_mut().zip(first.iter().chain(second)) {
///         *slot = *byte;
///     }
///     reader.consume(4);
///     let len = u32::from_be_bytes(prefix) as usize;
///     let mut body = Vec::with_capacity(len);
///     while body.len() < len {
///         // The body may be larger than the ring: take it piece by piece.
///         if reader.fill(1).await? == 0 {
///             return Err(std::io::ErrorKind::UnexpectedEof.into());
///         }
///         let (first, second) = reader.peek();
///         let before = body.len();
///         for part in [first, second] {
///             let take = part.len().min(len - body.len());
///             body.extend_from_slice(&part[..take]);
///         }
///         reader.consume(body.len() - before);
///     }
///     Ok(Some(body))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (mut device, relay) = relay_ring::duplex(16)?;
/// let (mut reader, _writer) = relay.into_split()?;
/// device.write(&[0, 0, 0, 3, b'a', b'b', b'c'])?;
/// drop(device);
/// assert_eq!(read_message(&mut reader).await?, Some(b"abc".to_vec()));
/// assert_eq!(read_message(&mut reader).await?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RelayReader {
    inner: PipeReader,
    ready: AsyncFd<Readiness>,
}

impl RelayReader {
    /// Polls until at least `min` bytes are readable (`min` is capped at the
    /// ring capacity and raised to 1), returning how many are. Fewer than
    /// `min` (0 once drained) means end-of-file: the writer closed.
    ///
    /// A task waiting here is woken by the device's writes through the
    /// data-available eventfd; the ring is never polled in a loop.
    ///
    /// # Errors
    ///
    /// Only if the reactor reports an error for the eventfd.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>, min: usize) -> Poll<io::Result<usize>> {
        let Self { inner, ready } = self;
        poll_io(ready, cx, || inner.fill(min))
    }

    /// Async form of [`poll_fill`](Self::poll_fill).
    ///
    /// # Errors
    ///
    /// As [`poll_fill`](Self::poll_fill).
    pub async fn fill(&mut self, min: usize) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx, min)).await
    }

    /// All readable bytes, in place, as two slices in order (the second is
    /// non-empty only when the data wraps around the end of the ring memory).
    pub fn peek(&self) -> (&[u8], &[u8]) {
        self.inner.peek()
    }

    /// Releases the first `n` readable bytes to the device and wakes its
    /// writer if it waits for space.
    ///
    /// # Panics
    ///
    /// If fewer than `n` bytes are readable.
    pub fn consume(&mut self, n: usize) {
        self.inner.consume(n);
    }

    /// Whether the device's writer closed or was dropped. Bytes it wrote
    /// before may still be readable.
    pub fn is_writer_closed(&self) -> bool {
        self.inner.is_writer_closed()
    }

    /// A snapshot of the guest-to-host ring.
    pub fn stats(&self) -> RingStats {
        self.inner.pipe().stats()
    }
}

impl AsyncRead for RelayReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if ready!(this.poll_fill(cx, 1))? == 0 {
            return Poll::Ready(Ok(()));
        }
        let (first, second) = this.inner.peek();
        let mut taken = 0;
        for part in [first, second] {
            let take = part.len().min(buf.remaining());
            buf.put_slice(&part[..take]);
            taken += take;
        }
        this.inner.consume(taken);
        Poll::Ready(Ok(()))
    }
}

/// The relay's writing half: host-to-guest bytes.
///
/// [`AsyncWrite`] copies into the ring; when it is full, writes return
/// `Pending` and the task is woken by the device's reads through the
/// space-available eventfd (backpressure: nothing is dropped, nothing sleeps
/// and retries). Vectored writes are supported natively. For writing in
/// place there is [`poll_reserve`](Self::poll_reserve),
/// [`spare_slices`](Self::spare_slices) and [`commit`](Self::commit).
///
/// `poll_flush` has nothing to do (bytes in the ring are visible to the
/// device at once); `poll_shutdown` and [`close`](Self::close) close the
/// ring, as does dropping the half: the device reads end-of-file after the
/// remaining bytes. Writes fail with `BrokenPipe` once the device's reader is
/// gone or this half was closed.
#[derive(Debug)]
pub struct RelayWriter {
    inner: PipeWriter,
    ready: AsyncFd<Readiness>,
}

impl RelayWriter {
    /// Polls until the ring has free space, returning how much (at least 1).
    ///
    /// # Errors
    ///
    /// `BrokenPipe` when the device's reader is gone or this half was
    /// closed, or an error the reactor reports for the eventfd.
    pub fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Self { inner, ready } = self;
        poll_io(ready, cx, || inner.reserve())
    }

    /// The free space as two slices in ring order, to write into in place;
    /// publish with [`commit`](Self::commit). Both are empty when the ring is
    /// full. They may hold stale bytes.
    pub fn spare_slices(&mut self) -> (&mut [u8], &mut [u8]) {
        self.inner.spare_slices()
    }

    /// Publishes the first `n` bytes of [`spare_slices`](Self::spare_slices)
    /// to the device and wakes its reader if it waits.
    ///
    /// # Panics
    ///
    /// If `n` exceeds the free space.
    pub fn commit(&mut self, n: usize) {
        self.inner.commit(n);
    }

    /// Closes the host-to-guest ring: the device reads end-of-file after the
    /// bytes already written. Idempotent.
    pub fn close(&mut self) {
        self.inner.close();
    }

    /// Whether [`close`](Self::close) (or `poll_shutdown`) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// A snapshot of the host-to-guest ring.
    pub fn stats(&self) -> RingStats {
        self.inner.pipe().stats()
    }
}

impl AsyncWrite for RelayWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Self { inner, ready } = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        poll_io(ready, cx, || inner.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Self { inner, ready } = self.get_mut();
        if bufs.iter().all(|buf| buf.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        poll_io(ready, cx, || inner.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.close();
        Poll::Ready(Ok(()))
    }
}
