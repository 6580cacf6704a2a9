//! What `agent-relay` shows a person and what it shows a machine: colours
//! and progress bars only on a terminal (a real pseudo-terminal here), logs
//! in a file without escape codes, and JSON logs.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::io::Read;
use std::path::Path;
use std::process::Stdio;

use support::Serve;
use support::pty::OnPty;

const ESC: u8 = 0x1b;

fn write_file(path: &Path, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    std::fs::write(path, data).unwrap();
}

#[test]
fn a_serve_log_written_to_a_file_has_no_escape_bytes_and_names_the_socket_once() {
    let mut serve = Serve::start_with(&[], |command, dir| {
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        command
            .env("RUST_LOG", "debug")
            .env_remove("NO_COLOR")
            .stderr(log);
    });
    assert!(serve.run(&["exec", "--", "true"], b"").status.success());
    assert!(serve.stop().success());

    let log = std::fs::read(serve.path("serve.log")).unwrap();
    assert!(!log.contains(&ESC), "{}", String::from_utf8_lossy(&log));
    let log = String::from_utf8(log).unwrap();
    let socket = serve.socket.display().to_string();
    let naming: Vec<_> = log.lines().filter(|l| l.contains(&socket)).collect();
    assert_eq!(naming.len(), 1, "{log}");
    assert!(naming[0].contains("serving"), "{log}");
    // The relay's own lines are there, in its span, without the path.
    assert!(log.lines().any(|l| l.contains(" relay:client{")), "{log}");
}

#[test]
fn serve_logs_in_colour_on_a_terminal_unless_no_color_is_set() {
    for (no_color, coloured) in [(None, true), (Some(""), true), (Some("1"), false)] {
        let dir = relay_test_support::temp_dir();
        let socket = dir.path().join("agent.sock").display().to_string();
        let env: Vec<_> = no_color.map(|v| ("NO_COLOR", v)).into_iter().collect();
        let mut serve = OnPty::spawn(&["serve", "--socket", &socket], &env);
        serve.wait_for_output("accepting clients");
        serve.terminate();
        let (code, output) = serve.finish();
        assert_eq!(code, 0);
        assert_eq!(
            output.contains(&ESC),
            coloured,
            "NO_COLOR={no_color:?}: {}",
            String::from_utf8_lossy(&output)
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_the_socket_only_at_startup() {
    let mut serve = Serve::start_with(&[], |command, _| {
        command
            .args(["--log-format", "json"])
            .env("RUST_LOG", "debug")
            .stderr(Stdio::piped());
    });
    assert!(serve.run(&["exec", "--", "true"], b"").status.success());
    assert!(serve.stop().success());
    let mut log = String::new();
    let mut stderr = serve.child.stderr.take().unwrap();
    stderr.read_to_string(&mut log).unwrap();

    // The local agent's lines too: all of stderr is JSON.
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.iter().all(|line| line["level"].is_string()), "{log}");
    assert!(
        lines
            .iter()
            .any(|line| line["target"].as_str().unwrap().starts_with("relay_agent")),
        "{log}"
    );
    let socket = serve.socket.display().to_string();
    let naming: Vec<_> = lines
        .iter()
        .filter(|line| line.to_string().contains(&socket))
        .collect();
    assert_eq!(naming.len(), 1, "{log}");
    assert_eq!(naming[0]["fields"]["socket"], socket.as_str());
    assert!(
        lines.iter().any(|line| line["span"]["name"] == "client"),
        "{log}"
    );
}

/// `agent-relay ARGS` against `serve` on a terminal, which must succeed;
/// what it printed.
fn succeeds_on_pty(serve: &Serve, args: &[&str]) -> String {
    let (code, output) = OnPty::client(args, &serve.socket).finish_text();
    assert_eq!(code, 0, "{output}");
    output
}

#[test]
fn fs_put_of_fifty_megabytes_shows_a_progress_bar_on_a_terminal_and_nothing_without_one() {
    let serve = Serve::start(&[]);
    let local = serve.path("big.bin");
    write_file(&local, 50 << 20);
    let local_arg = local.display().to_string();
    let remote = |name: &str| serve.path(name).display().to_string();

    let output = succeeds_on_pty(&serve, &["fs", "put", &local_arg, &remote("1.bin")]);
    assert!(output.contains("/50.00 MiB"), "{output}");
    assert!(output.contains("MiB/s"), "{output}");
    assert!(output.contains("ETA"), "{output}");
    assert_eq!(std::fs::read(remote("1.bin")).unwrap().len(), 50 << 20);

    let piped = serve.run(&["fs", "put", &local_arg, &remote("2.bin")], b"");
    assert!(piped.status.success());
    assert_eq!(String::from_utf8_lossy(&piped.stderr), "");
    assert_eq!(std::fs::read(remote("2.bin")).unwrap().len(), 50 << 20);

    let output = succeeds_on_pty(
        &serve,
        &["fs", "put", "--quiet", &local_arg, &remote("3.bin")],
    );
    assert_eq!(output, "");
}

#[test]
fn fs_get_and_cp_of_large_files_show_a_progress_bar_on_a_terminal_and_small_ones_none() {
    let serve = Serve::start(&[]);
    let remote = serve.path("remote.bin");
    write_file(&remote, 8 << 20);
    let remote_arg = remote.display().to_string();
    let copy_arg = serve.path("copy.bin").display().to_string();
    let local_arg = serve.path("local.bin").display().to_string();

    let output = succeeds_on_pty(&serve, &["fs", "get", &remote_arg, &local_arg]);
    assert!(output.contains("/8.00 MiB"), "{output}");
    assert_eq!(
        std::fs::read(&local_arg).unwrap(),
        std::fs::read(&remote).unwrap()
    );

    let output = succeeds_on_pty(&serve, &["fs", "cp", &remote_arg, &copy_arg]);
    assert!(output.contains("8.00 MiB/8.00 MiB"), "{output}");
    assert_eq!(
        std::fs::read(&copy_arg).unwrap(),
        std::fs::read(&remote).unwrap()
    );

    let small = serve.path("small.bin");
    write_file(&small, 1 << 20);
    let small_arg = small.display().to_string();
    let output = succeeds_on_pty(&serve, &["fs", "get", &small_arg, &local_arg]);
    assert_eq!(output, "");
}
