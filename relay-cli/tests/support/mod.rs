//! The `agent-relay serve` harness shared by the end-to-end tests.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a test support module: each test file uses a different part"
)]

use relay_client::Client;
use relay_test_support::{BlockingClient, TempDir, eventually_blocking, temp_dir};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub mod pty;
pub mod upstream;

pub const BIN: &str = env!("CARGO_BIN_EXE_agent-relay");

/// `agent-relay serve` in a private directory, stopped with SIGTERM on drop.
pub struct Serve {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: TempDir,
}

impl Serve {
    pub fn start(extra: &[&str]) -> Serve {
        Serve::start_with(extra, |_, _| {})
    }

    /// `start`, with `configure` given the command (to redirect stderr, set
    /// the environment) and the private directory before it runs.
    pub fn start_with(extra: &[&str], configure: impl FnOnce(&mut Command, &Path)) -> Serve {
        let dir = temp_dir();
        let socket = dir.path().join("agent.sock");
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .env_remove("AGENT_RELAY_LOG_FORMAT")
            .stdin(Stdio::null());
        configure(&mut command, dir.path());
        let child = command.spawn().unwrap();
        let serve = Serve { child, socket, dir };
        serve.wait_until_serving();
        serve
    }

    /// Waits until a client gets its greeting (the guest is ready).
    pub fn wait_until_serving(&self) {
        eventually_blocking("serve greeting a client", || {
            BlockingClient::connect(&self.socket).ok()
        });
    }

    /// Waits until the relay has no session open.
    pub fn wait_for_no_sessions(&self) {
        eventually_blocking("every session ended", || {
            (self.stats()["sessions_open"] == 0).then_some(())
        });
    }

    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("AGENT_RELAY_SOCKET", &self.socket);
        cmd
    }

    /// `agent-relay exec -- sh -c SCRIPT`, started with no stdin, its stdout
    /// piped and its stderr as given.
    pub fn spawn_sh(&self, script: &str, stderr: Stdio) -> Child {
        self.cli(&["exec", "--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cli(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let output = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        output
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.socket).await.unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

impl Serve {
    /// The serve process's peak resident memory (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    }

    /// The relay's stats, as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let output = self.run(&["stats", "--json"], b"");
        assert!(output.status.success());
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
