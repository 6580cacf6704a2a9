//! Type and payload mappings, ours <-> theirs, every field spelled out: a
//! field added on either side stops this file from compiling.

#![allow(
    clippy::unwrap_used,
    reason = "the helpers here run only inside tests: an unwrap failure is a test failure"
)]

use microsandbox_protocol::codec::{encode_to_buf, try_decode_from_buf};
use microsandbox_protocol::message::{Message as TheirMessage, MessageType as TheirType};
use microsandbox_protocol::{core as their_core, exec as their_exec, fs as their_fs};
use relay_codec::payload::{
    Data, ExecExited, ExecRequest, ExecResize, ExecRlimit, ExecSignal, ExecStarted, FsEntry, FsOp,
    FsRequest, FsResponse, FsResponseData, Ready,
};
use relay_codec::{Message, MessageType};

// ---------------------------------------------------------------------------
// Type and payload mappings, ours <-> theirs, every field spelled out.
// ---------------------------------------------------------------------------

pub(crate) fn their_type(t: MessageType) -> TheirType {
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

pub(crate) fn rlimit_to_theirs(r: &ExecRlimit) -> their_exec::ExecRlimit {
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

pub(crate) fn rlimit_from_theirs(r: their_exec::ExecRlimit) -> ExecRlimit {
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

pub(crate) fn exec_request_to_theirs(r: &ExecRequest) -> their_exec::ExecRequest {
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

pub(crate) fn exec_request_from_theirs(r: their_exec::ExecRequest) -> ExecRequest {
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

pub(crate) fn fs_op_to_theirs(op: &FsOp) -> their_fs::FsOp {
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

pub(crate) fn fs_op_from_theirs(op: their_fs::FsOp) -> FsOp {
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

pub(crate) fn entry_to_theirs(e: &FsEntry) -> their_fs::FsEntryInfo {
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

pub(crate) fn entry_from_theirs(e: their_fs::FsEntryInfo) -> FsEntry {
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

pub(crate) fn fs_response_to_theirs(r: &FsResponse) -> their_fs::FsResponse {
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

pub(crate) fn fs_response_from_theirs(r: their_fs::FsResponse) -> FsResponse {
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
pub(crate) fn their_encode(msg: &Message, id: u32) -> Vec<u8> {
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
pub(crate) struct TheirView {
    pub(crate) id: u32,
    pub(crate) flags: u8,
    pub(crate) version: u8,
    pub(crate) message: Message,
}

/// Decodes one frame with the reference crate's `Message::payload`.
pub(crate) fn their_view(msg: TheirMessage) -> TheirView {
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
pub(crate) fn their_decode(bytes: &[u8]) -> TheirView {
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
