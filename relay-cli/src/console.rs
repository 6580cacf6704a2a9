//! The guest's console for `serve`: where the agent's byte stream comes from.
//! A chardev socket is read and written by the relay itself; a child's
//! stdio goes through device threads that pump it into the ring and back,
//! playing the part of a VMM's virtio-console backend.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use relay_ring::{DeviceReader, DeviceWriter};

use crate::logging::LogFormat;

/// Bytes moved per read by a device thread.
const PUMP_CHUNK: usize = 64 * 1024;

/// Which guest the relay serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConsoleSpec {
    /// The built-in reference agent, run as a child process (`agent-relay agent`).
    Local,
    /// A QEMU virtio-serial chardev socket (`-chardev socket,path=PATH,server=on`).
    Unix(PathBuf),
    /// Any command that speaks the protocol on its stdin and stdout (run by `sh -c`).
    StdioOf(String),
}

impl FromStr for ConsoleSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if spec == "local" {
            return Ok(ConsoleSpec::Local);
        }
        if let Some(path) = spec.strip_prefix("unix:").filter(|p| !p.is_empty()) {
            return Ok(ConsoleSpec::Unix(PathBuf::from(path)));
        }
        if let Some(cmd) = spec.strip_prefix("stdio-of:").filter(|c| !c.is_empty()) {
            return Ok(ConsoleSpec::StdioOf(cmd.to_owned()));
        }
        Err(format!(
            "unknown console {spec:?}: expected local, unix:PATH or stdio-of:CMD"
        ))
    }
}

impl ConsoleSpec {
    /// The command that runs the guest, for the consoles that are a child
    /// process; `None` for a socket. The local agent logs in `log_format`,
    /// as `serve` does.
    pub(crate) fn command(&self, log_format: LogFormat) -> io::Result<Option<Command>> {
        Ok(match self {
            ConsoleSpec::Local => {
                let mut cmd = Command::new(std::env::current_exe()?);
                cmd.arg("--log-format").arg(log_format.name()).arg("agent");
                Some(cmd)
            }
            ConsoleSpec::StdioOf(line) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(line);
                Some(cmd)
            }
            ConsoleSpec::Unix(_) => None,
        })
    }
}

impl std::fmt::Display for ConsoleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleSpec::Local => f.write_str("local"),
            ConsoleSpec::Unix(path) => write!(f, "unix:{}", path.display()),
            ConsoleSpec::StdioOf(cmd) => write!(f, "stdio-of:{cmd}"),
        }
    }
}

/// A running console: the device threads and, for a child, its process.
#[derive(Debug)]
pub(crate) struct Device {
    child: Option<Child>,
    threads: Vec<JoinHandle<()>>,
}

impl Device {
    /// Starts the guest's command with its stdio pumped to and from the
    /// ring's device end.
    pub(crate) fn start(
        mut cmd: Command,
        ring_reader: DeviceReader,
        ring_writer: DeviceWriter,
    ) -> io::Result<Device> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("the child's stdio was not piped"));
        };
        tracing::info!(pid = child.id(), "guest agent started");
        Ok(Device {
            child: Some(child),
            threads: vec![
                pump_into_ring(stdout, ring_writer),
                pump_out_of_ring(ring_reader, stdin),
            ],
        })
    }

    /// No device: the relay reads and writes the console itself.
    pub(crate) fn none() -> Device {
        Device {
            child: None,
            threads: Vec::new(),
        }
    }

    /// Waits for the device threads (they end once the relay has let go of
    /// the ring and the guest's stream has closed) and the child, killing
    /// the child if it outlives `grace`.
    pub(crate) fn finish(mut self, grace: Duration) {
        if let Some(child) = self.child.as_mut() {
            let deadline = Instant::now() + grace;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        tracing::info!(%status, "guest agent exited");
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        tracing::warn!("guest agent did not exit; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        // The threads end once both streams have closed; give them a moment,
        // and leave any still blocked to the process's exit.
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.threads.iter().all(JoinHandle::is_finished) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for thread in self.threads.drain(..).filter(JoinHandle::is_finished) {
            let _ = thread.join();
        }
    }
}

/// Connects to a chardev socket, waiting up to `timeout` for it to appear
/// (QEMU creates it as it starts).
pub(crate) async fn connect_unix(
    path: &Path,
    timeout: Duration,
) -> io::Result<tokio::net::UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::net::UnixStream::connect(path).await {
            Ok(stream) => return Ok(stream),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, path = %path.display(), "console not there yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => {
                return Err(io::Error::new(
                    error.kind(),
                    format!("cannot connect to {}: {error}", path.display()),
                ));
            }
        }
    }
}

/// Guest to host: reads the guest's stream and writes it into the ring.
fn pump_into_ring(
    mut source: impl Read + Send + 'static,
    mut ring: DeviceWriter,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; PUMP_CHUNK];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "reading the guest stream failed");
                    break;
                }
            };
            if ring.write_all_blocking(&buf[..n]).is_err() {
                break;
            }
        }
        // The relay sees the end of the guest's stream.
        ring.close();
    })
}

/// Host to guest: reads the ring and writes it to the guest's stream.
fn pump_out_of_ring(
    mut ring: DeviceReader,
    mut sink: impl Write + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; PUMP_CHUNK];
        loop {
            let n = match ring.read_blocking(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Err(error) = sink.write_all(&buf[..n]) {
                tracing::warn!(%error, "writing the guest stream failed");
                break;
            }
        }
        // Dropping the sink closes the guest's input: the agent sees EOF.
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_specs_parse_and_print_back() {
        for spec in [
            "local",
            "unix:/tmp/qemu.sock",
            "stdio-of:relay-agent --stdio",
        ] {
            assert_eq!(spec.parse::<ConsoleSpec>().unwrap().to_string(), spec);
        }
        assert!("unix:".parse::<ConsoleSpec>().is_err());
        assert!("tcp:1.2.3.4".parse::<ConsoleSpec>().is_err());
    }
}
