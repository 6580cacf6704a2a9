//! Exec sessions against real child processes: output, exit codes, stdin,
//! signals, start errors, users, rlimits and ttys.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::Host;
use relay_codec::Message;
use relay_codec::payload::{ExecRequest, ExecRlimit};
use relay_test_support::{process_is_gone, pseudo_random, sha256, temp_dir, wait_until_gone};

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new("sh", ["-c", script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_output_arrives_on_stdout_after_started() {
    let host = Host::start().await;
    let outcome = host.run("echo", &["hello", "world"]).await;
    assert!(outcome.pid.is_some());
    assert_eq!(outcome.stdout_text(), "hello world\n");
    assert!(outcome.stderr.is_empty());
    assert_eq!(outcome.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_seven_from_sh_is_reported() {
    let host = Host::start().await;
    let outcome = host.run("sh", &["-c", "exit 7"]).await;
    assert_eq!(outcome.exit_code(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_piped_through_cat_and_an_empty_chunk_closes_it() {
    let host = Host::start().await;
    let mut session = host.exec(ExecRequest::new("cat", [""; 0])).await;
    session.started().await;
    host.stdin(session.id, b"first line\n").await;
    assert_eq!(session.stdout_until("first line\n").await, "first line\n");
    host.stdin(session.id, b"second").await;
    host.stdin(session.id, b"").await;
    let outcome = session.finish().await;
    assert_eq!(outcome.stdout_text(), "second");
    assert_eq!(outcome.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_is_kept_apart_from_stdout() {
    let host = Host::start().await;
    let outcome = host
        .run("sh", &["-c", "echo out; echo err >&2; echo out2; exit 3"])
        .await;
    assert_eq!(outcome.stdout_text(), "out\nout2\n");
    assert_eq!(outcome.stderr_text(), "err\n");
    assert_eq!(outcome.exit_code(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_of_output_arrive_with_the_same_checksum() {
    let dir = temp_dir();
    let path = dir.path().join("big");
    let content = pseudo_random(50_000_000, 0x5eed);
    std::fs::write(&path, &content).unwrap();
    let host = Host::start().await;
    let outcome = host.run("cat", &[path.to_str().unwrap()]).await;
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(outcome.stdout.len(), content.len());
    assert_eq!(sha256(&outcome.stdout), sha256(&content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_execs_each_get_their_own_output_and_code() {
    let host = Host::start().await;
    let mut sessions = Vec::new();
    for n in 0..32 {
        let script = format!("echo session {n}; echo err {n} >&2; exit {}", n % 5);
        sessions.push((n, host.exec(sh(&script)).await));
    }
    for (_, session) in &sessions {
        host.stdin(session.id, b"").await;
    }
    let outcomes = futures_util::future::join_all(
        sessions
            .into_iter()
            .map(|(n, session)| async move { (n, session.finish().await) }),
    )
    .await;
    for (n, outcome) in outcomes {
        assert_eq!(outcome.stdout_text(), format!("session {n}\n"));
        assert_eq!(outcome.stderr_text(), format!("err {n}\n"));
        assert_eq!(outcome.exit_code(), n % 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_sleep_is_reported_as_exit_code_143() {
    let host = Host::start().await;
    let mut session = host.exec(ExecRequest::new("sleep", ["1000"])).await;
    let pid = session.started().await;
    host.signal(session.id, 15).await;
    let outcome = session.finish().await;
    assert_eq!(outcome.exit_code(), 128 + 15);
    assert!(process_is_gone(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_gets_127_and_a_stderr_line_and_the_agent_keeps_serving() {
    let host = Host::start().await;
    let outcome = host.run("no-such-program-here", &[]).await;
    assert_eq!(outcome.pid, None, "no core.exec.started");
    assert_eq!(
        outcome.stderr_text(),
        "relay-agent: cannot run \"no-such-program-here\": No such file or directory\n"
    );
    assert_eq!(outcome.exit_code(), 127);
    assert_eq!(
        host.run("echo", &["still", "here"]).await.stdout_text(),
        "still here\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_executable_gets_126() {
    let dir = temp_dir();
    let script = dir.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let host = Host::start().await;
    let outcome = host.run(script.to_str().unwrap(), &[]).await;
    assert_eq!(outcome.pid, None);
    assert_eq!(outcome.exit_code(), 126);
    assert!(outcome.stderr_text().ends_with(": Permission denied\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_working_directory_gets_126_and_the_agent_keeps_serving() {
    let host = Host::start().await;
    let mut req = ExecRequest::new("pwd", [""; 0]);
    req.cwd = Some("/no/such/dir".into());
    let session = host.exec(req).await;
    let outcome = session.finish().await;
    assert_eq!(outcome.pid, None);
    assert_eq!(
        outcome.stderr_text(),
        "relay-agent: cannot run \"pwd\": working directory \"/no/such/dir\": No such file or directory\n"
    );
    assert_eq!(outcome.exit_code(), 126);
    assert_eq!(host.run("echo", &["ok"]).await.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cwd_and_env_entries_reach_the_process() {
    let dir = temp_dir();
    let cwd = dir.path().canonicalize().unwrap();
    let host = Host::start().await;
    let mut req = sh("pwd; echo \"$GREETING\"; echo \"${PATH:+has path}\"");
    req.cwd = Some(cwd.to_str().unwrap().into());
    req.env = vec!["GREETING=hello there".into()];
    let session = host.exec(req).await;
    host.stdin(session.id, b"").await;
    let outcome = session.finish().await;
    assert_eq!(
        outcome.stdout_text(),
        format!("{}\nhello there\nhas path\n", cwd.display())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_entry_without_equals_sign_gets_126() {
    let host = Host::start().await;
    let mut req = ExecRequest::new("true", [""; 0]);
    req.env = vec!["NOEQUALS".into()];
    let outcome = host.exec(req).await.finish().await;
    assert_eq!(outcome.exit_code(), 126);
    assert!(
        outcome
            .stderr_text()
            .contains("invalid environment entry \"NOEQUALS\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_user_runs_with_that_users_uid_when_the_agent_is_root() {
    let host = Host::start().await;
    let mut req = sh("id -u; id -g; echo $HOME");
    req.user = Some("nobody".into());
    let session = host.exec(req).await;
    host.stdin(session.id, b"").await;
    let outcome = session.finish().await;
    if rustix::process::geteuid().is_root() {
        assert_eq!(outcome.exit_code(), 0, "stderr: {}", outcome.stderr_text());
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let nobody: Vec<&str> = passwd
            .lines()
            .find(|line| line.starts_with("nobody:"))
            .unwrap()
            .split(':')
            .collect();
        assert_eq!(
            outcome.stdout_text(),
            format!("{}\n{}\n{}\n", nobody[2], nobody[3], nobody[5])
        );
    } else {
        // Without the privilege to switch users, the start fails cleanly.
        assert_eq!(outcome.exit_code(), 126);
        assert!(outcome.stderr_text().contains("Operation not permitted"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_gets_126() {
    let host = Host::start().await;
    let mut req = ExecRequest::new("true", [""; 0]);
    req.user = Some("no-such-user-anywhere".into());
    let outcome = host.exec(req).await.finish().await;
    assert_eq!(outcome.exit_code(), 126);
    assert_eq!(
        outcome.stderr_text(),
        "relay-agent: cannot run \"true\": unknown user \"no-such-user-anywhere\"\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rlimits_are_in_force_by_the_time_started_arrives() {
    let host = Host::start().await;
    let mut req = ExecRequest::new("sleep", ["1000"]);
    req.rlimits = vec![ExecRlimit {
        resource: "nofile".into(),
        soft: 64,
        hard: 128,
    }];
    let mut session = host.exec(req).await;
    let pid = session.started().await;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let values: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&values[3..5], ["64", "128"]);
    host.signal(session.id, 9).await;
    assert_eq!(session.finish().await.exit_code(), 128 + 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_rlimit_gets_126_before_anything_runs() {
    let host = Host::start().await;
    let mut req = ExecRequest::new("true", [""; 0]);
    req.rlimits = vec![ExecRlimit {
        resource: "bogus".into(),
        soft: 1,
        hard: 1,
    }];
    let outcome = host.exec(req).await.finish().await;
    assert_eq!((outcome.pid, outcome.exit_code()), (None, 126));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exited_waits_for_output_of_a_background_process_that_holds_the_pipe() {
    let host = Host::start().await;
    let outcome = host
        .run("sh", &["-c", "(sleep 0.2; echo late) & echo early"])
        .await;
    assert_eq!(outcome.stdout_text(), "early\nlate\n");
    assert_eq!(outcome.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_after_the_main_process_exited_reaches_its_process_group() {
    let host = Host::start().await;
    let mut session = host.exec(sh("sleep 1000 & echo $!")).await;
    host.stdin(session.id, b"").await;
    let sh_pid = session.started().await;
    let text = session.stdout_until("\n").await;
    let background: u32 = text.trim().parse().unwrap();
    // Once sh has exited, only its background sleep keeps stdout open.
    wait_until_gone(sh_pid).await;
    host.signal(session.id, 9).await;
    let outcome = session.finish().await;
    assert_eq!(outcome.exit_code(), 0, "the code is sh's own");
    wait_until_gone(background).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_ends_every_process_the_session_started_while_its_main_process_runs() {
    let host = Host::start().await;
    // Two background sleeps (one from a subshell, so not sh's child), and
    // sh itself waiting in the foreground.
    let mut session = host
        .exec(sh(
            "sleep 1001 & echo $!; (sleep 1002 & echo $!); sleep 1003",
        ))
        .await;
    let sh_pid = session.started().await;
    let mut text = String::new();
    while text.lines().count() < 2 {
        text.push_str(&session.stdout_until("\n").await);
    }
    let background: Vec<u32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    host.signal(session.id, 9).await;
    let outcome = session.finish().await;
    assert_eq!(outcome.exit_code(), 137, "sh was killed");
    wait_until_gone(sh_pid).await;
    for pid in background {
        wait_until_gone(pid).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_mode_runs_the_command_under_a_terminal() {
    let host = Host::start().await;
    let mut req = sh("tty -s && echo yes; test -t 1 && echo out-is-tty");
    req.tty = true;
    let outcome = host.exec(req).await.finish().await;
    assert_eq!(outcome.stdout_text(), "yes\r\nout-is-tty\r\n");
    assert!(outcome.stderr.is_empty());
    assert_eq!(outcome.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_resize_changes_what_stty_size_reports() {
    let host = Host::start().await;
    let mut req = sh("stty size; read line; stty size");
    req.tty = true;
    req.rows = 24;
    req.cols = 80;
    let mut session = host.exec(req).await;
    session.started().await;
    session.stdout_until("24 80").await;
    host.resize(session.id, 40, 100).await;
    host.stdin(session.id, b"go\n").await;
    let outcome = session.finish().await;
    assert!(
        outcome.stdout_text().contains("40 100"),
        "output: {:?}",
        outcome.stdout_text()
    );
    assert_eq!(outcome.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_end_of_stdin_is_end_of_file_for_the_program() {
    let host = Host::start().await;
    let mut req = sh("cat; echo done");
    req.tty = true;
    let mut session = host.exec(req).await;
    session.started().await;
    host.stdin(session.id, b"partial").await;
    host.stdin(session.id, b"").await;
    let outcome = session.finish().await;
    assert!(
        outcome.stdout_text().ends_with("partialdone\r\n"),
        "output: {:?}",
        outcome.stdout_text()
    );
    assert_eq!(outcome.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_ends_a_tty_session_with_128_plus_signal() {
    let host = Host::start().await;
    let mut req = ExecRequest::new("sleep", ["1000"]);
    req.tty = true;
    let mut session = host.exec(req).await;
    let pid = session.started().await;
    host.signal(session.id, 15).await;
    assert_eq!(session.finish().await.exit_code(), 143);
    assert!(process_is_gone(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_in_tty_mode_gets_127() {
    let host = Host::start().await;
    let mut req = ExecRequest::new("no-such-program-here", [""; 0]);
    req.tty = true;
    let outcome = host.exec(req).await.finish().await;
    assert_eq!((outcome.pid, outcome.exit_code()), (None, 127));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_with_a_user_is_refused_with_126() {
    let host = Host::start().await;
    let mut req = ExecRequest::new("true", [""; 0]);
    req.tty = true;
    req.user = Some("root".into());
    let outcome = host.exec(req).await.finish().await;
    assert_eq!(outcome.exit_code(), 126);
    assert!(outcome.stderr_text().contains("not supported with tty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_message_carries_the_pid_of_the_process() {
    let host = Host::start().await;
    let mut session = host.exec(sh("echo $$")).await;
    host.stdin(session.id, b"").await;
    let pid = session.started().await;
    let Message::ExecStdout(data) = session.next().await else {
        panic!("expected stdout");
    };
    assert_eq!(String::from_utf8(data.data).unwrap(), format!("{pid}\n"));
}
