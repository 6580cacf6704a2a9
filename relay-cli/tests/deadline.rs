//! A relay that never greets (still waiting for its guest, or wedged) does
//! not hang the CLI: it gives up after `--connect-timeout` and says what it
//! was waiting for.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};

use support::BIN;

#[test]
fn a_relay_that_never_greets_makes_exec_give_up_naming_the_handshake() {
    let dir = relay_test_support::temp_dir();
    let socket = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // Accepts, then says nothing; the connection stays open.
    let accepter = std::thread::spawn(move || listener.accept().unwrap());
    let output = Command::new(BIN)
        .args(["exec", "--connect-timeout", "0.3", "--socket"])
        .arg(&socket)
        .args(["--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(stderr.contains("handshake"), "{stderr}");
    drop(accepter.join().unwrap());
}
