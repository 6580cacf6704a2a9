//! Every byte that is not the relay's passes through it: flags bits, message
//! types and bodies of other protocol generations, in both directions, with
//! and without negotiated flow control; the runtime's reserved id reaches
//! no client.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use microsandbox_protocol_07 as upstream;
use relay_codec::{Flags, Frame, RUNTIME_RESERVED_ID};
use relay_server::HandshakeForm;
use relay_test_support::{RawClient, echo, frames, ready_frame, ready_frame_offering, sink};
use strum::IntoEnumIterator;
use support::Harness;

type Test = Result<(), Box<dyn std::error::Error>>;

async fn echo_relay(flow: bool, form: HandshakeForm) -> Harness {
    let ready = if flow {
        ready_frame_offering(1 << 20)
    } else {
        ready_frame(1)
    };
    Harness::start_with_ready(1 << 16, ready, move |c| c.with_handshake(form), echo()).await
}

/// Sends `frames` from a client to the echoing agent and checks that the
/// agent read them byte for byte and the client got them back the same.
async fn round_trip(harness: &Harness, client: &mut RawClient, frames: &[Frame]) {
    let before = harness.agent.received().len();
    for frame in frames {
        client.send(frame.clone()).await;
    }
    for frame in frames {
        let back = client.next().await.unwrap();
        assert_eq!(back.as_wire(), frame.as_wire(), "{frame:?}");
    }
    let received = harness.agent.received();
    let at_agent: Vec<&[u8]> = received[before..]
        .iter()
        .filter(|f| f.id() != 0)
        .map(Frame::as_wire)
        .collect();
    let sent: Vec<&[u8]> = frames.iter().map(Frame::as_wire).collect();
    assert_eq!(at_agent, sent, "the agent reads what the client wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flags_value_passes_both_ways_intact_and_in_order() -> Test {
    for flow in [false, true] {
        let harness = echo_relay(flow, HandshakeForm::Legacy).await;
        let mut client = harness.client().await;
        let id = client.ids.first();
        let frames: Vec<Frame> = (0..=255u8)
            .filter(|&bits| bits & Flags::SHUTDOWN.bits() == 0)
            .map(|bits| Frame::new(id, Flags::from_bits(bits), &[bits; 17]).unwrap())
            .collect();
        round_trip(&harness, &mut client, &frames).await;
        // SHUTDOWN asks the relay's owner to stop; still forwarded untouched.
        let shutdowns: Vec<Frame> = (0..=255u8)
            .filter(|&bits| bits & Flags::SHUTDOWN.bits() != 0)
            .map(|bits| Frame::new(id, Flags::from_bits(bits), &[bits; 3]).unwrap())
            .collect();
        round_trip(&harness, &mut client, &shutdowns).await;
    }
    Ok(())
}

/// One frame of every message type microsandbox-protocol 0.7.13 defines,
/// at its own generation, with its own flags, on `id`.
fn upstream_frames(id: u32) -> Vec<Frame> {
    let mut wire = Vec::new();
    for t in upstream::message::MessageType::iter() {
        let message = upstream::message::Message::new(t, id, vec![0xa0]);
        upstream::codec::encode_to_buf(&message, &mut wire).unwrap();
    }
    for (kind, flow) in [
        (
            upstream::bulk::BulkKind::Filesystem,
            upstream::bulk::BulkFlow::HostToGuest,
        ),
        (
            upstream::bulk::BulkKind::Tcp,
            upstream::bulk::BulkFlow::GuestToHost,
        ),
    ] {
        let record = upstream::bulk::BulkRecord {
            id,
            kind,
            flow,
            offset: 4096,
            payload: bytes::Bytes::from_static(b"raw bulk bytes, not CBOR"),
        };
        upstream::codec::encode_bulk_to_buf(&record, &mut wire).unwrap();
    }
    frames(&wire)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_and_bulk_record_of_a_later_generation_passes_untouched() -> Test {
    for (flow, form) in [
        (false, HandshakeForm::Legacy),
        (true, HandshakeForm::Legacy),
        (false, HandshakeForm::Bounds { slots: 128 }),
        (true, HandshakeForm::Bounds { slots: 128 }),
    ] {
        let harness = echo_relay(flow, form).await;
        let mut client = harness.client().await;
        let frames = upstream_frames(client.ids.first());
        assert!(frames.len() > 40, "{} types", frames.len());
        assert!(
            frames.iter().any(|f| f.flags() == Flags::BULK),
            "bulk records are among them"
        );
        // Shutdown asks the relay's owner to stop and is tested above.
        let frames: Vec<Frame> = frames
            .into_iter()
            .filter(|f| !f.flags().contains(Flags::SHUTDOWN))
            .collect();
        round_trip(&harness, &mut client, &frames).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtimes_reserved_id_reaches_no_client_in_either_layout() -> Test {
    for (form, clients) in [
        (HandshakeForm::Legacy, 16u64),
        (HandshakeForm::Bounds { slots: 4 }, 4),
    ] {
        let harness = Harness::start_with_ready(
            1 << 16,
            ready_frame(1),
            move |c| c.with_handshake(form),
            sink(),
        )
        .await;
        let mut all = Vec::new();
        for _ in 0..clients {
            all.push(harness.client().await);
        }
        assert!(all.iter().all(|c| !c.ids.contains(RUNTIME_RESERVED_ID)));
        // What microsandbox-agentd 0.7 sends after an exec, then a frame
        // for the last client, which must be the next thing it reads.
        let message = upstream::message::Message::new(
            upstream::message::MessageType::iter()
                .find(|t| t.as_str() == "core.workload.transport.credit")
                .unwrap_or(upstream::message::MessageType::Ready),
            RUNTIME_RESERVED_ID,
            vec![0xa0],
        );
        let mut wire = Vec::new();
        upstream::codec::encode_to_buf(&message, &mut wire).unwrap();
        harness.agent.send_raw(wire);
        let last = all.last_mut().unwrap();
        let marker = Frame::new(last.ids.last(), Flags::NONE, b"after")?;
        harness.agent.send(&marker);
        assert_eq!(last.next().await.unwrap(), marker);
        let stats = harness
            .wait_stats("the reserved frame counted", |s| s.dropped.reserved_id == 1)
            .await;
        // The greetings' ready frames, and the marker: nothing else.
        assert_eq!(stats.agent_to_client_frames, clients + 1);
    }
    Ok(())
}
