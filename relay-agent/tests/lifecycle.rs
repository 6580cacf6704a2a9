//! The agent as a whole: ready, shutdown, end of file, malformed input and
//! the session limit.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::Host;
use relay_agent::{AgentConfig, AgentError, ServeEnd};
use relay_codec::payload::{ExecRequest, FsOp};
use relay_codec::{Flags, Frame, FrameError, Message, envelope_frame};
use relay_test_support::{process_is_gone, temp_dir, wait_until_gone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_first_with_times_since_boot_that_do_not_decrease() {
    let host = Host::start().await;
    let ready = host.ready.clone();
    assert!(ready.boot_time_ns > 0);
    assert!(ready.boot_time_ns <= ready.init_time_ns);
    assert!(ready.init_time_ns <= ready.ready_time_ns);
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Ready happened before this line read the uptime.
    assert!((ready.ready_time_ns as f64) / 1e9 <= uptime + 0.01);
    let (end, _) = host.shutdown().await;
    assert_eq!(end.unwrap(), ServeEnd::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_a_running_sleep_and_ends_serve_without_more_replies() {
    let host = Host::start().await;
    let mut session = host.exec(ExecRequest::new("sleep", ["1000"])).await;
    let pid = session.started().await;
    let mut tty = ExecRequest::new("sleep", ["1000"]);
    tty.tty = true;
    let mut tty_session = host.exec(tty).await;
    let tty_pid = tty_session.started().await;

    let (end, stray) = host.shutdown().await;
    assert_eq!(end.unwrap(), ServeEnd::Shutdown);
    assert!(process_is_gone(pid), "the sleep {pid} still runs");
    assert!(
        process_is_gone(tty_pid),
        "the tty sleep {tty_pid} still runs"
    );
    assert!(stray.is_empty(), "unexpected frames: {stray:?}");
    assert!(session.is_silent_and_closed());
    assert!(tty_session.is_silent_and_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_an_upload_that_never_sent_its_last_chunk() {
    let dir = temp_dir();
    let host = Host::start().await;
    let path = dir.path().join("partial");
    let mut upload = host
        .fs(FsOp::Write {
            path: path.to_str().unwrap().into(),
            mode: None,
        })
        .await;
    host.fs_data(upload.id, b"some but not all").await;
    let mut reader = host.exec(ExecRequest::new("cat", [""; 0])).await;
    reader.started().await;
    let (end, stray) = host.shutdown().await;
    assert_eq!(end.unwrap(), ServeEnd::Shutdown);
    assert!(stray.is_empty());
    assert!(upload.is_silent_and_closed());
    assert!(reader.is_silent_and_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_end_of_file_ends_serve_and_kills_running_processes() {
    let host = Host::start().await;
    let mut session = host
        .exec(ExecRequest::new("sh", ["-c", "sleep 1000 & echo $!; wait"]))
        .await;
    let pid = session.started().await;
    let background: u32 = session.stdout_until("\n").await.trim().parse().unwrap();
    let (end, stray) = host.close().await;
    assert_eq!(end.unwrap(), ServeEnd::Eof);
    assert!(stray.is_empty());
    assert!(process_is_gone(pid));
    // The whole process group was sent SIGKILL; the grandchild, which the
    // agent does not reap, dies a moment later.
    wait_until_gone(background).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_exec_payload_gets_code_2_while_another_session_continues() {
    let host = Host::start().await;
    let mut cat = host.exec(ExecRequest::new("cat", [""; 0])).await;
    cat.started().await;
    host.stdin(cat.id, b"before\n").await;
    cat.stdout_until("before\n").await;

    // A map with the right envelope but a payload that is not an ExecRequest.
    let bad_id = host.next_id();
    let bad = host.subscribe(bad_id);
    let frame = envelope_frame("core.exec.request", bad_id, Flags::SESSION_START, &[0x01]).unwrap();
    host.send(frame).await;
    let outcome = bad.finish().await;
    assert_eq!(outcome.pid, None);
    assert_eq!(outcome.exit_code(), 2);
    let stderr = outcome.stderr_text();
    assert!(
        stderr.starts_with(
            "relay-agent: malformed request: payload of core.exec.request is malformed"
        ),
        "stderr: {stderr:?}"
    );

    host.stdin(cat.id, b"after\n").await;
    assert_eq!(cat.stdout_until("after\n").await, "after\n");
    host.stdin(cat.id, b"").await;
    assert_eq!(cat.finish().await.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_fs_payload_gets_a_failed_response() {
    let host = Host::start().await;
    let id = host.next_id();
    let session = host.subscribe(id);
    host.send(envelope_frame("core.fs.request", id, Flags::SESSION_START, &[0xa0]).unwrap())
        .await;
    let response = session.response().await;
    assert!(!response.ok);
    assert!(
        response
            .error
            .unwrap()
            .starts_with("malformed request: payload of core.fs.request is malformed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_unknown_types_that_open_a_session_get_code_2() {
    let host = Host::start().await;
    let garbage_id = host.next_id();
    let garbage = host.subscribe(garbage_id);
    host.send(Frame::new(garbage_id, Flags::SESSION_START, &[0xff, 0x00, 0x13]).unwrap())
        .await;
    let outcome = garbage.finish().await;
    assert_eq!(outcome.exit_code(), 2);
    assert!(outcome.stderr_text().contains("not a message envelope"));

    let unknown_id = host.next_id();
    let unknown = host.subscribe(unknown_id);
    host.send(
        envelope_frame(
            "core.later.thing",
            unknown_id,
            Flags::SESSION_START,
            &[0xf6],
        )
        .unwrap(),
    )
    .await;
    let outcome = unknown.finish().await;
    assert_eq!(outcome.exit_code(), 2);
    assert!(
        outcome
            .stderr_text()
            .contains("unknown message type \"core.later.thing\"")
    );

    let wrong_id = host.next_id();
    let wrong = host.subscribe(wrong_id);
    let exited = Message::ExecExited(relay_codec::payload::ExecExited { code: 0 });
    host.send(
        exited
            .to_frame_with_flags(wrong_id, Flags::SESSION_START)
            .unwrap(),
    )
    .await;
    let outcome = wrong.finish().await;
    assert_eq!(outcome.exit_code(), 2);
    assert!(
        outcome
            .stderr_text()
            .contains("core.exec.exited is not a request")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_without_session_start_is_ignored() {
    let host = Host::start().await;
    let id = host.next_id();
    host.send(Frame::new(id, Flags::NONE, &[0xff]).unwrap())
        .await;
    host.send(envelope_frame("core.exec.stdin", 999, Flags::NONE, &[0x01]).unwrap())
        .await;
    assert_eq!(host.run("echo", &["fine"]).await.stdout_text(), "fine\n");
    let (end, stray) = host.shutdown().await;
    assert_eq!(end.unwrap(), ServeEnd::Shutdown);
    assert!(stray.is_empty(), "no reply to ignored frames: {stray:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_with_a_short_length_ends_serve_with_an_error() {
    let host = Host::start().await;
    let mut session = host.exec(ExecRequest::new("sleep", ["1000"])).await;
    let pid = session.started().await;
    // len = 2 is below the 5-byte header: the stream cannot be trusted.
    host.send_raw(&[0, 0, 0, 2, 0, 0]).await;
    let (end, _) = host.finish().await;
    assert!(matches!(
        end,
        Err(AgentError::MalformedStream {
            source: FrameError::FrameTooShort { len: 2 }
        })
    ));
    assert!(process_is_gone(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_session_limit_are_refused_and_later_ones_run() {
    let host = Host::start_with(AgentConfig {
        max_sessions: 1,
        flow_window: None,
        ..AgentConfig::default()
    })
    .await;
    let mut sleeper = host.exec(ExecRequest::new("sleep", ["1000"])).await;
    sleeper.started().await;

    let refused = host
        .exec(ExecRequest::new("echo", ["x"]))
        .await
        .finish()
        .await;
    assert_eq!(refused.exit_code(), 126);
    assert!(
        refused
            .stderr_text()
            .contains("too many sessions (at most 1 at once)")
    );
    let response = host.fs_call(FsOp::Stat { path: "/".into() }).await;
    assert!(!response.ok);

    host.signal(sleeper.id, 9).await;
    assert_eq!(sleeper.finish().await.exit_code(), 137);
    // A session stops counting once its terminal frame is sent.
    let outcome = host.run("echo", &["again"]).await;
    assert_eq!(
        (outcome.exit_code(), outcome.stdout_text().as_str()),
        (0, "again\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_after_the_process_stopped_reading_is_discarded_without_stalling_the_agent() {
    let host = Host::start_with(AgentConfig {
        input_queue_bytes: 16,
        flow_window: None,
        ..AgentConfig::default()
    })
    .await;
    let mut session = host.exec(ExecRequest::new("head", ["-c", "4"])).await;
    session.started().await;
    // Far more than the queue and the pipe hold; head exits after 4 bytes.
    let chunk = vec![b'x'; 4096];
    for _ in 0..200 {
        host.stdin(session.id, &chunk).await;
    }
    host.stdin(session.id, b"").await;
    let outcome = session.finish().await;
    assert_eq!(
        (outcome.exit_code(), outcome.stdout_text().as_str()),
        (0, "xxxx")
    );
    assert_eq!(host.run("echo", &["next"]).await.stdout_text(), "next\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_reusable_as_soon_as_its_terminal_frame_arrived() {
    let host = Host::start().await;
    let id = host.next_id();
    for word in ["one", "two", "three"] {
        let session = host.subscribe(id);
        host.send_message(id, &Message::ExecRequest(ExecRequest::new("echo", [word])))
            .await;
        let outcome = session.finish().await;
        assert_eq!(outcome.stdout_text(), format!("{word}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_closing_inside_a_frame_is_an_end_like_any_other() {
    let host = Host::start().await;
    let mut session = host.exec(ExecRequest::new("sleep", ["1000"])).await;
    let pid = session.started().await;
    // A relay that stopped in the middle of writing a frame.
    host.send_raw(&[0, 0, 0, 100, 0, 0, 0, 1]).await;
    let (end, _) = host.close().await;
    assert!(matches!(end, Ok(ServeEnd::Eof)), "{end:?}");
    assert!(process_is_gone(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_cancels_an_upload_whose_client_has_gone() {
    let host = Host::start().await;
    let dir = temp_dir();
    let path = dir.path().join("partial");
    let session = host
        .fs(FsOp::Write {
            path: path.to_str().unwrap().into(),
            mode: None,
        })
        .await;
    host.fs_data(session.id, b"half of it").await;
    // What the relay sends for each session of a departed client.
    host.signal(session.id, 9).await;
    let response = session.response().await;
    assert!(!response.ok);
    assert_eq!(
        response.error.as_deref(),
        Some("write: cancelled by a signal")
    );
    // The id is free again: a new request on it runs.
    let outcome = host.run("echo", &["next"]).await;
    assert_eq!(outcome.stdout_text(), "next\n");
}
