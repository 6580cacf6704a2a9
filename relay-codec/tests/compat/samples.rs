//! One sample of every generation-1 message, with ids and flags.

use relay_codec::Message;
use relay_codec::payload::{
    Data, ExecExited, ExecRequest, ExecResize, ExecRlimit, ExecSignal, ExecStarted, FsEntry, FsOp,
    FsRequest, FsResponse, FsResponseData, Ready,
};

pub(crate) fn entry(path: &str, kind: &str, size: u64, modified: Option<i64>) -> FsEntry {
    FsEntry {
        path: path.into(),
        kind: kind.into(),
        size,
        mode: 0o755,
        modified,
    }
}

pub(crate) fn samples() -> Vec<(u32, Message)> {
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
