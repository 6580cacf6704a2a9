//! Routing and isolation: the relay over real Unix sockets and a real ring,
//! with the agent played by threads on the ring's device end; frames go to
//! their owners only, sessions die with their clients, slots rest before
//! they are handed out again, and a client that never reads is cut off.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use relay_codec::payload::{ExecExited, ExecSignal};
use relay_codec::{Flags, Frame, Message};
use relay_server::HandshakeForm;
use relay_test_support::{Behaviour, HANG_GUARD, RawClient, echo, sink};
use support::Harness;

type Test = Result<(), Box<dyn std::error::Error>>;

fn body(seq: u64) -> Vec<u8> {
    let len = 8 + (seq as usize * 37) % 300;
    let mut body = seq.to_be_bytes().to_vec();
    body.extend((0..len - 8).map(|i| (seq as usize + i) as u8));
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_each_exchange_a_thousand_frames_through_a_small_ring() -> Test {
    let harness = Harness::start_with_ring(
        4096,
        |c| c.with_handshake(HandshakeForm::Bounds { slots: 128 }),
        echo(),
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let client = harness.client().await;
        tasks.push(tokio::spawn(async move {
            let RawClient {
                ids,
                mut rx,
                mut tx,
                ..
            } = client;
            let id = ids.first() + 7;
            let sender = tokio::spawn(async move {
                use futures_util::SinkExt;
                let mut checksum = 0u64;
                for seq in 0..1000u64 {
                    let body = body(seq);
                    checksum = body
                        .iter()
                        .fold(checksum, |c, &b| c.wrapping_mul(31) + u64::from(b));
                    tx.feed(Frame::new(id, Flags::NONE, &body).unwrap())
                        .await
                        .unwrap();
                }
                SinkExt::<Frame>::flush(&mut tx).await.unwrap();
                (tx, checksum)
            });
            use futures_util::StreamExt;
            let mut checksum = 0u64;
            for seq in 0..1000u64 {
                let frame = rx.next().await.unwrap().unwrap();
                assert_eq!(frame.id(), id);
                assert_eq!(
                    frame.body(),
                    &body(seq)[..],
                    "frame {seq} in order and intact"
                );
                checksum = frame
                    .body()
                    .iter()
                    .fold(checksum, |c, &b| c.wrapping_mul(31) + u64::from(b));
            }
            let (_tx, sent) = sender.await.unwrap();
            assert_eq!(checksum, sent);
        }));
    }
    for task in tasks {
        tokio::time::timeout(HANG_GUARD, task).await??;
    }
    let stats = harness.relay.stats();
    assert_eq!(stats.client_to_agent_frames, 64_000);
    assert_eq!(stats.dropped, Default::default());
    assert!(stats.ring.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_outside_the_clients_range_disconnects_it_and_never_reaches_the_agent() -> Test {
    let harness = Harness::start(|c| c, echo()).await;
    let mut spy = harness.client().await;
    let mut victim = harness.client().await;
    spy.frame(victim.ids.first(), Flags::NONE, b"spy").await;
    assert!(spy.closed().await);
    victim.frame(victim.ids.first(), Flags::NONE, b"ping").await;
    assert_eq!(victim.next().await.unwrap().body(), b"ping");
    assert!(harness.agent.received().iter().all(|f| f.body() != b"spy"));
    assert_eq!(harness.relay.stats().clients_rejected, 1);
    Ok(())
}

fn kill_ids(frames: &[Frame]) -> Vec<u32> {
    frames
        .iter()
        .filter(|f| Message::from_frame(f) == Ok(Message::ExecSignal(ExecSignal { signal: 9 })))
        .map(Frame::id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_kills_each_open_session_exactly_once() -> Test {
    let harness = Harness::start(|c| c, sink()).await;
    let mut client = harness.client().await;
    let first = client.ids.first();
    for id in [first, first + 1, first + 2] {
        client.frame(id, Flags::SESSION_START, b"request").await;
    }
    harness
        .agent
        .wait_for("three requests", |f| f.len() == 3)
        .await;
    harness
        .agent
        .send(&Message::ExecExited(ExecExited { code: 0 }).to_frame(first + 1)?);
    assert_eq!(client.next().await.unwrap().id(), first + 1);
    drop(client);
    let frames = harness
        .agent
        .wait_for("two kills", |f| kill_ids(f).len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut kills = kill_ids(&harness.agent.received());
    kills.sort_unstable();
    assert_eq!(kills, vec![first, first + 2], "{frames:?}");
    assert_eq!(harness.relay.stats().kills_sent, 2);
    Ok(())
}

/// Echoes frames whose body starts with "ping"; ignores the rest.
fn ping_echo() -> Behaviour {
    Box::new(|frame| {
        if frame.body().starts_with(b"ping") {
            vec![frame.clone()]
        } else {
            Vec::new()
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_never_receives_frames_for_the_previous_owners_sessions() -> Test {
    let harness = Harness::start(
        |c| {
            c.with_handshake(HandshakeForm::Bounds { slots: 2 })
                .with_quarantine_grace(Duration::from_secs(600))
        },
        ping_echo(),
    )
    .await;
    let mut a = harness.client().await;
    let session = a.ids.first();
    a.frame(session, Flags::SESSION_START, b"request").await;
    harness
        .agent
        .wait_for("the request", |f| f.len() == 1)
        .await;
    drop(a);
    harness
        .agent
        .wait_for("the kill", |f| kill_ids(f) == vec![session])
        .await;

    // Slot 0 rests; the next client gets slot 1, and a third is refused.
    let mut b = harness.client().await;
    assert!(!b.ids.contains(session));
    let refused = tokio::net::UnixStream::connect(harness.socket()).await?;
    assert!(RawClient::handshake(refused).await.is_none());

    // The killed session's late output is dropped, its end frees the slot.
    harness
        .agent
        .send(&Frame::new(session, Flags::NONE, b"late output")?);
    harness
        .agent
        .send(&Message::ExecExited(ExecExited { code: 137 }).to_frame(session)?);
    harness
        .wait_stats("two drops for the killed session", |s| {
            s.dropped.tombstoned == 2
        })
        .await;
    harness
        .wait_stats("the slot freed", |s| s.slots_quarantined == 0)
        .await;
    let mut c = harness.client().await;
    assert!(
        c.ids.contains(session),
        "the rested slot is handed out again"
    );

    for client in [&mut b, &mut c] {
        let id = client.ids.first() + 1;
        client.frame(id, Flags::NONE, b"ping").await;
        let frame = client.next().await.unwrap();
        assert_eq!(
            (frame.id(), frame.body()),
            (id, &b"ping"[..]),
            "nothing arrived before"
        );
    }
    assert_eq!(harness.relay.stats().clients_refused, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_slot_is_taken_the_next_connection_is_refused_until_one_frees() -> Test {
    let harness = Harness::start(|c| c.with_max_clients(2), sink()).await;
    let a = harness.client().await;
    let _b = harness.client().await;
    let stream = tokio::net::UnixStream::connect(harness.socket()).await?;
    assert!(
        RawClient::handshake(stream).await.is_none(),
        "closed without a greeting"
    );
    let stats = harness.relay.stats();
    assert_eq!((stats.clients_connected, stats.clients_refused), (2, 1));
    drop(a);
    harness
        .wait_stats("one client left", |s| s.clients_connected == 1)
        .await;
    let _c = harness.client().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_client_input_disconnects_only_that_client() -> Test {
    let harness = Harness::start(|c| c, echo()).await;
    let mut good = harness.client().await;
    let cases: [&[u8]; 3] = [
        &[0, 0, 0, 3, 1, 2, 3],
        &[0, 0x40, 0, 1],
        // A frame cut short: 100 bytes announced, 10 sent, then EOF.
        &[0, 0, 0, 100, 0, 0, 0, 1, 0, 1, 2, 3, 4, 5],
    ];
    for (n, bytes) in cases.iter().enumerate() {
        let mut bad = harness.client().await;
        let mut bytes = bytes.to_vec();
        if n == 2 {
            bytes[4..8].copy_from_slice(&bad.ids.first().to_be_bytes());
        }
        bad.send_raw(&bytes).await;
        bad.shutdown_write().await;
        assert!(bad.closed().await);
        good.frame(good.ids.first(), Flags::NONE, b"still here")
            .await;
        assert_eq!(good.next().await.unwrap().body(), b"still here");
    }
    harness
        .wait_stats("three malformed clients", |s| s.clients_malformed == 3)
        .await;
    assert!(
        harness
            .agent
            .received()
            .iter()
            .all(|f| f.body() == b"still here")
    );
    Ok(())
}

/// 32 KiB for `id`: what the agent floods a client with.
fn flood_frame(id: u32) -> Frame {
    Frame::new(id, Flags::NONE, &vec![0xab; 32 * 1024]).unwrap()
}

async fn ping_during(harness: &Harness, rounds: usize) {
    let mut pinger = harness.client().await;
    let id = pinger.ids.first();
    for n in 0..rounds {
        let body = format!("ping {n}");
        pinger.frame(id, Flags::NONE, body.as_bytes()).await;
        let reply = pinger.next().await.unwrap();
        assert_eq!(reply.body(), body.as_bytes(), "round trip {n} completes");
        let stats = harness.relay.stats();
        assert!(
            stats.queued_bytes <= 2 << 20,
            "queues stay within budget: {stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_flood_to_a_client_that_never_reads_cuts_it_off_and_spares_the_others() -> Test {
    let harness = Harness::start(
        |c| {
            c.with_client_queue_budget(1 << 20)
                .with_total_queue_budget(2 << 20)
        },
        ping_echo(),
    )
    .await;
    let mut sleeper = harness.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let flood = flood_frame(sleeper.ids.first());
    harness.agent.source(&flood, usize::MAX, &stop);
    ping_during(&harness, 300).await;
    harness
        .wait_stats("the sleeper cut off", |s| s.slow_over_budget == 1)
        .await;
    stop.store(true, Ordering::Relaxed);
    assert!(sleeper.closed().await);
    let stats = harness.relay.stats();
    assert!(stats.dropped.slow_consumer >= 1);
    assert_eq!(stats.slow_consumers(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_to_a_client_that_never_reads_is_cut_off_at_the_stall_timeout() -> Test {
    let harness = Harness::start(
        |c| {
            c.with_client_queue_budget(4 << 20)
                .with_stall_timeout(Duration::from_millis(300))
        },
        ping_echo(),
    )
    .await;
    let mut sleeper = harness.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    // 1.5 MiB: more than the socket buffer takes, less than the budget.
    harness
        .agent
        .source(&flood_frame(sleeper.ids.first()), 48, &stop);
    ping_during(&harness, 100).await;
    harness
        .wait_stats("the sleeper cut off", |s| s.slow_stalled == 1)
        .await;
    assert_eq!(harness.relay.stats().slow_over_budget, 0);
    assert!(sleeper.closed().await);
    ping_during(&harness, 10).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_session_limit_is_answered_with_an_error_and_the_client_stays() {
    use relay_codec::payload::{ExecRequest, FsOp, FsRequest};
    let harness = Harness::start(|c| c.with_max_sessions_per_client(2), sink()).await;
    let mut client = harness.client().await;
    let first = client.ids.first();
    for id in [first, first + 1] {
        let request = Message::ExecRequest(ExecRequest::new("sleep", ["100"]));
        client.send(request.to_frame(id).unwrap()).await;
    }
    // The third exec and an fs request are answered by the relay itself.
    let exec = Message::ExecRequest(ExecRequest::new("true", Vec::<String>::new()));
    client.send(exec.to_frame(first + 2).unwrap()).await;
    let fs = Message::FsRequest(FsRequest {
        op: FsOp::Stat { path: "/".into() },
    });
    client.send(fs.to_frame(first + 3).unwrap()).await;
    let Message::ExecStderr(line) = Message::from_frame(&client.next().await.unwrap()).unwrap()
    else {
        panic!("expected a stderr line");
    };
    assert!(String::from_utf8_lossy(&line.data).contains("2 sessions open"));
    let exited = client.next().await.unwrap();
    assert_eq!((exited.id(), exited.flags()), (first + 2, Flags::TERMINAL));
    assert_eq!(
        Message::from_frame(&exited).unwrap(),
        Message::ExecExited(ExecExited { code: 126 })
    );
    let response = client.next().await.unwrap();
    let Message::FsResponse(response) = Message::from_frame(&response).unwrap() else {
        panic!("expected an fs response");
    };
    assert!(!response.ok);
    // The client keeps its two sessions and its connection; the agent saw
    // only the two requests it can serve.
    let stats = harness.relay.stats();
    assert_eq!((stats.clients_connected, stats.sessions_open), (1, 2));
    assert_eq!(stats.sessions_refused, 2);
    harness
        .agent
        .wait_for("the two requests it can serve", |f| f.len() == 2)
        .await;
    // A frame sent after the refused ones arrives next: they never went.
    client
        .send(Frame::new(first, Flags::NONE, b"after").unwrap())
        .await;
    let frames = harness
        .agent
        .wait_for("the frame after", |f| f.len() == 3)
        .await;
    assert_eq!(frames[2].body(), b"after");
    harness
        .agent
        .send(&Frame::new(first, Flags::TERMINAL, b"done").unwrap());
    assert_eq!(client.next().await.unwrap().id(), first);
}
