//! Throughput of the ring between two threads, against the reference design's queue and a raw socketpair, measured in one run.
//!
//! ```text
//! cargo bench -p relay-ring --bench ring             # 256 MiB per case, best of 3
//! cargo bench -p relay-ring --bench ring -- --quick  # 8 MiB per case, once (CI smoke run)
//! ```
//!
//! `RELAY_RING_BENCH_QUICK=1` selects the quick mode too. For each chunk size
//! (256 B, 4 KiB, 64 KiB) one thread writes chunks and another reads them
//! into a buffer of the same size, through:
//! - **ring**: `relay_ring::pipe` (1 MiB), both threads blocking on the eventfds;
//! - **ring→tokio**: the device writer of a `relay_ring::duplex` to a
//!   `RelayReader` (`AsyncRead`) on a current-thread tokio runtime;
//! - **queue**: the reference design, a `crossbeam_queue::ArrayQueue<Vec<u8>>`
//!   holding as many chunks as fit in 1 MiB, a fresh `Vec` per chunk, one byte
//!   written to a pipe per chunk to wake the reader, and a 1 ms
//!   sleep-and-retry when the queue is full;
//! - **socketpair**: a blocking `UnixStream::pair()`, the kernel's floor.

#![allow(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use tokio::io::AsyncReadExt;

const RING_CAPACITY: usize = relay_ring::DEFAULT_CAPACITY;
const CHUNKS: [usize; 3] = [256, 4096, 65536];

fn main() -> io::Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick")
        || std::env::var_os("RELAY_RING_BENCH_QUICK").is_some();
    let (total, runs) = if quick {
        (8u64 << 20, 1)
    } else {
        (256u64 << 20, 3)
    };
    println!(
        "relay-ring throughput: {} MiB per case, best of {runs}, ring capacity {} KiB{}",
        total >> 20,
        RING_CAPACITY >> 10,
        if quick { " (quick mode)" } else { "" }
    );
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>12} {:>10} {:>11} {:>16}",
        "chunk",
        "ring",
        "ring→tokio",
        "queue",
        "socketpair",
        "ring/queue",
        "ring/socket",
        "ring wakeups/MiB"
    );
    for chunk in CHUNKS {
        let mut ring = Sample::default();
        let mut tokio = Sample::default();
        let mut queue = Sample::default();
        let mut socket = Sample::default();
        for _ in 0..runs {
            ring = ring.best(bench_ring(chunk, total)?);
            tokio = tokio.best(bench_ring_to_tokio(chunk, total)?);
            queue = queue.best(bench_queue(chunk, total)?);
            socket = socket.best(bench_socketpair(chunk, total)?);
        }
        let mib = (total >> 20) as f64;
        println!(
            "{:>8} {:>12} {:>12} {:>12} {:>12} {:>9.2}x {:>10.2}x {:>16.2}",
            format_size(chunk),
            ring.rate(total),
            tokio.rate(total),
            queue.rate(total),
            socket.rate(total),
            queue.elapsed.as_secs_f64() / ring.elapsed.as_secs_f64(),
            socket.elapsed.as_secs_f64() / ring.elapsed.as_secs_f64(),
            ring.wakeups as f64 / mib,
        );
    }
    println!(
        "rates in GiB/s; ratios > 1 mean the ring is faster; wakeups = eventfd writes, both directions"
    );
    Ok(())
}

/// One measurement.
#[derive(Debug, Clone, Copy)]
struct Sample {
    elapsed: Duration,
    wakeups: u64,
}

impl Default for Sample {
    fn default() -> Self {
        Self {
            elapsed: Duration::MAX,
            wakeups: 0,
        }
    }
}

impl Sample {
    fn best(self, other: Self) -> Self {
        if other.elapsed < self.elapsed {
            other
        } else {
            self
        }
    }

    fn rate(&self, total: u64) -> String {
        format!(
            "{:.2}",
            total as f64 / self.elapsed.as_secs_f64() / f64::from(1u32 << 30)
        )
    }
}

fn format_size(bytes: usize) -> String {
    if bytes >= 1024 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

fn source(chunk: usize) -> Vec<u8> {
    (0..chunk).map(|i| i.to_le_bytes()[0]).collect()
}

/// Number of whole chunks in `total` bytes (each case moves exactly this many).
fn chunk_count(chunk: usize, total: u64) -> u64 {
    total / chunk as u64
}

fn bench_ring(chunk: usize, total: u64) -> io::Result<Sample> {
    let (mut writer, mut reader) = relay_ring::pipe(RING_CAPACITY)?;
    let count = chunk_count(chunk, total);
    let start = Instant::now();
    let producer = thread::spawn(move || -> io::Result<()> {
        let data = source(chunk);
        for _ in 0..count {
            writer.write_all_blocking(&data)?;
        }
        Ok(())
    });
    let mut buf = vec![0; chunk];
    let mut sum = 0u64;
    loop {
        match reader.read_blocking(&mut buf)? {
            0 => break,
            n => sum += u64::from(buf[n - 1]),
        }
    }
    let elapsed = start.elapsed();
    producer
        .join()
        .map_err(|_| io::Error::other("producer panicked"))??;
    black_box(sum);
    let stats = reader.stats();
    assert_eq!(stats.bytes_read, count * chunk as u64);
    Ok(Sample {
        elapsed,
        wakeups: stats.data_wakeups + stats.space_wakeups,
    })
}

fn bench_ring_to_tokio(chunk: usize, total: u64) -> io::Result<Sample> {
    let (device, relay) = relay_ring::duplex(RING_CAPACITY)?;
    let (_device_reader, mut writer) = device.split();
    let count = chunk_count(chunk, total);
    let start = Instant::now();
    let producer = thread::spawn(move || -> io::Result<()> {
        let data = source(chunk);
        for _ in 0..count {
            writer.write_all_blocking(&data)?;
        }
        Ok(())
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (sum, stats) = runtime.block_on(async move {
        let (mut reader, _writer) = relay.into_split()?;
        let mut buf = vec![0; chunk];
        let mut sum = 0u64;
        loop {
            match reader.read(&mut buf).await? {
                0 => break,
                n => sum += u64::from(buf[n - 1]),
            }
        }
        io::Result::Ok((sum, reader.stats()))
    })?;
    let elapsed = start.elapsed();
    producer
        .join()
        .map_err(|_| io::Error::other("producer panicked"))??;
    black_box(sum);
    assert_eq!(stats.bytes_read, count * chunk as u64);
    Ok(Sample {
        elapsed,
        wakeups: stats.data_wakeups + stats.space_wakeups,
    })
}

/// The reference design's wakeup pipe: one byte per pushed chunk.
fn wake_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created by pipe2 and nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The writer must never block on a full pipe: a full pipe is already readable.
    // SAFETY: F_GETFL on an fd we own; no pointers involved.
    let flags = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL on an fd we own; no pointers involved.
    let rc = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((read, write))
}

fn bench_queue(chunk: usize, total: u64) -> io::Result<Sample> {
    let slots = (RING_CAPACITY / chunk).max(1);
    let queue = Arc::new(ArrayQueue::<Vec<u8>>::new(slots));
    let (wake_read, wake_write) = wake_pipe()?;
    let count = chunk_count(chunk, total);
    let start = Instant::now();
    let producer = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || {
            let data = source(chunk);
            let mut wake = std::fs::File::from(wake_write);
            for _ in 0..count {
                let mut item = data.clone();
                while let Err(rejected) = queue.push(item) {
                    item = rejected;
                    thread::sleep(Duration::from_millis(1));
                }
                // EAGAIN means the pipe is full, hence readable: fine.
                let _ = wake.write(&[1]);
            }
        })
    };
    let mut wake = std::fs::File::from(wake_read);
    let mut tokens = [0u8; 4096];
    let mut buf = vec![0; chunk];
    let mut sum = 0u64;
    let mut received = 0u64;
    while received < count {
        match queue.pop() {
            Some(item) => {
                buf.copy_from_slice(&item);
                sum += u64::from(buf[chunk - 1]);
                received += 1;
            }
            None => {
                // Sleep until the producer's next token; how many arrived does not matter.
                if wake.read(&mut tokens)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
    }
    let elapsed = start.elapsed();
    producer
        .join()
        .map_err(|_| io::Error::other("producer panicked"))?;
    black_box(sum);
    Ok(Sample {
        elapsed,
        wakeups: 0,
    })
}

fn bench_socketpair(chunk: usize, total: u64) -> io::Result<Sample> {
    let (mut tx, mut rx) = UnixStream::pair()?;
    let count = chunk_count(chunk, total);
    let start = Instant::now();
    let producer = thread::spawn(move || -> io::Result<()> {
        let data = source(chunk);
        for _ in 0..count {
            tx.write_all(&data)?;
        }
        Ok(())
    });
    let mut buf = vec![0; chunk];
    let mut sum = 0u64;
    loop {
        match rx.read(&mut buf)? {
            0 => break,
            n => sum += u64::from(buf[n - 1]),
        }
    }
    let elapsed = start.elapsed();
    producer
        .join()
        .map_err(|_| io::Error::other("producer panicked"))??;
    black_box(sum);
    Ok(Sample {
        elapsed,
        wakeups: 0,
    })
}
