//! End to end: the real `agent-relay` binary serving the reference agent,
//! driven by the binary's client commands, the client library, and
//! microsandbox's own client.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay_client::{ExecEvent, ExecRequest};
use relay_test_support::{
    Digest, HANG_GUARD, Sha256, eventually, eventually_blocking, process_is_gone, pseudo_random,
    sha256_file, temp_dir,
};
use support::upstream::exec_request;
use support::{BIN, Serve, stdout};

#[test]
fn exec_prints_a_commands_output_and_exits_zero() {
    let serve = Serve::start(&[]);
    let output = serve.run(&["exec", "--", "echo", "hello", "world"], b"");
    assert_eq!(stdout(&output), "hello world\n");
    assert!(output.status.success());
}

#[test]
fn exec_exits_with_the_remote_exit_code() {
    let serve = Serve::start(&[]);
    let output = serve.run(&["exec", "--", "sh", "-c", "exit 7"], b"");
    assert_eq!(output.status.code(), Some(7));
}

#[test]
fn exec_pipes_stdin_through_the_remote_command() {
    let serve = Serve::start(&[]);
    let input = b"line one\nline two\n".repeat(1000);
    let output = serve.run(&["exec", "--", "cat"], &input);
    assert_eq!(output.stdout, input);
    assert!(output.status.success());
}

#[test]
fn exec_keeps_stderr_apart_from_stdout() {
    let serve = Serve::start(&[]);
    let script = "echo out; echo err >&2; echo out2";
    let output = serve.run(&["exec", "--", "sh", "-c", script], b"");
    assert_eq!(stdout(&output), "out\nout2\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
}

#[test]
fn exec_passes_environment_and_working_directory() {
    let serve = Serve::start(&[]);
    let output = serve.run(
        &[
            "exec",
            "-e",
            "GREETING=hi there",
            "-w",
            "/tmp",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING\" $(pwd)",
        ],
        b"",
    );
    assert_eq!(stdout(&output), "hi there /tmp\n");
}

#[test]
fn a_missing_program_is_a_clear_error_and_the_relay_keeps_serving() {
    let serve = Serve::start(&[]);
    let output = serve.run(&["exec", "--", "/no/such/program"], b"");
    assert_eq!(output.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/program"));
    let output = serve.run(&["exec", "--", "true"], b"");
    assert!(output.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_of_output_arrive_intact() {
    let serve = Serve::start(&[]);
    let client = serve.client().await;
    let script = "i=0; while [ $i -lt 50 ]; do head -c 1000000 /dev/zero | tr '\\0' \"$(printf '\\\\%03o' $((i + 65)))\"; i=$((i + 1)); done";
    let session = client
        .exec(ExecRequest::new("sh", ["-c", script]))
        .await
        .unwrap();
    let (_input, mut events) = session.split();
    let mut hasher = Sha256::new();
    let mut total = 0usize;
    let code = loop {
        match tokio::time::timeout(HANG_GUARD, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(ExecEvent::Stdout(data)) => {
                total += data.len();
                hasher.update(&data);
            }
            Some(ExecEvent::Exited(status)) => break status.code,
            Some(_) => {}
            None => panic!("no exit"),
        }
    };
    let mut expected = Sha256::new();
    for i in 0..50u8 {
        expected.update(vec![65 + i; 1_000_000]);
    }
    assert_eq!(code, 0);
    assert_eq!(total, 50_000_000);
    assert_eq!(hasher.finalize(), expected.finalize());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_execs_from_eight_clients_all_complete() {
    let serve = Serve::start(&[]);
    let mut tasks = Vec::new();
    for c in 0..8 {
        let client = serve.client().await;
        for e in 0..4 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let request = ExecRequest::new(
                    "sh",
                    [
                        "-c",
                        "sleep 0.2; echo $0-$1",
                        &c.to_string(),
                        &e.to_string(),
                    ],
                );
                let output = client.exec_output(request, None).await.unwrap();
                assert_eq!(output.code, 0);
                assert_eq!(
                    String::from_utf8(output.stdout).unwrap(),
                    format!("{c}-{e}\n")
                );
            }));
        }
    }
    for task in tasks {
        tokio::time::timeout(HANG_GUARD, task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_has_its_running_command_killed() {
    let serve = Serve::start(&[]);
    let client = serve.client().await;
    let mut session = client
        .exec(ExecRequest::new("sleep", ["1000"]))
        .await
        .unwrap();
    let pid = loop {
        match session.next_event().await.unwrap() {
            Some(ExecEvent::Started { pid }) => break pid,
            Some(_) => {}
            None => panic!("no start"),
        }
    };
    assert!(!process_is_gone(pid));
    drop(session);
    drop(client);
    eventually(&format!("sleep {pid} gone with its client"), || {
        process_is_gone(pid).then_some(())
    })
    .await;
}

#[test]
fn fs_put_and_get_move_a_ten_mebibyte_file_intact() {
    let serve = Serve::start(&[]);
    let local = serve.path("random.bin");
    std::fs::write(&local, pseudo_random(10 << 20, 0x2545_f491_4f6c_dd1d)).unwrap();
    let remote = serve.path("remote.bin");
    let back = serve.path("back.bin");
    let remote_s = remote.to_str().unwrap();
    assert!(
        serve
            .run(&["fs", "put", local.to_str().unwrap(), remote_s], b"")
            .status
            .success()
    );
    assert!(
        serve
            .run(&["fs", "get", remote_s, back.to_str().unwrap()], b"")
            .status
            .success()
    );
    assert_eq!(sha256_file(&back), sha256_file(&local));
    let stat = serve.run(&["fs", "stat", remote_s], b"");
    assert!(
        stdout(&stat).contains(&format!("{}", 10 << 20)),
        "{}",
        stdout(&stat)
    );
}

#[test]
fn fs_directory_operations_round_trip_and_missing_paths_fail_clearly() {
    let serve = Serve::start(&[]);
    let base = serve.path("tree");
    let b = |p: &str| base.join(p).to_str().unwrap().to_owned();
    let ok = |args: &[&str]| {
        let output = serve.run(args, b"");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout(&output)
    };
    ok(&["fs", "mkdir", &b("a/b")]);
    assert!(
        serve
            .run(&["fs", "put", "-", &b("a/b/f")], b"payload")
            .status
            .success()
    );
    ok(&["fs", "cp", &b("a/b/f"), &b("a/g")]);
    ok(&["fs", "mv", &b("a/g"), &b("a/h")]);
    let listing = ok(&["fs", "ls", &b("a")]);
    assert!(
        listing.contains(&b("a/b")) && listing.contains(&b("a/h")),
        "{listing}"
    );
    assert!(!listing.contains(&b("a/g")));
    assert!(ok(&["fs", "stat", &b("a/b")]).starts_with("dir"));
    assert_eq!(ok(&["fs", "get", &b("a/h")]), "payload");
    ok(&["fs", "rm", &b("a/h")]);
    ok(&["fs", "rmdir", &b("a")]);
    assert!(!base.join("a").exists());

    for args in [
        vec!["fs", "stat", "/no/such/path"],
        vec!["fs", "get", "/no/such/path"],
        vec!["fs", "rm", "/no/such/path"],
    ] {
        let output = serve.run(&args, b"");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("/no/such/path"), "{stderr}");
    }
}

#[test]
fn stats_reports_the_relays_counters() {
    let serve = Serve::start(&[]);
    assert!(serve.run(&["exec", "--", "true"], b"").status.success());
    let output = serve.run(&["stats", "--json"], b"");
    assert!(output.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(stats["clients_admitted"].as_u64().unwrap() >= 1);
    assert!(stats["ring"]["capacity"].as_u64().unwrap() > 0);
}

#[test]
fn a_shutdown_request_stops_the_guest_and_serve_exits_cleanly() {
    let mut serve = Serve::start(&[]);
    assert!(serve.run(&["shutdown"], b"").status.success());
    let status = eventually_blocking("serve exiting", || serve.child.try_wait().unwrap());
    assert!(status.success());
    assert!(!serve.socket.exists());
}

#[test]
fn sigterm_shuts_serve_down_gracefully() {
    let mut serve = Serve::start(&[]);
    assert!(serve.stop().success());
    assert!(!serve.socket.exists());
}

#[test]
fn any_command_speaking_the_protocol_on_stdio_can_be_the_guest() {
    let console = format!("stdio-of:exec {BIN} agent");
    let serve = Serve::start(&["--console", &console, "--handshake", "bounds"]);
    let output = serve.run(&["exec", "--", "echo", "via stdio-of"], b"");
    assert_eq!(stdout(&output), "via stdio-of\n");
}

#[test]
fn a_unix_socket_console_reaches_an_agent_listening_like_a_qemu_chardev() {
    let dir = temp_dir();
    let chardev = dir.path().join("chardev.sock");
    let listener = std::os::unix::net::UnixListener::bind(&chardev).unwrap();
    // Plays QEMU: accepts the relay's connection and wires it to an agent.
    let guest = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut agent = Command::new(BIN)
            .arg("agent")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(
                stream.try_clone().unwrap(),
            )))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(stream)))
            .spawn()
            .unwrap();
        agent.wait().unwrap()
    });
    let console = format!("unix:{}", chardev.display());
    let serve = Serve::start(&["--console", &console]);
    let output = serve.run(&["exec", "--", "echo", "via chardev"], b"");
    assert_eq!(stdout(&output), "via chardev\n");
    assert!(serve.run(&["shutdown"], b"").status.success());
    assert!(guest.join().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsandbox_agent_client_runs_an_exec_through_our_relay_and_agent() {
    use microsandbox_agent_client::{AgentClient, AgentWireFormat, TypedMessage};
    use microsandbox_protocol_07::exec::{ExecExited, ExecRequest as MsbExec, ExecStdout};
    use microsandbox_protocol_07::message::MessageType;

    let serve = Serve::start(&[]);
    let stream = tokio::net::UnixStream::connect(&serve.socket)
        .await
        .unwrap();
    let client = AgentClient::connect_stream(stream).await.unwrap();
    assert_eq!(client.ready().wire_format, AgentWireFormat::LegacyV1);
    let request: MsbExec = exec_request("echo", &["from microsandbox"]);
    let mut stream = client
        .stream(TypedMessage::new(MessageType::ExecRequest, &request))
        .await
        .unwrap();
    let mut out = Vec::new();
    let code = loop {
        let message = tokio::time::timeout(HANG_GUARD, stream.recv())
            .await
            .unwrap()
            .unwrap()
            .expect("a terminal message");
        if message.t == MessageType::ExecStdout.as_str() {
            out.extend(message.payload::<ExecStdout>().unwrap().data);
        } else if message.t == MessageType::ExecExited.as_str() {
            break message.payload::<ExecExited>().unwrap().code;
        }
    };
    assert_eq!(code, 0);
    assert_eq!(out, b"from microsandbox\n");
}

#[test]
fn a_second_signal_makes_exec_stop_waiting_for_a_command_that_ignores_the_first() {
    use std::io::{BufRead, BufReader};
    let serve = Serve::start(&[]);
    let mut exec = serve.spawn_sh("trap '' TERM; echo ready; sleep 1000", Stdio::piped());
    let mut line = String::new();
    BufReader::new(exec.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let pid = rustix::process::Pid::from_child(&exec);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    // Give the first signal time to be forwarded (and ignored) on its own.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        exec.try_wait().unwrap().is_none(),
        "the first signal is forwarded, not obeyed"
    );
    // Signals that arrive together may count as one: repeat until it gives up.
    let start = Instant::now();
    while exec.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < HANG_GUARD, "exec never gave up");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = exec.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no longer waiting"));
}
