//! Test double: a fake relay that greets the client and then plays a
//! scripted agent on the same socket, serving exec from a few canned
//! commands and fs from memory, and reporting what it saw.
//!
//! Exec commands (the request's `cmd`):
//! - `echo ARGS..`: stdout `ARGS joined by spaces + "\n"`, exit 0.
//! - `exit CODE`: exit CODE.
//! - `split OUT ERR`: stdout OUT, stderr ERR, exit 3.
//! - `cat`: echoes each stdin chunk to stdout; exit 0 when stdin closes.
//! - `sleep`: runs until a signal; answers a resize with `resized RxC\n`.
//! - `burst N SIZE`: N stdout chunks of SIZE bytes, exit 0.
//! - `stray`: frames for unknown ids (in and out of the client's range,
//!   one undecodable, one TERMINAL), then stdout `ok\n`, exit 0.
//! - `hangup`: started, then the connection closes.
//! - `malformed`: started, then a frame header with `len` 1, then close.
//! - anything else: stderr `CMD: not found\n`, exit 127.
//!
//! `cat` and `sleep` end with code 128 + signal on `core.exec.signal`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use relay_client::{Client, ClientConfig};
use relay_codec::payload::{
    Data, ExecExited, ExecStarted, FsEntry, FsOp, FsResponse, FsResponseData, Ready,
};
use relay_codec::{
    FS_CHUNK_SIZE, Flags, Frame, FrameCodec, Handshake, IdRange, Message, MessageType,
    envelope_frame,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

/// The `core.ready` payload every fake relay serves.
pub(crate) const READY: Ready = Ready {
    boot_time_ns: 11,
    init_time_ns: 22,
    ready_time_ns: 33,
    flow: None,
};

/// How the fake agent encodes the frames it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// With relay-codec.
    Ours,
    /// With microsandbox-protocol 0.4.3 (ready and exec messages).
    Microsandbox,
}

/// What the fake agent saw, returned when its connection ends.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Ids of SESSION_START frames, in arrival order.
    pub(crate) sessions: Vec<u32>,
    /// Ids of SESSION_START frames for a session the agent still had open.
    pub(crate) reused_in_flight: Vec<u32>,
    /// Client frames whose id lies outside the client's range (id 0
    /// `core.shutdown` excepted).
    pub(crate) out_of_range: Vec<u32>,
    /// `core.shutdown` frames: (id, flags).
    pub(crate) shutdowns: Vec<(u32, Flags)>,
    /// Sizes of the `core.fs.data` chunks uploaded, the final empty one included.
    pub(crate) upload_chunks: Vec<usize>,
    /// Frames that did not decode.
    pub(crate) undecodable: usize,
}

/// A client connected to a fresh fake relay greeting with `handshake`.
pub(crate) async fn client(handshake: Handshake) -> (Client, JoinHandle<Report>) {
    client_with(handshake, Encoding::Ours, ClientConfig::default()).await
}

/// [`client`] with an encoding and a client configuration.
pub(crate) async fn client_with(
    handshake: Handshake,
    encoding: Encoding,
    config: ClientConfig,
) -> (Client, JoinHandle<Report>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fake = spawn_fake(theirs, handshake, encoding);
    let client = Client::from_stream_with(ours, config).await.unwrap();
    (client, fake)
}

/// Serves one connection: greets, then plays the agent until the client
/// closes, shuts down, or a script closes the connection.
pub(crate) fn spawn_fake(
    stream: UnixStream,
    handshake: Handshake,
    encoding: Encoding,
) -> JoinHandle<Report> {
    tokio::spawn(async move {
        let (read, mut write) = stream.into_split();
        let ready = encode(encoding, 0, &Message::Ready(READY.clone()));
        let mut greeting = BytesMut::new();
        handshake.encode(&ready, &mut greeting);
        write.write_all(&greeting).await.unwrap();
        let mut agent = Agent {
            write,
            ids: handshake.client_ids().unwrap(),
            encoding,
            open: HashMap::new(),
            files: BTreeMap::new(),
            dirs: ["/", "/tmp"].into_iter().map(String::from).collect(),
            report: Report::default(),
            next_pid: 100,
        };
        let mut frames = FramedRead::new(read, FrameCodec::new());
        while let Some(frame) = frames.next().await {
            let Ok(frame) = frame else { break };
            if agent.handle(frame).await == Flow::Close {
                break;
            }
        }
        agent.report
    })
}

/// A reference checksum (FNV-1a, 64 bits).
pub(crate) fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `len` deterministic pseudo-random bytes.
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The ready frame a fake relay sends, for greetings written by hand.
pub(crate) fn ready_frame() -> Frame {
    Message::Ready(READY.clone()).to_frame(0).unwrap()
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

enum Open {
    Cat,
    Sleep,
    Upload { path: String, data: Vec<u8> },
}

struct Agent<W> {
    write: W,
    ids: IdRange,
    encoding: Encoding,
    open: HashMap<u32, Open>,
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
    report: Report,
    next_pid: u32,
}

const NO_SUCH_FILE: &str = "No such file or directory (os error 2)";

impl<W: AsyncWrite + Unpin> Agent<W> {
    async fn handle(&mut self, frame: Frame) -> Flow {
        let id = frame.id();
        let flags = frame.flags();
        let Ok(message) = Message::from_frame(&frame) else {
            self.report.undecodable += 1;
            return Flow::Continue;
        };
        if let Message::Shutdown = message {
            self.report.shutdowns.push((id, flags));
            return Flow::Close;
        }
        if !self.ids.contains(id) {
            self.report.out_of_range.push(id);
        }
        if flags.contains(Flags::SESSION_START) {
            self.report.sessions.push(id);
            if self.open.contains_key(&id) {
                self.report.reused_in_flight.push(id);
            }
        }
        match message {
            Message::ExecRequest(request) => self.exec(id, &request.cmd, &request.args).await,
            Message::ExecStdin(data) => {
                match self.open.get(&id) {
                    Some(Open::Cat) if data.data.is_empty() => self.exit(id, 0).await,
                    Some(Open::Cat) => self.send(id, Message::ExecStdout(data)).await,
                    _ => {}
                }
                Flow::Continue
            }
            Message::ExecSignal(signal) => {
                if matches!(self.open.get(&id), Some(Open::Cat | Open::Sleep)) {
                    self.exit(id, 128 + signal.signal).await;
                }
                Flow::Continue
            }
            Message::ExecResize(size) => {
                if matches!(self.open.get(&id), Some(Open::Cat | Open::Sleep)) {
                    let text = format!("resized {}x{}\n", size.rows, size.cols);
                    self.stdout(id, text.as_bytes()).await;
                }
                Flow::Continue
            }
            Message::FsRequest(request) => {
                self.fs(id, request.op).await;
                Flow::Continue
            }
            Message::FsData(data) => {
                self.upload(id, data.data).await;
                Flow::Continue
            }
            _ => Flow::Continue,
        }
    }

    async fn exec(&mut self, id: u32, cmd: &str, args: &[String]) -> Flow {
        let known = [
            "echo",
            "exit",
            "split",
            "cat",
            "sleep",
            "burst",
            "stray",
            "hangup",
            "malformed",
        ];
        if !known.contains(&cmd) {
            self.stderr(id, format!("{cmd}: not found\n").as_bytes())
                .await;
            self.exit(id, 127).await;
            return Flow::Continue;
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        self.send(id, Message::ExecStarted(ExecStarted { pid }))
            .await;
        match cmd {
            "echo" => {
                self.stdout(id, format!("{}\n", args.join(" ")).as_bytes())
                    .await;
                self.exit(id, 0).await;
            }
            "exit" => self.exit(id, args[0].parse().unwrap()).await,
            "split" => {
                self.stdout(id, args[0].as_bytes()).await;
                self.stderr(id, args[1].as_bytes()).await;
                self.exit(id, 3).await;
            }
            "cat" => {
                self.open.insert(id, Open::Cat);
            }
            "sleep" => {
                self.open.insert(id, Open::Sleep);
            }
            "burst" => {
                let count: usize = args[0].parse().unwrap();
                let size: usize = args[1].parse().unwrap();
                for _ in 0..count {
                    self.stdout(id, &vec![b'x'; size]).await;
                }
                self.exit(id, 0).await;
            }
            "stray" => {
                let unused = (self.ids.first()..=self.ids.last())
                    .rev()
                    .find(|candidate| *candidate != id && !self.open.contains_key(candidate))
                    .unwrap();
                let outside = self.ids.last().wrapping_add(1).max(1);
                for stray in [unused, outside] {
                    self.stdout(stray, b"not yours").await;
                }
                let garbage =
                    envelope_frame("core.exec.stdout", unused, Flags::NONE, b"\xff").unwrap();
                self.write_frame(&garbage).await;
                let bogus = Frame::new(unused, Flags::TERMINAL, b"not cbor").unwrap();
                self.write_frame(&bogus).await;
                self.send(outside, Message::ExecExited(ExecExited { code: 9 }))
                    .await;
                self.stdout(id, b"ok\n").await;
                self.exit(id, 0).await;
            }
            "hangup" => return Flow::Close,
            "malformed" => {
                self.write.write_all(&[0, 0, 0, 1, 0]).await.unwrap();
                return Flow::Close;
            }
            _ => unreachable!("checked above"),
        }
        Flow::Continue
    }

    async fn fs(&mut self, id: u32, op: FsOp) {
        let response = match op {
            FsOp::Stat { path } => match self.entry(&path) {
                Some(entry) => FsResponse {
                    ok: true,
                    error: None,
                    data: Some(FsResponseData::Stat(entry)),
                },
                None => FsResponse::failed(NO_SUCH_FILE),
            },
            FsOp::List { path } => {
                if self.dirs.contains(&path) {
                    let children: Vec<String> = self
                        .dirs
                        .iter()
                        .chain(self.files.keys())
                        .filter(|child| *child != "/" && parent(child) == path)
                        .cloned()
                        .collect();
                    let entries = children
                        .iter()
                        .filter_map(|child| self.entry(child))
                        .collect();
                    FsResponse {
                        ok: true,
                        error: None,
                        data: Some(FsResponseData::List(entries)),
                    }
                } else {
                    FsResponse::failed(NO_SUCH_FILE)
                }
            }
            FsOp::Read { path } => match self.files.get(&path).cloned() {
                Some(data) => {
                    for chunk in data.chunks(FS_CHUNK_SIZE) {
                        self.send(id, Message::FsData(Data::from(chunk.to_vec())))
                            .await;
                    }
                    FsResponse::ok()
                }
                None => FsResponse::failed(NO_SUCH_FILE),
            },
            FsOp::Write { path, .. } => {
                if path.starts_with("/readonly/") {
                    FsResponse::failed("Read-only file system (os error 30)")
                } else if !self.dirs.contains(&parent(&path)) {
                    FsResponse::failed(NO_SUCH_FILE)
                } else {
                    self.open.insert(
                        id,
                        Open::Upload {
                            path,
                            data: Vec::new(),
                        },
                    );
                    return;
                }
            }
            FsOp::Mkdir { path } => {
                let mut dir = path;
                while dir != "/" {
                    let up = parent(&dir);
                    self.dirs.insert(dir);
                    dir = up;
                }
                FsResponse::ok()
            }
            FsOp::Remove { path } => match self.files.remove(&path) {
                Some(_) => FsResponse::ok(),
                None => FsResponse::failed(NO_SUCH_FILE),
            },
            FsOp::RemoveDir { path } => {
                if self.dirs.remove(&path) {
                    let prefix = format!("{path}/");
                    self.dirs.retain(|dir| !dir.starts_with(&prefix));
                    self.files.retain(|file, _| !file.starts_with(&prefix));
                    FsResponse::ok()
                } else {
                    FsResponse::failed(NO_SUCH_FILE)
                }
            }
            FsOp::Copy { src, dst } => match self.files.get(&src).cloned() {
                Some(data) if self.dirs.contains(&parent(&dst)) => {
                    self.files.insert(dst, data);
                    FsResponse::ok()
                }
                _ => FsResponse::failed(NO_SUCH_FILE),
            },
            FsOp::Rename { src, dst } => match self.files.remove(&src) {
                Some(data) => {
                    self.files.insert(dst, data);
                    FsResponse::ok()
                }
                None => FsResponse::failed(NO_SUCH_FILE),
            },
        };
        self.finish(id, Message::FsResponse(response)).await;
    }

    async fn upload(&mut self, id: u32, chunk: Vec<u8>) {
        let Some(Open::Upload { data, .. }) = self.open.get_mut(&id) else {
            return;
        };
        self.report.upload_chunks.push(chunk.len());
        if chunk.len() > FS_CHUNK_SIZE {
            let error = format!("chunk of {} bytes is over the limit", chunk.len());
            self.finish(id, Message::FsResponse(FsResponse::failed(error)))
                .await;
            return;
        }
        if !chunk.is_empty() {
            data.extend_from_slice(&chunk);
            return;
        }
        if let Some(Open::Upload { path, data }) = self.open.remove(&id) {
            self.files.insert(path, data);
        }
        self.finish(id, Message::FsResponse(FsResponse::ok())).await;
    }

    fn entry(&self, path: &str) -> Option<FsEntry> {
        let (kind, size) = if self.dirs.contains(path) {
            ("dir", 0)
        } else {
            ("file", self.files.get(path)?.len() as u64)
        };
        Some(FsEntry {
            path: path.to_owned(),
            kind: kind.to_owned(),
            size,
            mode: 0o644,
            modified: Some(1_700_000_000),
        })
    }

    async fn stdout(&mut self, id: u32, data: &[u8]) {
        self.send(id, Message::ExecStdout(Data::from(data.to_vec())))
            .await;
    }

    async fn stderr(&mut self, id: u32, data: &[u8]) {
        self.send(id, Message::ExecStderr(Data::from(data.to_vec())))
            .await;
    }

    async fn exit(&mut self, id: u32, code: i32) {
        self.finish(id, Message::ExecExited(ExecExited { code }))
            .await;
    }

    /// Sends a session's TERMINAL message and forgets the session.
    async fn finish(&mut self, id: u32, message: Message) {
        assert!(
            message
                .message_type()
                .default_flags()
                .contains(Flags::TERMINAL)
        );
        self.open.remove(&id);
        self.send(id, message).await;
    }

    async fn send(&mut self, id: u32, message: Message) {
        let frame = encode(self.encoding, id, &message);
        self.write_frame(&frame).await;
    }

    async fn write_frame(&mut self, frame: &Frame) {
        // The client may be gone (a test that dropped it early): not an error here.
        let _ = self.write.write_all(frame.as_wire()).await;
    }
}

fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_owned(),
        Some((up, _)) => up.to_owned(),
    }
}

/// Encodes a message the way the chosen peer would.
fn encode(encoding: Encoding, id: u32, message: &Message) -> Frame {
    if encoding == Encoding::Microsandbox
        && let Some(theirs) = microsandbox::encode(id, message)
    {
        return theirs;
    }
    message.to_frame(id).unwrap()
}

mod microsandbox {
    //! The agent's messages as microsandbox-protocol 0.4.3 encodes them.

    use super::*;
    use microsandbox_protocol::codec::encode_to_buf;
    use microsandbox_protocol::message::{Message as TheirMessage, MessageType as TheirType};
    use microsandbox_protocol::{core, exec};

    pub(super) fn encode(id: u32, message: &Message) -> Option<Frame> {
        let theirs = match message {
            Message::Ready(ready) => TheirMessage::with_payload(
                TheirType::Ready,
                id,
                &core::Ready {
                    boot_time_ns: ready.boot_time_ns,
                    init_time_ns: ready.init_time_ns,
                    ready_time_ns: ready.ready_time_ns,
                },
            ),
            Message::ExecStarted(started) => TheirMessage::with_payload(
                TheirType::ExecStarted,
                id,
                &exec::ExecStarted { pid: started.pid },
            ),
            Message::ExecStdout(data) => TheirMessage::with_payload(
                TheirType::ExecStdout,
                id,
                &exec::ExecStdout {
                    data: data.data.clone(),
                },
            ),
            Message::ExecStderr(data) => TheirMessage::with_payload(
                TheirType::ExecStderr,
                id,
                &exec::ExecStderr {
                    data: data.data.clone(),
                },
            ),
            Message::ExecExited(exited) => TheirMessage::with_payload(
                TheirType::ExecExited,
                id,
                &exec::ExecExited { code: exited.code },
            ),
            _ => return None,
        }
        .unwrap();
        let mut wire = Vec::new();
        encode_to_buf(&theirs, &mut wire).unwrap();
        Some(Frame::from_wire(Bytes::from(wire)).unwrap())
    }
}

/// The message type of a frame, for assertions.
pub(crate) fn message_type(frame: &Frame) -> MessageType {
    Message::from_frame(frame).unwrap().message_type()
}
