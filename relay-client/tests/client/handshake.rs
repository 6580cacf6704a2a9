//! The greeting: both id-prefix forms detected, and every way it can be wrong.

use relay_client::{Client, ClientError};
use relay_codec::{Handshake, HandshakeError, IdRange, LEGACY_STEP, Message, MessageType};
use relay_test_support::{READY, greeting, ready_frame, temp_dir};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use crate::support::{self, Encoding};

#[tokio::test]
async fn a_legacy_greeting_is_detected_and_gives_the_ids_after_the_offset() {
    let offset = 3 * LEGACY_STEP;
    let (client, _fake) = support::client(Handshake::Legacy { offset }).await;
    assert_eq!(client.handshake(), Handshake::Legacy { offset });
    assert_eq!(client.ids().first(), offset + 1);
    assert_eq!(client.ids().last(), offset + LEGACY_STEP - 1);
    assert_eq!(client.ready(), &READY);
    assert_eq!(
        Message::from_frame(client.ready_frame()).unwrap(),
        Message::Ready(READY)
    );
    let session = support::start(&client, "echo", &["hi"]).await;
    assert_eq!(session.id(), offset + 1);
    assert_eq!(session.output().await.unwrap().stdout, b"hi\n");
}

#[tokio::test]
async fn a_bounds_greeting_is_detected_and_gives_its_range() {
    let range = IdRange::new(5000, 5009).unwrap();
    let (client, _fake) = support::client(Handshake::Bounds { range }).await;
    assert_eq!(client.handshake(), Handshake::Bounds { range });
    assert_eq!(client.ids(), range);
    assert_eq!(client.ready(), &READY);
    let session = support::start(&client, "echo", &["hi"]).await;
    assert_eq!(session.id(), 5000);
    assert_eq!(session.output().await.unwrap().code, 0);
}

#[tokio::test]
async fn a_legacy_greeting_from_slot_zero_never_hands_out_id_zero() {
    let (client, _fake) = support::client(Handshake::Legacy { offset: 0 }).await;
    assert_eq!(client.ids().first(), 1);
    let session = support::start(&client, "echo", &["hi"]).await;
    assert_eq!(session.id(), 1);
}

#[tokio::test]
async fn connect_reads_the_greeting_from_a_unix_socket() {
    let dir = temp_dir();
    let path = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let range = IdRange::new(70, 79).unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        support::spawn_fake(stream, Handshake::Bounds { range }, Encoding::Ours)
            .await
            .unwrap()
    });
    let client = Client::connect(&path).await.unwrap();
    assert_eq!(client.ids(), range);
    let output = support::run(&client, "echo", &["over", "a", "socket"]).await;
    assert_eq!(output.stdout, b"over a socket\n");
    drop(client);
    let report = server.await.unwrap();
    assert_eq!(report.sessions, [70]);
}

#[tokio::test]
async fn connecting_to_a_missing_socket_is_a_typed_error() {
    let path = temp_dir().path().join("no-such-dir/agent.sock");
    let error = Client::connect(&path).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Connect { path: p, .. } if *p == path),
        "{error:?}"
    );
}

/// Greets with raw bytes, then keeps the connection open until the client leaves.
async fn client_greeted_with(bytes: Vec<u8>) -> Result<Client, ClientError> {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    tokio::spawn(async move {
        theirs.write_all(&bytes).await.unwrap();
        theirs.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut sink).await;
    });
    Client::from_stream(ours).await
}

#[tokio::test]
async fn a_bounds_greeting_with_an_empty_range_is_a_typed_error() {
    let mut bytes = vec![0, 0, 0, 0, 0, 0, 0, 1];
    bytes.extend_from_slice(ready_frame(1).as_wire());
    let error = client_greeted_with(bytes).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Handshake(HandshakeError::EmptyRange { start: 0, end: 1 })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_greeting_cut_short_is_a_typed_error() {
    let greeting = greeting(Handshake::Legacy { offset: 0 }, &ready_frame(1));
    let cut = greeting.len() - 3;
    let error = client_greeted_with(greeting[..cut].to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::HandshakeTruncated { received } if received == cut),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_greeting_with_another_message_than_ready_is_a_typed_error() {
    let not_ready = Message::Shutdown.to_frame(0).unwrap();
    let greeting = greeting(Handshake::Legacy { offset: 0 }, &not_ready);
    let error = client_greeted_with(greeting).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::NotReady {
                message_type: MessageType::Shutdown
            }
        ),
        "{error:?}"
    );
}
