//! A scripted agent: the guest's end of a byte stream played by two threads.
//! Its reader assembles every frame the peer writes, logs it and asks a
//! [`Script`] what to answer; its writer sends the answers, and whatever
//! the test injects, in the order they were queued.
//!
//! It runs over a ring's device end ([`ScriptedAgent::on_ring`]), a Unix
//! socket ([`ScriptedAgent::on_unix`]) or any blocking reader and writer
//! ([`ScriptedAgent::start`]), so the relay's tests and the client's tests
//! use the same double.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SendError, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use relay_codec::{Frame, FrameAssembler, FrameCodec};
use relay_ring::{DeviceEnd, DeviceReader, DeviceWriter};
use tokio::sync::oneshot;

use crate::eventually;

/// What a [`Script`] writes back, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A frame.
    Frame(Frame),
    /// Bytes that need not form a frame (a malformed one, a greeting).
    Raw(Bytes),
    /// Stop answering, write what was queued before, then end the stream
    /// toward the peer. What the peer still sends is read and dropped until
    /// it closes too, so it sees the end of the stream, never a reset.
    Close,
}

impl From<Frame> for Reply {
    fn from(frame: Frame) -> Reply {
        Reply::Frame(frame)
    }
}

/// How a scripted agent answers the frames it reads.
///
/// Any `FnMut(&Frame) -> Vec<Frame>` is a script that answers with frames;
/// a type of its own can keep state, write raw bytes and close the stream.
pub trait Script: Send + 'static {
    /// The replies to one frame read from the peer.
    fn on_frame(&mut self, frame: &Frame) -> Vec<Reply>;
}

impl<F> Script for F
where
    F: FnMut(&Frame) -> Vec<Frame> + Send + 'static,
{
    fn on_frame(&mut self, frame: &Frame) -> Vec<Reply> {
        self(frame).into_iter().map(Reply::Frame).collect()
    }
}

/// A script as a boxed closure, so doubles with different answers share a type.
pub type Behaviour = Box<dyn FnMut(&Frame) -> Vec<Frame> + Send>;

/// Echoes every frame back unchanged.
pub fn echo() -> Behaviour {
    Box::new(|frame| vec![frame.clone()])
}

/// Reads everything and answers nothing.
pub fn sink() -> Behaviour {
    Box::new(|_| Vec::new())
}

/// Queues bytes for a [`ScriptedAgent`]'s writer, from any thread.
///
/// Messages are [`Bytes`], so a source can send one large frame many times
/// without copying it: the test's own memory stays flat, and measurements
/// of the peer's memory are not drowned by it.
#[derive(Debug, Clone)]
pub struct AgentSender(SyncSender<Bytes>);

impl AgentSender {
    /// Queues bytes for the writer (blocks while its queue is full); fails
    /// once the writer has stopped.
    pub fn send(&self, bytes: impl Into<Bytes>) -> Result<(), SendError<Bytes>> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            // An empty message is the writer's signal to close: never queue one by accident.
            return Ok(());
        }
        self.0.send(bytes)
    }

    fn close(&self) {
        let _ = self.0.send(Bytes::new());
    }
}

/// A scripted agent on one byte stream (see the module docs).
pub struct ScriptedAgent<S> {
    log: Arc<Mutex<Vec<Frame>>>,
    tx: Option<AgentSender>,
    gate: Arc<ReadGate>,
    script: Option<oneshot::Receiver<S>>,
    writer: Option<JoinHandle<()>>,
}

impl<S> fmt::Debug for ScriptedAgent<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedAgent")
            .field("received", &lock(&self.log).len())
            .field("paused", &*lock(&self.gate.paused))
            .finish_non_exhaustive()
    }
}

impl<S: Script> ScriptedAgent<S> {
    /// Plays the guest on a ring's device end; dropping its writer is the
    /// end of the stream for the relay.
    pub fn on_ring(device: DeviceEnd, script: S) -> Self {
        let (reader, writer) = device.split();
        Self::start(RingReader(reader), RingWriter(writer), script)
    }

    /// Plays the peer on a connected Unix socket (made blocking if it was
    /// not); closing the agent's stream shuts the socket down for writing.
    pub fn on_unix(stream: UnixStream, script: S) -> Self {
        stream
            .set_nonblocking(false)
            .expect("a blocking Unix socket");
        let writer = stream.try_clone().expect("a second handle on the socket");
        Self::start(stream, HalfClose(writer), script)
    }

    /// Plays the peer on any blocking stream: `reader` is what the peer
    /// writes, `writer` where the answers go (dropped to close the stream).
    pub fn start(
        reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
        script: S,
    ) -> Self {
        let (tx, rx) = sync_channel(256);
        let tx = AgentSender(tx);
        let log = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(ReadGate::default());
        let (done, script_back) = oneshot::channel();
        let reading = Reading {
            log: Arc::clone(&log),
            gate: Arc::clone(&gate),
            replies: tx.clone(),
        };
        std::thread::spawn(move || {
            let mut reader = reader;
            let (script, end) = reading.run(&mut reader, script);
            let _ = done.send(script);
            if end == End::Closed {
                drain(&mut reader);
            }
        });
        let writer = std::thread::spawn(move || write_queued(writer, &rx));
        ScriptedAgent {
            log,
            tx: Some(tx),
            gate,
            script: Some(script_back),
            writer: Some(writer),
        }
    }
}

impl<S> ScriptedAgent<S> {
    /// Writes a frame toward the peer after everything queued before it.
    pub fn send(&self, frame: &Frame) {
        self.send_raw(frame.clone().into_wire());
    }

    /// Writes bytes that need not form a frame (blocks while the queue is
    /// full); panics once the writer has stopped.
    pub fn send_raw(&self, bytes: impl Into<Bytes>) {
        self.sender()
            .send(bytes)
            .expect("the agent's writer is still running");
    }

    /// A sender usable from another thread.
    pub fn sender(&self) -> AgentSender {
        self.tx.clone().expect("the agent is not closed")
    }

    /// Sends `frame` from a thread of its own, again and again, until
    /// `stop` is set, `limit` copies are queued or the writer stops; the
    /// thread returns how many it queued.
    pub fn source(&self, frame: &Frame, limit: usize, stop: &Arc<AtomicBool>) -> JoinHandle<usize> {
        let tx = self.sender();
        let wire = frame.clone().into_wire();
        let stop = Arc::clone(stop);
        std::thread::spawn(move || {
            let mut sent = 0;
            while sent < limit && !stop.load(Ordering::Relaxed) && tx.send(wire.clone()).is_ok() {
                sent += 1;
            }
            sent
        })
    }

    /// Stops reading before the next read (a read already waiting for data
    /// still completes), so the peer's writes back up.
    pub fn pause_reading(&self) {
        self.gate.set(true);
    }

    /// Reads again after [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&self) {
        self.gate.set(false);
    }

    /// Every frame read so far, in order.
    pub fn received(&self) -> Vec<Frame> {
        lock(&self.log).clone()
    }

    /// Waits until `pred` holds for the frames read so far, and returns them.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Frame]) -> bool) -> Vec<Frame> {
        eventually(&format!("the agent seeing {what}"), || {
            let frames = self.received();
            pred(&frames).then_some(frames)
        })
        .await
    }

    /// Closes the agent's stream toward the peer (the end of the stream for
    /// it) once everything queued is written, and waits until it is.
    pub fn close(mut self) {
        self.resume_reading();
        if let Some(tx) = self.tx.take() {
            tx.close();
        }
        if let Some(writer) = self.writer.take() {
            writer.join().expect("the agent's writer ended cleanly");
        }
    }

    /// Waits until the agent stops reading (the peer closed its stream, sent
    /// a malformed frame, or the script closed), and returns the script
    /// with what it learned.
    pub async fn ended(mut self) -> S {
        drop(self.tx.take());
        let script = self.script.take().expect("the script is returned once");
        script
            .await
            .expect("the agent's reader ended without a panic")
    }
}

/// The reader thread's share of the agent.
struct Reading {
    log: Arc<Mutex<Vec<Frame>>>,
    gate: Arc<ReadGate>,
    replies: AgentSender,
}

impl Reading {
    /// Reads and answers until the stream ends, is malformed, the writer
    /// stops, or the script closes the stream.
    fn run<S: Script>(self, reader: &mut impl Read, mut script: S) -> (S, End) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut frames = FrameAssembler::new(FrameCodec::new());
        loop {
            self.gate.wait_open();
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => return (script, End::Stopped),
                Ok(n) => n,
            };
            let mut input = &buf[..n];
            while !input.is_empty() {
                let Ok((used, frame)) = frames.push(input) else {
                    return (script, End::Stopped);
                };
                input = &input[used..];
                let Some(frame) = frame else { continue };
                let replies = script.on_frame(&frame);
                lock(&self.log).push(frame);
                if let Some(end) = self.answer(replies) {
                    return (script, end);
                }
            }
        }
    }

    /// Queues replies; how the reading ends, if it must.
    fn answer(&self, replies: Vec<Reply>) -> Option<End> {
        for reply in replies {
            let sent = match reply {
                Reply::Frame(frame) => self.replies.send(frame.into_wire()),
                Reply::Raw(bytes) => self.replies.send(bytes),
                Reply::Close => {
                    self.replies.close();
                    return Some(End::Closed);
                }
            };
            if sent.is_err() {
                return Some(End::Stopped);
            }
        }
        None
    }
}

/// Why the reader stopped answering.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The stream ended, went wrong, or the writer stopped.
    Stopped,
    /// The script closed the stream.
    Closed,
}

/// Reads and drops everything until the peer closes its end.
fn drain(reader: &mut impl Read) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(1..) = reader.read(&mut buf) {}
}

/// Writes queued bytes until the empty message (or every sender is gone),
/// then drops the writer: the end of the stream for the peer.
fn write_queued(mut writer: impl Write, queue: &Receiver<Bytes>) {
    for bytes in queue.iter().take_while(|bytes| !bytes.is_empty()) {
        if writer
            .write_all(&bytes)
            .and_then(|()| writer.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Whether the agent's reader may read.
#[derive(Default)]
struct ReadGate {
    paused: Mutex<bool>,
    changed: Condvar,
}

impl ReadGate {
    fn set(&self, paused: bool) {
        *lock(&self.paused) = paused;
        self.changed.notify_all();
    }

    fn wait_open(&self) {
        let mut paused = lock(&self.paused);
        while *paused {
            paused = self
                .changed
                .wait(paused)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A lock that outlives a panicking test thread: the log is still worth reading.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A ring's device reader as a blocking [`Read`].
struct RingReader(DeviceReader);

impl Read for RingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_blocking(buf)
    }
}

/// A ring's device writer as a blocking [`Write`].
struct RingWriter(DeviceWriter);

impl Write for RingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_blocking(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all_blocking(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A socket's writing side that shuts the socket down for writing when dropped.
struct HalfClose(UnixStream);

impl Write for HalfClose {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Drop for HalfClose {
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use relay_codec::{Flags, MessageType};

    use super::*;
    use crate::{read_frame, ready_frame};

    /// Answers `core.shutdown` by closing, after a malformed frame; counts the rest.
    #[derive(Default)]
    struct Counting(usize);

    impl Script for Counting {
        fn on_frame(&mut self, frame: &Frame) -> Vec<Reply> {
            if frame.flags().contains(Flags::SHUTDOWN) {
                return vec![Reply::Raw(Bytes::from_static(&[0, 0, 0, 1])), Reply::Close];
            }
            self.0 += 1;
            Vec::new()
        }
    }

    #[tokio::test]
    async fn an_echo_agent_on_a_socket_answers_in_order_after_what_was_injected() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let agent = ScriptedAgent::on_unix(theirs, echo());
        agent.send(&ready_frame(1));
        let ping = Frame::new(5, Flags::NONE, b"ping").unwrap();
        ours.write_all(ping.as_wire()).unwrap();
        assert_eq!(read_frame(&mut ours).unwrap(), ready_frame(1));
        assert_eq!(read_frame(&mut ours).unwrap(), ping);
        agent.wait_for("the ping", |f| f == [ping.clone()]).await;
        drop(ours);
        let _echo = agent.ended().await;
    }

    #[tokio::test]
    async fn a_script_that_closes_writes_what_it_queued_then_ends_the_stream() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let agent = ScriptedAgent::on_unix(theirs, Counting::default());
        let data = relay_codec::data_frame(MessageType::ExecStdin, 3, b"x").unwrap();
        let shutdown = relay_codec::Message::Shutdown.to_frame(0).unwrap();
        ours.write_all(&[data.as_wire(), shutdown.as_wire()].concat())
            .unwrap();
        let mut rest = Vec::new();
        ours.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, [0, 0, 0, 1]);
        assert_eq!(agent.ended().await.0, 1);
    }

    #[tokio::test]
    async fn a_paused_agent_leaves_the_ring_full_until_it_resumes() {
        let (device, relay) = relay_ring::duplex(4096).unwrap();
        let monitor = relay.monitor();
        let agent = ScriptedAgent::on_ring(device, sink());
        agent.pause_reading();
        let (_reader, mut writer) = relay.into_split().unwrap();
        let frame = Frame::new(1, Flags::NONE, &[7; 1000]).unwrap();
        let frames = 20;
        let writing = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..frames {
                writer.write_all(frame.as_wire()).await.unwrap();
            }
            writer
        });
        // Whatever the agent had begun reading before the pause, the ring fills behind it.
        eventually("a full ring", || {
            let ring = monitor.host_to_guest();
            (ring.len == ring.capacity).then_some(())
        })
        .await;
        assert!(agent.received().len() < frames);
        agent.resume_reading();
        let _writer = writing.await.unwrap();
        agent.wait_for("every frame", |f| f.len() == frames).await;
    }
}
