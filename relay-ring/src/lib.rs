//! Lock-free SPSC byte rings with eventfd wakeups between a VMM console device and the relay.
//!
//! **One job:** move bytes between the VMM's console device and the relay,
//! both ways, at close to memcpy speed, with backpressure and without
//! losing a wakeup. It knows nothing about frames: the layering is
//! `relay-ring <- relay-server`, and this crate depends on neither
//! `relay-codec` nor `relay-router`. All of the relay's `unsafe` code lives
//! here.
//!
//! [`duplex`] creates two single-producer single-consumer byte rings:
//! guest to host (the device writes, the relay reads) and host to guest
//! (the relay writes, the device reads), and returns their two ends:
//!
//! - [`DeviceEnd`], for a VMM console backend or a bridge thread, with no
//!   runtime: non-blocking [`read`](DeviceReader::read) and
//!   [`write`](DeviceWriter::write) that return `WouldBlock` when the ring is
//!   empty or full, fds to poll (after a `WouldBlock`, the fd becomes readable
//!   when data or space appears), blocking helpers, and a
//!   [`split`](DeviceEnd::split) into a reader and a writer for two threads;
//! - [`RelayEnd`], for tokio: [`RelayReader`] (`AsyncRead`, plus a zero-copy
//!   `poll_fill`/`peek`/`consume` API for parsing frames in place) and
//!   [`RelayWriter`] (`AsyncWrite` with vectored writes), both woken through
//!   `AsyncFd` on the eventfds.
//!
//! Closing: dropping or closing a writer means end-of-file for its reader
//! once the ring is drained; dropping a reader makes its writer's writes
//! fail with `BrokenPipe`. Either wakes a peer that waits.
//!
//! # Guarantees
//!
//! - **No allocation after construction.** The ring memory, the eventfds and
//!   the shared state are created by [`duplex`]; moving bytes never
//!   allocates.
//! - **Wait-free push and pop.** The low-level ring ([`ring::channel`]) has
//!   no lock and no retry loop; each operation takes a bounded number of
//!   steps whatever the other thread does, and copies or lends slices (two
//!   of them when the data wraps around the end of the ring memory).
//! - **No built-in waiting in the low-level ring.** Waiting is layered on top,
//!   on eventfds, in the device and relay ends.
//! - **Coalesced wakeups, none lost.** Each ring has a *data available* and
//!   a *space available* eventfd. A side writes one only when the other side
//!   announced that it is about to sleep (a parked flag, with `SeqCst`
//!   fences on both sides), and at most once per such announcement; loom
//!   checks that no wakeup is ever lost (`src/loom_tests.rs`, run with
//!   `RUSTFLAGS="--cfg loom"`). [`RingStats`] counts parkings and eventfd
//!   writes.
//! - **No sleep-and-retry loops.** Waiting is always on an eventfd (poll(2),
//!   or tokio's reactor for the relay end). Only the device end's blocking
//!   helpers watch the ring for about 20 µs before they park, since a
//!   parking costs about that much; the async relay end never spins.
//!
//! # Example
//!
//! ```
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let (device, relay) = relay_ring::duplex(relay_ring::DEFAULT_CAPACITY)?;
//! let (mut relay_reader, mut relay_writer) = relay.into_split()?;
//!
//! // The device side runs on its own thread, without tokio.
//! let echo = std::thread::spawn(move || -> std::io::Result<()> {
//!     let (mut reader, mut writer) = device.split();
//!     let mut buf = [0; 64];
//!     loop {
//!         match reader.read_blocking(&mut buf)? {
//!             0 => return Ok(()), // the relay closed its writer
//!             n => writer.write_all_blocking(&buf[..n])?,
//!         }
//!     }
//! });
//!
//! relay_writer.write_all(b"ping").await?;
//! relay_writer.shutdown().await?;
//! let mut echoed = Vec::new();
//! relay_reader.read_to_end(&mut echoed).await?;
//! assert_eq!(echoed, b"ping");
//! echo.join().expect("echo thread")?;
//! # Ok(())
//! # }
//! ```

mod device;
mod event;
mod pipe;
mod raw;
#[cfg(not(loom))]
mod relay;
pub mod ring;
mod signal;
mod stats;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;

use std::io;

pub use crate::device::{BlockingReader, BlockingWriter, DeviceEnd, DeviceReader, DeviceWriter};
#[cfg(not(loom))]
pub use crate::relay::{RelayEnd, RelayReader, RelayWriter};
pub use crate::ring::CapacityError;
pub use crate::stats::{DuplexStats, RingMonitor, RingStats};

/// The default capacity of each ring: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

const _: () = assert!(DEFAULT_CAPACITY.is_power_of_two());

/// Creates the two rings between a device and the relay, `capacity` bytes
/// each, and returns the device's end and the relay's end.
///
/// May be called outside any runtime; [`RelayEnd::into_split`] must be
/// called inside the tokio runtime that will drive the relay's halves.
///
/// # Errors
///
/// `InvalidInput` (wrapping [`CapacityError::NotPowerOfTwo`]) when
/// `capacity` is zero or not a power of two; `OutOfMemory` when the rings
/// cannot be allocated; the OS error if an eventfd cannot be created.
#[cfg(not(loom))]
pub fn duplex(capacity: usize) -> io::Result<(DeviceEnd, RelayEnd)> {
    let (host_writer, device_reader) = pipe::Pipe::pair(capacity)?;
    let (device_writer, host_reader) = pipe::Pipe::pair(capacity)?;
    Ok((
        DeviceEnd::new(
            DeviceReader::new(device_reader),
            DeviceWriter::new(device_writer),
        ),
        RelayEnd::new(host_reader, host_writer),
    ))
}

/// Creates one ring of `capacity` bytes whose both halves are synchronous:
/// a [`DeviceWriter`] and a [`DeviceReader`] with the same non-blocking
/// calls, fds and blocking helpers as a device end. For bridge threads,
/// tests and benchmarks that need no tokio on either side.
///
/// # Errors
///
/// As [`duplex`].
pub fn pipe(capacity: usize) -> io::Result<(DeviceWriter, DeviceReader)> {
    let (writer, reader) = pipe::Pipe::pair(capacity)?;
    Ok((DeviceWriter::new(writer), DeviceReader::new(reader)))
}
