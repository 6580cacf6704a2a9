//! The connection as a whole: stray frames, loss of the connection, shutdown, lifetime.

use bytes::Bytes;
use relay_client::{ClientError, Disconnect, ExecEvent, ExecRequest, ExitStatus};
use relay_codec::payload::{FsOp, FsRequest};
use relay_codec::{Flags, FrameError, Handshake, IdRange, Message, MessageType};

use crate::support;

fn bounds() -> Handshake {
    Handshake::Bounds {
        range: IdRange::new(1, 16).unwrap(),
    }
}

/// The relay hung up: our reader sees the end of the stream, or our writer
/// the broken pipe, whichever comes first.
fn is_hangup(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Disconnected(Disconnect::Eof | Disconnect::Write(_))
    )
}

#[tokio::test]
async fn the_connection_closing_mid_session_ends_every_open_session_with_the_typed_error() {
    let (client, _fake) = support::client(bounds()).await;
    let sleeper = support::start(&client, "sleep", &[]).await;
    let (cat_input, mut cat_events) = support::start(&client, "cat", &[]).await.split();
    let mut upload = client
        .open(&Message::FsRequest(FsRequest {
            op: FsOp::Write {
                path: "/tmp/partial".into(),
                mode: None,
            },
        }))
        .await
        .unwrap();
    upload
        .send_data(MessageType::FsData, b"half a file")
        .await
        .unwrap();
    assert_eq!(client.in_flight(), 3);

    let error = support::try_run(&client, "hangup", &[]).await.unwrap_err();
    assert!(is_hangup(&error), "{error:?}");

    let error = sleeper.wait().await.unwrap_err();
    assert!(is_hangup(&error), "{error:?}");
    // Frames received before the loss come first, then the error.
    assert!(matches!(
        cat_events.next().await.unwrap(),
        Some(ExecEvent::Started { .. })
    ));
    let error = cat_events.next().await.unwrap_err();
    assert!(is_hangup(&error), "{error:?}");
    let error = upload.next_message().await.unwrap_err();
    assert!(is_hangup(&error), "{error:?}");

    // Everything after the loss fails the same way, at once.
    let error = cat_input.write_stdin(b"late").await.unwrap_err();
    assert!(is_hangup(&error), "{error:?}");
    let error = client
        .exec(ExecRequest::new("echo", ["late"]))
        .await
        .unwrap_err();
    assert!(is_hangup(&error), "{error:?}");
    let error = client.fs().stat("/tmp").await.unwrap_err();
    assert!(is_hangup(&error), "{error:?}");
    assert_eq!(client.in_flight(), 0);
    assert!(matches!(
        client.disconnect_reason(),
        Some(Disconnect::Eof | Disconnect::Write(_))
    ));
}

#[tokio::test]
async fn a_malformed_frame_from_the_relay_ends_every_session_with_the_typed_error() {
    let (client, _fake) = support::client(bounds()).await;
    let sleeper = support::start(&client, "sleep", &[]).await;
    let trigger = support::start(&client, "malformed", &[]).await;
    for error in [
        sleeper.wait().await.unwrap_err(),
        trigger.wait().await.unwrap_err(),
    ] {
        assert!(
            matches!(
                error,
                ClientError::Disconnected(Disconnect::Malformed(FrameError::FrameTooShort {
                    len: 1
                }))
            ),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn frames_for_unknown_ids_are_dropped_without_disturbing_other_sessions() {
    let (client, _fake) = support::client(bounds()).await;
    let mut bystander = support::start(&client, "sleep", &[]).await;
    let output = support::run(&client, "stray", &[]).await;
    assert_eq!(output.stdout, b"ok\n");
    assert_eq!(output.code, 0);

    // The bystander saw exactly its own frames.
    assert!(matches!(
        bystander.next_event().await.unwrap(),
        Some(ExecEvent::Started { .. })
    ));
    bystander.resize(50, 132).await.unwrap();
    assert_eq!(
        bystander.next_event().await.unwrap(),
        Some(ExecEvent::Stdout(Bytes::from_static(b"resized 50x132\n")))
    );
    bystander.kill().await.unwrap();
    assert_eq!(
        bystander.next_event().await.unwrap(),
        Some(ExecEvent::Exited(ExitStatus { code: 137 }))
    );
    assert_eq!(bystander.next_event().await.unwrap(), None);
    assert!(client.disconnect_reason().is_none());
    let output = support::run(&client, "echo", &["after"]).await;
    assert_eq!(output.stdout, b"after\n");
}

#[tokio::test]
async fn shutdown_sends_core_shutdown_with_id_zero_and_the_shutdown_flag() {
    let (client, fake) = support::client(bounds()).await;
    client.shutdown().await.unwrap();
    // The fake agent stops serving after a shutdown, as the real one does.
    let report = fake.await.unwrap();
    assert_eq!(report.shutdowns, [(0, Flags::SHUTDOWN)]);
    let error = support::try_run(&client, "echo", &["x"]).await.unwrap_err();
    assert!(matches!(error, ClientError::Disconnected(_)), "{error:?}");
}

#[tokio::test]
async fn sessions_keep_the_connection_open_after_the_client_is_dropped() {
    let (client, fake) = support::client(bounds()).await;
    let session = support::start(&client, "cat", &[]).await;
    drop(client);
    session.write_stdin(b"still connected").await.unwrap();
    session.close_stdin().await.unwrap();
    let output = session.output().await.unwrap();
    assert_eq!(output.stdout, b"still connected");
    // The last handle is gone: the connection closes and the fake sees the end.
    let report = fake.await.unwrap();
    assert_eq!(report.sessions, [1]);
}
