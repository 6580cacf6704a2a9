//! Per-session credit: the agent offers it in `core.ready`, and once the
//! relay accepts, waits for it before sending output and returns it as it
//! delivers input. Without the acceptance it is plain generation 1.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::time::Duration;

use common::Host;
use relay_agent::AgentConfig;
use relay_codec::payload::{ExecRequest, FlowCredit, FlowWindow};
use relay_codec::{CONNECTION_ID, Flags, Frame, MAX_FRAME_SIZE, Message};

const WINDOW: u32 = 256 * 1024;

/// An agent offering `WINDOW`, whose offer nobody has answered yet.
async fn offering_host() -> Host {
    Host::start_with(AgentConfig {
        flow_window: Some(WINDOW),
        output_chunk: 16 * 1024,
        ..AgentConfig::default()
    })
    .await
}

/// An agent whose offer the host accepted.
async fn host() -> Host {
    let host = offering_host().await;
    host.accept_flow(WINDOW).await;
    host
}

fn credit_bytes(frame: &Frame) -> Option<u32> {
    match Message::from_frame(frame).unwrap() {
        Message::FlowCredit(FlowCredit { bytes, .. }) => {
            assert_eq!(
                frame.id(),
                CONNECTION_ID,
                "credit travels on the connection id"
            );
            assert_eq!(frame.flags(), Flags::NONE, "and claims no flag bit");
            Some(bytes)
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_nobody_accepts_leaves_plain_generation_one() {
    let host = offering_host().await;
    let total = 8 * WINDOW as usize;
    // Output: far more than a window arrives without any credit.
    let mut session = host
        .exec(ExecRequest::new(
            "head",
            ["-c", &total.to_string(), "/dev/zero"],
        ))
        .await;
    let mut received = 0;
    loop {
        match Message::from_frame(&session.next_frame().await).unwrap() {
            Message::ExecStdout(data) => received += data.data.len(),
            Message::ExecExited(exited) => break assert_eq!(exited.code, 0),
            Message::FlowCredit(_) => panic!("credit without an acceptance"),
            _ => {}
        }
    }
    assert_eq!(received, total);
    // Input: a window's worth of stdin is never credited back.
    let mut sink = host.exec(ExecRequest::new("sh", ["-c", "wc -c"])).await;
    sink.started().await;
    for _ in 0..16 {
        host.stdin(sink.id, &[3u8; 64 * 1024]).await;
    }
    host.stdin(sink.id, b"").await;
    let mut stdout = Vec::new();
    loop {
        match Message::from_frame(&sink.next_frame().await).unwrap() {
            Message::ExecStdout(data) => stdout.extend(data.data),
            Message::ExecExited(_) => break,
            Message::FlowCredit(_) => panic!("credit without an acceptance"),
            _ => {}
        }
    }
    assert_eq!(String::from_utf8(stdout).unwrap().trim(), "1048576");
    let (_, stray) = host.close().await;
    assert!(
        stray.iter().all(|f| f.id() != CONNECTION_ID),
        "nothing on the connection id: {stray:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_message_offers_the_configured_window() {
    let host = host().await;
    assert_eq!(host.ready.flow, Some(FlowWindow { window: WINDOW }));
    let plain = Host::start().await;
    assert_eq!(plain.ready.flow, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_stops_at_the_window_and_resumes_with_credit() {
    let host = host().await;
    let total = 4 * WINDOW as usize;
    let mut session = host
        .exec(ExecRequest::new(
            "head",
            ["-c", &total.to_string(), "/dev/zero"],
        ))
        .await;
    let mut in_flight = 0usize;
    let mut received = 0usize;
    // Take a window's worth without returning any credit.
    while in_flight < WINDOW as usize {
        let frame = session.next_frame().await;
        in_flight += frame.wire_len();
        if let Message::ExecStdout(data) = Message::from_frame(&frame).unwrap() {
            received += data.data.len();
        }
    }
    // Give the agent every chance to overshoot; it may not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = Vec::new();
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_millis(50), session.next_frame())
            .await
            .map(Some)
    {
        extra.push(frame);
    }
    assert!(
        extra.is_empty(),
        "{} frames past the window without credit",
        extra.len()
    );
    assert!(received < total);

    // Return credit as we consume, like a relay; everything arrives.
    host.credit(session.id, in_flight as u32).await;
    loop {
        let frame = session.next_frame().await;
        let len = frame.wire_len();
        match Message::from_frame(&frame).unwrap() {
            Message::ExecStdout(data) => {
                received += data.data.len();
                host.credit(session.id, len as u32).await;
            }
            Message::ExecExited(exited) => {
                assert_eq!(exited.code, 0);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(received, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_stdin_is_credited_back_in_half_windows() {
    let host = host().await;
    let mut session = host
        .exec(ExecRequest::new("sh", ["-c", "cat > /dev/null; echo done"]))
        .await;
    session.started().await;
    let chunk = vec![7u8; 32 * 1024];
    let mut sent = 0usize;
    for _ in 0..32 {
        let frame =
            relay_codec::data_frame(relay_codec::MessageType::ExecStdin, session.id, &chunk)
                .unwrap();
        sent += frame.wire_len();
        host.send(frame).await;
    }
    let mut credited = 0usize;
    while credited + (WINDOW as usize / 2) <= sent {
        let frame = session.next_frame().await;
        let bytes = credit_bytes(&frame).expect("only credit before stdin ends");
        assert!(bytes >= WINDOW / 2, "credit comes in half windows");
        credited += bytes as usize;
    }
    assert!(credited <= sent + 200, "no more credit than was charged");
    host.stdin(session.id, b"").await;
    assert!(session.stdout_until("done").await.contains("done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_never_reads_stdin_does_not_stall_the_console() {
    let host = host().await;
    let mut stuck = host.exec(ExecRequest::new("sleep", ["1000"])).await;
    stuck.started().await;
    // What a relay may send without credit back: a window plus one frame.
    let big = vec![1u8; MAX_FRAME_SIZE - 64];
    host.send(
        relay_codec::data_frame(relay_codec::MessageType::ExecStdin, stuck.id, &big).unwrap(),
    )
    .await;
    for _ in 0..(WINDOW / 4096) {
        host.stdin(stuck.id, &[2u8; 4000]).await;
    }
    // The console reader is free: another session runs to the end.
    let other = host.run("echo", &["still serving"]).await;
    assert_eq!(other.stdout_text(), "still serving\n");
    host.signal(stuck.id, 9).await;
    // The discarded input is credited back before the session ends.
    loop {
        match Message::from_frame(&stuck.next_frame().await).unwrap() {
            Message::FlowCredit(_) => {}
            Message::ExecExited(exited) => break assert_eq!(exited.code, 137),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_small_stdin_frames_all_arrive() {
    let host = host().await;
    let mut session = host
        .exec(ExecRequest::new("sh", ["-c", "sleep 0.5; wc -c"]))
        .await;
    session.started().await;
    // Small frames pass the relay without credit (up to its overdraft); the
    // agent must queue every one of them, end of stdin included.
    for _ in 0..3000 {
        host.stdin(session.id, &[b'x'; 200]).await;
    }
    host.stdin(session.id, b"").await;
    let mut stdout = Vec::new();
    let code = loop {
        match Message::from_frame(&session.next_frame().await).unwrap() {
            Message::ExecStdout(data) => stdout.extend(data.data),
            Message::ExecExited(exited) => break exited.code,
            _ => {}
        }
    };
    assert_eq!(code, 0);
    assert_eq!(String::from_utf8(stdout).unwrap().trim(), "600000");
}
