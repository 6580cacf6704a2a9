//! The device end: synchronous, non-blocking halves for a VMM console backend, with fds to poll and blocking helpers for bridge threads.

use std::io;
#[cfg(not(loom))]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use crate::pipe::{PipeReader, PipeWriter};
use crate::stats::{RingMonitor, RingStats};

/// The device's end of a [`duplex`](crate::duplex): reads what the relay
/// writes (host to guest) and writes what the relay reads (guest to host).
///
/// Everything here is synchronous and needs no runtime. The non-blocking
/// [`read`](Self::read) and [`write`](Self::write) return
/// [`WouldBlock`](io::ErrorKind::WouldBlock) when the ring is empty or full,
/// and after a `WouldBlock` the matching fd ([`readable_fd`](Self::readable_fd)
/// or [`writable_fd`](Self::writable_fd)) becomes readable as soon as the call
/// can make progress. [`split`](Self::split) gives a reader and a writer that
/// can move to different threads.
#[derive(Debug)]
pub struct DeviceEnd {
    reader: DeviceReader,
    writer: DeviceWriter,
}

impl DeviceEnd {
    #[cfg_attr(
        loom,
        allow(dead_code, reason = "only `duplex` builds one, and it needs tokio")
    )]
    pub(crate) fn new(reader: DeviceReader, writer: DeviceWriter) -> Self {
        Self { reader, writer }
    }

    /// Splits into the reading half (host to guest) and the writing half
    /// (guest to host), each usable from its own thread.
    pub fn split(self) -> (DeviceReader, DeviceWriter) {
        (self.reader, self.writer)
    }

    /// The reading half.
    pub fn reader(&mut self) -> &mut DeviceReader {
        &mut self.reader
    }

    /// The writing half.
    pub fn writer(&mut self) -> &mut DeviceWriter {
        &mut self.writer
    }

    /// Non-blocking read of host-to-guest bytes; see [`DeviceReader::read`].
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the ring is empty.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }

    /// Non-blocking write of guest-to-host bytes; see [`DeviceWriter::write`].
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the ring is full, `BrokenPipe` when the relay's reader
    /// is gone.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    /// Blocking read; see [`DeviceReader::read_blocking`].
    ///
    /// # Errors
    ///
    /// Only if polling the eventfd fails.
    pub fn read_blocking(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_blocking(buf)
    }

    /// Blocking write of all of `buf`; see [`DeviceWriter::write_all_blocking`].
    ///
    /// # Errors
    ///
    /// `BrokenPipe` when the relay's reader is gone.
    pub fn write_all_blocking(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer.write_all_blocking(buf)
    }

    /// The fd to poll for `POLLIN` after [`read`](Self::read) returned
    /// `WouldBlock`: it becomes readable when host-to-guest data arrives or
    /// the relay's writer closes.
    #[cfg(not(loom))]
    pub fn readable_fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }

    /// The fd to poll for `POLLIN` (it is an eventfd, so "readable" is its
    /// only readiness) after [`write`](Self::write) returned `WouldBlock`: it
    /// becomes readable when the relay frees space or its reader goes away.
    #[cfg(not(loom))]
    pub fn writable_fd(&self) -> BorrowedFd<'_> {
        self.writer.as_fd()
    }

    /// A handle for statistics on both rings.
    pub fn monitor(&self) -> RingMonitor {
        RingMonitor::new(
            self.writer.inner.pipe().clone(),
            self.reader.inner.pipe().clone(),
        )
    }
}

/// The reading half of a device end (or of a [`pipe`](crate::pipe)).
///
/// Dropping it makes the writer's further writes fail with `BrokenPipe`.
#[derive(Debug)]
pub struct DeviceReader {
    inner: PipeReader,
}

impl DeviceReader {
    pub(crate) fn new(inner: PipeReader) -> Self {
        Self { inner }
    }

    /// Moves up to `buf.len()` bytes out of the ring without blocking.
    ///
    /// `Ok(0)` means end-of-file (the writer closed and everything it wrote
    /// was read) or an empty `buf`.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) when the ring is empty; the fd
    /// of this half then becomes readable once data arrives or the writer
    /// closes (it may also wake spuriously: just read again).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }

    /// Like [`read`](Self::read), but waits on the eventfd (poll(2)) while the
    /// ring is empty. Returns `Ok(0)` only at end-of-file or for an empty `buf`.
    ///
    /// Before parking it watches the ring for up to about 20 µs, the cost of
    /// a park and wakeup, since a streaming writer usually refills it sooner.
    ///
    /// # Errors
    ///
    /// Only if polling the eventfd fails.
    pub fn read_blocking(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_blocking(buf)
    }

    /// Makes sure there is something to [`peek`](Self::peek) at, without
    /// blocking: `Ok(n)` with `n > 0` readable bytes, or `Ok(0)` at
    /// end-of-file.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the ring is empty, with the same fd guarantee as
    /// [`read`](Self::read).
    pub fn fill(&mut self) -> io::Result<usize> {
        self.inner.fill(1)
    }

    /// All readable bytes, in place, as two slices in order (the second is
    /// non-empty only when the data wraps around the end of the ring memory).
    /// Zero-copy counterpart of [`read`](Self::read): copy what you need, then
    /// [`consume`](Self::consume) it.
    pub fn peek(&self) -> (&[u8], &[u8]) {
        self.inner.peek()
    }

    /// Releases the first `n` readable bytes to the writer and wakes it if it
    /// waits for space.
    ///
    /// # Panics
    ///
    /// If fewer than `n` bytes are readable.
    pub fn consume(&mut self, n: usize) {
        self.inner.consume(n);
    }

    /// Waits until a read can make progress (data or end-of-file) or
    /// `timeout` passes; returns whether it can. `None` waits without limit.
    ///
    /// # Errors
    ///
    /// Only if polling the eventfd fails.
    pub fn wait_readable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.inner.wait_readable(timeout)
    }

    /// Whether the writer closed or was dropped. Bytes it wrote before may
    /// still be readable.
    pub fn is_writer_closed(&self) -> bool {
        self.inner.is_writer_closed()
    }

    /// A snapshot of this half's ring.
    pub fn stats(&self) -> RingStats {
        self.inner.pipe().stats()
    }

    /// A [`std::io::Read`] view whose reads block, for `std::io::copy` and friends.
    pub fn blocking(&mut self) -> BlockingReader<'_> {
        BlockingReader { reader: self }
    }
}

/// The readiness fd (an eventfd: poll it for `POLLIN`). After a call returned
/// `WouldBlock` it becomes readable when data arrives or the writer closes.
/// It stays readable until a later call returns `WouldBlock` again (which
/// drains it), so a level-triggered event loop should read until
/// `WouldBlock`, or stop watching the fd while it cannot take more bytes.
#[cfg(not(loom))]
impl AsFd for DeviceReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.pipe().data().event().as_fd()
    }
}

#[cfg(not(loom))]
impl AsRawFd for DeviceReader {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// The writing half of a device end (or of a [`pipe`](crate::pipe)).
///
/// Dropping it (or [`close`](Self::close)) means end-of-file for the reader
/// once it has read everything written before.
#[derive(Debug)]
pub struct DeviceWriter {
    inner: PipeWriter,
}

impl DeviceWriter {
    pub(crate) fn new(inner: PipeWriter) -> Self {
        Self { inner }
    }

    /// Copies as much of `buf` into the ring as fits, without blocking, and
    /// returns how much that was (`Ok(0)` only for an empty `buf`).
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](io::ErrorKind::WouldBlock) when the ring is full; the fd
    /// of this half then becomes readable once space frees up or the reader
    /// goes away. [`BrokenPipe`](io::ErrorKind::BrokenPipe) when the reader is
    /// gone or this writer was closed.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    /// Gathered form of [`write`](Self::write): fills the ring from `bufs` in order.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.inner.write_vectored(bufs)
    }

    /// Like [`write`](Self::write), but waits on the eventfd (poll(2)) while
    /// the ring is full; writes at least one byte of a non-empty `buf`.
    ///
    /// Before parking it watches the ring for up to about 20 µs, like
    /// [`DeviceReader::read_blocking`].
    ///
    /// # Errors
    ///
    /// `BrokenPipe` when the reader is gone or this writer was closed.
    pub fn write_blocking(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_blocking(buf)
    }

    /// Writes all of `buf`, waiting on the eventfd whenever the ring is full.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` when the reader is gone or this writer was closed; part
    /// of `buf` may have been written before.
    pub fn write_all_blocking(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all_blocking(buf)
    }

    /// Makes sure there is free space to write in place, without blocking:
    /// returns the number of free bytes (at least 1).
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn reserve(&mut self) -> io::Result<usize> {
        self.inner.reserve()
    }

    /// The free space as two slices in ring order, to write into in place
    /// (zero-copy counterpart of [`write`](Self::write)); publish with
    /// [`commit`](Self::commit). Both are empty when the ring is full. They
    /// may hold stale bytes.
    pub fn spare_slices(&mut self) -> (&mut [u8], &mut [u8]) {
        self.inner.spare_slices()
    }

    /// Publishes the first `n` bytes of [`spare_slices`](Self::spare_slices)
    /// to the reader and wakes it if it waits.
    ///
    /// # Panics
    ///
    /// If `n` exceeds the free space.
    pub fn commit(&mut self, n: usize) {
        self.inner.commit(n);
    }

    /// Waits until a write can make progress (space, or a closed pipe that
    /// makes it fail) or `timeout` passes; returns whether it can. `None`
    /// waits without limit.
    ///
    /// # Errors
    ///
    /// Only if polling the eventfd fails.
    pub fn wait_writable(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.inner.wait_writable(timeout)
    }

    /// Closes the writing side: the reader gets end-of-file after reading
    /// what was written. Idempotent; further writes fail with `BrokenPipe`.
    pub fn close(&mut self) {
        self.inner.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// A snapshot of this half's ring.
    pub fn stats(&self) -> RingStats {
        self.inner.pipe().stats()
    }

    /// A [`std::io::Write`] view whose writes block, for `std::io::copy` and friends.
    pub fn blocking(&mut self) -> BlockingWriter<'_> {
        BlockingWriter { writer: self }
    }
}

/// The readiness fd (an eventfd: poll it for `POLLIN`, not `POLLOUT`). After
/// a call returned `WouldBlock` it becomes readable when space frees up or
/// the reader goes away, and stays readable until a later call returns
/// `WouldBlock` again.
#[cfg(not(loom))]
impl AsFd for DeviceWriter {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.pipe().space().event().as_fd()
    }
}

#[cfg(not(loom))]
impl AsRawFd for DeviceWriter {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A blocking [`std::io::Read`] over a [`DeviceReader`], from [`DeviceReader::blocking`].
#[derive(Debug)]
pub struct BlockingReader<'a> {
    reader: &'a mut DeviceReader,
}

impl io::Read for BlockingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_blocking(buf)
    }
}

/// A blocking [`std::io::Write`] over a [`DeviceWriter`], from [`DeviceWriter::blocking`].
#[derive(Debug)]
pub struct BlockingWriter<'a> {
    writer: &'a mut DeviceWriter,
}

impl io::Write for BlockingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write_blocking(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer.write_all_blocking(buf)
    }

    /// Bytes in the ring are already visible to the reader: nothing to flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
