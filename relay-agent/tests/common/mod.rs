//! The host side for tests: an agent serving one end of an in-memory
//! duplex, and helpers that speak relay-codec frames on the other end,
//! routing the agent's frames to per-session channels by id.
#![allow(dead_code, reason = "each test file uses its own part of the harness")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use relay_agent::{Agent, AgentConfig, AgentError, ServeEnd};
use relay_codec::payload::{
    Data, ExecRequest, ExecResize, ExecSignal, FsOp, FsRequest, FsResponse, Ready,
};
use relay_codec::{
    CONNECTION_ID, Flags, Frame, FrameCodec, Message, MessageType, data_frame, flow,
};
use relay_test_support::ExecOutcome;
use tokio::io::{AsyncRead, DuplexStream, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

type Routes = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Frame>>>>;

/// The host end of a running agent.
pub(crate) struct Host {
    writer: tokio::sync::Mutex<FramedWrite<WriteHalf<DuplexStream>, FrameCodec>>,
    routes: Routes,
    /// Frames for ids nobody subscribed to.
    pub(crate) stray: Arc<Mutex<Vec<Frame>>>,
    next_id: AtomicU32,
    pub(crate) ready: Ready,
    serve: JoinHandle<Result<ServeEnd, AgentError>>,
    router: JoinHandle<()>,
}

impl Host {
    /// An agent speaking plain generation 1 (this host returns no credit;
    /// tests/flow.rs covers flow control).
    pub(crate) async fn start() -> Host {
        Host::start_with(AgentConfig {
            flow_window: None,
            ..AgentConfig::default()
        })
        .await
    }

    pub(crate) async fn start_with(config: AgentConfig) -> Host {
        let (host_side, agent_side) = tokio::io::duplex(256 * 1024);
        let (agent_read, agent_write) = tokio::io::split(agent_side);
        let serve = tokio::spawn(Agent::new(config).serve(agent_read, agent_write));
        let (host_read, host_write) = tokio::io::split(host_side);
        let mut frames = FramedRead::new(host_read, FrameCodec::new());
        let first = frames.next().await.unwrap().unwrap();
        assert_eq!(first.id(), 0, "core.ready comes first, on id 0");
        let Message::Ready(ready) = Message::from_frame(&first).unwrap() else {
            panic!("the first frame is not core.ready: {first:?}");
        };
        let routes: Routes = Arc::default();
        let stray = Arc::new(Mutex::new(Vec::new()));
        let router = tokio::spawn(route(frames, Arc::clone(&routes), Arc::clone(&stray)));
        Host {
            writer: tokio::sync::Mutex::new(FramedWrite::new(host_write, FrameCodec::new())),
            routes,
            stray,
            next_id: AtomicU32::new(1),
            ready,
            serve,
            router,
        }
    }

    pub(crate) fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Receives every frame the agent sends on `id` from now on.
    pub(crate) fn subscribe(&self, id: u32) -> Session {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.lock().unwrap().insert(id, tx);
        Session { id, rx }
    }

    pub(crate) async fn send(&self, frame: Frame) {
        self.writer.lock().await.send(frame).await.unwrap();
    }

    /// Writes bytes that need not form a frame.
    pub(crate) async fn send_raw(&self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut writer = self.writer.lock().await;
        writer.get_mut().write_all(bytes).await.unwrap();
        writer.get_mut().flush().await.unwrap();
    }

    /// Takes up the agent's flow-control offer, as our relay does.
    pub(crate) async fn accept_flow(&self, window: u32) {
        self.send(flow::accept_frame(window)).await;
    }

    /// Grants session `id` `bytes` more of output credit.
    pub(crate) async fn credit(&self, id: u32, bytes: u32) {
        for frame in flow::credit_frames(id, u64::from(bytes)) {
            self.send(frame).await;
        }
    }

    pub(crate) async fn send_message(&self, id: u32, message: &Message) {
        self.send(message.to_frame(id).unwrap()).await;
    }

    pub(crate) async fn exec(&self, req: ExecRequest) -> Session {
        let session = self.subscribe(self.next_id());
        self.send_message(session.id, &Message::ExecRequest(req))
            .await;
        session
    }

    /// Runs `cmd args...` with no stdin and collects everything.
    pub(crate) async fn run(&self, cmd: &str, args: &[&str]) -> ExecOutcome {
        let session = self.exec(ExecRequest::new(cmd, args.iter().copied())).await;
        self.stdin(session.id, b"").await;
        session.finish().await
    }

    pub(crate) async fn fs(&self, op: FsOp) -> Session {
        let session = self.subscribe(self.next_id());
        self.send_message(session.id, &Message::FsRequest(FsRequest { op }))
            .await;
        session
    }

    /// An fs request without upload, answered by its response.
    pub(crate) async fn fs_call(&self, op: FsOp) -> FsResponse {
        self.fs(op).await.response().await
    }

    pub(crate) async fn stdin(&self, id: u32, data: &[u8]) {
        self.send(data_frame(MessageType::ExecStdin, id, data).unwrap())
            .await;
    }

    pub(crate) async fn fs_data(&self, id: u32, data: &[u8]) {
        self.send(data_frame(MessageType::FsData, id, data).unwrap())
            .await;
    }

    pub(crate) async fn signal(&self, id: u32, signal: i32) {
        self.send_message(id, &Message::ExecSignal(ExecSignal { signal }))
            .await;
    }

    pub(crate) async fn resize(&self, id: u32, rows: u16, cols: u16) {
        self.send_message(id, &Message::ExecResize(ExecResize { rows, cols }))
            .await;
    }

    /// Sends `core.shutdown` and waits for the agent to end.
    pub(crate) async fn shutdown(self) -> (Result<ServeEnd, AgentError>, Vec<Frame>) {
        self.send_message(0, &Message::Shutdown).await;
        self.finish().await
    }

    /// Waits for the agent to end (after a shutdown or a malformed frame
    /// already sent), then for the rest of its output.
    pub(crate) async fn finish(self) -> (Result<ServeEnd, AgentError>, Vec<Frame>) {
        let end = self.serve.await.unwrap();
        drop(self.writer);
        self.router.await.unwrap();
        let stray = std::mem::take(&mut *self.stray.lock().unwrap());
        (end, stray)
    }

    /// Closes the host's write side (the agent sees end of file).
    pub(crate) async fn close(self) -> (Result<ServeEnd, AgentError>, Vec<Frame>) {
        let mut writer = self.writer.lock().await;
        tokio::io::AsyncWriteExt::shutdown(writer.get_mut())
            .await
            .unwrap();
        drop(writer);
        self.finish().await
    }
}

async fn route<R: AsyncRead + Unpin>(
    mut frames: FramedRead<R, FrameCodec>,
    routes: Routes,
    stray: Arc<Mutex<Vec<Frame>>>,
) {
    while let Some(frame) = frames.next().await {
        let frame = frame.expect("the agent writes well-formed frames");
        // Credit travels on the connection id and names its session: the
        // session's own channel gets it, so tests see it in order.
        let id = match Message::from_frame(&frame) {
            Ok(Message::FlowCredit(credit)) if frame.id() == CONNECTION_ID => credit.id,
            _ => frame.id(),
        };
        let tx = routes.lock().unwrap().get(&id).cloned();
        match tx {
            Some(tx) => {
                if let Err(lost) = tx.send(frame) {
                    stray.lock().unwrap().push(lost.0);
                }
            }
            None => stray.lock().unwrap().push(frame),
        }
    }
}

/// Frames of one session.
pub(crate) struct Session {
    pub(crate) id: u32,
    rx: mpsc::UnboundedReceiver<Frame>,
}

impl Session {
    pub(crate) async fn next_frame(&mut self) -> Frame {
        self.rx
            .recv()
            .await
            .unwrap_or_else(|| panic!("session {} got no more frames", self.id))
    }

    /// Whether nothing is queued for this session and nothing can come
    /// (the host's router has ended).
    pub(crate) fn is_silent_and_closed(&mut self) -> bool {
        matches!(
            self.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        )
    }

    pub(crate) async fn next(&mut self) -> Message {
        Message::from_frame(&self.next_frame().await).unwrap()
    }

    /// Waits for `core.exec.started` and returns the pid.
    pub(crate) async fn started(&mut self) -> u32 {
        match self.next().await {
            Message::ExecStarted(started) => started.pid,
            other => panic!("expected core.exec.started, got {other:?}"),
        }
    }

    /// Reads stdout until `needle` appears in what was read so far.
    pub(crate) async fn stdout_until(&mut self, needle: &str) -> String {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Message::ExecStdout(data) => seen.extend_from_slice(&data.data),
                Message::ExecStarted(_) => {}
                other => panic!(
                    "waiting for {needle:?} after {:?}, got {other:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
            let text = String::from_utf8_lossy(&seen);
            if text.contains(needle) {
                return text.into_owned();
            }
        }
    }

    /// Collects output until `core.exec.exited`, which must carry TERMINAL.
    pub(crate) async fn finish(mut self) -> ExecOutcome {
        let mut outcome = ExecOutcome::default();
        loop {
            let frame = self.next_frame().await;
            let message = Message::from_frame(&frame).unwrap();
            match outcome.record(message) {
                Ok(false) => {}
                Ok(true) => {
                    assert_eq!(frame.flags(), Flags::TERMINAL);
                    return outcome;
                }
                Err(other) => panic!("unexpected message in an exec session: {other:?}"),
            }
        }
    }

    /// Collects `core.fs.data` chunks until the response, checking each
    /// chunk's size.
    pub(crate) async fn download(mut self, max_chunk: usize) -> (Vec<u8>, FsResponse) {
        let mut bytes = Vec::new();
        loop {
            let frame = self.next_frame().await;
            match Message::from_frame(&frame).unwrap() {
                Message::FsData(Data { data }) => {
                    assert!(!data.is_empty(), "no empty chunks in a download");
                    assert!(data.len() <= max_chunk, "chunk of {} bytes", data.len());
                    bytes.extend_from_slice(&data);
                }
                Message::FsResponse(response) => {
                    assert_eq!(frame.flags(), Flags::TERMINAL);
                    return (bytes, response);
                }
                other => panic!("unexpected message in a read: {other:?}"),
            }
        }
    }

    /// The session's `core.fs.response`, which must be its only frame.
    pub(crate) async fn response(mut self) -> FsResponse {
        let frame = self.next_frame().await;
        assert_eq!(frame.flags(), Flags::TERMINAL);
        match Message::from_frame(&frame).unwrap() {
            Message::FsResponse(response) => response,
            other => panic!("expected core.fs.response, got {other:?}"),
        }
    }
}
