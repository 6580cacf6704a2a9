//! Deadlines: connecting to a relay that does not greet, requests the agent
//! never answers, and the ids those requests keep until their end.
//!
//! Timeouts here are short (200 ms); elapsed time is checked only against a
//! generous guard that turns a hang into a failure, never against a tight
//! threshold.

use std::time::Duration;

use relay_client::{Awaited, Client, ClientConfig, ClientError, ExecRequest};
use relay_codec::payload::{FsOp, FsRequest, FsResponse};
use relay_codec::{Flags, Handshake, IdRange, Message, MessageType};
use relay_test_support::{
    FakeRelay, eventually, greeting, guard, message_type, ready_frame, temp_dir,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use crate::support::{self, Encoding};

const SHORT: Duration = Duration::from_millis(200);

fn short_connect() -> ClientConfig {
    ClientConfig::default().with_connect_timeout(Some(SHORT))
}

fn short_requests() -> ClientConfig {
    ClientConfig::default().with_request_timeout(Some(SHORT))
}

fn two_ids() -> Handshake {
    Handshake::Bounds {
        range: IdRange::new(1, 2).unwrap(),
    }
}

/// A client with `config` connected to a relay played by the test, which
/// has greeted it and answers only when told to.
async fn connected(handshake: Handshake, config: ClientConfig) -> (Client, FakeRelay) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let relay = FakeRelay::greet(theirs, handshake, &ready_frame(1)).await;
    let client = Client::from_stream_with(ours, config).await.unwrap();
    (client, relay)
}

/// Waits until `condition` holds (under the hang guard).
async fn until(what: &str, condition: impl Fn() -> bool) {
    eventually(what, || condition().then_some(())).await;
}

fn is_timeout(error: &ClientError, expected: Awaited) -> bool {
    matches!(error, ClientError::Timeout { awaited, after } if *awaited == expected && *after == SHORT)
}

#[tokio::test]
async fn the_default_connect_timeout_is_thirty_seconds_and_requests_have_no_deadline() {
    let config = ClientConfig::default();
    assert_eq!(config.connect_timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        ClientConfig::DEFAULT_CONNECT_TIMEOUT,
        Duration::from_secs(30)
    );
    assert_eq!(config.request_timeout, None);
    let (client, _fake) = support::client(two_ids()).await;
    assert_eq!(client.request_timeout(), None);
}

#[tokio::test]
async fn a_relay_that_accepts_but_never_greets_times_out_waiting_for_the_handshake() {
    let dir = temp_dir();
    let path = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (hold, release) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // Keep the connection open, silent, until the client has given up.
        let _ = release.await;
        drop(stream);
    });

    let error = guard(
        "the handshake",
        Client::connect_with(&path, short_connect()),
    )
    .await
    .unwrap_err();
    assert!(is_timeout(&error, Awaited::Handshake), "{error:?}");
    assert_eq!(
        error.to_string(),
        "timed out after 200ms waiting for the relay's greeting (handshake); \
         is the guest agent up?"
    );
    drop(hold);
    server.await.unwrap();
}

#[tokio::test]
async fn a_greeting_cut_short_before_its_ready_frame_times_out_waiting_for_ready() {
    let ready = ready_frame(1);
    let legacy = Handshake::Legacy { offset: 0 };
    // The id prefix alone, and the prefix with half the ready frame.
    for (handshake, sent) in [(two_ids(), 8), (legacy, 4 + ready.wire_len() / 2)] {
        let greeting = greeting(handshake, &ready);
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(&greeting[..sent]).await.unwrap();

        let error = guard("ready", Client::from_stream_with(ours, short_connect()))
            .await
            .unwrap_err();
        assert!(
            is_timeout(&error, Awaited::Ready),
            "{handshake:?}: {error:?}"
        );
        assert!(error.to_string().contains("core.ready"), "{error}");
        drop(theirs);
    }
}

#[tokio::test]
async fn a_request_the_agent_never_answers_times_out_and_keeps_its_id_until_its_terminal_frame() {
    let (client, mut relay) = connected(two_ids(), short_requests()).await;
    assert_eq!(client.request_timeout(), Some(SHORT));

    let error = guard("the reply", client.fs().stat("/slow"))
        .await
        .unwrap_err();
    assert!(is_timeout(&error, Awaited::Reply), "{error:?}");
    let first = relay.next_frame().await;
    assert_eq!(
        (first.id(), message_type(&first)),
        (1, MessageType::FsRequest)
    );
    assert!(first.flags().contains(Flags::SESSION_START));
    assert_eq!(client.in_flight(), 1);

    // Id 1 is still in flight: the next request takes id 2, and then none is left.
    let error = guard("the reply", client.fs().stat("/slower"))
        .await
        .unwrap_err();
    assert!(is_timeout(&error, Awaited::Reply), "{error:?}");
    assert_eq!(relay.next_frame().await.id(), 2);
    let error = guard("the refusal", client.fs().stat("/x"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::IdsExhausted { in_flight: 2 }),
        "{error:?}"
    );

    // The late answer on id 1 ends that session: only now is id 1 free again.
    relay
        .send_message(1, &Message::FsResponse(FsResponse::ok()))
        .await;
    until("id 1 free", || client.in_flight() == 1).await;
    let mkdir = client.fs();
    let (made, request) = tokio::join!(mkdir.mkdir("/made"), async {
        let request = relay.next_frame().await;
        relay
            .send_message(request.id(), &Message::FsResponse(FsResponse::ok()))
            .await;
        request
    });
    made.unwrap();
    assert_eq!(request.id(), 1);
    assert_eq!(
        Message::from_frame(&request).unwrap(),
        Message::FsRequest(FsRequest {
            op: FsOp::Mkdir {
                path: "/made".into()
            }
        })
    );
    // Id 2 stays in flight: its agent has not answered.
    assert_eq!(client.in_flight(), 1);
}

#[tokio::test]
async fn an_upload_the_relay_does_not_take_times_out_waiting_for_the_request() {
    let (client, mut relay) = connected(two_ids(), short_requests()).await;
    // Far more than the socket buffers hold, and the relay reads nothing.
    let data = vec![7u8; 32 * 1024 * 1024];
    let error = guard(
        "the request written",
        client.fs().write("/big", None, &data),
    )
    .await
    .unwrap_err();
    assert!(is_timeout(&error, Awaited::Request), "{error:?}");
    // The upload may have reached the agent: its id stays in flight.
    assert_eq!(client.in_flight(), 1);
    assert_eq!(relay.next_frame().await.id(), 1);
}

#[tokio::test]
async fn a_command_past_its_deadline_is_killed_and_its_id_frees_up_when_it_exits() {
    let (client, fake) = support::client_with(two_ids(), Encoding::Ours, short_requests()).await;
    let error = guard(
        "the reply",
        client.exec_output(ExecRequest::new("sleep", ["forever"]), None),
    )
    .await
    .unwrap_err();
    assert!(is_timeout(&error, Awaited::Reply), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("timed out after 200ms waiting for the agent's reply"),
        "{error}"
    );
    // The fake's `sleep` ends only on a signal: the kill reached it, and
    // its exit ended the session.
    until("the killed command's id free", || client.in_flight() == 0).await;
    let output = guard(
        "the echo",
        client.exec_output(ExecRequest::new("echo", ["next"]), None),
    )
    .await
    .unwrap();
    assert_eq!(output.stdout, b"next\n");
    drop(client);
    let report = fake.await.unwrap();
    assert_eq!(report.sessions, [1, 2]);
    assert!(report.reused_in_flight.is_empty());
}

#[tokio::test]
async fn a_handle_with_its_own_request_timeout_overrides_the_configured_one() {
    let (client, mut relay) = connected(two_ids(), ClientConfig::default()).await;
    let quick = client.with_request_timeout(Some(SHORT));
    assert_eq!(quick.request_timeout(), Some(SHORT));
    assert_eq!(client.request_timeout(), None);

    // A shutdown frame fits the socket buffer: it is written in time.
    guard("the shutdown", quick.shutdown()).await.unwrap();
    let shutdown = relay.next_frame().await;
    assert_eq!((shutdown.id(), shutdown.flags()), (0, Flags::SHUTDOWN));

    let error = guard("the reply", quick.fs().list("/")).await.unwrap_err();
    assert!(is_timeout(&error, Awaited::Reply), "{error:?}");
    assert_eq!(relay.next_frame().await.id(), 1);

    // The original handle still waits as long as it takes.
    let fs = client.fs();
    let (removed, ()) = tokio::join!(fs.remove("/gone"), async {
        let request = relay.next_frame().await;
        assert_eq!(request.id(), 2);
        tokio::time::sleep(SHORT * 2).await;
        let answer = FsResponse::failed("No such file or directory (os error 2)");
        relay
            .send_message(request.id(), &Message::FsResponse(answer))
            .await;
    });
    assert!(
        matches!(removed, Err(ClientError::Remote { .. })),
        "{removed:?}"
    );
}
