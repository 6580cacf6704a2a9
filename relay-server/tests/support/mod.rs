//! Test doubles for the relay: an agent played by threads on the ring's
//! device end, and a minimal client speaking raw frames.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a test support module: each test file uses a different part"
)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SendError, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use relay_codec::payload::Ready;
use relay_codec::{Flags, Frame, FrameCodec, Handshake, IdRange, Message, split_frames};
use relay_server::{Relay, RelayConfig, RelayHandle, StatsSnapshot};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite};

/// Generous guard against a hung test; never a performance threshold.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

pub fn ready_frame(boot: u64) -> Frame {
    Message::Ready(Ready {
        boot_time_ns: boot,
        init_time_ns: 2,
        ready_time_ns: 3,
        flow: None,
    })
    .to_frame(0)
    .unwrap()
}

/// What the test agent does with each frame it reads.
pub type Behaviour = Box<dyn FnMut(&Frame) -> Vec<Frame> + Send>;

/// Echoes every frame back unchanged.
pub fn echo() -> Behaviour {
    Box::new(|frame| vec![frame.clone()])
}

/// Answers nothing.
pub fn silent() -> Behaviour {
    Box::new(|_| Vec::new())
}

/// Sends bytes to a [`TestAgent`]'s writer thread from any thread.
///
/// Messages are [`Bytes`], so a flood can send one large frame many times
/// without copying it: the test's own memory stays flat and measurements of
/// the relay's memory are not drowned by it.
#[derive(Clone)]
pub struct AgentSender(SyncSender<Bytes>);

impl AgentSender {
    /// Queues bytes for the agent's writer (blocks while its queue is full).
    pub fn send(&self, bytes: impl Into<Bytes>) -> Result<(), SendError<Bytes>> {
        self.0.send(bytes.into())
    }
}

/// Whether the agent's reader thread may read from the ring.
#[derive(Default)]
struct ReadGate {
    paused: Mutex<bool>,
    changed: Condvar,
}

impl ReadGate {
    fn set(&self, paused: bool) {
        *self.paused.lock().unwrap() = paused;
        self.changed.notify_all();
    }

    fn wait_open(&self) {
        let mut paused = self.paused.lock().unwrap();
        while *paused {
            paused = self.changed.wait(paused).unwrap();
        }
    }
}

/// An agent on the device end of a ring: a reader thread that logs every
/// frame and runs the behaviour, and a writer thread fed through a bounded
/// channel (tests inject frames with [`TestAgent::send`]).
pub struct TestAgent {
    log: Arc<Mutex<Vec<Frame>>>,
    tx: Option<AgentSender>,
    gate: Arc<ReadGate>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl TestAgent {
    /// Starts the agent; it sends `ready` (if any) first.
    pub fn start(
        device: relay_ring::DeviceEnd,
        ready: Option<Frame>,
        behaviour: Behaviour,
    ) -> Self {
        let (mut rx_half, mut tx_half) = device.split();
        let (tx, rx): (SyncSender<Bytes>, Receiver<Bytes>) = sync_channel(256);
        if let Some(ready) = ready {
            tx.send(ready.into_wire()).unwrap();
        }
        let writer = std::thread::spawn(move || {
            // An empty message asks the writer to close its half (EOF for the relay).
            for bytes in rx.iter().take_while(|bytes| !bytes.is_empty()) {
                if tx_half.write_all_blocking(&bytes).is_err() {
                    return;
                }
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let reader_log = log.clone();
        let reply_tx = tx.clone();
        let mut behaviour = behaviour;
        let gate = Arc::new(ReadGate::default());
        let reader_gate = gate.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut pending = BytesMut::new();
            let mut codec = FrameCodec::new();
            loop {
                reader_gate.wait_open();
                let n = match rx_half.blocking().read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Some(frame) =
                    tokio_util::codec::Decoder::decode(&mut codec, &mut pending).unwrap()
                {
                    let replies = behaviour(&frame);
                    reader_log.lock().unwrap().push(frame);
                    for reply in replies {
                        if reply_tx.send(reply.into_wire()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        TestAgent {
            log,
            tx: Some(AgentSender(tx)),
            gate,
            reader: Some(reader),
            writer: Some(writer),
        }
    }

    /// Writes raw bytes toward the relay (blocks while the channel is full).
    pub fn send_raw(&self, bytes: impl Into<Bytes>) {
        self.tx.as_ref().unwrap().send(bytes).unwrap();
    }

    /// Writes a frame toward the relay.
    pub fn send(&self, frame: &Frame) {
        self.send_raw(frame.clone().into_wire());
    }

    /// A sender usable from another thread.
    pub fn sender(&self) -> AgentSender {
        self.tx.clone().unwrap()
    }

    /// Stops reading the relay's ring before the next read (a read already
    /// waiting for data still completes), so the ring fills up.
    pub fn pause_reading(&self) {
        self.gate.set(true);
    }

    /// Reads again after [`pause_reading`](TestAgent::pause_reading).
    pub fn resume_reading(&self) {
        self.gate.set(false);
    }

    /// Every frame received so far.
    pub fn received(&self) -> Vec<Frame> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (polling) until `pred` holds for the received frames.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Frame]) -> bool) -> Vec<Frame> {
        let start = std::time::Instant::now();
        loop {
            let frames = self.received();
            if pred(&frames) {
                return frames;
            }
            assert!(start.elapsed() < HANG_GUARD, "agent never saw {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Closes the agent's stream toward the relay (EOF) and joins its writer.
    pub fn close(mut self) {
        self.resume_reading();
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Bytes::new());
        }
        if let Some(writer) = self.writer.take() {
            writer.join().unwrap();
        }
    }
}

/// A relay over a fresh ring with a test agent on the other end.
pub struct Harness {
    pub relay: RelayHandle,
    pub agent: TestAgent,
    pub dir: PathBuf,
}

impl Harness {
    pub async fn start(
        config: impl FnOnce(RelayConfig) -> RelayConfig,
        behaviour: Behaviour,
    ) -> Harness {
        Harness::start_with_ring(1 << 16, config, behaviour).await
    }

    pub async fn start_with_ring(
        ring: usize,
        config: impl FnOnce(RelayConfig) -> RelayConfig,
        behaviour: Behaviour,
    ) -> Harness {
        Harness::start_with_ready(ring, ready_frame(1), config, behaviour).await
    }

    /// A harness whose agent greets with `ready` (e.g. one offering flow control).
    pub async fn start_with_ready(
        ring: usize,
        ready: Frame,
        config: impl FnOnce(RelayConfig) -> RelayConfig,
        behaviour: Behaviour,
    ) -> Harness {
        let dir = temp_dir();
        let (device, relay_end) = relay_ring::duplex(ring).unwrap();
        let agent = TestAgent::start(device, Some(ready), behaviour);
        let mut relay =
            Relay::start_on_ring(config(RelayConfig::new(dir.join("agent.sock"))), relay_end)
                .unwrap();
        assert!(relay.ready().await, "the relay ended before core.ready");
        Harness { relay, agent, dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    pub async fn client(&self) -> TestClient {
        TestClient::connect(&self.socket()).await
    }

    /// Polls the relay's stats until `pred` holds, and returns them.
    pub async fn wait_stats(
        &self,
        what: &str,
        pred: impl Fn(&StatsSnapshot) -> bool,
    ) -> StatsSnapshot {
        let start = std::time::Instant::now();
        loop {
            let stats = self.relay.stats();
            if pred(&stats) {
                return stats;
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "never reached {what}: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A fresh private directory under the system temp dir.
pub fn temp_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("relay-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A minimal client: handshake, then raw frames.
pub struct TestClient {
    pub handshake: Handshake,
    pub ready: Frame,
    pub ids: IdRange,
    pub rx: FramedRead<OwnedReadHalf, FrameCodec>,
    pub tx: FramedWrite<OwnedWriteHalf, FrameCodec>,
}

impl TestClient {
    pub async fn connect(path: &Path) -> TestClient {
        let stream = UnixStream::connect(path).await.unwrap();
        TestClient::handshake(stream).await.expect("a handshake")
    }

    /// Reads the greeting; `None` when the relay closes the connection first.
    pub async fn handshake(stream: UnixStream) -> Option<TestClient> {
        let (mut rd, wr) = stream.into_split();
        let mut buf = BytesMut::new();
        let (handshake, ready, used) = loop {
            if let Some(done) = Handshake::decode(&buf).unwrap() {
                break done;
            }
            if rd.read_buf(&mut buf).await.unwrap() == 0 {
                return None;
            }
        };
        let _ = buf.split_to(used);
        let mut rx = FramedRead::new(rd, FrameCodec::new());
        rx.read_buffer_mut().extend_from_slice(&buf);
        Some(TestClient {
            ids: handshake.client_ids().unwrap(),
            handshake,
            ready,
            rx,
            tx: FramedWrite::new(wr, FrameCodec::new()),
        })
    }

    pub async fn send(&mut self, frame: Frame) {
        self.tx.send(frame).await.unwrap();
    }

    pub async fn frame(&mut self, id: u32, flags: Flags, body: &[u8]) {
        self.send(Frame::new(id, flags, body).unwrap()).await;
    }

    /// The next frame, or `None` at EOF / error.
    pub async fn next(&mut self) -> Option<Frame> {
        match tokio::time::timeout(HANG_GUARD, self.rx.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(_) => None,
            Err(_) => panic!("no frame and no EOF within the hang guard"),
        }
    }

    /// Whether the relay has closed this connection (reads until EOF).
    pub async fn closed(&mut self) -> bool {
        while self.next().await.is_some() {}
        true
    }
}

/// Decodes a concatenation of whole frames.
pub fn frames(bytes: &[u8]) -> Vec<Frame> {
    split_frames(bytes).unwrap()
}
