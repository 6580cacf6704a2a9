//! Id allocation: from the range, round robin, never an id in flight, exhaustion typed.

use relay_client::{Client, ClientError, ExecRequest};
use relay_codec::{Handshake, IdRange};

use crate::support;

fn tiny_range() -> Handshake {
    // Bounds [1, 4): ids 1, 2 and 3.
    Handshake::Bounds {
        range: IdRange::new(1, 3).unwrap(),
    }
}

/// Opening another session fails: all three ids are in flight.
async fn no_id_left(client: &Client) {
    let error = client
        .exec(ExecRequest::new("echo", ["no room"]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::IdsExhausted { in_flight: 3 }),
        "{error:?}"
    );
}

#[tokio::test]
async fn ids_come_from_the_range_in_order_and_wrap_around() {
    let (client, fake) = support::client(tiny_range()).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let session = support::start(&client, "echo", &[&i.to_string()]).await;
        ids.push(session.id());
        let output = session.output().await.unwrap();
        assert_eq!(output.stdout, format!("{i}\n").as_bytes());
    }
    assert_eq!(ids, [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(client.in_flight(), 0);
    drop(client);
    let report = fake.await.unwrap();
    assert_eq!(report.sessions, ids);
    assert!(report.reused_in_flight.is_empty());
    assert!(report.out_of_range.is_empty());
}

#[tokio::test]
async fn when_every_id_is_in_flight_opening_a_session_fails_with_a_typed_error() {
    let (client, _fake) = support::client(tiny_range()).await;
    let mut sleepers = Vec::new();
    for _ in 0..3 {
        sleepers.push(support::start(&client, "sleep", &[]).await);
    }
    assert_eq!(client.in_flight(), 3);
    no_id_left(&client).await;
    let error = client.fs().stat("/tmp").await.unwrap_err();
    assert!(
        matches!(error, ClientError::IdsExhausted { in_flight: 3 }),
        "{error:?}"
    );

    // Ending the second session frees exactly its id.
    let second = sleepers.remove(1);
    second.kill().await.unwrap();
    assert_eq!(second.wait().await.unwrap().code, 137);
    let next = support::start(&client, "echo", &["room"]).await;
    assert_eq!(next.id(), 2);
    assert_eq!(next.output().await.unwrap().stdout, b"room\n");

    for sleeper in sleepers {
        sleeper.signal(15).await.unwrap();
        assert_eq!(sleeper.wait().await.unwrap().code, 143);
    }
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn a_dropped_handle_keeps_its_id_in_flight_until_its_terminal_frame_arrives() {
    let (client, fake) = support::client(tiny_range()).await;
    let (abandoned, events) = support::start(&client, "sleep", &[]).await.split();
    drop(events);
    let witness = support::start(&client, "sleep", &[]).await;
    let third = support::start(&client, "sleep", &[]).await;
    assert_eq!((abandoned.id(), witness.id(), third.id()), (1, 2, 3));
    no_id_left(&client).await;

    // The agent ends the abandoned session first, then the witness: once
    // the witness has exited, the abandoned session's exit has been routed.
    abandoned.kill().await.unwrap();
    witness.kill().await.unwrap();
    assert_eq!(witness.wait().await.unwrap().code, 137);
    assert_eq!(client.in_flight(), 1);
    let reuse = support::start(&client, "echo", &["x"]).await;
    assert_eq!(reuse.id(), 1);
    reuse.output().await.unwrap();

    // The abandoned session's sender now refuses to send on the reused id.
    let error = abandoned.kill().await.unwrap_err();
    assert!(
        matches!(error, ClientError::SessionClosed { id: 1 }),
        "{error:?}"
    );

    third.kill().await.unwrap();
    third.wait().await.unwrap();
    drop((client, abandoned));
    let report = fake.await.unwrap();
    assert!(report.reused_in_flight.is_empty());
}

#[tokio::test]
async fn ids_in_flight_are_never_handed_out_while_other_sessions_come_and_go() {
    let range = IdRange::new(1, 8).unwrap();
    let (client, fake) = support::client(Handshake::Bounds { range }).await;
    let mut sleepers = Vec::new();
    for _ in 0..5 {
        sleepers.push(support::start(&client, "sleep", &[]).await);
    }
    let held: Vec<u32> = sleepers.iter().map(|s| s.id()).collect();
    for round in 0..40 {
        let session = support::start(&client, "exit", &[&(round % 5).to_string()]).await;
        assert!(!held.contains(&session.id()), "id {} reused", session.id());
        assert!(range.contains(session.id()));
        assert_eq!(session.wait().await.unwrap().code, round % 5);
    }
    for sleeper in sleepers {
        sleeper.kill().await.unwrap();
        sleeper.wait().await.unwrap();
    }
    drop(client);
    let report = fake.await.unwrap();
    assert_eq!(report.sessions.len(), 45);
    assert!(report.reused_in_flight.is_empty());
    assert!(report.out_of_range.is_empty());
}
