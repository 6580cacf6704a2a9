//! The relay over real Unix sockets and a real ring, with the agent played by
//! threads on the ring's device end.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use relay_codec::payload::{ExecExited, ExecSignal};
use relay_codec::{Flags, Frame, Message};
use relay_server::{HandshakeForm, Relay, RelayConfig, RelayError, RelayExit};
use support::{HANG_GUARD, Harness, TestAgent, TestClient, echo, ready_frame, silent, temp_dir};
use tokio::io::AsyncWriteExt;

type Test = Result<(), Box<dyn std::error::Error>>;

/// Polls the relay's stats until `pred` holds.
async fn until(harness: &Harness, what: &str, pred: impl Fn(&relay_server::StatsSnapshot) -> bool) {
    let start = std::time::Instant::now();
    while !pred(&harness.relay.stats()) {
        assert!(start.elapsed() < HANG_GUARD, "never reached: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

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
            let TestClient {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_frame_with_id_zero_is_forwarded_and_reported_to_the_owner() -> Test {
    let harness = Harness::start(|c| c, silent()).await;
    let mut drain = harness.relay.drain_requests();
    let mut client = harness.client().await;
    client.send(Message::Shutdown.to_frame(0)?).await;
    tokio::time::timeout(HANG_GUARD, drain.changed()).await??;
    assert_eq!(*drain.borrow(), 1);
    harness
        .agent
        .wait_for("the shutdown frame", |f| {
            f.iter().any(|f| f.flags() == Flags::SHUTDOWN)
        })
        .await;
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
    let harness = Harness::start(|c| c, silent()).await;
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
fn ping_echo() -> support::Behaviour {
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
    assert!(TestClient::handshake(refused).await.is_none());

    // The killed session's late output is dropped, its end frees the slot.
    harness
        .agent
        .send(&Frame::new(session, Flags::NONE, b"late output")?);
    harness
        .agent
        .send(&Message::ExecExited(ExecExited { code: 137 }).to_frame(session)?);
    until(&harness, "two drops for the killed session", |s| {
        s.dropped.tombstoned == 2
    })
    .await;
    until(&harness, "the slot freed", |s| s.slots_quarantined == 0).await;
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
    let harness = Harness::start(|c| c.with_max_clients(2), silent()).await;
    let a = harness.client().await;
    let _b = harness.client().await;
    let stream = tokio::net::UnixStream::connect(harness.socket()).await?;
    assert!(
        TestClient::handshake(stream).await.is_none(),
        "closed without a greeting"
    );
    let stats = harness.relay.stats();
    assert_eq!((stats.clients_connected, stats.clients_refused), (2, 1));
    drop(a);
    until(&harness, "one client left", |s| s.clients_connected == 1).await;
    let _c = harness.client().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_core_ready_are_discarded_and_a_later_ready_replaces_the_first() -> Test {
    let dir = temp_dir();
    let (device, relay_end) = relay_ring::duplex(1 << 16)?;
    let agent = TestAgent::start(device, None, echo());
    let mut relay = Relay::start_on_ring(RelayConfig::new(dir.join("s")), relay_end)?;
    agent.send(&Frame::new(5, Flags::NONE, b"early")?);
    agent.send(&Frame::new(0, Flags::NONE, b"not a message")?);
    agent.send(&ready_frame(1));
    assert!(relay.ready().await);
    assert_eq!(relay.stats().dropped.before_ready, 2);
    let first = TestClient::connect(&dir.join("s")).await;
    assert_eq!(first.ready, ready_frame(1));

    agent.send(&ready_frame(99));
    let start = std::time::Instant::now();
    while relay.stats().ready_replaced == 0 {
        assert!(start.elapsed() < HANG_GUARD);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = TestClient::connect(&dir.join("s")).await;
    assert_eq!(second.ready, ready_frame(99));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_core_ready_within_the_timeout_is_a_typed_error() -> Test {
    let dir = temp_dir();
    let (device, relay_end) = relay_ring::duplex(4096)?;
    let _agent = TestAgent::start(device, None, silent());
    let config = RelayConfig::new(dir.join("s")).with_ready_timeout(Duration::from_millis(100));
    let relay = Relay::start_on_ring(config, relay_end)?;
    let result = relay.join().await;
    assert!(
        matches!(result, Err(RelayError::ReadyTimeout { .. })),
        "{result:?}"
    );
    assert!(!dir.join("s").exists(), "the socket file is removed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_and_a_live_relay_is_never_replaced() -> Test {
    let harness = Harness::start(|c| c, silent()).await;
    let mode = std::fs::metadata(harness.socket())?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let (_device, relay_end) = relay_ring::duplex(4096)?;
    let second = Relay::start_on_ring(RelayConfig::new(harness.socket()), relay_end);
    assert!(
        matches!(second, Err(RelayError::AlreadyServing { .. })),
        "{second:?}"
    );
    let _still_served = harness.client().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_replaced_but_other_files_are_not() -> Test {
    let dir = temp_dir().join("nested");
    let stale = dir.join("stale.sock");
    std::fs::create_dir_all(&dir)?;
    drop(std::os::unix::net::UnixListener::bind(&stale)?);
    assert!(stale.exists());
    let (device, relay_end) = relay_ring::duplex(4096)?;
    let _agent = TestAgent::start(device, Some(ready_frame(1)), silent());
    let mut relay = Relay::start_on_ring(RelayConfig::new(&stale), relay_end)?;
    assert!(relay.ready().await);
    let _client = TestClient::connect(&stale).await;

    let plain = dir.join("plain");
    std::fs::write(&plain, b"keep me")?;
    let (_device, relay_end) = relay_ring::duplex(4096)?;
    let result = Relay::start_on_ring(RelayConfig::new(&plain), relay_end);
    assert!(
        matches!(result, Err(RelayError::NotASocket { .. })),
        "{result:?}"
    );
    assert_eq!(std::fs::read(&plain)?, b"keep me");

    let fresh_dir = temp_dir().join("a").join("b");
    let (_device, relay_end) = relay_ring::duplex(4096)?;
    let _relay = Relay::start_on_ring(RelayConfig::new(fresh_dir.join("s")), relay_end)?;
    let mode = std::fs::metadata(&fresh_dir)?.permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "a created parent directory is private");
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
        let bad = harness.client().await;
        let TestClient {
            mut rx, tx, ids, ..
        } = bad;
        let mut raw = tx.into_inner();
        let mut bytes = bytes.to_vec();
        if n == 2 {
            bytes[4..8].copy_from_slice(&ids.first().to_be_bytes());
        }
        raw.write_all(&bytes).await?;
        raw.shutdown().await?;
        use futures_util::StreamExt;
        while let Some(Ok(_)) = tokio::time::timeout(HANG_GUARD, rx.next()).await? {}
        good.frame(good.ids.first(), Flags::NONE, b"still here")
            .await;
        assert_eq!(good.next().await.unwrap().body(), b"still here");
    }
    until(&harness, "three malformed clients", |s| {
        s.clients_malformed == 3
    })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_length_from_the_agent_ends_the_relay_and_every_client_sees_eof() -> Test {
    let harness = Harness::start(|c| c, silent()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(harness.client().await);
    }
    harness.agent.send_raw(vec![0, 0, 0, 1]);
    for client in &mut clients {
        assert!(client.closed().await);
    }
    let result = harness.relay.join().await;
    assert!(
        matches!(
            result,
            Err(RelayError::AgentProtocol(
                relay_codec::FrameError::FrameTooShort { len: 1 }
            ))
        ),
        "{result:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_eof_closes_every_client_after_delivering_what_it_sent() -> Test {
    let Harness { relay, agent, dir } = Harness::start(|c| c, silent()).await;
    let mut client = TestClient::connect(&dir.join("agent.sock")).await;
    agent.send(&Frame::new(
        client.ids.first(),
        Flags::TERMINAL,
        b"last words",
    )?);
    agent.close();
    assert_eq!(client.next().await.unwrap().body(), b"last words");
    assert!(client.closed().await);
    assert!(matches!(relay.join().await, Err(RelayError::AgentClosed)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_queued_frames_and_removes_the_socket() -> Test {
    let harness = Harness::start(|c| c, silent()).await;
    let mut client = harness.client().await;
    let id = client.ids.first();
    let chunk = vec![0x5a; 60_000];
    for _ in 0..40 {
        harness.agent.send(&Frame::new(id, Flags::NONE, &chunk)?);
    }
    until(&harness, "all frames read from the ring", |s| {
        s.agent_frames == 41
    })
    .await;
    assert!(
        harness.relay.stats().queued_bytes > 0,
        "some frames wait in the queue"
    );
    harness.relay.shutdown();
    let mut received = 0;
    while let Some(frame) = client.next().await {
        assert_eq!(frame.body(), &chunk[..]);
        received += 1;
    }
    assert_eq!(received, 40);
    let socket = harness.socket();
    assert!(matches!(
        harness.relay.join().await,
        Ok(RelayExit::Shutdown)
    ));
    assert!(!socket.exists());
    Ok(())
}

/// Floods one client from a thread until told to stop.
fn flood(
    agent: &TestAgent,
    id: u32,
    frame_len: usize,
    stop: Arc<AtomicBool>,
    limit: Option<usize>,
) {
    let tx = agent.sender();
    let frame = Frame::new(id, Flags::NONE, &vec![0xab; frame_len]).unwrap();
    std::thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| sent < l) {
            if tx.send(frame.as_wire().to_vec()).is_err() {
                return;
            }
            sent += 1;
        }
    });
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
    flood(
        &harness.agent,
        sleeper.ids.first(),
        32 * 1024,
        stop.clone(),
        None,
    );
    ping_during(&harness, 300).await;
    until(&harness, "the sleeper cut off", |s| s.slow_over_budget == 1).await;
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
    flood(
        &harness.agent,
        sleeper.ids.first(),
        32 * 1024,
        stop,
        Some(48),
    );
    ping_during(&harness, 100).await;
    until(&harness, "the sleeper cut off", |s| s.slow_stalled == 1).await;
    assert_eq!(harness.relay.stats().slow_over_budget, 0);
    assert!(sleeper.closed().await);
    ping_during(&harness, 10).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_before_core_ready_ends_the_wait_for_it() -> Test {
    let dir = temp_dir();
    let (device, relay_end) = relay_ring::duplex(4096)?;
    let _agent = TestAgent::start(device, None, silent());
    let mut relay = Relay::start_on_ring(RelayConfig::new(dir.join("s")), relay_end)?;
    relay.shutdown();
    assert!(!relay.ready().await);
    assert!(matches!(relay.join().await, Ok(RelayExit::Shutdown)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_socket_answers_each_connection_with_a_line_of_stats() -> Test {
    let dir = temp_dir();
    let harness = Harness::start(|c| c.with_control_socket(dir.join("stats")), silent()).await;
    let _client = harness.client().await;
    let mut line = String::new();
    let mut stream = tokio::net::UnixStream::connect(dir.join("stats")).await?;
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut line).await?;
    let stats: serde_json::Value = serde_json::from_str(&line)?;
    assert_eq!(stats["clients_connected"], 1);
    assert!(stats["ring"]["capacity"].as_u64().unwrap() > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_session_limit_is_answered_with_an_error_and_the_client_stays() {
    use relay_codec::payload::{ExecRequest, FsOp, FsRequest};
    let harness = Harness::start(|c| c.with_max_sessions_per_client(2), silent()).await;
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
