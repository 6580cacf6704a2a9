//! Fs sessions against a real temporary directory: uploads, downloads and
//! every metadata operation, with their errors.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Host;
use relay_codec::FS_CHUNK_SIZE;
use relay_codec::payload::{FsEntry, FsOp, FsResponse, FsResponseData};
use relay_test_support::{pseudo_random, sha256, temp_dir};

fn text(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

async fn upload(host: &Host, path: &Path, mode: Option<u32>, content: &[u8]) -> FsResponse {
    let session = host
        .fs(FsOp::Write {
            path: text(path),
            mode,
        })
        .await;
    for chunk in content.chunks(FS_CHUNK_SIZE) {
        host.fs_data(session.id, chunk).await;
    }
    host.fs_data(session.id, b"").await;
    session.response().await
}

async fn stat(host: &Host, path: &Path) -> FsEntry {
    let response = host.fs_call(FsOp::Stat { path: text(path) }).await;
    match response.data {
        Some(FsResponseData::Stat(entry)) if response.ok => entry,
        _ => panic!("stat {} failed: {response:?}", path.display()),
    }
}

fn assert_failed(response: &FsResponse, expected: &str) {
    assert!(!response.ok, "expected a failure, got {response:?}");
    assert_eq!(response.error.as_deref(), Some(expected));
    assert_eq!(response.data, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_mebibyte_file_round_trips_with_the_same_checksum() {
    let dir = temp_dir();
    let path = dir.path().join("random.bin");
    let content = pseudo_random(10 * 1024 * 1024, 42);
    let host = Host::start().await;

    assert_eq!(upload(&host, &path, None, &content).await, FsResponse::ok());
    assert_eq!(sha256(&std::fs::read(&path).unwrap()), sha256(&content));

    let session = host.fs(FsOp::Read { path: text(&path) }).await;
    let (downloaded, response) = session.download(FS_CHUNK_SIZE).await;
    assert_eq!(response, FsResponse::ok());
    assert_eq!(sha256(&downloaded), sha256(&content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_reads_as_no_chunks_and_a_response() {
    let dir = temp_dir();
    let path = dir.path().join("empty");
    std::fs::write(&path, b"").unwrap();
    let host = Host::start().await;
    let (bytes, response) = host
        .fs(FsOp::Read { path: text(&path) })
        .await
        .download(FS_CHUNK_SIZE)
        .await;
    assert!(bytes.is_empty());
    assert!(response.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_a_mode_leaves_the_file_with_that_mode() {
    let dir = temp_dir();
    let path = dir.path().join("script");
    let host = Host::start().await;
    assert!(upload(&host, &path, Some(0o750), b"#!/bin/sh\n").await.ok);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750);
    assert_eq!(stat(&host, &path).await.mode, 0o750);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_reports_kind_size_mode_and_modification_time() {
    let dir = temp_dir();
    let file = dir.path().join("file");
    std::fs::write(&file, b"12345").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let host = Host::start().await;

    let entry = stat(&host, &file).await;
    let mtime = std::fs::metadata(&file)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        entry,
        FsEntry {
            path: text(&file),
            kind: "file".into(),
            size: 5,
            mode: 0o640,
            modified: Some(i64::try_from(mtime).unwrap()),
        }
    );
    assert_eq!(stat(&host, dir.path()).await.kind, "dir");
    assert_eq!(stat(&host, &link).await.kind, "symlink");
    assert_eq!(stat(&host, Path::new("/dev/null")).await.kind, "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_returns_entries_with_full_paths_sorted_by_name() {
    let dir = temp_dir();
    for name in ["b.txt", "a.txt", "c"] {
        std::fs::write(dir.path().join(name), name).unwrap();
    }
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let host = Host::start().await;
    let response = host
        .fs_call(FsOp::List {
            path: text(dir.path()),
        })
        .await;
    assert!(response.ok);
    let Some(FsResponseData::List(entries)) = response.data else {
        panic!("list returned no entries: {response:?}");
    };
    let listed: Vec<(String, String)> = entries
        .into_iter()
        .map(|entry| (entry.path, entry.kind))
        .collect();
    let expected: Vec<(String, String)> = [
        ("a.txt", "file"),
        ("b.txt", "file"),
        ("c", "file"),
        ("sub", "dir"),
    ]
    .into_iter()
    .map(|(name, kind)| (text(&dir.path().join(name)), kind.to_owned()))
    .collect();
    assert_eq!(listed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkdir_creates_parents_and_remove_dir_removes_the_whole_tree() {
    let dir = temp_dir();
    let deep = dir.path().join("a/b/c");
    let host = Host::start().await;
    assert_eq!(
        host.fs_call(FsOp::Mkdir { path: text(&deep) }).await,
        FsResponse::ok()
    );
    assert!(deep.is_dir());
    std::fs::write(deep.join("file"), b"x").unwrap();
    let top = dir.path().join("a");
    assert_eq!(
        host.fs_call(FsOp::RemoveDir { path: text(&top) }).await,
        FsResponse::ok()
    );
    assert!(!top.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_deletes_a_file_but_not_a_directory() {
    let dir = temp_dir();
    let file = dir.path().join("gone");
    std::fs::write(&file, b"x").unwrap();
    let host = Host::start().await;
    assert!(host.fs_call(FsOp::Remove { path: text(&file) }).await.ok);
    assert!(!file.exists());
    let response = host
        .fs_call(FsOp::Remove {
            path: text(dir.path()),
        })
        .await;
    assert!(!response.ok);
    assert!(dir.path().is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_rename_round_trip_a_file() {
    let dir = temp_dir();
    let original = dir.path().join("original");
    let copy = dir.path().join("copy");
    let moved = dir.path().join("moved");
    std::fs::write(&original, b"contents").unwrap();
    let host = Host::start().await;

    let copied = host
        .fs_call(FsOp::Copy {
            src: text(&original),
            dst: text(&copy),
        })
        .await;
    assert_eq!(copied, FsResponse::ok());
    assert_eq!(std::fs::read(&copy).unwrap(), b"contents");
    assert!(original.exists());

    let renamed = host
        .fs_call(FsOp::Rename {
            src: text(&copy),
            dst: text(&moved),
        })
        .await;
    assert_eq!(renamed, FsResponse::ok());
    assert!(!copy.exists());
    assert_eq!(std::fs::read(&moved).unwrap(), b"contents");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_paths_are_answered_with_errors_that_name_them() {
    let dir = temp_dir();
    let missing = dir.path().join("missing");
    let m = text(&missing);
    let other = text(&dir.path().join("other"));
    let host = Host::start().await;
    let enoent = "No such file or directory";

    let cases = [
        (
            FsOp::Stat { path: m.clone() },
            format!("stat {m}: {enoent}"),
        ),
        (
            FsOp::List { path: m.clone() },
            format!("list {m}: {enoent}"),
        ),
        (
            FsOp::Remove { path: m.clone() },
            format!("remove {m}: {enoent}"),
        ),
        (
            FsOp::RemoveDir { path: m.clone() },
            format!("rmdir {m}: {enoent}"),
        ),
        (
            FsOp::Copy {
                src: m.clone(),
                dst: other.clone(),
            },
            format!("copy {m} to {other}: {enoent}"),
        ),
        (
            FsOp::Rename {
                src: m.clone(),
                dst: other.clone(),
            },
            format!("rename {m} to {other}: {enoent}"),
        ),
    ];
    for (op, expected) in cases {
        assert_failed(&host.fs_call(op).await, &expected);
    }

    let (bytes, response) = host
        .fs(FsOp::Read { path: m.clone() })
        .await
        .download(FS_CHUNK_SIZE)
        .await;
    assert!(bytes.is_empty());
    assert_failed(&response, &format!("read {m}: {enoent}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_into_a_missing_directory_fails_at_once_and_the_upload_is_discarded() {
    let dir = temp_dir();
    let path = dir.path().join("no/such/dir/file");
    let host = Host::start().await;
    let session = host
        .fs(FsOp::Write {
            path: text(&path),
            mode: None,
        })
        .await;
    let id = session.id;
    let response = session.response().await;
    assert_failed(
        &response,
        &format!("write {}: No such file or directory", path.display()),
    );
    // The client's chunks for the finished session are dropped quietly.
    host.fs_data(id, b"late data").await;
    host.fs_data(id, b"").await;
    assert_eq!(host.run("echo", &["alive"]).await.stdout_text(), "alive\n");
}
