//! Shared proptest strategies for the integration tests: raw frames, ways to
//! split a byte stream, and arbitrary generation-1 messages.
// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use relay_codec::payload::{
    Data, ExecExited, ExecRequest, ExecResize, ExecRlimit, ExecSignal, ExecStarted, FsEntry, FsOp,
    FsRequest, FsResponse, FsResponseData, Ready,
};
use relay_codec::{Flags, Frame, Message};

/// Bytes of a frame body: mostly small, occasionally large.
pub(crate) fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        20 => vec(any::<u8>(), 0..2000),
        1 => vec(any::<u8>(), 2000..200_000),
    ]
}

/// A raw frame with any id, any flags byte (reserved bits included) and any body.
pub(crate) fn frame() -> impl Strategy<Value = Frame> {
    (any::<u32>(), any::<u8>(), body()).prop_map(|(id, flags, body)| {
        Frame::new(id, Flags::from_bits(flags), &body).expect("bodies stay below the maximum")
    })
}

/// The concatenated wire images of `frames`.
pub(crate) fn concat(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.as_wire().to_vec()).collect()
}

/// How to cut a byte stream into chunks.
#[derive(Debug, Clone)]
pub(crate) enum Split {
    /// Cut at these positions (scaled to the stream); repeated positions give
    /// empty chunks, which a reader must tolerate too.
    Cuts(Vec<Index>),
    /// Chunks of these sizes, cycled until the stream is used up. Streams
    /// longer than 64 KiB use the sizes in KiB, to keep the case count fast.
    Sizes(Vec<usize>),
}

/// Any way to split a stream: a few random cuts, or many small pieces
/// (which land inside length prefixes and headers).
pub(crate) fn split() -> impl Strategy<Value = Split> {
    prop_oneof![
        vec(any::<Index>(), 0..24).prop_map(Split::Cuts),
        vec(1usize..12, 1..8).prop_map(Split::Sizes),
    ]
}

impl Split {
    /// Cuts `bytes` into chunks whose concatenation is `bytes`.
    pub(crate) fn apply<'a>(&self, bytes: &'a [u8]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        match self {
            Split::Cuts(cuts) => {
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
                at.sort_unstable();
                let mut start = 0;
                for cut in at {
                    chunks.push(&bytes[start..cut]);
                    start = cut;
                }
                chunks.push(&bytes[start..]);
            }
            Split::Sizes(sizes) => {
                let scale = if bytes.len() > 64 * 1024 { 1024 } else { 1 };
                let mut rest = bytes;
                for size in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (chunk, tail) = rest.split_at((size * scale).min(rest.len()));
                    chunks.push(chunk);
                    rest = tail;
                }
            }
        }
        chunks
    }
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        12 => vec(any::<u8>(), 0..512),
        1 => vec(any::<u8>(), 512..70_000),
    ]
    .prop_map(Data::from)
}

fn ready() -> impl Strategy<Value = Ready> {
    any::<(u64, u64, u64)>().prop_map(|(boot_time_ns, init_time_ns, ready_time_ns)| Ready {
        boot_time_ns,
        init_time_ns,
        ready_time_ns,
        flow: None,
    })
}

fn rlimit() -> impl Strategy<Value = ExecRlimit> {
    (
        prop_oneof![
            Just("nofile".to_owned()),
            Just("nproc".to_owned()),
            Just("as".to_owned()),
            text()
        ],
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(resource, soft, hard)| ExecRlimit {
            resource,
            soft,
            hard,
        })
}

fn exec_request() -> impl Strategy<Value = ExecRequest> {
    (
        text(),
        vec(text(), 0..4),
        vec("[A-Z_]{1,8}=\\PC{0,12}", 0..4),
        option::of(text()),
        option::of(text()),
        any::<bool>(),
        any::<u16>(),
        any::<u16>(),
        vec(rlimit(), 0..3),
    )
        .prop_map(
            |(cmd, args, env, cwd, user, tty, rows, cols, rlimits)| ExecRequest {
                cmd,
                args,
                env,
                cwd,
                user,
                tty,
                rows,
                cols,
                rlimits,
            },
        )
}

/// Every variant of [`FsOp`].
pub(crate) fn fs_op() -> impl Strategy<Value = FsOp> {
    prop_oneof![
        text().prop_map(|path| FsOp::Stat { path }),
        text().prop_map(|path| FsOp::List { path }),
        text().prop_map(|path| FsOp::Read { path }),
        (text(), option::of(any::<u32>())).prop_map(|(path, mode)| FsOp::Write { path, mode }),
        text().prop_map(|path| FsOp::Mkdir { path }),
        text().prop_map(|path| FsOp::Remove { path }),
        text().prop_map(|path| FsOp::RemoveDir { path }),
        (text(), text()).prop_map(|(src, dst)| FsOp::Copy { src, dst }),
        (text(), text()).prop_map(|(src, dst)| FsOp::Rename { src, dst }),
    ]
}

fn fs_entry() -> impl Strategy<Value = FsEntry> {
    (
        text(),
        prop_oneof![
            Just("file".to_owned()),
            Just("dir".to_owned()),
            Just("symlink".to_owned()),
            Just("other".to_owned()),
        ],
        any::<u64>(),
        any::<u32>(),
        option::of(any::<i64>()),
    )
        .prop_map(|(path, kind, size, mode, modified)| FsEntry {
            path,
            kind,
            size,
            mode,
            modified,
        })
}

fn fs_response() -> impl Strategy<Value = FsResponse> {
    let data = prop_oneof![
        fs_entry().prop_map(FsResponseData::Stat),
        vec(fs_entry(), 0..4).prop_map(FsResponseData::List),
    ];
    (any::<bool>(), option::of(text()), option::of(data)).prop_map(|(ok, error, data)| FsResponse {
        ok,
        error,
        data,
    })
}

/// Any generation-1 message, every variant and every payload field.
pub(crate) fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ready().prop_map(Message::Ready),
        Just(Message::Shutdown),
        exec_request().prop_map(Message::ExecRequest),
        any::<u32>().prop_map(|pid| Message::ExecStarted(ExecStarted { pid })),
        data().prop_map(Message::ExecStdin),
        data().prop_map(Message::ExecStdout),
        data().prop_map(Message::ExecStderr),
        any::<i32>().prop_map(|code| Message::ExecExited(ExecExited { code })),
        any::<(u16, u16)>().prop_map(|(rows, cols)| Message::ExecResize(ExecResize { rows, cols })),
        any::<i32>().prop_map(|signal| Message::ExecSignal(ExecSignal { signal })),
        fs_op().prop_map(|op| Message::FsRequest(FsRequest { op })),
        data().prop_map(Message::FsData),
        fs_response().prop_map(Message::FsResponse),
    ]
}
