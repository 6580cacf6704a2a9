//! The client side of every scenario: the same code whatever sits behind
//! the socket (the raw agent, the naive relay or ours).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use relay_codec::{FrameScanner, Handshake, Scanned};

use crate::protocol::{self, malformed};

/// Bytes a client reads at a time.
const CLIENT_READ: usize = 256 * 1024;

/// A connected client: the greeting read, ids known.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: UnixStream,
    /// The first id of the client's range.
    pub(crate) id: u32,
    /// Open streams as sessions (`SESSION_START`): what flow control needs,
    /// as the relay credits only sessions. Off by default: a session left
    /// open keeps its slot in quarantine after the client goes.
    pub(crate) sessions: bool,
    scanner: FrameScanner,
}

/// Whether an error is a read timeout.
pub(crate) fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Conn {
    /// Connects and reads the greeting.
    pub(crate) fn connect(path: &Path) -> io::Result<Conn> {
        let mut stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let decoded = Handshake::decode(&buf).map_err(io::Error::other)?;
            if let Some((handshake, _ready, used)) = decoded {
                let ids = handshake
                    .client_ids()
                    .ok_or_else(|| io::Error::other("greeting without ids"))?;
                let mut scanner = protocol::scanner(CLIENT_READ);
                scanner.seed(&buf[used..]);
                stream.set_read_timeout(None)?;
                return Ok(Conn {
                    stream,
                    id: ids.first(),
                    sessions: false,
                    scanner,
                });
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The request for a stream of `total` bytes in `frame_len`-byte frames
    /// toward this client's first id (opening a session if `sessions`).
    pub(crate) fn source_request(&self, total: u64, frame_len: usize) -> Vec<u8> {
        let request = protocol::source_request(self.id, total, frame_len as u32);
        if self.sessions {
            protocol::opening_session(request)
        } else {
            request
        }
    }

    /// Reads until a whole frame tagged `tag` arrives; returns the wire
    /// bytes of every frame read on the way (that one included).
    pub(crate) fn wait_for(&mut self, tag: u8) -> io::Result<u64> {
        let mut bytes = 0u64;
        loop {
            let (n, found) = self.take_frames(Some(tag))?;
            bytes += n;
            if found {
                return Ok(bytes);
            }
            if self.scanner.fill(&mut self.stream)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Takes the frames already read, up to one whole frame tagged `until`
    /// (all of them if `None`): `(their wire bytes, whether that frame came)`.
    fn take_frames(&mut self, until: Option<u8>) -> io::Result<(u64, bool)> {
        let mut bytes = 0;
        while let Some(found) = self.scanner.next_frame().map_err(malformed)? {
            bytes += found.wire_len() as u64;
            if matches!(found, Scanned::Whole { .. })
                && until.is_some_and(|tag| found.first_body_byte() == Some(tag))
            {
                return Ok((bytes, true));
            }
        }
        Ok((bytes, false))
    }

    /// Reads what is there (up to a buffer), counting frame bytes; for a
    /// reader that must also look at a flag between reads.
    pub(crate) fn read_some(&mut self) -> io::Result<u64> {
        if self.scanner.fill(&mut self.stream)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(self.take_frames(None)?.0)
    }
}

/// Percentile `p` (0-100) of sorted samples.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Round trips of one 64-byte frame at a time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pings {
    /// Latencies in microseconds, sorted.
    pub(crate) micros: Vec<f64>,
    /// How many were sent (those that got no answer in time are missing
    /// from `micros`; pinging stops at the first one).
    pub(crate) attempted: usize,
}

impl Pings {
    pub(crate) fn p(&self, p: f64) -> f64 {
        percentile(&self.micros, p)
    }

    pub(crate) fn completion(&self) -> f64 {
        if self.attempted == 0 {
            return 100.0;
        }
        100.0 * self.micros.len() as f64 / self.attempted as f64
    }
}

/// `warmup` unrecorded round trips, then `count` recorded ones, each waiting
/// at most `timeout` for its echo.
pub(crate) fn ping(
    conn: &mut Conn,
    warmup: usize,
    count: usize,
    timeout: Duration,
) -> io::Result<Pings> {
    let frame = protocol::frame(conn.id, protocol::ECHO, 64);
    conn.stream.set_read_timeout(Some(timeout))?;
    let mut micros = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let start = Instant::now();
        conn.stream.write_all(&frame)?;
        match conn.wait_for(protocol::ECHO) {
            Ok(_) => {}
            Err(error) if is_timeout(&error) => break,
            Err(error) => return Err(error),
        }
        if i >= warmup {
            micros.push(start.elapsed().as_nanos() as f64 / 1000.0);
        }
    }
    conn.stream.set_read_timeout(None)?;
    micros.sort_by(f64::total_cmp);
    Ok(Pings {
        micros,
        attempted: count,
    })
}

/// Sends `total` bytes in `frame_len`-byte data frames, one write each, then
/// waits until the agent has read them all (an echo sent behind them
/// returns). Returns the elapsed time.
pub(crate) fn bulk_up(conn: &mut Conn, total: u64, frame_len: usize) -> io::Result<Duration> {
    let frame = protocol::frame(conn.id, protocol::DATA, frame_len);
    let echo = protocol::frame(conn.id, protocol::ECHO, 64);
    let count = (total / frame_len as u64).max(1);
    let start = Instant::now();
    for _ in 0..count {
        conn.stream.write_all(&frame)?;
    }
    conn.stream.write_all(&echo)?;
    conn.wait_for(protocol::ECHO)?;
    Ok(start.elapsed())
}

/// A bulk transfer toward the client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    pub(crate) elapsed: Duration,
    /// Wire bytes received.
    pub(crate) bytes: u64,
    /// The relay closed the connection before the end of the stream (it
    /// cut the client off as a slow consumer).
    pub(crate) cut_off: bool,
}

/// Asks the agent for `total` bytes in `frame_len`-byte frames and reads
/// them all, or until the relay closes the connection.
pub(crate) fn bulk_down(conn: &mut Conn, total: u64, frame_len: usize) -> io::Result<Received> {
    let request = conn.source_request(total, frame_len);
    let start = Instant::now();
    conn.stream.write_all(&request)?;
    let mut bytes = 0;
    let cut_off = loop {
        let (n, fin) = conn.take_frames(Some(protocol::FIN))?;
        bytes += n;
        if fin {
            break false;
        }
        match conn.scanner.fill(&mut conn.stream) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => break true,
            Err(error) => return Err(error),
        }
    };
    Ok(Received {
        elapsed: start.elapsed(),
        bytes,
        cut_off,
    })
}

/// A client that reads a stream of `total` bytes on a thread, no faster
/// than `rate` bytes per second (it sleeps whenever it is ahead), until the
/// stream's end or until the relay cuts it off.
#[derive(Debug)]
pub(crate) struct SlowReader {
    thread: JoinHandle<io::Result<Received>>,
}

impl SlowReader {
    pub(crate) fn start(
        mut conn: Conn,
        total: u64,
        frame_len: usize,
        rate: f64,
    ) -> io::Result<SlowReader> {
        conn.stream
            .write_all(&conn.source_request(total, frame_len))?;
        // A hang guard: far longer than the throttled read takes.
        let guard = Duration::from_secs_f64(total as f64 / rate) * 4 + Duration::from_secs(30);
        conn.stream.set_read_timeout(Some(guard))?;
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut bytes = 0;
            let cut_off = loop {
                let (n, fin) = conn.take_frames(Some(protocol::FIN))?;
                bytes += n;
                if fin {
                    break false;
                }
                let due = Duration::from_secs_f64(bytes as f64 / rate);
                if let Some(ahead) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(ahead);
                }
                match conn.scanner.fill(&mut conn.stream) {
                    Ok(0) => break true,
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::ConnectionReset => break true,
                    Err(error) => return Err(error),
                }
            };
            Ok(Received {
                elapsed: start.elapsed(),
                bytes,
                cut_off,
            })
        });
        Ok(SlowReader { thread })
    }

    /// Waits for the end of the stream (or the cut-off).
    pub(crate) fn finish(self) -> io::Result<Received> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("slow reader panicked")))
    }
}

/// A client that reads an endless stream on a thread until told to stop,
/// then stops the stream and drains it (for at most `drain`: a frozen relay
/// never delivers its end).
#[derive(Debug)]
pub(crate) struct Streamer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<(u64, Duration)>>,
}

impl Streamer {
    pub(crate) fn start(mut conn: Conn, frame_len: usize, drain: Duration) -> io::Result<Streamer> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        conn.stream
            .write_all(&conn.source_request(protocol::ENDLESS, frame_len))?;
        conn.stream
            .set_read_timeout(Some(Duration::from_millis(100)))?;
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut bytes = 0;
            while !flag.load(Ordering::Relaxed) {
                match conn.read_some() {
                    Ok(n) => bytes += n,
                    Err(error) if is_timeout(&error) => {}
                    // Cut off by the relay (a slow consumer): what it read counts.
                    Err(_) => return Ok((bytes, start.elapsed())),
                }
            }
            let elapsed = start.elapsed();
            conn.stream
                .write_all(&protocol::stop_request(conn.id, conn.id))?;
            // Drain up to the end of the stream, or give up after a while.
            let deadline = Instant::now() + drain;
            while Instant::now() < deadline {
                match conn.wait_for(protocol::FIN) {
                    Ok(_) => break,
                    Err(error) if is_timeout(&error) => {}
                    Err(_) => break,
                }
            }
            Ok((bytes, elapsed))
        });
        Ok(Streamer { stop, thread })
    }

    /// Stops and returns `(bytes read, time read)` while streaming.
    pub(crate) fn finish(self) -> io::Result<(u64, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("streamer panicked")))
    }
}

/// `clients` clients each sending `batch` 64-byte echo frames at once and
/// reading them back, `rounds` times (after `warmup` rounds). Returns echoed
/// frames per second over all clients.
pub(crate) fn fan_in(
    path: &Path,
    clients: usize,
    batch: usize,
    warmup: usize,
    rounds: usize,
) -> io::Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let conn = Conn::connect(path)?;
        conn.stream.set_nonblocking(true)?;
        conns.push(conn);
    }
    runtime.block_on(async move {
        let start_gate = Arc::new(tokio::sync::Barrier::new(clients + 1));
        let mut tasks = Vec::with_capacity(clients);
        for conn in conns {
            let gate = start_gate.clone();
            let id = conn.id;
            let stream = tokio::net::UnixStream::from_std(conn.stream)?;
            tasks.push(tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = stream;
                let frame = protocol::frame(id, protocol::ECHO, 64);
                let out: Vec<u8> = frame
                    .iter()
                    .copied()
                    .cycle()
                    .take(frame.len() * batch)
                    .collect();
                let mut buf = vec![0u8; out.len()];
                for round in 0..warmup + rounds {
                    if round == warmup {
                        gate.wait().await;
                    }
                    stream.write_all(&out).await?;
                    stream.read_exact(&mut buf).await?;
                }
                Ok::<(), io::Error>(())
            }));
        }
        start_gate.wait().await;
        let start = Instant::now();
        for task in tasks {
            task.await.map_err(io::Error::other)??;
        }
        let elapsed = start.elapsed();
        Ok((clients * batch * rounds) as f64 / elapsed.as_secs_f64())
    })
}

/// Rates in the units the tables use.
pub(crate) fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / f64::from(1u32 << 20) / elapsed.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_sample_at_their_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&sorted, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn pings_count_unanswered_round_trips_against_completion() {
        let pings = Pings {
            micros: vec![1.0; 30],
            attempted: 3000,
        };
        assert_eq!(pings.completion(), 1.0);
    }
}
