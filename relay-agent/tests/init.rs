//! The binary's microVM modes outside a VM: `--init` is refused unless the
//! process is PID 1, and the agent process PID 1 starts (`--init-agent`)
//! fails cleanly, with the reason, when its port does not exist. The modes
//! themselves run in a real VM: `cargo xtask vm-test`.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_relay-agent");

#[test]
fn init_mode_is_refused_outside_pid_1() {
    let out = Command::new(BIN)
        .arg("--init")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only as PID 1"));
}

#[test]
fn the_init_agent_fails_with_the_reason_when_its_port_does_not_exist() {
    let out = Command::new(BIN)
        .args(["--init-agent", "surely-no-such-port", "--boot-time-ns", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("virtio"), "{stderr}");
}

#[test]
fn boot_times_are_accepted_only_with_the_init_agent() {
    let out = Command::new(BIN)
        .args(["--boot-time-ns", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
