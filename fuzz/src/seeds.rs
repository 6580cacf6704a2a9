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
        "router_events" => router_events().iter().map(crate::router::encode).collect(),
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

/// Scripted router scenarios: the paths a relay takes every day, and the
/// hostile ones it must survive.
pub fn router_events() -> Vec<Scenario> {
    let config = |layout, max_clients, grace_ms, sessions| RouterConfig {
        layout,
        max_clients,
        quarantine_grace: Duration::from_millis(grace_ms),
        max_sessions_per_client: sessions,
        client_queue_budget: 4096,
        total_queue_budget: 6000,
        frame_overhead: 128,
    };
    let own = |client, offset| IdPick::Own { client, offset };
    let client_frame = |client, id, flags: Flags| Event::ClientFrame {
        client,
        id,
        flags: flags.bits(),
        len: 64,
    };
    let agent_frame = |id, flags: Flags| Event::AgentFrame {
        id,
        flags: flags.bits(),
        len: 64,
    };
    let ready = Event::Ready { offer: None };
    vec![
        // Exec: request, output, exit; then a second client does the same.
        Scenario {
            config: config(SlotLayout::Legacy, 16, 999, 4),
            events: vec![
                ready,
                Event::Connect,
                client_frame(0, own(0, 0), Flags::SESSION_START),
                agent_frame(own(0, 0), Flags::NONE),
                agent_frame(own(0, 0), Flags::TERMINAL),
                Event::Drain {
                    client: 0,
                    frames: 2,
                    written: true,
                },
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
                ready,
                Event::Connect,
                client_frame(0, own(0, 0), Flags::SESSION_START),
                Event::Disconnect { client: 0 },
                Event::WriteControl,
                agent_frame(IdPick::Session { index: 0 }, Flags::NONE),
                Event::Connect,
                Event::Connect,
                agent_frame(IdPick::Session { index: 0 }, Flags::TERMINAL),
                Event::Connect,
            ],
        },
        // The grace runs from the kill, and a streaming tombstone outlives
        // it while its slot goes to a new client.
        Scenario {
            config: config(SlotLayout::Bounds { slots: 1 }, 1, 100, 2),
            events: vec![
                ready,
                Event::Connect,
                client_frame(0, own(0, 0), Flags::SESSION_START),
                Event::Disconnect { client: 0 },
                Event::Tick { millis: 200 },
                Event::Connect,
                Event::WriteControl,
                Event::Tick { millis: 99 },
                agent_frame(IdPick::Session { index: 0 }, Flags::NONE),
                Event::Tick { millis: 1 },
                Event::Connect,
                client_frame(1, own(0, 0), Flags::SESSION_START),
                agent_frame(IdPick::Session { index: 0 }, Flags::NONE),
                Event::Tick { millis: 200 },
                Event::Connect,
            ],
        },
        // Spies, shutdown, a session limit, and frames for nobody.
        Scenario {
            config: config(SlotLayout::Bounds { slots: 4 }, 3, 0, 1),
            events: vec![
                ready,
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
        // Flow control: held frames, credit both ways, a ready storm.
        Scenario {
            config: config(SlotLayout::Legacy, 4, 50, 4),
            events: vec![
                Event::Ready { offer: Some(1) },
                Event::Connect,
                client_frame(0, own(0, 0), Flags::SESSION_START),
                Event::ClientFrame {
                    client: 0,
                    id: own(0, 0),
                    flags: 0,
                    len: u16::MAX,
                },
                Event::ClientFrame {
                    client: 0,
                    id: own(0, 0),
                    flags: 0,
                    len: 1000,
                },
                Event::Credit {
                    id: own(0, 0),
                    bytes: 70_000,
                },
                agent_frame(own(0, 0), Flags::NONE),
                Event::Drain {
                    client: 0,
                    frames: 8,
                    written: true,
                },
                Event::WriteControl,
                Event::Ready { offer: Some(1) },
                Event::Ready { offer: None },
            ],
        },
        // Budgets: a reader that does not read, the total budget, a stall.
        Scenario {
            config: config(SlotLayout::Bounds { slots: 3 }, 3, 0, 4),
            events: std::iter::repeat_n(Event::Connect, 3)
                .chain([
                    ready,
                    Event::QueueOwn {
                        client: 1,
                        len: 100,
                    },
                ])
                .chain((0..40).map(|n| agent_frame(own(n % 3, 0), Flags::NONE)))
                .chain([Event::Stall { client: 2 }])
                .collect(),
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
        let mut total = relay_router::RouterCounters::default();
        for scenario in router_events() {
            assert_eq!(
                crate::router::decode(&crate::router::encode(&scenario)),
                scenario
            );
            let c = crate::router::run(&scenario).unwrap().counters;
            total.agent_frames_delivered += c.agent_frames_delivered;
            total.clients_refused += c.clients_refused;
            total.clients_rejected += c.clients_rejected;
            total.sessions_refused += c.sessions_refused;
            total.sessions_killed += c.sessions_killed;
            total.agent_frames_dropped_tombstoned += c.agent_frames_dropped_tombstoned;
            total.clients_admitted_beside_tombstones += c.clients_admitted_beside_tombstones;
            total.client_frames_held += c.client_frames_held;
            total.clients_cut_off += c.clients_cut_off;
            total.agent_restarts += c.agent_restarts;
        }
        assert!(total.agent_frames_delivered >= 3, "{total:?}");
        assert!(total.clients_refused >= 2, "{total:?}");
        assert!(total.clients_rejected >= 1, "{total:?}");
        assert!(total.sessions_refused >= 2, "{total:?}");
        assert!(total.sessions_killed >= 2, "{total:?}");
        assert!(total.agent_frames_dropped_tombstoned >= 2, "{total:?}");
        assert!(total.clients_admitted_beside_tombstones >= 1, "{total:?}");
        assert!(total.client_frames_held >= 1, "{total:?}");
        assert!(total.clients_cut_off >= 3, "{total:?}");
        assert!(total.agent_restarts >= 2, "{total:?}");
    }
}
