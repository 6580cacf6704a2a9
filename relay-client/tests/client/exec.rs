//! Exec sessions: output, exit codes, stdin, signals, concurrency, backpressure.

use bytes::Bytes;
use relay_client::{Client, ClientConfig, ExecEvent, ExecRequest, ExitStatus, Output};
use relay_codec::{Handshake, IdRange, LEGACY_STEP};
use relay_test_support::{READY, fnv1a, message_type, pseudo_random};
use tokio::task::JoinSet;

use crate::support::{self, Encoding};

fn legacy() -> Handshake {
    Handshake::Legacy {
        offset: LEGACY_STEP,
    }
}

fn no_args() -> [&'static str; 0] {
    []
}

/// `input` through the fake's `cat`, stdin closed after it.
async fn through_cat(client: &Client, input: &[u8]) -> Output {
    let request = ExecRequest::new("cat", no_args());
    let stdin = Some(Bytes::copy_from_slice(input));
    client.exec_output(request, stdin).await.unwrap()
}

#[tokio::test]
async fn exec_output_returns_the_stdout_and_the_exit_code() {
    let (client, _fake) = support::client(legacy()).await;
    let output = support::run(&client, "echo", &["hello", "world"]).await;
    assert_eq!(output.stdout, b"hello world\n");
    assert!(output.stderr.is_empty());
    assert_eq!(output.code, 0);
    assert!(output.status().success());
}

#[tokio::test]
async fn a_nonzero_exit_code_is_reported_as_is() {
    let (client, _fake) = support::client(legacy()).await;
    let session = support::start(&client, "exit", &["7"]).await;
    assert_eq!(session.wait().await.unwrap(), ExitStatus { code: 7 });
}

#[tokio::test]
async fn stdout_and_stderr_are_kept_apart() {
    let (client, _fake) = support::client(legacy()).await;
    let output = support::run(&client, "split", &["to stdout", "to stderr"]).await;
    assert_eq!(output.stdout, b"to stdout");
    assert_eq!(output.stderr, b"to stderr");
    assert_eq!(output.code, 3);
}

#[tokio::test]
async fn stdin_is_delivered_in_full_and_closing_it_ends_the_command() {
    let (client, _fake) = support::client(legacy()).await;
    // Larger than one stdin chunk, so it crosses several frames.
    let input = pseudo_random(1024 * 1024 + 17, 7);
    let output = through_cat(&client, &input).await;
    assert_eq!(output.code, 0);
    assert_eq!(fnv1a(&output.stdout), fnv1a(&input));
    assert_eq!(output.stdout.len(), input.len());
}

#[tokio::test]
async fn the_split_halves_exchange_stdin_and_stdout_interactively() {
    let (client, _fake) = support::client(legacy()).await;
    let session = support::start(&client, "cat", &[]).await;
    let id = session.id();
    let (input, mut events) = session.split();
    assert_eq!((input.id(), events.id()), (id, id));

    let Some(ExecEvent::Started { pid }) = events.next().await.unwrap() else {
        panic!("the first event is not Started");
    };
    assert_eq!(events.pid(), Some(pid));
    for line in ["first line\n", "second line\n"] {
        input.write_stdin(line.as_bytes()).await.unwrap();
        let event = events.next().await.unwrap();
        assert_eq!(event, Some(ExecEvent::Stdout(Bytes::from(line))));
    }
    input.close_stdin().await.unwrap();
    assert_eq!(
        events.next().await.unwrap(),
        Some(ExecEvent::Exited(ExitStatus { code: 0 }))
    );
    assert_eq!(events.next().await.unwrap(), None);
    assert_eq!(events.exit_status(), Some(ExitStatus { code: 0 }));
}

#[tokio::test]
async fn copy_stdin_from_forwards_a_reader_then_closes_stdin() {
    let (client, _fake) = support::client(legacy()).await;
    let session = support::start(&client, "cat", &[]).await;
    let (input, events) = session.split();
    let source: &[u8] = b"piped through cat";
    let (copied, output) = tokio::join!(input.copy_stdin_from(source), events.output());
    assert_eq!(copied.unwrap(), source.len() as u64);
    let output = output.unwrap();
    assert_eq!(output.stdout, source);
    assert_eq!(output.code, 0);
}

#[tokio::test]
async fn signals_and_resizes_reach_the_running_command() {
    let (client, _fake) = support::client(legacy()).await;
    let mut session = support::start(&client, "sleep", &[]).await;
    assert!(matches!(
        session.next_event().await.unwrap(),
        Some(ExecEvent::Started { .. })
    ));
    assert!(session.pid().is_some());
    session.resize(40, 120).await.unwrap();
    assert_eq!(
        session.next_event().await.unwrap(),
        Some(ExecEvent::Stdout(Bytes::from_static(b"resized 40x120\n")))
    );
    session.signal(15).await.unwrap();
    assert_eq!(session.wait().await.unwrap().code, 128 + 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sessions_share_one_client() {
    let (client, fake) = support::client(legacy()).await;
    let mut tasks = JoinSet::new();
    for i in 0..64u64 {
        let client = client.clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                let output = support::run(&client, "echo", &[&i.to_string()]).await;
                assert_eq!(output.stdout, format!("{i}\n").as_bytes());
            } else {
                let input = pseudo_random(100_000 + i as usize, i);
                let output = through_cat(&client, &input).await;
                assert_eq!(fnv1a(&output.stdout), fnv1a(&input));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(client.in_flight(), 0);
    drop(client);
    let report = fake.await.unwrap();
    assert_eq!(report.sessions.len(), 64);
    assert!(report.reused_in_flight.is_empty());
    assert!(report.out_of_range.is_empty());
}

#[tokio::test]
async fn a_one_frame_session_buffer_loses_no_output() {
    let config = ClientConfig::default().with_session_buffer(1);
    let (client, _fake) = support::client_with(legacy(), Encoding::Ours, config).await;
    let output = support::run(&client, "burst", &["300", "1000"]).await;
    assert_eq!(output.stdout.len(), 300 * 1000);
    assert_eq!(output.code, 0);
}

#[tokio::test]
async fn a_dropped_session_handle_does_not_block_other_sessions() {
    let config = ClientConfig::default().with_session_buffer(1);
    let (client, _fake) = support::client_with(legacy(), Encoding::Ours, config).await;
    let abandoned = support::start(&client, "burst", &["500", "10000"]).await;
    drop(abandoned);
    let output = support::run(&client, "echo", &["still", "here"]).await;
    assert_eq!(output.stdout, b"still here\n");
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn a_session_opened_with_a_raw_request_yields_its_frames_and_messages() {
    use relay_codec::{Flags, Message};
    let (client, _fake) = support::client(legacy()).await;
    let mut session = client
        .open(&Message::ExecRequest(ExecRequest::new("echo", ["raw"])))
        .await
        .unwrap();
    let started = session.next_frame().await.unwrap().unwrap();
    assert_eq!(started.id(), session.id());
    assert_eq!(
        message_type(&started),
        relay_codec::MessageType::ExecStarted
    );
    let Some(Message::ExecStdout(data)) = session.next_message().await.unwrap() else {
        panic!("expected stdout");
    };
    assert_eq!(data.data, b"raw\n");
    let exited = session.next_frame().await.unwrap().unwrap();
    assert!(exited.flags().contains(Flags::TERMINAL));
    assert!(session.is_finished());
    assert_eq!(session.next_frame().await.unwrap(), None);
}

#[tokio::test]
async fn a_message_that_does_not_open_a_session_is_refused() {
    use relay_client::ClientError;
    use relay_codec::{Message, MessageType};
    let (client, _fake) = support::client(legacy()).await;
    let error = client.open(&Message::Shutdown).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::NotASessionRequest {
                message_type: MessageType::Shutdown
            }
        ),
        "{error:?}"
    );
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn frames_encoded_by_microsandbox_protocol_are_understood() {
    let range = IdRange::new(1, 100).unwrap();
    let (client, _fake) = support::client_with(
        Handshake::Bounds { range },
        Encoding::Microsandbox,
        ClientConfig::default(),
    )
    .await;
    assert_eq!(client.ready(), &READY);
    let output = support::run(&client, "split", &["their out", "their err"]).await;
    assert_eq!(output.stdout, b"their out");
    assert_eq!(output.stderr, b"their err");
    assert_eq!(output.code, 3);
    let mut session = support::start(&client, "echo", &["x"]).await;
    assert!(matches!(
        session.next_event().await.unwrap(),
        Some(ExecEvent::Started { pid }) if pid >= 100
    ));
}
