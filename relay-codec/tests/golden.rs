//! Golden wire bytes: a few frames frozen as literal hex, so a change of the
//! wire format cannot slip in unnoticed.
//!
//! These bytes were derived once from the encoder and checked by hand against
//! the layout in SPEC section 2 (`[len][id][flags]` then the CBOR map
//! `{"v": 1, "t": name, "p": h'payload'}`, shortest-form heads, payload fields
//! in declaration order, `FsOp` externally tagged). They are also what
//! microsandbox-protocol 0.4.3 writes (see `compat.rs`). Re-bless them only on
//! purpose, for a deliberate format change, never to make this test pass.

use relay_codec::payload::{
    Data, ExecExited, ExecRequest, ExecRlimit, FsEntry, FsOp, FsRequest, FsResponse,
    FsResponseData, Ready,
};
use relay_codec::{Flags, Frame, Message, split_frames};

/// One frozen frame: what it holds and its exact bytes.
struct Golden {
    id: u32,
    flags: Flags,
    message: Message,
    hex: &'static str,
}

fn goldens() -> Vec<Golden> {
    vec![
        // len 84, id 0, flags 0; payload uses u32, u16 and u64 integer heads.
        Golden {
            id: 0,
            flags: Flags::NONE,
            message: Message::Ready(Ready {
                boot_time_ns: 123_456_789,
                init_time_ns: 5_000,
                ready_time_ns: 5_000_000_000,
                flow: None,
            }),
            hex: "00000054 00000000 00 \
                  a3 6176 01 6174 6a636f72652e7265616479 6170 583a \
                  a3 6c626f6f745f74696d655f6e73 1a075bcd15 \
                  6c696e69745f74696d655f6e73 191388 \
                  6d72656164795f74696d655f6e73 1b000000012a05f200",
        },
        // len 137, id 1, SESSION_START; nine fields in order, user is null.
        Golden {
            id: 1,
            flags: Flags::SESSION_START,
            message: Message::ExecRequest(ExecRequest {
                cmd: "echo".into(),
                args: vec!["hi".into()],
                env: vec!["A=1".into()],
                cwd: Some("/tmp".into()),
                user: None,
                tty: false,
                rows: 24,
                cols: 80,
                rlimits: vec![ExecRlimit {
                    resource: "nofile".into(),
                    soft: 1024,
                    hard: 4096,
                }],
            }),
            hex: "00000089 00000001 02 \
                  a3 6176 01 6174 71636f72652e657865632e72657175657374 6170 5868 \
                  a9 63636d64 646563686f 6461726773 81 626869 \
                  63656e76 81 63413d31 63637764 642f746d70 6475736572 f6 \
                  63747479 f4 64726f7773 1818 64636f6c73 1850 \
                  67726c696d697473 81 a3 687265736f75726365 666e6f66696c65 \
                  64736f6674 190400 6468617264 191000",
        },
        // len 41, id 1, flags 0; data is a CBOR byte string "hi\n".
        Golden {
            id: 1,
            flags: Flags::NONE,
            message: Message::ExecStdout(Data::from(b"hi\n".to_vec())),
            hex: "00000029 00000001 00 \
                  a3 6176 01 6174 70636f72652e657865632e7374646f7574 6170 4a \
                  a1 6464617461 436869 0a",
        },
        // len 38, id 1, TERMINAL; exit code 7.
        Golden {
            id: 1,
            flags: Flags::TERMINAL,
            message: Message::ExecExited(ExecExited { code: 7 }),
            hex: "00000026 00000001 01 \
                  a3 6176 01 6174 70636f72652e657865632e657869746564 6170 47 \
                  a1 64636f6465 07",
        },
        // len 28, id 0, SHUTDOWN; `p` is an empty byte string.
        Golden {
            id: 0,
            flags: Flags::SHUTDOWN,
            message: Message::Shutdown,
            hex: "0000001c 00000000 04 \
                  a3 6176 01 6174 6d636f72652e73687574646f776e 6170 40",
        },
        // len 63, id 2, SESSION_START; {"op": {"Write": {"path", "mode": 0o644}}}.
        Golden {
            id: 2,
            flags: Flags::SESSION_START,
            message: Message::FsRequest(FsRequest {
                op: FsOp::Write {
                    path: "/tmp/f".into(),
                    mode: Some(0o644),
                },
            }),
            hex: "0000003f 00000002 02 \
                  a3 6176 01 6174 6f636f72652e66732e72657175657374 6170 5820 \
                  a1 626f70 a1 655772697465 a2 6470617468 662f746d702f66 \
                  646d6f6465 1901a4",
        },
        // len 102, id 3, TERMINAL; Stat data, a negative `modified`.
        Golden {
            id: 3,
            flags: Flags::TERMINAL,
            message: Message::FsResponse(FsResponse {
                ok: true,
                error: None,
                data: Some(FsResponseData::Stat(FsEntry {
                    path: "/tmp/f".into(),
                    kind: "file".into(),
                    size: 3,
                    mode: 0o644,
                    modified: Some(-1),
                })),
            }),
            hex: "00000066 00000003 01 \
                  a3 6176 01 6174 70636f72652e66732e726573706f6e7365 6170 5846 \
                  a3 626f6b f5 656572726f72 f6 6464617461 a1 6453746174 \
                  a5 6470617468 662f746d702f66 646b696e64 6466696c65 \
                  6473697a65 03 646d6f6465 1901a4 686d6f646966696564 20",
        },
    ]
}

/// Parses hex digits, ignoring whitespace.
fn unhex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => panic!("not a hex digit: {:?}", b as char),
        })
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_encoder_writes_exactly_the_golden_bytes() {
    for golden in goldens() {
        let frame = golden.message.to_frame(golden.id).unwrap();
        assert_eq!(
            hex(frame.as_wire()),
            hex(&unhex(golden.hex)),
            "{} changed on the wire",
            golden.message.message_type()
        );
    }
}

#[test]
fn the_golden_bytes_decode_to_their_messages() {
    let goldens = goldens();
    let stream: Vec<u8> = goldens.iter().flat_map(|g| unhex(g.hex)).collect();
    let frames = split_frames(&stream).unwrap();
    assert_eq!(frames.len(), goldens.len());
    for (frame, golden) in frames.iter().zip(&goldens) {
        assert_eq!(frame.id(), golden.id);
        assert_eq!(frame.flags(), golden.flags);
        assert_eq!(golden.flags, golden.message.message_type().default_flags());
        assert_eq!(Message::from_frame(frame).unwrap(), golden.message);
    }
}

#[test]
fn each_golden_length_prefix_counts_header_and_body() {
    for golden in goldens() {
        let bytes = unhex(golden.hex);
        let frame = Frame::from_wire(bytes.clone().into()).unwrap();
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(frame.body().len(), len - 5);
    }
}
