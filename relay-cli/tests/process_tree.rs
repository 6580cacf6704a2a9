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
use std::time::{Duration, Instant};

use support::{HANG_GUARD, Serve};

/// Whether `pid` is gone (no such process, or a zombie nobody reaped yet).
fn is_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn killing_the_exec_client_ends_the_whole_process_tree_and_its_session() {
    let serve = Serve::start(&[]);
    let mut exec = serve
        .cli(&[
            "exec",
            "--",
            "sh",
            "-c",
            "echo $$; sleep 1001 & echo $!; (sleep 1002 & echo $!); sleep 1003",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(exec.stdout.take().unwrap()).lines();
    let pids: Vec<u32> = (0..3)
        .map(|_| lines.next().unwrap().unwrap().trim().parse().unwrap())
        .collect();
    assert!(
        pids.iter().all(|&pid| !is_gone(pid)),
        "all running: {pids:?}"
    );
    assert_eq!(serve.stats()["sessions_open"], 1);

    exec.kill().unwrap();
    exec.wait().unwrap();
    let killed = Instant::now();
    while !pids.iter().all(|&pid| is_gone(pid)) {
        assert!(
            killed.elapsed() < HANG_GUARD,
            "outlived the client: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    while serve.stats()["sessions_open"] != 0 {
        assert!(killed.elapsed() < HANG_GUARD, "the session stayed open");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "process tree and session gone {:?} after the kill",
        killed.elapsed()
    );
}
