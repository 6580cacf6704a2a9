//! Seed inputs for every target, built from values through the same
//! encoders the targets decode with, so each seed means what its name says.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --bin write-seeds` writes
//! them to `fuzz/corpus/<target>/seed-NNN` (the corpus is not committed).

use std::time::Duration;

use bytes::BytesMut;
use relay_codec::payload::{
    Data, ExecExited, ExecRequest, ExecResize, ExecSignal, ExecStarted, FsEntry, FsOp, FsRequest,
    FsResponse, FsResponseData,
};
use relay_codec::{
    Flags, Frame, Handshake, LEGACY_STEP, MAX_FRAME_SIZE, Message, bounds_slot_range,
    envelope_frame,
};
use relay_router::{RouterConfig, SlotLayout};

use crate::framing::{ChunkedStream, Cuts};
use crate::router::{Event, IdPick, Scenario};

/// The fuzz targets, by the name of their file in `fuzz_targets/`.
pub const TARGETS: [&str; 4] = [
    "frame_decoder",
    "message_decoder",
    "handshake_decoder",
    "router_events",
];

/// The seeds of `target` (empty for an unknown name).
pub fn for_target(target: &str) -> Vec<Vec<u8>> {
    match target {
        "frame_decoder" => frame_decoder(),
        "message_decoder" => message_decoder(),
        "handshake_decoder" => handshake_decoder(),
        "router_events" => router_events().iter().map(Scenario::to_fuzz).collect(),
        _ => Vec::new(),
    }
}

/// One message of every type, as a client or the agent would send it.
pub fn sample_messages() -> Vec<Message> {
    let entry = FsEntry {
        path: "/etc/hostname".into(),
        kind: "file".into(),
        size: 9,
        mode: 0o644,
        modified: Some(1_700_000_000),
    };
    let mut request = ExecRequest::new("sh", ["-c", "echo hi"]);
    request.env = vec!["A=1".into()];
    request.cwd = Some("/tmp".into());
    request.tty = true;
    vec![
        Message::Ready(crate::messages::ready(1, 2, 3)),
        Message::Shutdown,
        Message::ExecRequest(request),
        Message::ExecStarted(ExecStarted { pid: 42 }),
        Message::ExecStdin(Data {
            data: b"input\n".to_vec(),
        }),
        Message::ExecStdout(Data {
            data: b"output\n".to_vec(),
        }),
        Message::ExecStderr(Data { data: Vec::new() }),
        Message::ExecExited(ExecExited { code: -1 }),
        Message::ExecResize(ExecResize {
            rows: 50,
            cols: 132,
        }),
        Message::ExecSignal(ExecSignal { signal: 9 }),
        Message::FsRequest(FsRequest {
            op: FsOp::Write {
                path: "/tmp/x".into(),
                mode: Some(0o600),
            },
        }),
        Message::FsRequest(FsRequest {
            op: FsOp::Rename {
                src: "/a".into(),
                dst: "/b".into(),
            },
        }),
        Message::FsData(Data {
            data: vec![0xee; 40],
        }),
        Message::FsResponse(FsResponse {
            ok: true,
            error: None,
            data: Some(FsResponseData::List(vec![entry.clone(), entry])),
        }),
        Message::FsResponse(FsResponse::failed("no such file")),
    ]
}

/// The sample messages as frames, with their default flags and distinct ids.
fn sample_frames() -> Vec<Frame> {
    sample_messages()
        .iter()
        .zip(1u32..)
        .filter_map(|(message, id)| message.to_frame(id).ok())
        .collect()
}

fn frame_decoder() -> Vec<Vec<u8>> {
    let frames = sample_frames();
    let stream: Vec<u8> = frames.iter().flat_map(|f| f.as_wire().to_vec()).collect();
    let mut streams = vec![
        ChunkedStream {
            max_frame_len: MAX_FRAME_SIZE,
            cuts: Cuts::At(vec![]),
            data: stream.clone(),
        },
        ChunkedStream {
            max_frame_len: MAX_FRAME_SIZE,
            cuts: Cuts::Every(1),
            data: stream.clone(),
        },
        ChunkedStream {
            max_frame_len: MAX_FRAME_SIZE,
            cuts: Cuts::At(vec![2, 4, 9, 9, 30]),
            data: stream.clone(),
        },
        ChunkedStream {
            max_frame_len: 64,
            cuts: Cuts::Every(7),
            data: stream.clone(),
        },
        // A stream cut short inside a frame.
        ChunkedStream {
            max_frame_len: MAX_FRAME_SIZE,
            cuts: Cuts::At(vec![3]),
            data: stream[..stream.len() - 5].to_vec(),
        },
    ];
    for bad_len in [0u32, 4, 5, MAX_FRAME_SIZE as u32, MAX_FRAME_SIZE as u32 + 1] {
        let mut data = frames[0].as_wire().to_vec();
        data.extend_from_slice(&bad_len.to_be_bytes());
        data.extend_from_slice(&[0, 0, 0, 1, 0]);
        streams.push(ChunkedStream {
            max_frame_len: MAX_FRAME_SIZE,
            cuts: Cuts::Every(5),
            data,
        });
    }
    streams.iter().map(ChunkedStream::to_fuzz).collect()
}

fn message_decoder() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = sample_frames().iter().map(|f| f.body().to_vec()).collect();
    if let Ok(later) = envelope_frame("core.later.thing", 1, Flags::NONE, &[0xa0]) {
        seeds.push(later.body().to_vec());
    }
    seeds
}

fn handshake_decoder() -> Vec<Vec<u8>> {
    let Some(ready) = sample_frames().into_iter().next() else {
        return Vec::new();
    };
    let mut handshakes = vec![
        Handshake::Legacy { offset: 0 },
        Handshake::Legacy {
            offset: LEGACY_STEP,
        },
        Handshake::Legacy {
            offset: 15 * LEGACY_STEP,
        },
    ];
    for (slot, slots) in [(0, 1), (0, 128), (127, 128), (3, 1000)] {
        if let Some(range) = bounds_slot_range(slot, slots) {
            handshakes.push(Handshake::Bounds { range });
        }
    }
    let mut seeds: Vec<Vec<u8>> = handshakes
        .iter()
        .map(|handshake| {
            let mut bytes = BytesMut::new();
            handshake.encode(&ready, &mut bytes);
            bytes.to_vec()
        })
        .collect();
    // An empty bounds range, and a greeting cut short.
    seeds.push(vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9]);
    if let Some(first) = seeds.first() {
        seeds.push(first[..first.len() - 1].to_vec());
    }
    seeds
}

/// Scripted router scenarios: the paths a relay takes every day.
pub fn router_events() -> Vec<Scenario> {
    let config = |layout, max_clients, grace_ms, sessions| RouterConfig {
        layout,
        max_clients,
        quarantine_grace: Duration::from_millis(grace_ms),
        max_sessions_per_client: sessions,
    };
    let own = |client, offset| IdPick::Own { client, offset };
    let client_frame = |client, id, flags: Flags| Event::ClientFrame {
        client,
        id,
        flags: flags.bits(),
    };
    let agent_frame = |id, flags: Flags| Event::AgentFrame {
        id,
        flags: flags.bits(),
    };
    vec![
        // Exec: request, output, exit; then a second client does the same.
        Scenario {
            config: config(SlotLayout::Legacy, 16, 999, 4),
            events: vec![
                Event::Connect,
                client_frame(0, own(0, 0), Flags::SESSION_START),
                agent_frame(own(0, 0), Flags::NONE),
                agent_frame(own(0, 0), Flags::TERMINAL),
                Event::Connect,
                client_frame(1, own(1, 5), Flags::SESSION_START),
                client_frame(1, own(1, 5), Flags::NONE),
                agent_frame(own(1, 5), Flags::TERMINAL),
                Event::Disconnect { client: 0 },
                Event::Disconnect { client: 1 },
            ],
        },
        // A client leaves with a session open: kill, rest, late output, end.
        Scenario {
            config: config(SlotLayout::Bounds { slots: 2 }, 2, 500, 2),
            events: vec![
                Event::Connect,
                client_frame(0, own(0, 0), Flags::SESSION_START),
                Event::Disconnect { client: 0 },
                agent_frame(IdPick::Session { index: 0 }, Flags::NONE),
                Event::Connect,
                Event::Connect,
                agent_frame(IdPick::Session { index: 0 }, Flags::TERMINAL),
                Event::Connect,
            ],
        },
        // The grace period runs out.
        Scenario {
            config: config(SlotLayout::Bounds { slots: 1 }, 1, 100, 1),
            events: vec![
                Event::Connect,
                client_frame(0, own(0, 0), Flags::SESSION_START),
                Event::Disconnect { client: 0 },
                Event::Tick { millis: 99 },
                Event::Connect,
                Event::Tick { millis: 1 },
                Event::Connect,
            ],
        },
        // Spies, shutdown, a session limit, and frames for nobody.
        Scenario {
            config: config(SlotLayout::Bounds { slots: 4 }, 3, 0, 1),
            events: vec![
                Event::Connect,
                Event::Connect,
                client_frame(1, IdPick::Zero, Flags::SHUTDOWN),
                client_frame(0, own(1, 0), Flags::NONE),
                client_frame(1, own(1, 1), Flags::SESSION_START),
                client_frame(1, own(1, 2), Flags::SESSION_START),
                agent_frame(IdPick::SlotStart { slot: 3 }, Flags::NONE),
                agent_frame(IdPick::Max, Flags::NONE),
                agent_frame(IdPick::Zero, Flags::NONE),
                Event::Connect,
                Event::Connect,
                Event::Connect,
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_seeds_and_each_seed_passes_its_checker() {
        for target in TARGETS {
            let seeds = for_target(target);
            assert!(seeds.len() >= 4, "{target} has {} seeds", seeds.len());
            for (n, seed) in seeds.iter().enumerate() {
                let result = match target {
                    "frame_decoder" => crate::framing::check(seed).map(drop),
                    "message_decoder" => crate::messages::check(seed).map(drop),
                    "handshake_decoder" => crate::handshakes::check(seed).map(drop),
                    _ => crate::router::check(seed).map(drop),
                };
                assert_eq!(result, Ok(()), "{target} seed {n}");
            }
        }
        assert!(for_target("no_such_target").is_empty());
    }

    #[test]
    fn the_target_list_names_every_file_in_fuzz_targets() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
        let mut targets = TARGETS.map(String::from).to_vec();
        targets.sort();
        assert_eq!(files, targets);
    }

    #[test]
    fn frame_seeds_cover_clean_ends_truncation_and_bad_lengths() {
        let ends: Vec<_> = frame_decoder()
            .iter()
            .map(|seed| crate::framing::check(seed).unwrap().end)
            .collect();
        assert!(ends.iter().any(|e| e.is_ok()));
        assert!(
            ends.iter()
                .any(|e| matches!(e, Err(relay_codec::FrameError::Truncated { .. })))
        );
        assert!(
            ends.iter()
                .any(|e| matches!(e, Err(relay_codec::FrameError::FrameTooShort { .. })))
        );
        assert!(
            ends.iter()
                .any(|e| matches!(e, Err(relay_codec::FrameError::FrameTooLarge { .. })))
        );
    }

    #[test]
    fn message_seeds_decode_to_every_sample_message() {
        use crate::messages::BodyVerdict;
        let decoded: Vec<_> = message_decoder()
            .iter()
            .map(|seed| crate::messages::check_body(seed).unwrap())
            .collect();
        for message in sample_messages() {
            assert!(decoded.contains(&BodyVerdict::Message(message)));
        }
        assert!(decoded.contains(&BodyVerdict::EnvelopeOnly));
    }

    #[test]
    fn handshake_seeds_hold_both_forms_an_error_and_a_gap() {
        use crate::handshakes::Decoded;
        let decoded: Vec<_> = handshake_decoder()
            .iter()
            .map(|seed| crate::handshakes::check_bytes(seed).unwrap())
            .collect();
        assert!(
            decoded
                .iter()
                .any(|d| matches!(d, Decoded::Greeting(Handshake::Legacy { .. })))
        );
        assert!(
            decoded
                .iter()
                .any(|d| matches!(d, Decoded::Greeting(Handshake::Bounds { .. })))
        );
        assert!(decoded.contains(&Decoded::Invalid));
        assert!(decoded.contains(&Decoded::Incomplete));
    }

    #[test]
    fn router_seeds_walk_every_path_of_a_session() {
        let mut total = crate::router::Report::default();
        for scenario in router_events() {
            assert_eq!(Scenario::from_fuzz(&scenario.to_fuzz()), scenario);
            let report = crate::router::run(&scenario).unwrap();
            total.delivered += report.delivered;
            total.refused += report.refused;
            total.rejected += report.rejected;
            total.sessions_refused += report.sessions_refused;
            total.killed += report.killed;
            total.dropped_resting += report.dropped_resting;
            total.expired += report.expired;
        }
        assert!(total.delivered >= 3, "{total:?}");
        assert!(total.refused >= 2, "{total:?}");
        assert!(total.rejected >= 1, "{total:?}");
        assert!(total.sessions_refused >= 1, "{total:?}");
        assert!(total.killed >= 2, "{total:?}");
        assert!(total.dropped_resting >= 2, "{total:?}");
        assert!(total.expired >= 1, "{total:?}");
    }
}
