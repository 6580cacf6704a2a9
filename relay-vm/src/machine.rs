//! One boot: the QEMU process (a `microvm` with a virtio-serial port, the
//! command line the README shows), and `agent-relay serve --console
//! unix:SOCK` on its chardev socket; their logs; waiting for them to end.
//!
//! QEMU runs with `-nographic`, so the guest's serial console (the kernel's
//! messages and the agent's logs) is QEMU's stdout: it goes to
//! `serial.log`. The relay's stderr goes to `relay.log`. Both live in a
//! private temporary directory with the sockets, and are copied to
//! `target/vm/logs` when the machine is dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::VmError;
use crate::host::{Accel, show};

/// Guest memory: less than 128M panics this kernel with this initramfs.
pub const MEMORY: &str = "256M";

/// Everything one boot needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The kernel's release (what `uname -r` must print in the guest).
    pub release: String,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
    /// The host's TSC rate for `tsc_early_khz`, when known.
    pub tsc_khz: Option<u64>,
    /// The static `agent-relay`.
    pub agent_relay: PathBuf,
    /// Where the logs are copied at the end.
    pub logs: PathBuf,
}

/// The kernel command line: the serial console, quiet, reboot at once on
/// panic (which `-no-reboot` turns into QEMU exiting), and the TSC rate
/// (without it about one boot in twelve hangs under TCG).
pub fn kernel_cmdline(tsc_khz: Option<u64>) -> String {
    let mut line = String::from("console=ttyS0 quiet panic=-1");
    if let Some(khz) = tsc_khz {
        line.push_str(&format!(" tsc_early_khz={khz}"));
    }
    line
}

/// The QEMU command: a `microvm` with a virtio-serial device whose port
/// `agent` is the chardev socket `chardev` (QEMU listens; `wait=off` lets
/// the guest boot before the relay connects). `virtserialport`, not
/// `virtconsole`: hvc0 lost the tail of bulk output in tests.
pub fn qemu_command(config: &MachineConfig, chardev: &Path) -> Command {
    let mut cmd = Command::new(&config.qemu);
    cmd.args(["-accel", &config.accel.to_string()])
        .args(["-M", "microvm", "-m", MEMORY])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&config.kernel)
        .arg("-initrd")
        .arg(&config.initramfs)
        .arg("-append")
        .arg(kernel_cmdline(config.tsc_khz))
        .arg("-chardev")
        .arg(format!(
            "socket,id=c0,path={},server=on,wait=off",
            chardev.display()
        ))
        .args(["-device", "virtio-serial-device"])
        .args(["-device", "virtserialport,chardev=c0,name=agent"]);
    cmd
}

/// A running VM and the relay in front of it. Dropping it kills whatever
/// still runs and keeps the logs.
#[derive(Debug)]
pub struct Machine {
    qemu: Child,
    relay: Child,
    started: Instant,
    socket: PathBuf,
    dir: tempfile::TempDir,
    logs: PathBuf,
    agent_relay: PathBuf,
}

impl Machine {
    /// Starts QEMU, then the relay on its chardev socket (the relay retries
    /// until the socket appears).
    pub fn boot(config: &MachineConfig) -> Result<Machine, VmError> {
        let dir = tempfile::Builder::new()
            .prefix("relay-vm-")
            .tempdir()
            .map_err(VmError::io(std::env::temp_dir()))?;
        let chardev = dir.path().join("qemu.sock");
        let socket = dir.path().join("agent.sock");
        let serial = log_file(&dir.path().join("serial.log"))?;
        let relay_log = log_file(&dir.path().join("relay.log"))?;

        let mut qemu = qemu_command(config, &chardev);
        let started = Instant::now();
        let qemu = spawn(
            qemu.stdin(Stdio::null())
                .stdout(clone(&serial, dir.path())?)
                .stderr(serial),
        )?;
        let relay = match spawn_relay(
            &config.agent_relay,
            &socket,
            &chardev,
            relay_log,
            dir.path(),
        ) {
            Ok(relay) => relay,
            Err(err) => {
                let mut qemu = qemu;
                let _ = qemu.kill();
                let _ = qemu.wait();
                return Err(err);
            }
        };
        Ok(Machine {
            qemu,
            relay,
            started,
            socket,
            dir,
            logs: config.logs.clone(),
            agent_relay: config.agent_relay.clone(),
        })
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The relay's client socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The `agent-relay` binary, for CLI steps.
    pub fn agent_relay(&self) -> &Path {
        &self.agent_relay
    }

    /// The guest's console so far.
    pub fn serial(&self) -> String {
        read_lossy(&self.dir.path().join("serial.log"))
    }

    /// The relay's log so far.
    pub fn relay_log(&self) -> String {
        read_lossy(&self.dir.path().join("relay.log"))
    }

    /// Waits for QEMU to exit; `None` if it still runs after `guard`.
    pub async fn wait_qemu(&mut self, guard: Duration) -> Result<Option<ExitStatus>, VmError> {
        wait_child(&mut self.qemu, guard).await
    }

    /// Waits for the relay to exit; `None` if it still runs after `guard`.
    pub async fn wait_relay(&mut self, guard: Duration) -> Result<Option<ExitStatus>, VmError> {
        wait_child(&mut self.relay, guard).await
    }

    /// Stops the relay with `SIGTERM` (a graceful shutdown that leaves the
    /// VM running): the guest's agent sees the host go. Returns how the
    /// relay exited, or `None` if it had not within `guard` (it is then
    /// killed).
    pub async fn stop_relay(&mut self, guard: Duration) -> Result<Option<ExitStatus>, VmError> {
        let pid = rustix::process::Pid::from_child(&self.relay);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .map_err(|errno| VmError::io("the relay process")(errno.into()))?;
        let status = wait_child(&mut self.relay, guard).await?;
        if status.is_none() {
            let _ = self.relay.kill();
            let _ = self.relay.wait();
        }
        Ok(status)
    }

    /// Starts a new relay on the chardev socket, logging after the old one.
    pub fn start_relay(&mut self) -> Result<(), VmError> {
        let path = self.dir.path().join("relay.log");
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(VmError::io(&path))?;
        self.relay = spawn_relay(
            &self.agent_relay,
            &self.socket,
            &self.chardev(),
            log,
            self.dir.path(),
        )?;
        Ok(())
    }

    /// QEMU's chardev socket: the guest agent's port on the host side.
    pub fn chardev(&self) -> PathBuf {
        self.dir.path().join("qemu.sock")
    }

    /// Where the logs are copied when the machine is dropped.
    pub fn kept_logs(&self) -> &Path {
        &self.logs
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        for child in [&mut self.relay, &mut self.qemu] {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if fs::create_dir_all(&self.logs).is_ok() {
            for name in ["serial.log", "relay.log"] {
                let _ = fs::copy(self.dir.path().join(name), self.logs.join(name));
            }
        }
    }
}

async fn wait_child(child: &mut Child, guard: Duration) -> Result<Option<ExitStatus>, VmError> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(VmError::io("child process"))? {
            return Ok(Some(status));
        }
        if start.elapsed() >= guard {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `agent-relay serve` on the chardev socket, logging to `log`.
fn spawn_relay(
    agent_relay: &Path,
    socket: &Path,
    chardev: &Path,
    log: fs::File,
    dir: &Path,
) -> Result<Child, VmError> {
    let mut relay = Command::new(agent_relay);
    relay
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .arg("--console")
        .arg(format!("unix:{}", chardev.display()))
        .env("NO_COLOR", "1")
        .env_remove("AGENT_RELAY_SOCKET")
        .stdin(Stdio::null())
        .stdout(clone(&log, dir)?)
        .stderr(log);
    spawn(&mut relay)
}

fn log_file(path: &Path) -> Result<fs::File, VmError> {
    fs::File::create(path).map_err(VmError::io(path))
}

fn clone(file: &fs::File, dir: &Path) -> Result<fs::File, VmError> {
    file.try_clone().map_err(VmError::io(dir))
}

fn spawn(cmd: &mut Command) -> Result<Child, VmError> {
    cmd.spawn().map_err(|err| VmError::Command {
        command: show(cmd),
        detail: format!("cannot start: {err}"),
    })
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_gets_the_known_good_flags() {
        let config = MachineConfig {
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel: PathBuf::from("/k/vmlinuz"),
            release: "6.1.0-1-cloud-amd64".into(),
            initramfs: PathBuf::from("/k/initrd"),
            accel: Accel::Tcg,
            tsc_khz: Some(2_599_998),
            agent_relay: PathBuf::from("agent-relay"),
            logs: PathBuf::from("/logs"),
        };
        let shown = show(&qemu_command(&config, Path::new("/run/q.sock")));
        assert_eq!(
            shown,
            "qemu-system-x86_64 -accel tcg -M microvm -m 256M -nographic -no-reboot \
             -kernel /k/vmlinuz -initrd /k/initrd \
             -append console=ttyS0 quiet panic=-1 tsc_early_khz=2599998 \
             -chardev socket,id=c0,path=/run/q.sock,server=on,wait=off \
             -device virtio-serial-device -device virtserialport,chardev=c0,name=agent"
        );
        assert_eq!(kernel_cmdline(None), "console=ttyS0 quiet panic=-1");
    }
}
