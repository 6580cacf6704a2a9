//! Consoles other than an in-memory duplex: a Unix socket, a terminal
//! device, virtio port lookup, and the binary over its own stdio.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::io::Write;
use std::process::{Command, Stdio};

use futures_util::{SinkExt, StreamExt};
use relay_agent::{Agent, AgentConfig, ServeEnd, Transport, TransportError, find_port_in};
use relay_codec::payload::ExecRequest;
use relay_codec::{Frame, FrameCodec, Message, MessageType, data_frame};
use relay_test_support::{ExecOutcome, read_frame, temp_dir};
use tokio_util::codec::{FramedRead, FramedWrite};

/// An exec request for `echo WORD` on `id`.
fn echo_request(id: u32, word: &str) -> Frame {
    Message::ExecRequest(ExecRequest::new("echo", [word]))
        .to_frame(id)
        .unwrap()
}

/// Reads one exec session's frames from a blocking console until it exits.
fn read_exec(console: &mut impl std::io::Read) -> ExecOutcome {
    let mut outcome = ExecOutcome::default();
    loop {
        let frame = read_frame(console).unwrap();
        if outcome
            .record(Message::from_frame(&frame).unwrap())
            .unwrap()
        {
            return outcome;
        }
    }
}

#[test]
fn a_virtio_port_is_found_by_its_name() {
    let sys = temp_dir();
    for (port, name) in [
        ("vport0p0", "org.qemu.guest_agent.0\n"),
        ("vport0p1", "agent\n"),
    ] {
        std::fs::create_dir(sys.path().join(port)).unwrap();
        std::fs::write(sys.path().join(port).join("name"), name).unwrap();
    }
    std::fs::create_dir(sys.path().join("vport0p2")).unwrap();
    let found = find_port_in(sys.path(), "/dev".as_ref(), "agent").unwrap();
    assert_eq!(found, std::path::Path::new("/dev/vport0p1"));
}

#[test]
fn a_port_name_nobody_has_is_a_typed_error() {
    let sys = temp_dir();
    let err = find_port_in(sys.path(), "/dev".as_ref(), "agent").unwrap_err();
    assert!(matches!(err, TransportError::PortNotFound { ref name, .. } if name == "agent"));
    let err = find_port_in(&sys.path().join("absent"), "/dev".as_ref(), "agent").unwrap_err();
    assert!(matches!(err, TransportError::ListPorts { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_over_a_unix_socket_it_connects_to() {
    let dir = temp_dir();
    let path = dir.path().join("console.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let console = Transport::Unix(path).open().await.unwrap();
    let serve =
        tokio::spawn(Agent::new(AgentConfig::default()).serve(console.reader, console.writer));
    let (stream, _) = listener.accept().await.unwrap();
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, FrameCodec::new());
    let mut sink = FramedWrite::new(write, FrameCodec::new());

    let ready = frames.next().await.unwrap().unwrap();
    assert!(matches!(
        Message::from_frame(&ready).unwrap(),
        Message::Ready(_)
    ));
    sink.send(echo_request(5, "over-unix")).await.unwrap();
    let mut outcome = ExecOutcome::default();
    loop {
        let frame = frames.next().await.unwrap().unwrap();
        assert_eq!(frame.id(), 5);
        if outcome
            .record(Message::from_frame(&frame).unwrap())
            .unwrap()
        {
            break;
        }
    }
    assert_eq!(
        (outcome.stdout_text(), outcome.exit_code()),
        ("over-unix\n".into(), 0)
    );
    drop(sink);
    assert_eq!(serve.await.unwrap().unwrap(), ServeEnd::Eof);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_over_a_terminal_device_in_raw_mode() {
    let pair = portable_pty::native_pty_system()
        .openpty(portable_pty::PtySize::default())
        .unwrap();
    let device = pair.master.tty_name().unwrap();
    drop(pair.slave);
    let console = Transport::Device(device).open().await.unwrap();
    let serve =
        tokio::spawn(Agent::new(AgentConfig::default()).serve(console.reader, console.writer));

    let mut reader = pair.master.try_clone_reader().unwrap();
    let mut writer = pair.master.take_writer().unwrap();
    // The host side plays with blocking reads and writes on the master.
    let host = tokio::task::spawn_blocking(move || {
        let ready = read_frame(&mut reader).unwrap();
        assert!(matches!(
            Message::from_frame(&ready).unwrap(),
            Message::Ready(_)
        ));
        // Bytes a terminal would rewrite (CR, LF, ^C, ^D) pass unchanged.
        let binary = b"\r\n\x03\x04\x1a\x7f\xff\x00";
        let cat = Message::ExecRequest(ExecRequest::new("cat", [""; 0]))
            .to_frame(7)
            .unwrap();
        writer.write_all(cat.as_wire()).unwrap();
        writer
            .write_all(
                data_frame(MessageType::ExecStdin, 7, binary)
                    .unwrap()
                    .as_wire(),
            )
            .unwrap();
        writer
            .write_all(
                data_frame(MessageType::ExecStdin, 7, b"")
                    .unwrap()
                    .as_wire(),
            )
            .unwrap();
        writer.flush().unwrap();
        let outcome = read_exec(&mut reader);
        assert_eq!((&outcome.stdout[..], outcome.exit_code()), (&binary[..], 0));
        writer
            .write_all(Message::Shutdown.to_frame(0).unwrap().as_wire())
            .unwrap();
        writer.flush().unwrap();
        (reader, writer)
    });
    let (reader, writer) = host.await.unwrap();
    assert_eq!(serve.await.unwrap().unwrap(), ServeEnd::Shutdown);
    // Closing the master ends the agent's parked read of the device.
    drop((reader, writer, pair.master));
}

#[test]
fn the_binary_serves_its_stdio_and_exits_zero_on_shutdown() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-agent"))
        .arg("--stdio")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let ready = read_frame(&mut stdout).unwrap();
    assert_eq!(ready.id(), 0);
    assert!(matches!(
        Message::from_frame(&ready).unwrap(),
        Message::Ready(_)
    ));
    stdin
        .write_all(echo_request(3, "from-binary").as_wire())
        .unwrap();
    stdin
        .write_all(
            data_frame(MessageType::ExecStdin, 3, b"")
                .unwrap()
                .as_wire(),
        )
        .unwrap();
    let outcome = read_exec(&mut stdout);
    assert_eq!(
        (outcome.stdout_text(), outcome.exit_code()),
        ("from-binary\n".into(), 0)
    );
    stdin
        .write_all(Message::Shutdown.to_frame(0).unwrap().as_wire())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "status {:?}", output.status);
    // Logs went to stderr (trace level), and stdout held frames only.
    assert!(String::from_utf8_lossy(&output.stderr).contains("shutdown requested"));
    drop(stdin);
}

#[test]
fn the_binary_exits_zero_when_its_stdin_closes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-agent"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    read_frame(&mut stdout).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_binary_exits_non_zero_on_a_malformed_frame() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-agent"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    read_frame(&mut stdout).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // len = 0x7fffffff is far above the 4 MiB maximum.
    stdin.write_all(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("malformed frame"));
    drop(stdin);
}

#[test]
fn the_binary_describes_its_console_flags_in_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_relay-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--stdio",
        "--unix <PATH>",
        "--port <NAME>",
        "--device <PATH>",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let both = Command::new(env!("CARGO_BIN_EXE_relay-agent"))
        .args(["--stdio", "--port", "agent"])
        .output()
        .unwrap();
    assert!(!both.status.success(), "two consoles at once are refused");
}
