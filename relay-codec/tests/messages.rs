//! Typed messages and the handshake: encode-then-decode is the identity for
//! every message type, and arbitrary or damaged input gives an error, never
//! a panic.

mod support;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use relay_codec::payload::{Data, FsOp, FsRequest};
use relay_codec::{
    Envelope, Flags, Frame, Handshake, LEGACY_SLOTS, LEGACY_STEP, Message, MessageError,
    MessageType, PROTOCOL_VERSION, bounds_slot_range, data_frame, legacy_slot_of,
    legacy_slot_range, split_frames,
};

use support::message;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encoding_then_decoding_any_message_gives_it_back(msg in message(), id in any::<u32>()) {
        let frame = msg.to_frame(id).unwrap();
        let t = msg.message_type();
        prop_assert_eq!(frame.id(), id);
        prop_assert_eq!(frame.flags(), t.default_flags());

        let envelope = Envelope::parse(frame.body()).unwrap();
        prop_assert_eq!(envelope.version, PROTOCOL_VERSION);
        prop_assert_eq!(envelope.message_type.as_ref(), t.wire_name());
        prop_assert_eq!(envelope.known_type(), Ok(t));

        // Through the byte stream as well, not only from the frame in hand.
        let reread = split_frames(frame.as_wire()).unwrap();
        prop_assert_eq!(reread.len(), 1);
        prop_assert_eq!(Message::from_frame(&reread[0]).unwrap(), msg);
    }

    #[test]
    fn explicit_flags_are_written_for_every_message_type(
        msg in message(),
        id in any::<u32>(),
        bits in any::<u8>(),
    ) {
        let flags = Flags::from_bits(bits);
        let frame = msg.to_frame_with_flags(id, flags).unwrap();
        prop_assert_eq!(frame.header().flags, flags);
        prop_assert_eq!(frame.id(), id);
        prop_assert_eq!(Message::from_frame(&frame).unwrap(), msg);
    }

    #[test]
    fn every_strict_prefix_of_a_message_body_is_an_error(msg in message(), cut in any::<prop::sample::Index>()) {
        let frame = msg.to_frame(1).unwrap();
        let body = frame.body();
        let cut = cut.index(body.len());
        prop_assert!(Message::from_body(&body[..cut]).is_err());
        prop_assert!(Envelope::parse(&body[..cut]).is_err());
    }

    #[test]
    fn damaged_message_bodies_never_panic_the_decoder(
        msg in message(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let frame = msg.to_frame(1).unwrap();
        let mut body = frame.body().to_vec();
        for (at, xor) in flips {
            let at = at.index(body.len());
            body[at] ^= xor;
        }
        let _ = Envelope::parse(&body);
        let _ = Message::from_body(&body);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_typed_layer_or_the_handshake(bytes in vec(any::<u8>(), 0..512)) {
        let _ = Envelope::parse(&bytes);
        let _ = Message::from_body(&bytes);
        let _ = Handshake::decode(&bytes);
    }

    #[test]
    fn a_decoded_handshake_encodes_back_to_the_bytes_it_consumed(
        words in any::<(u32, u32)>(),
        ready in any::<(u64, u64, u64)>(),
        trailer in vec(any::<u8>(), 0..8),
    ) {
        let ready = ready_frame(ready);
        let mut buf = Vec::new();
        buf.extend_from_slice(&words.0.to_be_bytes());
        buf.extend_from_slice(&words.1.to_be_bytes());
        buf.extend_from_slice(ready.as_wire());
        buf.extend_from_slice(&trailer);
        if let Ok(Some((handshake, frame, used))) = Handshake::decode(&buf) {
            prop_assert!(used <= buf.len());
            let mut again = BytesMut::new();
            handshake.encode(&frame, &mut again);
            prop_assert_eq!(&again[..], &buf[..used]);
        }
    }

    #[test]
    fn every_legacy_slot_round_trips_through_the_handshake(
        slot in 0..LEGACY_SLOTS,
        ready in any::<(u64, u64, u64)>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let ready = ready_frame(ready);
        let handshake = Handshake::Legacy { offset: legacy_slot_range(slot).first() };
        let mut buf = BytesMut::new();
        handshake.encode(&ready, &mut buf);
        prop_assert_eq!(buf.len(), 4 + ready.wire_len());
        prop_assert_eq!(Handshake::decode(&buf[..cut.index(buf.len())]), Ok(None));
        prop_assert_eq!(
            Handshake::decode(&buf),
            Ok(Some((handshake, ready.clone(), buf.len())))
        );
        let ids = handshake.client_ids().unwrap();
        prop_assert_eq!(legacy_slot_of(ids.first()), slot);
        prop_assert_eq!(legacy_slot_of(ids.last()), slot);
    }

    #[test]
    fn every_bounds_slot_round_trips_through_the_handshake(
        (slots, slot) in (1u32..=4096).prop_flat_map(|n| (Just(n), 0..n)),
        ready in any::<(u64, u64, u64)>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let ready = ready_frame(ready);
        let range = bounds_slot_range(slot, slots).unwrap();
        let handshake = Handshake::Bounds { range };
        let mut buf = BytesMut::new();
        handshake.encode(&ready, &mut buf);
        prop_assert_eq!(buf.len(), 8 + ready.wire_len());
        prop_assert_eq!(Handshake::decode(&buf[..cut.index(buf.len())]), Ok(None));
        prop_assert_eq!(
            Handshake::decode(&buf),
            Ok(Some((handshake, ready.clone(), buf.len())))
        );
        prop_assert_eq!(handshake.client_ids(), Some(range));
    }
}

fn ready_frame((boot_time_ns, init_time_ns, ready_time_ns): (u64, u64, u64)) -> Frame {
    Message::Ready(relay_codec::payload::Ready {
        boot_time_ns,
        init_time_ns,
        ready_time_ns,
        flow: None,
    })
    .to_frame(0)
    .expect("a ready message fits one frame")
}

#[test]
fn data_frame_and_the_typed_encoder_write_the_same_bytes() {
    for t in [
        MessageType::ExecStdin,
        MessageType::ExecStdout,
        MessageType::ExecStderr,
        MessageType::FsData,
    ] {
        let data = Data::from(b"some bytes".to_vec());
        let msg = match t {
            MessageType::ExecStdin => Message::ExecStdin(data.clone()),
            MessageType::ExecStdout => Message::ExecStdout(data.clone()),
            MessageType::ExecStderr => Message::ExecStderr(data.clone()),
            _ => Message::FsData(data.clone()),
        };
        assert_eq!(
            data_frame(t, 5, &data.data).unwrap(),
            msg.to_frame(5).unwrap()
        );
    }
}

#[test]
fn a_data_message_with_explicit_flags_keeps_those_flags() {
    let msg = Message::FsData(Data::from(Vec::new()));
    let frame = msg.to_frame_with_flags(9, Flags::TERMINAL).unwrap();
    assert_eq!(frame.flags(), Flags::TERMINAL);
    assert_eq!(Message::from_frame(&frame).unwrap(), msg);
}

#[test]
fn every_message_type_has_a_decoder_for_its_wire_name() {
    // A type whose name the typed layer does not decode would show up as
    // UnknownType here rather than as a payload error.
    for t in MessageType::ALL {
        let frame =
            relay_codec::envelope_frame(t.wire_name(), 1, t.default_flags(), &[0xf6]).unwrap();
        let result = Message::from_frame(&frame);
        assert!(
            !matches!(result, Err(MessageError::UnknownType { .. })),
            "{t}: {result:?}"
        );
    }
}

#[test]
fn an_fs_request_keeps_every_field_of_its_operation() {
    let op = FsOp::Write {
        path: "/tmp/x".into(),
        mode: Some(0o600),
    };
    let msg = Message::FsRequest(FsRequest { op });
    let frame = msg.to_frame(3).unwrap();
    assert_eq!(frame.flags(), Flags::SESSION_START);
    assert_eq!(Message::from_frame(&frame).unwrap(), msg);
}

#[test]
fn the_legacy_step_splits_the_id_space_into_sixteen_slots() {
    assert_eq!(LEGACY_STEP, u32::MAX / 16);
    assert_eq!(legacy_slot_range(LEGACY_SLOTS - 1).last(), u32::MAX);
}
