//! The relay's side of per-session flow control, against a test agent that
//! offers it, and budget and shutdown edge cases around it.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::time::Duration;

use relay_codec::flow;
use relay_codec::payload::{ExecExited, FlowCredit};
use relay_codec::{CONNECTION_ID, Flags, Frame, Message};
use relay_server::RelayExit;
use relay_test_support::{HANG_GUARD, RawClient, ready_frame_offering, sink};
use support::Harness;

type Test = Result<(), Box<dyn std::error::Error>>;

async fn flow_harness(window: u32) -> Harness {
    Harness::start_with_ready(1 << 16, ready_frame_offering(window), |c| c, sink()).await
}

/// The smallest window the relay accepts (it clamps smaller offers).
const WINDOW: u32 = 64 * 1024;

/// One credit frame for `bytes` on session `id`.
fn credit(id: u32, bytes: u32) -> Frame {
    flow::credit_frames(id, u64::from(bytes))
        .next()
        .expect("credit for a positive amount")
}

/// A relay whose agent offers `WINDOW`, and a client with one session
/// open: the agent has read the acceptance and the session's request.
async fn open_session() -> (Harness, RawClient, u32) {
    let harness = flow_harness(WINDOW).await;
    let mut client = harness.client().await;
    let id = client.ids.first();
    client.frame(id, Flags::SESSION_START, b"request").await;
    harness
        .agent
        .wait_for("the acceptance and the request", |f| f.len() == 2)
        .await;
    (harness, client, id)
}

/// A session (window 64 KiB) whose third frame the relay holds for credit.
/// The agent has received the acceptance, the request and one data frame.
async fn held_frame() -> (Harness, RawClient, u32) {
    let (harness, mut client, id) = open_session().await;
    client.frame(id, Flags::NONE, &[1; 70_000]).await;
    client.frame(id, Flags::NONE, &[2; 5000]).await;
    harness
        .wait_stats("a held frame", |s| s.flow.unwrap().client_waits > 0)
        .await;
    (harness, client, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_accepts_an_offer_first_with_the_window_clamped() -> Test {
    for (offered, accepted) in [(1, WINDOW), (1 << 20, 1 << 20), (u32::MAX, 64 << 20)] {
        let harness = flow_harness(offered).await;
        let mut client = harness.client().await;
        let id = client.ids.first();
        client.frame(id, Flags::SESSION_START, b"request").await;
        let frames = harness
            .agent
            .wait_for("the acceptance and the request", |f| f.len() == 2)
            .await;
        assert_eq!(frames[0].id(), CONNECTION_ID);
        assert_eq!(frames[0], flow::accept_frame(accepted));
        assert_eq!(frames[1].body(), b"request");
        assert_eq!(harness.relay.stats().flow.unwrap().window, accepted);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_offer_the_relay_sends_the_agent_nothing_of_its_own() -> Test {
    let harness = Harness::start(|c| c, sink()).await;
    let mut client = harness.client().await;
    let id = client.ids.first();
    client.frame(id, Flags::SESSION_START, b"request").await;
    let frames = harness
        .agent
        .wait_for("the request", |f| !f.is_empty())
        .await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].body(), b"request");
    assert!(harness.relay.stats().flow.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_held_for_credit_goes_once_the_agent_returns_credit() -> Test {
    let (harness, _client, id) = held_frame().await;
    assert_eq!(
        harness.agent.received().len(),
        3,
        "the second data frame waits"
    );
    harness.agent.send(&credit(id, 80_000));
    harness
        .agent
        .wait_for("the held frame", |f| f.len() == 4)
        .await;
    assert!(harness.agent.received()[3].body().iter().all(|&b| b == 2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_releases_the_frame_held_for_it_and_its_client_can_leave() -> Test {
    let (harness, mut client, id) = held_frame().await;
    // The process exits without reading: no credit will ever come back.
    harness
        .agent
        .send(&Message::ExecExited(ExecExited { code: 0 }).to_frame(id)?);
    assert_eq!(client.next().await.unwrap().flags(), Flags::TERMINAL);
    harness
        .agent
        .wait_for("the released frame", |f| f.len() == 4)
        .await;
    drop(client);
    let stats = harness
        .wait_stats("the client gone", |s| s.clients_connected == 0)
        .await;
    assert_eq!(stats.flow.unwrap().sessions, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_frames_never_reach_clients_and_clients_cannot_send_them() -> Test {
    let (harness, mut client, id) = open_session().await;
    let mut intruder = harness.client().await;
    // The connection id is no client's: sending credit there is a violation.
    intruder.send(credit(intruder.ids.first(), 1 << 30)).await;
    assert!(intruder.closed().await, "the intruder is disconnected");
    harness.agent.send(&credit(id, 10));
    harness.agent.send(&Frame::new(id, Flags::NONE, b"output")?);
    assert_eq!(client.next().await.unwrap().body(), b"output");
    let stats = harness.relay.stats();
    assert_eq!(stats.flow.unwrap().credits_received, 1);
    assert_eq!(
        harness.agent.received().len(),
        2,
        "only the acceptance and the request went to the agent"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_leaving_the_relay_is_credited_back_in_half_windows() -> Test {
    let (harness, mut client, id) = open_session().await;
    for _ in 0..40 {
        harness
            .agent
            .send(&Frame::new(id, Flags::NONE, &[0; 1000])?);
    }
    for _ in 0..40 {
        client.next().await.unwrap();
    }
    let is_credit = |f: &Frame| {
        f.id() == CONNECTION_ID && matches!(Message::from_frame(f), Ok(Message::FlowCredit(_)))
    };
    let frames = harness
        .agent
        .wait_for("credit", |f| f.iter().any(is_credit))
        .await;
    let Message::FlowCredit(FlowCredit {
        id: credited,
        bytes,
    }) = Message::from_frame(frames.iter().find(|f| is_credit(f)).unwrap())?
    else {
        panic!("not a credit frame");
    };
    assert_eq!(credited, id);
    assert!(bytes >= WINDOW / 2, "half a window at least: {bytes}");
    Ok(())
}

/// Has the agent send `count` frames of 1 MiB for session `id`.
fn send_mebibytes(harness: &Harness, id: u32, count: usize) {
    let frame = Frame::new(id, Flags::NONE, &vec![0; 1 << 20]).unwrap();
    for _ in 0..count {
        harness.agent.send(&frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_one_client_for_the_total_budget_spares_the_others() -> Test {
    let harness = Harness::start(
        |c| {
            c.with_total_queue_budget(7 << 19)
                .with_client_queue_budget(8 << 20)
        },
        sink(),
    )
    .await;
    let sleeper = harness.client().await;
    let mut reader = harness.client().await;
    // 3 MiB the sleeper will never take...
    send_mebibytes(&harness, sleeper.ids.first(), 3);
    harness
        .wait_stats("the sleeper's frames queued", |s| s.agent_frames >= 4)
        .await;
    // Let its writer take the first into a write that its full socket
    // blocks: 1 MiB in flight, 2 MiB queued. The total budget (3.5 MiB)
    // then has room for the reader's 3 MiB only if the in-flight bytes of
    // the client cut off are released with it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Together over the total: the largest queue (the sleeper's, being
    // written into its full socket) is cut, and only that one.
    harness.agent.send(&Frame::new(
        reader.ids.first(),
        Flags::NONE,
        &vec![1; 3 << 20],
    )?);
    assert_eq!(reader.next().await.unwrap().wire_len(), (3 << 20) + 9);
    let stats = harness.relay.stats();
    assert_eq!(stats.slow_total_budget, 1, "{stats:?}");
    drop(sleeper);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flush_deadline_bounds_a_shutdown_behind_a_client_that_never_reads() -> Test {
    let harness = Harness::start(
        |c| {
            c.with_stall_timeout(Duration::from_secs(3600))
                .with_shutdown_flush_deadline(Duration::from_millis(200))
        },
        sink(),
    )
    .await;
    let sleeper = harness.client().await;
    send_mebibytes(&harness, sleeper.ids.first(), 8);
    harness
        .wait_stats("frames queued", |s| s.queued_bytes > 1 << 20)
        .await;
    harness.relay.shutdown();
    // Without the deadline this would wait for the hour-long stall timeout.
    let exit = tokio::time::timeout(HANG_GUARD, harness.relay.join()).await?;
    assert!(matches!(exit, Ok(RelayExit::Shutdown)), "{exit:?}");
    drop(sleeper);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_for_a_departed_clients_session_earns_the_agent_no_credit() -> Test {
    let (harness, client, id) = open_session().await;
    drop(client);
    harness
        .wait_stats("the client gone", |s| s.clients_connected == 0)
        .await;
    // Several windows' worth for nobody, then the session ends.
    for _ in 0..200 {
        harness
            .agent
            .send(&Frame::new(id, Flags::NONE, &[0; 1000])?);
    }
    harness
        .agent
        .send(&Message::ExecExited(ExecExited { code: 137 }).to_frame(id)?);
    let stats = harness
        .wait_stats("every frame routed", |s| s.agent_frames >= 202)
        .await;
    assert_eq!(stats.flow.unwrap().credits_sent, 0);
    assert_eq!(stats.flow.unwrap().sessions, 0);
    Ok(())
}
