//! The naive relay: the reference design of SPEC section 7, written plainly
//! as a baseline and deliberately not optimised.
//!
//! - Each direction between relay and device is a bounded MPMC queue of
//!   `Vec<u8>` chunks ([`ArrayQueue`], [`QUEUE_CHUNKS`] deep) plus a pipe: the
//!   producer writes one byte per chunk to wake the consumer. A producer
//!   that finds its queue full sleeps 1 ms and tries again.
//! - Client to agent: per client, one header read then one body read per
//!   frame, a copy of the frame into a fresh `Vec`, pushed onto the queue.
//! - Agent to client: a reader moves every chunk off the queue into an
//!   unbounded buffer at once; a dispatcher cuts frames out of it (a copy
//!   each), consults the mutex-guarded client map for every frame and
//!   sends the frame into that client's channel of [`CHANNEL_FRAMES`]
//!   frames, *waiting* while it is full.
//!
//! So it has the reference design's faults on purpose: one client that
//! stops reading freezes every client (the dispatcher waits on its channel)
//! while the buffer in front of the dispatcher grows without limit.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use crossbeam_queue::ArrayQueue;
use relay_codec::{
    CONNECTION_ID, Frame, FrameHeader, Handshake, LEGACY_STEP, WIRE_HEADER_SIZE, bounds_slot_of,
    bounds_slot_range, legacy_slot_of,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc};

use crate::protocol::malformed;
use crate::serve::Form;

/// Chunks each queue holds.
pub(crate) const QUEUE_CHUNKS: usize = 256;
/// Frames each client's channel holds.
pub(crate) const CHANNEL_FRAMES: usize = 64;
/// Largest chunk the device pushes at once.
const CHUNK_MAX: usize = 64 * 1024;
/// The sleep before trying a full queue again.
const FULL_RETRY: Duration = Duration::from_millis(1);

type Queue = Arc<ArrayQueue<Vec<u8>>>;

/// The device's end of the naive "ring": what the bench agent reads and writes.
#[derive(Debug)]
pub(crate) struct DeviceEnd {
    pub(crate) rx: DeviceRx,
    pub(crate) tx: DeviceTx,
}

/// The relay's end: the other side of both queues and pipes.
#[derive(Debug)]
pub(crate) struct RelayEnd {
    to_guest: Queue,
    to_guest_wake: OwnedFd,
    from_guest: Queue,
    from_guest_wake: OwnedFd,
}

/// Creates both directions.
pub(crate) fn duplex() -> io::Result<(DeviceEnd, RelayEnd)> {
    let to_guest: Queue = Arc::new(ArrayQueue::new(QUEUE_CHUNKS));
    let from_guest: Queue = Arc::new(ArrayQueue::new(QUEUE_CHUNKS));
    let (to_guest_wake_rx, to_guest_wake_tx) = io::pipe()?;
    let (from_guest_wake_rx, from_guest_wake_tx) = io::pipe()?;
    Ok((
        DeviceEnd {
            rx: DeviceRx {
                queue: to_guest.clone(),
                wake: to_guest_wake_rx,
                chunk: Vec::new(),
                at: 0,
            },
            tx: DeviceTx {
                queue: from_guest.clone(),
                wake: from_guest_wake_tx,
            },
        },
        RelayEnd {
            to_guest,
            to_guest_wake: to_guest_wake_tx.into(),
            from_guest,
            from_guest_wake: from_guest_wake_rx.into(),
        },
    ))
}

/// Host-to-guest chunks, read by the device.
#[derive(Debug)]
pub(crate) struct DeviceRx {
    queue: Queue,
    wake: io::PipeReader,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for DeviceRx {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if let Some(chunk) = self.queue.pop() {
                self.chunk = chunk;
                self.at = 0;
                continue;
            }
            let mut wakes = [0u8; 4096];
            if self.wake.read(&mut wakes)? == 0 && self.queue.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Guest-to-host chunks, written by the device.
#[derive(Debug)]
pub(crate) struct DeviceTx {
    queue: Queue,
    wake: io::PipeWriter,
}

impl Write for DeviceTx {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK_MAX);
        let mut chunk = buf[..n].to_vec();
        while let Err(back) = self.queue.push(chunk) {
            chunk = back;
            std::thread::sleep(FULL_RETRY);
        }
        self.wake.write_all(&[1])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Shared {
    form: Form,
    /// The client map, consulted for every agent frame.
    clients: Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>,
    ready: Mutex<Option<Vec<u8>>>,
    ready_set: Notify,
    to_guest: Queue,
    to_guest_wake: pipe::Sender,
}

/// Runs the naive relay on `listener` until the process ends. Must be
/// called within a tokio runtime.
pub(crate) async fn run(listener: UnixListener, end: RelayEnd, form: Form) -> io::Result<()> {
    let shared = Arc::new(Shared {
        form,
        clients: Mutex::new(HashMap::new()),
        ready: Mutex::new(None),
        ready_set: Notify::new(),
        to_guest: end.to_guest,
        to_guest_wake: pipe::Sender::from_owned_fd(end.to_guest_wake)?,
    });
    let from_guest_wake = pipe::Receiver::from_owned_fd(end.from_guest_wake)?;
    let (chunks_tx, chunks_rx) = mpsc::unbounded_channel();
    tokio::spawn(read_guest(end.from_guest, from_guest_wake, chunks_tx));
    tokio::spawn(dispatch(shared.clone(), chunks_rx));

    loop {
        let ready = shared.ready_set.notified();
        if lock(&shared.ready).is_some() {
            break;
        }
        ready.await;
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let Some(slot) = free_slot(&shared) else {
            drop(stream); // every slot taken
            continue;
        };
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        lock(&shared.clients).insert(slot, tx);
        let (mut rd, mut wr) = stream.into_split();
        let greeting = greeting(&shared, slot);
        let shared = shared.clone();
        tokio::spawn(async move {
            if wr.write_all(&greeting).await.is_err() {
                lock(&shared.clients).remove(&slot);
                return;
            }
            tokio::spawn(write_client(wr, rx));
            let _ = read_client(&shared, &mut rd).await;
            lock(&shared.clients).remove(&slot);
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn free_slot(shared: &Shared) -> Option<u32> {
    let clients = lock(&shared.clients);
    (0..shared.form.slots()).find(|slot| !clients.contains_key(slot))
}

fn greeting(shared: &Shared, slot: u32) -> Vec<u8> {
    let handshake = match shared.form {
        Form::Legacy => Handshake::Legacy {
            offset: slot * LEGACY_STEP,
        },
        Form::Bounds(slots) => match bounds_slot_range(slot, slots) {
            Some(range) => Handshake::Bounds { range },
            None => return Vec::new(),
        },
    };
    let ready = lock(&shared.ready).clone().unwrap_or_default();
    let Ok(ready) = Frame::from_wire(ready.into()) else {
        return Vec::new();
    };
    let mut out = BytesMut::new();
    handshake.encode(&ready, &mut out);
    out.to_vec()
}

/// One header read, one body read, a copy, and a push (sleeping while full).
async fn read_client(shared: &Shared, rd: &mut tokio::net::unix::OwnedReadHalf) -> io::Result<()> {
    loop {
        let mut header = [0u8; WIRE_HEADER_SIZE];
        rd.read_exact(&mut header).await?;
        let (_, wire_len) = FrameHeader::parse(&header).map_err(malformed)?;
        let mut body = vec![0u8; wire_len - WIRE_HEADER_SIZE];
        rd.read_exact(&mut body).await?;
        let mut frame = Vec::with_capacity(wire_len);
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&body);
        while let Err(back) = shared.to_guest.push(frame) {
            frame = back;
            tokio::time::sleep(FULL_RETRY).await;
        }
        // A full wake pipe already holds wakeups enough.
        let _ = shared.to_guest_wake.try_write(&[1]);
    }
}

async fn write_client(mut wr: tokio::net::unix::OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = rx.recv().await {
        if wr.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// Moves every guest chunk off the queue at once, into an unbounded channel.
async fn read_guest(
    queue: Queue,
    mut wake: pipe::Receiver,
    chunks: mpsc::UnboundedSender<Vec<u8>>,
) {
    let mut wakes = vec![0u8; 64 * 1024];
    loop {
        while let Some(chunk) = queue.pop() {
            if chunks.send(chunk).is_err() {
                return;
            }
        }
        match wake.read(&mut wakes).await {
            Ok(0) | Err(_) => {
                while let Some(chunk) = queue.pop() {
                    let _ = chunks.send(chunk);
                }
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Cuts frames out of the guest's bytes and sends each to its client,
/// waiting while that client's channel is full. A malformed stream ends
/// the dispatch.
async fn dispatch(shared: Arc<Shared>, mut chunks: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut at = 0;
    while let Some(chunk) = chunks.recv().await {
        if at == buf.len() {
            buf.clear();
            at = 0;
        } else if at > buf.len() / 2 {
            buf.drain(..at);
            at = 0;
        }
        buf.extend_from_slice(&chunk);
        while let Some(head) = buf[at..].first_chunk::<WIRE_HEADER_SIZE>() {
            let Ok((header, wire_len)) = FrameHeader::parse(head) else {
                return;
            };
            if buf.len() - at < wire_len {
                break;
            }
            let frame = buf[at..at + wire_len].to_vec();
            at += wire_len;
            route(&shared, header, frame).await;
        }
    }
}

async fn route(shared: &Shared, header: FrameHeader, frame: Vec<u8>) {
    let id = header.id;
    if id == CONNECTION_ID {
        *lock(&shared.ready) = Some(frame);
        shared.ready_set.notify_waiters();
        return;
    }
    let slot = match shared.form {
        Form::Legacy => Some(legacy_slot_of(id)),
        Form::Bounds(slots) => bounds_slot_of(id, slots),
    };
    let client = slot.and_then(|slot| lock(&shared.clients).get(&slot).cloned());
    if let Some(client) = client {
        let _ = client.send(frame).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_naive_queue_carries_every_byte_both_ways() {
        let (device, relay) = duplex().unwrap();
        let DeviceEnd { mut rx, mut tx } = device;
        let data: Vec<u8> = (0..300_000u32).map(|i| i.to_le_bytes()[0]).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || tx.write_all(&sent).unwrap());
        // Read the guest's chunks the way the relay does, without tokio.
        let mut wake = io::PipeReader::from(relay.from_guest_wake);
        let mut got = Vec::new();
        while got.len() < data.len() {
            match relay.from_guest.pop() {
                Some(chunk) => got.extend(chunk),
                None => {
                    let mut b = [0u8; 64];
                    assert!(wake.read(&mut b).unwrap() > 0);
                }
            }
        }
        writer.join().unwrap();
        assert_eq!(got, data);

        relay.to_guest.push(b"abc".to_vec()).unwrap();
        let mut wake = io::PipeWriter::from(relay.to_guest_wake);
        wake.write_all(&[1]).unwrap();
        drop(wake);
        let mut back = Vec::new();
        rx.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"abc");
    }
}
