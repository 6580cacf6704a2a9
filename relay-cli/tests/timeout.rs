//! `agent-relay exec --timeout`: a command that outlives its deadline is
//! signalled (SIGTERM, then SIGKILL) and exec exits with 124, as coreutils
//! `timeout` does; one that ends in time keeps its own exit code.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use relay_test_support::process_is_gone;
use support::Serve;

/// The pid a guest script wrote to `name` in the serve directory (the
/// local agent's guest shares this machine's file system and pids), if it
/// got that far before its deadline.
fn written_pid(serve: &Serve, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(serve.path(name)).ok()?;
    text.trim().parse().ok()
}

/// Whether a process `pid` still runs (a zombie has stopped running and
/// only waits for its parent).
fn alive(pid: u32) -> bool {
    !process_is_gone(pid)
}

#[test]
fn exec_with_a_timeout_stops_the_command_and_exits_124() {
    let serve = Serve::start(&[]);
    let pid_file = serve.path("sleep.pid").display().to_string();
    let script = format!("echo $$ > {pid_file}; exec sleep 600");
    let output = serve.run(&["exec", "--timeout", "1", "--", "sh", "-c", &script], b"");
    assert_eq!(output.status.code(), Some(124));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr,
        "agent-relay: timed out after 1s: the command was sent SIGTERM (exit code 124)\n"
    );
    assert!(!written_pid(&serve, "sleep.pid").is_some_and(alive));
    serve.wait_for_no_sessions();
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_after_the_grace() {
    let serve = Serve::start(&[]);
    let pid_file = serve.path("stubborn.pid").display().to_string();
    let script = format!("trap '' TERM; echo $$ > {pid_file}; while :; do sleep 0.1; done");
    let output = serve.run(
        &["exec", "--timeout", "0.5", "--", "sh", "-c", &script],
        b"",
    );
    assert_eq!(output.status.code(), Some(124));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr,
        "agent-relay: timed out after 0.5s: the command was sent SIGTERM, \
         then SIGKILL 2s later (exit code 124)\n"
    );
    assert!(!written_pid(&serve, "stubborn.pid").is_some_and(alive));
    serve.wait_for_no_sessions();
}

#[test]
fn a_command_that_ends_before_its_timeout_keeps_its_exit_code() {
    let serve = Serve::start(&[]);
    let output = serve.run(
        &["exec", "--timeout", "600", "--", "sh", "-c", "exit 3"],
        b"",
    );
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[test]
fn a_timeout_that_is_not_a_positive_number_is_refused() {
    let serve = Serve::start(&[]);
    for bad in ["0", "-1", "soon", "NaN"] {
        let output = serve.run(&["exec", &format!("--timeout={bad}"), "--", "true"], b"");
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--timeout"), "{bad}: {stderr}");
    }
}
