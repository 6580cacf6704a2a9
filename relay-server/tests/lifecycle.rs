//! The relay's life around its clients: `core.ready` before anyone is
//! greeted, its socket file, the agent's stream ending or going wrong, the
//! control socket, and shutdown.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use relay_codec::{Flags, Frame, Message};
use relay_server::{Relay, RelayConfig, RelayError, RelayExit};
use relay_test_support::{HANG_GUARD, RawClient, echo, ready_frame, sink, temp_dir};
use support::{Harness, TestAgent};

type Test = Result<(), Box<dyn std::error::Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_frame_with_id_zero_is_forwarded_and_reported_to_the_owner() -> Test {
    let harness = Harness::start(|c| c, sink()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_core_ready_are_discarded_and_a_later_ready_replaces_the_first() -> Test {
    let mut harness = Harness::unready(1 << 16, |c| c, echo());
    let agent = &harness.agent;
    agent.send(&Frame::new(5, Flags::NONE, b"early")?);
    agent.send(&Frame::new(0, Flags::NONE, b"not a message")?);
    agent.send(&ready_frame(1));
    assert!(harness.relay.ready().await);
    assert_eq!(harness.relay.stats().dropped.before_ready, 2);
    assert_eq!(harness.client().await.ready, ready_frame(1));

    harness.agent.send(&ready_frame(99));
    harness
        .wait_stats("the ready replaced", |s| s.ready_replaced > 0)
        .await;
    assert_eq!(harness.client().await.ready, ready_frame(99));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_core_ready_within_the_timeout_is_a_typed_error() -> Test {
    let Harness { relay, dir, .. } = Harness::unready(
        4096,
        |c| c.with_ready_timeout(Duration::from_millis(100)),
        sink(),
    );
    let result = relay.join().await;
    assert!(
        matches!(result, Err(RelayError::ReadyTimeout { .. })),
        "{result:?}"
    );
    assert!(
        !dir.path().join("agent.sock").exists(),
        "the socket file is removed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_and_a_live_relay_is_never_replaced() -> Test {
    let harness = Harness::start(|c| c, sink()).await;
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
    let tmp = temp_dir();
    let dir = tmp.path().join("nested");
    let stale = dir.join("stale.sock");
    std::fs::create_dir_all(&dir)?;
    drop(std::os::unix::net::UnixListener::bind(&stale)?);
    assert!(stale.exists());
    let (device, relay_end) = relay_ring::duplex(4096)?;
    let agent = TestAgent::on_ring(device, sink());
    agent.send(&ready_frame(1));
    let mut relay = Relay::start_on_ring(RelayConfig::new(&stale), relay_end)?;
    assert!(relay.ready().await);
    let _client = RawClient::connect(&stale).await;

    let plain = dir.join("plain");
    std::fs::write(&plain, b"keep me")?;
    let (_device, relay_end) = relay_ring::duplex(4096)?;
    let result = Relay::start_on_ring(RelayConfig::new(&plain), relay_end);
    assert!(
        matches!(result, Err(RelayError::NotASocket { .. })),
        "{result:?}"
    );
    assert_eq!(std::fs::read(&plain)?, b"keep me");

    let fresh_dir = tmp.path().join("a").join("b");
    let (_device, relay_end) = relay_ring::duplex(4096)?;
    let _relay = Relay::start_on_ring(RelayConfig::new(fresh_dir.join("s")), relay_end)?;
    let mode = std::fs::metadata(&fresh_dir)?.permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "a created parent directory is private");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_length_from_the_agent_ends_the_relay_and_every_client_sees_eof() -> Test {
    let harness = Harness::start(|c| c, sink()).await;
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
    let Harness { relay, agent, dir } = Harness::start(|c| c, sink()).await;
    let mut client = RawClient::connect(&dir.path().join("agent.sock")).await;
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
    let harness = Harness::start(|c| c, sink()).await;
    let mut client = harness.client().await;
    let id = client.ids.first();
    let chunk = vec![0x5a; 60_000];
    for _ in 0..40 {
        harness.agent.send(&Frame::new(id, Flags::NONE, &chunk)?);
    }
    harness
        .wait_stats("all frames read from the ring", |s| s.agent_frames == 41)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_before_core_ready_ends_the_wait_for_it() -> Test {
    let Harness { mut relay, .. } = Harness::unready(4096, |c| c, sink());
    relay.shutdown();
    assert!(!relay.ready().await);
    assert!(matches!(relay.join().await, Ok(RelayExit::Shutdown)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_socket_answers_each_connection_with_a_line_of_stats() -> Test {
    let dir = temp_dir();
    let stats_path = dir.path().join("stats");
    let harness = Harness::start(|c| c.with_control_socket(stats_path.clone()), sink()).await;
    let _client = harness.client().await;
    let mut line = String::new();
    let mut stream = tokio::net::UnixStream::connect(&stats_path).await?;
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut line).await?;
    let stats: serde_json::Value = serde_json::from_str(&line)?;
    assert_eq!(stats["clients_connected"], 1);
    assert!(stats["ring"]["capacity"].as_u64().unwrap() > 0);
    Ok(())
}
