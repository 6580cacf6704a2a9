//! The bench agent: the guest side of every implementation under test (on
//! a plain socket for raw, on the naive queue, on the real ring). It echoes,
//! sinks and streams frames as told by their tags (see [`crate::wire`]).
//!
//! One thread reads and answers echoes straight away (one write per batch
//! of echoes read together); a second thread, started with the first
//! stream, sends the streams round robin, one frame per turn. Both write
//! through one lock, as an agent with one console must, and echoes go
//! first: the stream thread steps aside while an echo waits for the lock,
//! so an echo waits for at most the one stream frame being written (a
//! plain mutex would let the stream thread take it again and again).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::wire::{self, Item, Scanner};

/// The agent's one output, shared by its reader (echoes) and its pump
/// (streams), echoes first.
pub(crate) struct Output {
    writer: Mutex<Box<dyn Write + Send>>,
    /// Echo batches waiting for the writer; the pump waits while any do.
    echoes_waiting: AtomicUsize,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").finish_non_exhaustive()
    }
}

impl Output {
    /// Writes an echo batch, ahead of any stream frame not yet started.
    fn echo(&self, bytes: &[u8]) -> io::Result<()> {
        self.echoes_waiting.fetch_add(1, Ordering::SeqCst);
        let mut w = lock(&self.writer);
        self.echoes_waiting.fetch_sub(1, Ordering::SeqCst);
        w.write_all(bytes)?;
        w.flush()
    }

    /// Writes a stream frame once no echo is waiting.
    fn stream(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = loop {
            while self.echoes_waiting.load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
            let w = lock(&self.writer);
            if self.echoes_waiting.load(Ordering::SeqCst) == 0 {
                break w;
            }
        };
        w.write_all(bytes)?;
        w.flush()
    }
}

type SharedWriter = Arc<Output>;

/// Bytes the reader asks for per read.
const READ_BUFFER: usize = 256 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves until `reader` ends (or a write fails), writing `greeting` first.
pub(crate) fn serve(
    mut reader: impl Read,
    writer: Box<dyn Write + Send>,
    greeting: Option<&[u8]>,
) -> io::Result<()> {
    let writer: SharedWriter = Arc::new(Output {
        writer: Mutex::new(writer),
        echoes_waiting: AtomicUsize::new(0),
    });
    if let Some(greeting) = greeting {
        writer.echo(greeting)?;
    }
    let streams = Arc::new(Streams::default());
    let mut pump: Option<JoinHandle<()>> = None;
    let mut scanner = Scanner::new(READ_BUFFER);
    let mut out = Vec::new();
    let result = loop {
        match scanner.fill(&mut reader) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => break Err(error),
        }
        while let Some(item) = scanner.next_item() {
            let Item::Whole(header, bytes) = item else {
                continue; // a large data frame: sunk
            };
            match header.tag {
                wire::ECHO => out.extend_from_slice(bytes),
                wire::SOURCE => {
                    if let Some((total, frame_len)) = wire::source_args(bytes) {
                        streams.start(header.id, total, frame_len);
                        if pump.is_none() {
                            let (streams, writer) = (streams.clone(), writer.clone());
                            pump = Some(std::thread::spawn(move || streams.pump(&writer)));
                        }
                    }
                }
                wire::STOP => {
                    if let Some(target) = wire::stop_target(bytes) {
                        streams.stop(target);
                    }
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            let written = writer.echo(&out);
            out.clear();
            if let Err(error) = written {
                break Err(error);
            }
        }
    };
    streams.close();
    if let Some(pump) = pump {
        let _ = pump.join();
    }
    match result {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// One stream toward a client.
#[derive(Debug)]
struct Stream {
    id: u32,
    /// The frame sent each turn, built once.
    frame: Vec<u8>,
    /// Frames left to send (`u64::MAX`: endless).
    left: u64,
}

#[derive(Debug, Default)]
struct StreamState {
    queue: VecDeque<Stream>,
    /// The id of the stream the pump is writing now, out of the queue.
    in_flight: Option<u32>,
    /// Ids asked to stop (only ids of live streams are recorded).
    stops: Vec<u32>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Streams {
    state: Mutex<StreamState>,
    wake: Condvar,
}

impl Streams {
    fn start(&self, id: u32, total: u64, frame_len: usize) {
        let frame_len = frame_len.clamp(wire::MIN_TAGGED, relay_codec::MAX_FRAME_SIZE);
        let left = if total == wire::ENDLESS {
            u64::MAX
        } else {
            (total / frame_len as u64).max(1)
        };
        let mut state = lock(&self.state);
        state.queue.push_back(Stream {
            id,
            frame: wire::frame(id, wire::STREAM, frame_len),
            left,
        });
        drop(state);
        self.wake.notify_one();
    }

    fn stop(&self, id: u32) {
        let mut state = lock(&self.state);
        let live = state.in_flight == Some(id) || state.queue.iter().any(|s| s.id == id);
        if live && !state.stops.contains(&id) {
            state.stops.push(id);
        }
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }

    /// Sends the streams round robin until closed or a write fails.
    fn pump(&self, writer: &SharedWriter) {
        loop {
            let mut state = lock(&self.state);
            while state.queue.is_empty() && !state.closed {
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.closed {
                return;
            }
            let Some(mut stream) = state.queue.pop_front() else {
                continue;
            };
            let stopped = state.stops.iter().position(|&id| id == stream.id);
            if let Some(at) = stopped {
                state.stops.swap_remove(at);
            }
            let finished = stopped.is_some() || stream.left == 0;
            state.in_flight = Some(stream.id);
            drop(state);

            let result = if finished {
                writer.stream(&wire::frame(stream.id, wire::FIN, wire::MIN_TAGGED))
            } else {
                if stream.left != u64::MAX {
                    stream.left -= 1;
                }
                writer.stream(&stream.frame)
            };
            let mut state = lock(&self.state);
            state.in_flight = None;
            if result.is_err() {
                state.closed = true;
                return;
            }
            if !finished {
                state.queue.push_back(stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    fn start() -> (UnixStream, JoinHandle<io::Result<()>>) {
        let (near, far) = UnixStream::pair().unwrap();
        let reader = far.try_clone().unwrap();
        let agent = std::thread::spawn(move || serve(reader, Box::new(far), Some(b"hi")));
        (near, agent)
    }

    fn frames(stream: &mut UnixStream, scanner: &mut Scanner, until: u8) -> Vec<(u32, u8)> {
        let mut seen = Vec::new();
        loop {
            while let Some(item) = scanner.next_item() {
                let header = match item {
                    Item::Whole(h, _) | Item::Large(h) => h,
                };
                seen.push((header.id, header.tag));
                if header.tag == until {
                    return seen;
                }
            }
            assert!(scanner.fill(stream).unwrap() > 0, "agent ended early");
        }
    }

    #[test]
    fn the_agent_greets_echoes_sinks_and_streams() {
        let (mut client, agent) = start();
        let mut greeting = [0u8; 2];
        client.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"hi");

        client
            .write_all(&wire::frame(3, wire::DATA, 100_000))
            .unwrap();
        client.write_all(&wire::frame(3, wire::ECHO, 64)).unwrap();
        let mut scanner = Scanner::new(1 << 16);
        assert_eq!(
            frames(&mut client, &mut scanner, wire::ECHO),
            [(3, wire::ECHO)]
        );

        client
            .write_all(&wire::source_request(4, 10 * 5000, 5000))
            .unwrap();
        let seen = frames(&mut client, &mut scanner, wire::FIN);
        assert_eq!(seen.len(), 11);
        assert!(seen[..10].iter().all(|&s| s == (4, wire::STREAM)));

        drop(client);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn an_endless_stream_ends_when_stopped() {
        let (mut client, agent) = start();
        let mut greeting = [0u8; 2];
        client.read_exact(&mut greeting).unwrap();
        client
            .write_all(&wire::source_request(8, wire::ENDLESS, 1000))
            .unwrap();
        let mut scanner = Scanner::new(1 << 16);
        let mut first = Vec::new();
        while first.len() < 50 {
            assert!(scanner.fill(&mut client).unwrap() > 0);
            while let Some(item) = scanner.next_item() {
                if let Item::Whole(h, _) = item {
                    first.push(h.tag);
                }
            }
        }
        client.write_all(&wire::stop_request(9, 8)).unwrap();
        let seen = frames(&mut client, &mut scanner, wire::FIN);
        assert_eq!(seen.last(), Some(&(8, wire::FIN)));
        drop(client);
        agent.join().unwrap().unwrap();
    }
}
