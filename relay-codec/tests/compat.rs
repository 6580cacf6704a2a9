//! Compatibility with the reference implementation, microsandbox-protocol
//! 0.4.3: for every generation-1 message type, its frames decode with ours
//! field for field, ours decode with it, and both encoders write the same
//! bytes. The handshake is read the way its 0.4.3 SDK reads it.
//!
//! The payload conversions below destructure every field of both sides, so a
//! field added on either side stops this file from compiling instead of being
//! silently left out of the comparison.
#![allow(
    clippy::unwrap_used,
    reason = "the helpers here run only inside tests: an unwrap failure is a test failure"
)]

mod support;

use bytes::BytesMut;
use microsandbox_protocol::codec::{encode_to_buf, read_message, try_decode_from_buf};
use microsandbox_protocol::message::{
    Message as TheirMessage, MessageType as TheirType, PROTOCOL_VERSION as THEIR_VERSION,
};
use microsandbox_protocol::{core as their_core, exec as their_exec, fs as their_fs};
use proptest::prelude::*;
use relay_codec::payload::{
    Data, ExecExited, ExecRequest, ExecResize, ExecRlimit, ExecSignal, ExecStarted, FsEntry, FsOp,
    FsRequest, FsResponse, FsResponseData, Ready,
};
use relay_codec::{
    Flags, Frame, Handshake, LEGACY_SLOTS, MAX_FRAME_SIZE, Message, MessageType, PROTOCOL_VERSION,
    bounds_slot_range, legacy_slot_range, split_frames,
};
use tokio::io::AsyncReadExt;

// ---------------------------------------------------------------------------
// Type and payload mappings, ours <-> theirs, every field spelled out.
// ---------------------------------------------------------------------------

fn their_type(t: MessageType) -> TheirType {
    match t {
        MessageType::Ready => TheirType::Ready,
        MessageType::Shutdown => TheirType::Shutdown,
        MessageType::ExecRequest => TheirType::ExecRequest,
        MessageType::ExecStarted => TheirType::ExecStarted,
        MessageType::ExecStdin => TheirType::ExecStdin,
        MessageType::ExecStdout => TheirType::ExecStdout,
        MessageType::ExecStderr => TheirType::ExecStderr,
        MessageType::ExecExited => TheirType::ExecExited,
        MessageType::ExecResize => TheirType::ExecResize,
        MessageType::ExecSignal => TheirType::ExecSignal,
        MessageType::FsRequest => TheirType::FsRequest,
        MessageType::FsData => TheirType::FsData,
        MessageType::FsResponse => TheirType::FsResponse,
        MessageType::FlowAccept | MessageType::FlowCredit => {
            unreachable!("flow control is our extension; 0.4.3 lacks it")
        }
    }
}

fn rlimit_to_theirs(r: &ExecRlimit) -> their_exec::ExecRlimit {
    let ExecRlimit {
        resource,
        soft,
        hard,
    } = r.clone();
    their_exec::ExecRlimit {
        resource,
        soft,
        hard,
    }
}

fn rlimit_from_theirs(r: their_exec::ExecRlimit) -> ExecRlimit {
    let their_exec::ExecRlimit {
        resource,
        soft,
        hard,
    } = r;
    ExecRlimit {
        resource,
        soft,
        hard,
    }
}

fn exec_request_to_theirs(r: &ExecRequest) -> their_exec::ExecRequest {
    let ExecRequest {
        cmd,
        args,
        env,
        cwd,
        user,
        tty,
        rows,
        cols,
        rlimits,
    } = r.clone();
    their_exec::ExecRequest {
        cmd,
        args,
        env,
        cwd,
        user,
        tty,
        rows,
        cols,
        rlimits: rlimits.iter().map(rlimit_to_theirs).collect(),
    }
}

fn exec_request_from_theirs(r: their_exec::ExecRequest) -> ExecRequest {
    let their_exec::ExecRequest {
        cmd,
        args,
        env,
        cwd,
        user,
        tty,
        rows,
        cols,
        rlimits,
    } = r;
    ExecRequest {
        cmd,
        args,
        env,
        cwd,
        user,
        tty,
        rows,
        cols,
        rlimits: rlimits.into_iter().map(rlimit_from_theirs).collect(),
    }
}

fn fs_op_to_theirs(op: &FsOp) -> their_fs::FsOp {
    match op.clone() {
        FsOp::Stat { path } => their_fs::FsOp::Stat { path },
        FsOp::List { path } => their_fs::FsOp::List { path },
        FsOp::Read { path } => their_fs::FsOp::Read { path },
        FsOp::Write { path, mode } => their_fs::FsOp::Write { path, mode },
        FsOp::Mkdir { path } => their_fs::FsOp::Mkdir { path },
        FsOp::Remove { path } => their_fs::FsOp::Remove { path },
        FsOp::RemoveDir { path } => their_fs::FsOp::RemoveDir { path },
        FsOp::Copy { src, dst } => their_fs::FsOp::Copy { src, dst },
        FsOp::Rename { src, dst } => their_fs::FsOp::Rename { src, dst },
    }
}

fn fs_op_from_theirs(op: their_fs::FsOp) -> FsOp {
    match op {
        their_fs::FsOp::Stat { path } => FsOp::Stat { path },
        their_fs::FsOp::List { path } => FsOp::List { path },
        their_fs::FsOp::Read { path } => FsOp::Read { path },
        their_fs::FsOp::Write { path, mode } => FsOp::Write { path, mode },
        their_fs::FsOp::Mkdir { path } => FsOp::Mkdir { path },
        their_fs::FsOp::Remove { path } => FsOp::Remove { path },
        their_fs::FsOp::RemoveDir { path } => FsOp::RemoveDir { path },
        their_fs::FsOp::Copy { src, dst } => FsOp::Copy { src, dst },
        their_fs::FsOp::Rename { src, dst } => FsOp::Rename { src, dst },
    }
}

fn entry_to_theirs(e: &FsEntry) -> their_fs::FsEntryInfo {
    let FsEntry {
        path,
        kind,
        size,
        mode,
        modified,
    } = e.clone();
    their_fs::FsEntryInfo {
        path,
        kind,
        size,
        mode,
        modified,
    }
}

fn entry_from_theirs(e: their_fs::FsEntryInfo) -> FsEntry {
    let their_fs::FsEntryInfo {
        path,
        kind,
        size,
        mode,
        modified,
    } = e;
    FsEntry {
        path,
        kind,
        size,
        mode,
        modified,
    }
}

fn fs_response_to_theirs(r: &FsResponse) -> their_fs::FsResponse {
    let FsResponse { ok, error, data } = r.clone();
    their_fs::FsResponse {
        ok,
        error,
        data: data.map(|d| match d {
            FsResponseData::Stat(e) => their_fs::FsResponseData::Stat(entry_to_theirs(&e)),
            FsResponseData::List(es) => {
                their_fs::FsResponseData::List(es.iter().map(entry_to_theirs).collect())
            }
        }),
    }
}

fn fs_response_from_theirs(r: their_fs::FsResponse) -> FsResponse {
    let their_fs::FsResponse { ok, error, data } = r;
    FsResponse {
        ok,
        error,
        data: data.map(|d| match d {
            their_fs::FsResponseData::Stat(e) => FsResponseData::Stat(entry_from_theirs(e)),
            their_fs::FsResponseData::List(es) => {
                FsResponseData::List(es.into_iter().map(entry_from_theirs).collect())
            }
        }),
    }
}

/// Encodes `msg` with id `id` using the reference crate only.
fn their_encode(msg: &Message, id: u32) -> Vec<u8> {
    let t = their_type(msg.message_type());
    let theirs = match msg {
        Message::Ready(Ready {
            boot_time_ns,
            init_time_ns,
            ready_time_ns,
            flow: _,
        }) => TheirMessage::with_payload(
            t,
            id,
            &their_core::Ready {
                boot_time_ns: *boot_time_ns,
                init_time_ns: *init_time_ns,
                ready_time_ns: *ready_time_ns,
            },
        ),
        // The 0.4.3 host sends shutdown with an empty payload.
        Message::Shutdown => Ok(TheirMessage::new(t, id, Vec::new())),
        Message::ExecRequest(r) => TheirMessage::with_payload(t, id, &exec_request_to_theirs(r)),
        Message::ExecStarted(ExecStarted { pid }) => {
            TheirMessage::with_payload(t, id, &their_exec::ExecStarted { pid: *pid })
        }
        Message::ExecStdin(Data { data }) => {
            TheirMessage::with_payload(t, id, &their_exec::ExecStdin { data: data.clone() })
        }
        Message::ExecStdout(Data { data }) => {
            TheirMessage::with_payload(t, id, &their_exec::ExecStdout { data: data.clone() })
        }
        Message::ExecStderr(Data { data }) => {
            TheirMessage::with_payload(t, id, &their_exec::ExecStderr { data: data.clone() })
        }
        Message::ExecExited(ExecExited { code }) => {
            TheirMessage::with_payload(t, id, &their_exec::ExecExited { code: *code })
        }
        Message::ExecResize(ExecResize { rows, cols }) => TheirMessage::with_payload(
            t,
            id,
            &their_exec::ExecResize {
                rows: *rows,
                cols: *cols,
            },
        ),
        Message::ExecSignal(ExecSignal { signal }) => {
            TheirMessage::with_payload(t, id, &their_exec::ExecSignal { signal: *signal })
        }
        Message::FsRequest(FsRequest { op }) => TheirMessage::with_payload(
            t,
            id,
            &their_fs::FsRequest {
                op: fs_op_to_theirs(op),
            },
        ),
        Message::FsData(Data { data }) => {
            TheirMessage::with_payload(t, id, &their_fs::FsData { data: data.clone() })
        }
        Message::FsResponse(r) => TheirMessage::with_payload(t, id, &fs_response_to_theirs(r)),
        Message::FlowAccept(_) | Message::FlowCredit(_) => {
            unreachable!("flow control is our extension; 0.4.3 lacks it")
        }
    }
    .unwrap();
    let mut buf = Vec::new();
    encode_to_buf(&theirs, &mut buf).unwrap();
    buf
}

/// What the reference decoder reports for one frame: id, flags, version,
/// type, and the payload converted field by field into our types.
#[derive(Debug, PartialEq)]
struct TheirView {
    id: u32,
    flags: u8,
    version: u8,
    message: Message,
}

/// Decodes one frame with the reference crate's `Message::payload`.
fn their_view(msg: TheirMessage) -> TheirView {
    let message = match msg.t {
        TheirType::Ready => {
            let their_core::Ready {
                boot_time_ns,
                init_time_ns,
                ready_time_ns,
            } = msg.payload().unwrap();
            Message::Ready(Ready {
                boot_time_ns,
                init_time_ns,
                ready_time_ns,
                flow: None,
            })
        }
        TheirType::Shutdown => {
            assert!(msg.p.is_empty(), "shutdown carries an empty payload");
            Message::Shutdown
        }
        TheirType::ExecRequest => {
            Message::ExecRequest(exec_request_from_theirs(msg.payload().unwrap()))
        }
        TheirType::ExecStarted => {
            let their_exec::ExecStarted { pid } = msg.payload().unwrap();
            Message::ExecStarted(ExecStarted { pid })
        }
        TheirType::ExecStdin => {
            let their_exec::ExecStdin { data } = msg.payload().unwrap();
            Message::ExecStdin(Data { data })
        }
        TheirType::ExecStdout => {
            let their_exec::ExecStdout { data } = msg.payload().unwrap();
            Message::ExecStdout(Data { data })
        }
        TheirType::ExecStderr => {
            let their_exec::ExecStderr { data } = msg.payload().unwrap();
            Message::ExecStderr(Data { data })
        }
        TheirType::ExecExited => {
            let their_exec::ExecExited { code } = msg.payload().unwrap();
            Message::ExecExited(ExecExited { code })
        }
        TheirType::ExecResize => {
            let their_exec::ExecResize { rows, cols } = msg.payload().unwrap();
            Message::ExecResize(ExecResize { rows, cols })
        }
        TheirType::ExecSignal => {
            let their_exec::ExecSignal { signal } = msg.payload().unwrap();
            Message::ExecSignal(ExecSignal { signal })
        }
        TheirType::FsRequest => {
            let their_fs::FsRequest { op } = msg.payload().unwrap();
            Message::FsRequest(FsRequest {
                op: fs_op_from_theirs(op),
            })
        }
        TheirType::FsData => {
            let their_fs::FsData { data } = msg.payload().unwrap();
            Message::FsData(Data { data })
        }
        TheirType::FsResponse => {
            Message::FsResponse(fs_response_from_theirs(msg.payload().unwrap()))
        }
    };
    TheirView {
        id: msg.id,
        flags: msg.flags,
        version: msg.v,
        message,
    }
}

/// Decodes a buffer holding exactly one frame with `try_decode_from_buf`.
fn their_decode(bytes: &[u8]) -> TheirView {
    let mut buf = bytes.to_vec();
    let msg = try_decode_from_buf(&mut buf)
        .unwrap()
        .expect("a whole frame");
    assert!(
        buf.is_empty(),
        "the reference decoder left {} bytes",
        buf.len()
    );
    their_view(msg)
}

// ---------------------------------------------------------------------------
// Samples: every message type with non-trivial payloads, every FsOp, and
// fs responses with stat data, list data and an error.
// ---------------------------------------------------------------------------

fn entry(path: &str, kind: &str, size: u64, modified: Option<i64>) -> FsEntry {
    FsEntry {
        path: path.into(),
        kind: kind.into(),
        size,
        mode: 0o755,
        modified,
    }
}

fn samples() -> Vec<(u32, Message)> {
    let mut samples = vec![
        (
            0,
            Message::Ready(Ready {
                boot_time_ns: 812_345_678,
                init_time_ns: 23_456,
                ready_time_ns: 9_876_543_210,
                flow: None,
            }),
        ),
        (0, Message::Shutdown),
        (
            268_435_456,
            Message::ExecRequest(ExecRequest {
                cmd: "/usr/bin/env".into(),
                args: vec!["-i".into(), "sh".into(), "-c".into(), "echo ü".into()],
                env: vec![
                    "PATH=/usr/bin:/bin".into(),
                    "LANG=C.UTF-8".into(),
                    "EMPTY=".into(),
                ],
                cwd: Some("/home/sandbox".into()),
                user: Some("1000".into()),
                tty: true,
                rows: 50,
                cols: 132,
                rlimits: vec![
                    ExecRlimit {
                        resource: "nofile".into(),
                        soft: 1024,
                        hard: 65_536,
                    },
                    ExecRlimit {
                        resource: "as".into(),
                        soft: u64::MAX,
                        hard: u64::MAX,
                    },
                ],
            }),
        ),
        (
            2,
            Message::ExecRequest(ExecRequest::new("true", Vec::<String>::new())),
        ),
        (3, Message::ExecStarted(ExecStarted { pid: 4_000_000 })),
        (
            3,
            Message::ExecStdin(Data::from(b"line one\nline two\n".to_vec())),
        ),
        (3, Message::ExecStdin(Data::from(Vec::new()))),
        (
            3,
            Message::ExecStdout(Data::from((0..=255).collect::<Vec<u8>>())),
        ),
        (3, Message::ExecStderr(Data::from(vec![0xff; 70_000]))),
        (3, Message::ExecExited(ExecExited { code: -137 })),
        (
            3,
            Message::ExecResize(ExecResize {
                rows: 0,
                cols: u16::MAX,
            }),
        ),
        (3, Message::ExecSignal(ExecSignal { signal: 15 })),
        (4, Message::FsData(Data::from(vec![7; 300]))),
        (
            4,
            Message::FsResponse(FsResponse {
                ok: true,
                error: None,
                data: Some(FsResponseData::Stat(entry(
                    "/etc/hosts",
                    "file",
                    220,
                    Some(1_700_000_000),
                ))),
            }),
        ),
        (
            5,
            Message::FsResponse(FsResponse {
                ok: true,
                error: None,
                data: Some(FsResponseData::List(vec![
                    entry("/srv/a", "dir", 4096, Some(0)),
                    entry("/srv/b", "symlink", 7, None),
                    entry("/srv/c", "other", 0, Some(-86_400)),
                ])),
            }),
        ),
        (
            6,
            Message::FsResponse(FsResponse::failed("No such file or directory (os error 2)")),
        ),
        (u32::MAX, Message::FsResponse(FsResponse::ok())),
    ];
    let ops = [
        FsOp::Stat {
            path: "/etc".into(),
        },
        FsOp::List {
            path: "/srv".into(),
        },
        FsOp::Read {
            path: "/etc/hosts".into(),
        },
        FsOp::Write {
            path: "/tmp/new".into(),
            mode: Some(0o600),
        },
        FsOp::Write {
            path: "/tmp/default".into(),
            mode: None,
        },
        FsOp::Mkdir {
            path: "/tmp/a/b/c".into(),
        },
        FsOp::Remove {
            path: "/tmp/new".into(),
        },
        FsOp::RemoveDir {
            path: "/tmp/a".into(),
        },
        FsOp::Copy {
            src: "/etc/hosts".into(),
            dst: "/tmp/hosts".into(),
        },
        FsOp::Rename {
            src: "/tmp/hosts".into(),
            dst: "/tmp/hosts.bak".into(),
        },
    ];
    samples.extend(
        ops.into_iter()
            .zip(10..)
            .map(|(op, id)| (id, Message::FsRequest(FsRequest { op }))),
    );
    samples
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn the_samples_cover_every_message_type() {
    let samples = samples();
    for t in MessageType::ALL {
        assert!(
            samples.iter().any(|(_, m)| m.message_type() == t),
            "no sample of {t}"
        );
    }
}

#[test]
fn every_message_type_has_the_reference_wire_name_flags_and_version() {
    assert_eq!(PROTOCOL_VERSION, THEIR_VERSION);
    assert_eq!(
        MAX_FRAME_SIZE,
        microsandbox_protocol::codec::MAX_FRAME_SIZE as usize
    );
    assert_eq!(
        relay_codec::FRAME_HEADER_SIZE,
        microsandbox_protocol::message::FRAME_HEADER_SIZE
    );
    assert_eq!(relay_codec::FS_CHUNK_SIZE, their_fs::FS_CHUNK_SIZE);
    for t in MessageType::ALL {
        let theirs = their_type(t);
        assert_eq!(t.wire_name(), theirs.as_str());
        assert_eq!(t.default_flags().bits(), theirs.flags(), "{t}");
    }
    assert_eq!(
        Flags::TERMINAL.bits(),
        microsandbox_protocol::message::FLAG_TERMINAL
    );
    assert_eq!(
        Flags::SESSION_START.bits(),
        microsandbox_protocol::message::FLAG_SESSION_START
    );
    assert_eq!(
        Flags::SHUTDOWN.bits(),
        microsandbox_protocol::message::FLAG_SHUTDOWN
    );
}

#[test]
fn reference_frames_decode_with_ours_field_for_field() {
    for (id, msg) in samples() {
        let bytes = their_encode(&msg, id);
        let frames = split_frames(&bytes).unwrap();
        assert_eq!(frames.len(), 1);
        let frame = &frames[0];
        assert_eq!(frame.id(), id);
        assert_eq!(frame.flags(), msg.message_type().default_flags());
        assert_eq!(Message::from_frame(frame).unwrap(), msg);
    }
}

#[test]
fn our_frames_decode_with_the_reference_field_for_field() {
    for (id, msg) in samples() {
        let frame = msg.to_frame(id).unwrap();
        let view = their_decode(frame.as_wire());
        assert_eq!(
            view,
            TheirView {
                id,
                flags: msg.message_type().default_flags().bits(),
                version: 1,
                message: msg,
            }
        );
    }
}

#[test]
fn both_encoders_write_identical_bytes_for_every_sample() {
    for (id, msg) in samples() {
        let ours = msg.to_frame(id).unwrap();
        assert_eq!(
            ours.as_wire(),
            &their_encode(&msg, id)[..],
            "{}",
            msg.message_type()
        );
    }
}

#[test]
fn a_stream_of_our_frames_reads_with_the_reference_read_message() {
    let samples = samples();
    let mut stream = Vec::new();
    for (id, msg) in &samples {
        stream.extend_from_slice(msg.to_frame(*id).unwrap().as_wire());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut reader = &stream[..];
        for (id, msg) in samples {
            let view = their_view(read_message(&mut reader).await.unwrap());
            assert_eq!(view.id, id);
            assert_eq!(view.message, msg);
        }
        assert!(reader.is_empty());
    });
}

fn sample_ready() -> (their_core::Ready, Frame) {
    let ready = Ready {
        boot_time_ns: 41_000_000,
        init_time_ns: 3_000_000,
        ready_time_ns: 97_000_000,
        flow: None,
    };
    let frame = Message::Ready(ready).to_frame(0).unwrap();
    let theirs = their_core::Ready {
        boot_time_ns: 41_000_000,
        init_time_ns: 3_000_000,
        ready_time_ns: 97_000_000,
    };
    (theirs, frame)
}

#[tokio::test]
async fn a_legacy_handshake_reads_as_the_reference_sdk_reads_it() {
    let (their_ready, ready) = sample_ready();
    for slot in 0..LEGACY_SLOTS {
        let offset = legacy_slot_range(slot).first();
        let mut greeting = BytesMut::new();
        Handshake::Legacy { offset }.encode(&ready, &mut greeting);
        // A 0.4.3 client: a big-endian u32 offset, then `read_message`.
        let mut reader = &greeting[..];
        assert_eq!(reader.read_u32().await.unwrap(), offset);
        let msg = read_message(&mut reader).await.unwrap();
        assert!(reader.is_empty());
        assert_eq!(msg.t, TheirType::Ready);
        assert_eq!(msg.id, 0);
        assert_eq!(msg.flags, 0);
        let got: their_core::Ready = msg.payload().unwrap();
        assert_eq!(got.boot_time_ns, their_ready.boot_time_ns);
        assert_eq!(got.init_time_ns, their_ready.init_time_ns);
        assert_eq!(got.ready_time_ns, their_ready.ready_time_ns);
    }
}

#[tokio::test]
async fn a_ready_frame_from_a_reference_agent_is_relayed_unchanged() {
    let (_, ours) = sample_ready();
    let Ok(Message::Ready(ready)) = Message::from_frame(&ours) else {
        panic!("the sample is a ready frame");
    };
    // The agent (0.4.3) encodes the ready frame; the relay caches it as a
    // raw frame and greets a client with it; a 0.4.3 client reads it.
    let from_agent = their_encode(&Message::Ready(ready.clone()), 0);
    let cached = split_frames(&from_agent).unwrap().remove(0);
    assert_eq!(cached.as_wire(), &from_agent[..]);
    let mut greeting = BytesMut::new();
    Handshake::Legacy {
        offset: legacy_slot_range(3).first(),
    }
    .encode(&cached, &mut greeting);
    assert_eq!(&greeting[4..], &from_agent[..]);
    let view = their_view(read_message(&mut &greeting[4..]).await.unwrap());
    assert_eq!(view.message, Message::Ready(ready));
}

/// The rule of relay-codec's handshake docs, applied to the first eight
/// bytes: legacy when the second word is a legal frame length and the first
/// is 0 or at least that large; otherwise bounds (second word > first).
fn looks_legacy(greeting: &[u8]) -> bool {
    let first = u32::from_be_bytes(greeting[..4].try_into().unwrap());
    let second = u32::from_be_bytes(greeting[4..8].try_into().unwrap());
    let frame_len = 5..=MAX_FRAME_SIZE as u32;
    frame_len.contains(&second) && (first == 0 || first >= second)
}

#[test]
fn the_bounds_form_is_told_apart_from_the_legacy_form_by_the_documented_rule() {
    let (_, small) = sample_ready();
    let large = Message::Ready(Ready {
        boot_time_ns: u64::MAX,
        init_time_ns: u64::MAX,
        ready_time_ns: u64::MAX,
        flow: None,
    })
    .to_frame(0)
    .unwrap();
    for ready in [&small, &large] {
        for slot in 0..LEGACY_SLOTS {
            let handshake = Handshake::Legacy {
                offset: legacy_slot_range(slot).first(),
            };
            let mut greeting = BytesMut::new();
            handshake.encode(ready, &mut greeting);
            assert!(looks_legacy(&greeting), "legacy slot {slot}");
            let (decoded, frame, _) = Handshake::decode(&greeting).unwrap().unwrap();
            assert_eq!(decoded, handshake);
            assert_eq!(&frame, ready);
        }
        for slots in [1u32, 2, 16, 128, 1024, 65_536] {
            for slot in [0, slots / 2, slots - 1] {
                let range = bounds_slot_range(slot, slots).unwrap();
                let handshake = Handshake::Bounds { range };
                let mut greeting = BytesMut::new();
                handshake.encode(ready, &mut greeting);
                assert!(!looks_legacy(&greeting), "bounds slot {slot} of {slots}");
                let start = u32::from_be_bytes(greeting[..4].try_into().unwrap());
                let end = u32::from_be_bytes(greeting[4..8].try_into().unwrap());
                assert!(end > start);
                assert_eq!((start, end - 1), (range.first(), range.last()));
                let (decoded, frame, _) = Handshake::decode(&greeting).unwrap().unwrap();
                assert_eq!(decoded, handshake);
                assert_eq!(&frame, ready);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn both_encoders_agree_byte_for_byte_on_any_message(
        msg in support::message(),
        id in any::<u32>(),
    ) {
        let ours = msg.to_frame(id).unwrap();
        let theirs = their_encode(&msg, id);
        prop_assert_eq!(ours.as_wire(), &theirs[..]);

        let view = their_decode(ours.as_wire());
        prop_assert_eq!(view.id, id);
        prop_assert_eq!(view.flags, ours.flags().bits());
        prop_assert_eq!(view.message, msg.clone());

        let frame = split_frames(&theirs).unwrap().remove(0);
        prop_assert_eq!(Message::from_frame(&frame).unwrap(), msg);
    }
}

#[test]
fn a_ready_with_a_flow_offer_still_decodes_with_the_reference_crate() {
    let ready = Ready {
        boot_time_ns: 41_000_000,
        init_time_ns: 3_000_000,
        ready_time_ns: 97_000_000,
        flow: Some(relay_codec::payload::FlowWindow { window: 1 << 20 }),
    };
    let frame = Message::Ready(ready.clone()).to_frame(0).unwrap();
    let mut buf = frame.as_wire().to_vec();
    let theirs = microsandbox_protocol::codec::try_decode_from_buf(&mut buf)
        .unwrap()
        .unwrap();
    let payload: their_core::Ready = theirs.payload().unwrap();
    assert_eq!(payload.boot_time_ns, ready.boot_time_ns);
    assert_eq!(payload.init_time_ns, ready.init_time_ns);
    assert_eq!(payload.ready_time_ns, ready.ready_time_ns);
    assert_eq!(Message::from_frame(&frame).unwrap(), Message::Ready(ready));
}

#[test]
fn a_ready_without_a_flow_offer_is_byte_identical_to_the_reference() {
    let (theirs, ours) = sample_ready();
    let mut buf = Vec::new();
    microsandbox_protocol::codec::encode_to_buf(
        &TheirMessage::with_payload(TheirType::Ready, 0, &theirs).unwrap(),
        &mut buf,
    )
    .unwrap();
    assert_eq!(ours.as_wire(), &buf[..]);
}
