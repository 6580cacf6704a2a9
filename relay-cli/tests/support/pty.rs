//! A command of the tests on a pseudo-terminal, its output collected as it
//! comes: what a person at a terminal would see.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use relay_test_support::eventually_blocking;

use super::BIN;

/// `agent-relay ARGS` with stdin, stdout and stderr on one pseudo-terminal.
pub struct OnPty {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    output: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl OnPty {
    /// Starts `agent-relay ARGS` with `env` added and NO_COLOR removed
    /// (unless `env` sets it).
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> OnPty {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 24,
                cols: 120,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut command = CommandBuilder::new(BIN);
        command.args(args);
        command.env("TERM", "xterm-256color");
        command.env_remove("NO_COLOR");
        command.env_remove("AGENT_RELAY_LOG_FORMAT");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = pair.slave.spawn_command(command).unwrap();
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Linux reports the closed pty as EIO: the end either way.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            child,
            output,
            reader,
            _master: pair.master,
        }
    }

    /// `spawn` with `AGENT_RELAY_SOCKET` set to `socket`.
    pub fn client(args: &[&str], socket: &Path) -> OnPty {
        let socket = socket.display().to_string();
        OnPty::spawn(args, &[("AGENT_RELAY_SOCKET", &socket)])
    }

    /// Everything printed so far.
    pub fn output(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output holds `needle`.
    pub fn wait_for_output(&self, needle: &str) {
        eventually_blocking(&format!("{needle:?} printed"), || {
            String::from_utf8_lossy(&self.output())
                .contains(needle)
                .then_some(())
        });
    }

    /// Sends SIGTERM.
    pub fn terminate(&mut self) {
        let pid = self.child.process_id().unwrap();
        let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// Waits for the exit; returns the exit code and everything printed.
    pub fn finish(mut self) -> (u32, Vec<u8>) {
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let output = self.output.lock().unwrap().clone();
        (status.exit_code(), output)
    }

    /// `finish`, with the output as text.
    pub fn finish_text(self) -> (u32, String) {
        let (code, output) = self.finish();
        (code, String::from_utf8_lossy(&output).into_owned())
    }
}
