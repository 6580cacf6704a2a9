//! A client's disconnect ends every process its sessions started, not only
//! the main one: the acceptance case of `exec -- sh -c '... & (... &); ...'`
//! with the exec client killed by SIGKILL.

#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "test code: a panic is the failure report; the time taken is reported, not asserted"
)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Instant;

use relay_test_support::{eventually_blocking, process_is_gone};
use support::Serve;

#[test]
fn killing_the_exec_client_ends_the_whole_process_tree_and_its_session() {
    let serve = Serve::start(&[]);
    let tree = "echo $$; sleep 1001 & echo $!; (sleep 1002 & echo $!); sleep 1003";
    let mut exec = serve.spawn_sh(tree, Stdio::null());
    let mut lines = BufReader::new(exec.stdout.take().unwrap()).lines();
    let pids: Vec<u32> = (0..3)
        .map(|_| lines.next().unwrap().unwrap().trim().parse().unwrap())
        .collect();
    assert!(
        pids.iter().all(|&pid| !process_is_gone(pid)),
        "all running: {pids:?}"
    );
    assert_eq!(serve.stats()["sessions_open"], 1);

    exec.kill().unwrap();
    exec.wait().unwrap();
    let killed = Instant::now();
    eventually_blocking(&format!("{pids:?} gone with the client"), || {
        pids.iter().all(|&pid| process_is_gone(pid)).then_some(())
    });
    serve.wait_for_no_sessions();
    eprintln!(
        "process tree and session gone {:?} after the kill",
        killed.elapsed()
    );
}
