//! Compatibility with the reference implementation, microsandbox-protocol
//! 0.4.3: for every generation-1 message type, its frames decode with ours
//! field for field, ours decode with it, and both encoders write the same
//! bytes. The handshake is read the way its 0.4.3 SDK reads it.
//!
//! The payload conversions (in `convert`) destructure every field of both sides, so a
//! field added on either side stops this file from compiling instead of being
//! silently left out of the comparison.
#![allow(
    clippy::unwrap_used,
    reason = "the helpers here run only inside tests: an unwrap failure is a test failure"
)]

#[path = "../support/mod.rs"]
mod support;

mod convert;
mod samples;

use bytes::BytesMut;
use microsandbox_protocol::codec::read_message;
use microsandbox_protocol::message::{
    Message as TheirMessage, MessageType as TheirType, PROTOCOL_VERSION as THEIR_VERSION,
};
use microsandbox_protocol::{core as their_core, fs as their_fs};
use proptest::prelude::*;
use relay_codec::payload::Ready;
use relay_codec::{
    Flags, Frame, Handshake, LEGACY_SLOTS, MAX_FRAME_SIZE, Message, MessageType, PROTOCOL_VERSION,
    bounds_slot_range, legacy_slot_range, split_frames,
};
use tokio::io::AsyncReadExt;

use convert::*;
use samples::*;

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
