//! Fs sessions: streamed reads and writes, metadata operations, remote errors.

use relay_client::{ClientError, Fs, FsOpKind};
use relay_codec::{FS_CHUNK_SIZE, Handshake, LEGACY_STEP};
use relay_test_support::{fnv1a, pseudo_random};

use crate::support;

fn legacy() -> Handshake {
    Handshake::Legacy {
        offset: 5 * LEGACY_STEP,
    }
}

/// The paths `dir` lists.
async fn names(fs: &Fs, dir: &str) -> Vec<String> {
    let entries = fs.list(dir).await.unwrap();
    entries.into_iter().map(|entry| entry.path).collect()
}

/// Whether `error` is the agent's refusal of an `op`.
fn is_remote(error: &ClientError, op: FsOpKind) -> bool {
    matches!(error, ClientError::Remote { op: failed, .. } if *failed == op)
}

const NO_SUCH_FILE: &str = "No such file or directory (os error 2)";

#[tokio::test]
async fn a_multi_chunk_file_round_trips_with_its_checksum() {
    let (client, fake) = support::client(legacy()).await;
    let fs = client.fs();
    let data = pseudo_random(2 * FS_CHUNK_SIZE + 1024 * 1024 + 123, 42);

    let written = fs
        .write_from("/tmp/big.bin", Some(0o600), &data[..])
        .await
        .unwrap();
    assert_eq!(written, data.len() as u64);
    assert_eq!(
        fs.stat("/tmp/big.bin").await.unwrap().size,
        data.len() as u64
    );

    let mut reader = fs.read("/tmp/big.bin").await.unwrap();
    let mut chunks = Vec::new();
    let mut read = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        chunks.push(chunk.len());
        read.extend_from_slice(&chunk);
    }
    assert_eq!(chunks, [FS_CHUNK_SIZE, FS_CHUNK_SIZE, 1024 * 1024 + 123]);
    assert_eq!(fnv1a(&read), fnv1a(&data));

    let mut copy = Vec::new();
    let copied = fs.read_to("/tmp/big.bin", &mut copy).await.unwrap();
    assert_eq!(copied, data.len() as u64);
    assert_eq!(fnv1a(&copy), fnv1a(&data));
    assert_eq!(
        fnv1a(&fs.read_all("/tmp/big.bin").await.unwrap()),
        fnv1a(&data)
    );

    // Every handle holds the connection open; the fake reports once it closes.
    drop((client, fs, reader));
    let report = fake.await.unwrap();
    assert_eq!(
        report.upload_chunks,
        [FS_CHUNK_SIZE, FS_CHUNK_SIZE, 1024 * 1024 + 123, 0]
    );
}

#[tokio::test]
async fn metadata_and_directory_operations_round_trip() {
    let (client, _fake) = support::client(legacy()).await;
    let fs = client.fs();
    fs.mkdir("/tmp/a/b").await.unwrap();
    assert_eq!(fs.stat("/tmp/a").await.unwrap().kind, "dir");
    fs.write("/tmp/a/b/f", None, b"hi").await.unwrap();
    let entry = fs.stat("/tmp/a/b/f").await.unwrap();
    assert_eq!((entry.kind.as_str(), entry.size), ("file", 2));

    fs.copy("/tmp/a/b/f", "/tmp/a/g").await.unwrap();
    fs.rename("/tmp/a/b/f", "/tmp/a/b/h").await.unwrap();
    assert_eq!(names(&fs, "/tmp/a").await, ["/tmp/a/b", "/tmp/a/g"]);
    assert_eq!(names(&fs, "/tmp/a/b").await, ["/tmp/a/b/h"]);
    assert_eq!(fs.read_all("/tmp/a/g").await.unwrap(), b"hi");

    fs.remove("/tmp/a/g").await.unwrap();
    fs.remove_dir("/tmp/a").await.unwrap();
    assert!(matches!(
        fs.stat("/tmp/a/b/h").await,
        Err(ClientError::Remote { .. })
    ));
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn a_failed_operation_becomes_a_typed_error_with_the_agents_text() {
    let (client, _fake) = support::client(legacy()).await;
    let fs = client.fs();
    let error = fs.stat("/nope").await.unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::Remote { op: FsOpKind::Stat, path, message }
                if path == "/nope" && message == NO_SUCH_FILE
        ),
        "{error:?}"
    );
    assert_eq!(error.to_string(), format!("stat /nope: {NO_SUCH_FILE}"));

    let error = fs.read_all("/nope").await.unwrap_err();
    assert!(is_remote(&error, FsOpKind::Read), "{error:?}");
    let error = fs.rename("/nope", "/tmp/x").await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Remote { op: FsOpKind::Rename, path, .. } if path == "/nope"),
        "{error:?}"
    );
    let error = fs.list("/tmp/missing").await.unwrap_err();
    assert!(is_remote(&error, FsOpKind::List), "{error:?}");
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn an_upload_the_agent_refuses_reports_the_agents_error_and_frees_its_id() {
    let (client, _fake) = support::client(legacy()).await;
    let fs = client.fs();
    let data = pseudo_random(FS_CHUNK_SIZE + 1, 3);
    let error = fs.write("/readonly/file", None, &data).await.unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::Remote { op: FsOpKind::Write, path, message }
                if path == "/readonly/file" && message.contains("Read-only")
        ),
        "{error:?}"
    );
    assert_eq!(client.in_flight(), 0);
    fs.write("/tmp/ok", None, b"fine").await.unwrap();
    assert_eq!(fs.read_all("/tmp/ok").await.unwrap(), b"fine");
}
