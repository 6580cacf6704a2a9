//! The fake agent's script: exec from a few canned commands, fs from
//! [`MemFs`], and a [`Report`] of what the client sent.
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

use std::collections::HashMap;

use bytes::Bytes;
use relay_codec::payload::{Data, ExecExited, ExecStarted, FsOp, FsResponse};
use relay_codec::{FS_CHUNK_SIZE, Flags, Frame, IdRange, Message, envelope_frame};
use relay_test_support::{Reply, Script};

use super::memfs::{FsOutcome, MemFs};
use super::{Encoding, Report, encode};

/// A session the agent keeps open between frames.
enum Open {
    Cat,
    Sleep,
    Upload { path: String, data: Vec<u8> },
}

/// The script of the fake agent (see the module docs).
pub(super) struct FakeAgent {
    ids: IdRange,
    encoding: Encoding,
    open: HashMap<u32, Open>,
    fs: MemFs,
    pub(super) report: Report,
    next_pid: u32,
    /// The replies to the frame being handled.
    out: Vec<Reply>,
}

impl Script for FakeAgent {
    fn on_frame(&mut self, frame: &Frame) -> Vec<Reply> {
        self.handle(frame);
        std::mem::take(&mut self.out)
    }
}

impl FakeAgent {
    /// An agent serving a client that owns `ids`.
    pub(super) fn new(ids: IdRange, encoding: Encoding) -> FakeAgent {
        FakeAgent {
            ids,
            encoding,
            open: HashMap::new(),
            fs: MemFs::new(),
            report: Report::default(),
            next_pid: 100,
            out: Vec::new(),
        }
    }

    fn handle(&mut self, frame: &Frame) {
        let id = frame.id();
        let flags = frame.flags();
        let Ok(message) = Message::from_frame(frame) else {
            self.report.undecodable += 1;
            return;
        };
        if let Message::Shutdown = message {
            self.report.shutdowns.push((id, flags));
            self.out.push(Reply::Close);
            return;
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
        let running = matches!(self.open.get(&id), Some(Open::Cat | Open::Sleep));
        match message {
            Message::ExecRequest(request) => self.exec(id, &request.cmd, &request.args),
            Message::ExecStdin(data) => match self.open.get(&id) {
                Some(Open::Cat) if data.data.is_empty() => self.exit(id, 0),
                Some(Open::Cat) => self.send(id, Message::ExecStdout(data)),
                _ => {}
            },
            Message::ExecSignal(signal) if running => self.exit(id, 128 + signal.signal),
            Message::ExecResize(size) if running => {
                let text = format!("resized {}x{}\n", size.rows, size.cols);
                self.stdout(id, text.as_bytes());
            }
            Message::FsRequest(request) => self.fs(id, request.op),
            Message::FsData(data) => self.upload(id, data.data),
            _ => {}
        }
    }

    fn exec(&mut self, id: u32, cmd: &str, args: &[String]) {
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
            self.stderr(id, format!("{cmd}: not found\n").as_bytes());
            self.exit(id, 127);
            return;
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        self.send(id, Message::ExecStarted(ExecStarted { pid }));
        match cmd {
            "echo" => {
                self.stdout(id, format!("{}\n", args.join(" ")).as_bytes());
                self.exit(id, 0);
            }
            "exit" => self.exit(id, args[0].parse().unwrap()),
            "split" => {
                self.stdout(id, args[0].as_bytes());
                self.stderr(id, args[1].as_bytes());
                self.exit(id, 3);
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
                    self.stdout(id, &vec![b'x'; size]);
                }
                self.exit(id, 0);
            }
            "stray" => self.stray(id),
            "hangup" => self.out.push(Reply::Close),
            "malformed" => {
                self.out
                    .push(Reply::Raw(Bytes::from_static(&[0, 0, 0, 1, 0])));
                self.out.push(Reply::Close);
            }
            _ => unreachable!("checked above"),
        }
    }

    /// Frames for ids that are not this session's, then its own output.
    fn stray(&mut self, id: u32) {
        let unused = (self.ids.first()..=self.ids.last())
            .rev()
            .find(|candidate| *candidate != id && !self.open.contains_key(candidate))
            .unwrap();
        let outside = self.ids.last().wrapping_add(1).max(1);
        for stray in [unused, outside] {
            self.stdout(stray, b"not yours");
        }
        let garbage = envelope_frame("core.exec.stdout", unused, Flags::NONE, b"\xff").unwrap();
        self.out.push(Reply::Frame(garbage));
        let bogus = Frame::new(unused, Flags::TERMINAL, b"not cbor").unwrap();
        self.out.push(Reply::Frame(bogus));
        self.send(outside, Message::ExecExited(ExecExited { code: 9 }));
        self.stdout(id, b"ok\n");
        self.exit(id, 0);
    }

    fn fs(&mut self, id: u32, op: FsOp) {
        match self.fs.apply(op) {
            FsOutcome::Done(response) => self.finish(id, Message::FsResponse(response)),
            FsOutcome::Download(data) => {
                for chunk in data.chunks(FS_CHUNK_SIZE) {
                    self.send(id, Message::FsData(Data::from(chunk.to_vec())));
                }
                self.finish(id, Message::FsResponse(FsResponse::ok()));
            }
            FsOutcome::Upload(path) => {
                let data = Vec::new();
                self.open.insert(id, Open::Upload { path, data });
            }
        }
    }

    fn upload(&mut self, id: u32, chunk: Vec<u8>) {
        let Some(Open::Upload { data, .. }) = self.open.get_mut(&id) else {
            return;
        };
        self.report.upload_chunks.push(chunk.len());
        if chunk.len() > FS_CHUNK_SIZE {
            let error = format!("chunk of {} bytes is over the limit", chunk.len());
            self.finish(id, Message::FsResponse(FsResponse::failed(error)));
            return;
        }
        if !chunk.is_empty() {
            data.extend_from_slice(&chunk);
            return;
        }
        if let Some(Open::Upload { path, data }) = self.open.remove(&id) {
            self.fs.store(path, data);
        }
        self.finish(id, Message::FsResponse(FsResponse::ok()));
    }

    fn stdout(&mut self, id: u32, data: &[u8]) {
        self.send(id, Message::ExecStdout(Data::from(data.to_vec())));
    }

    fn stderr(&mut self, id: u32, data: &[u8]) {
        self.send(id, Message::ExecStderr(Data::from(data.to_vec())));
    }

    fn exit(&mut self, id: u32, code: i32) {
        self.finish(id, Message::ExecExited(ExecExited { code }));
    }

    /// Sends a session's TERMINAL message and forgets the session.
    fn finish(&mut self, id: u32, message: Message) {
        assert!(
            message
                .message_type()
                .default_flags()
                .contains(Flags::TERMINAL)
        );
        self.open.remove(&id);
        self.send(id, message);
    }

    fn send(&mut self, id: u32, message: Message) {
        self.out
            .push(Reply::Frame(encode(self.encoding, id, &message)));
    }
}
