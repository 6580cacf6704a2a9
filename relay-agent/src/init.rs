//! The agent as `/init` of a microVM: PID 1 mounts the kernel filesystems,
//! loads the virtio modules, waits for the virtio port, and then runs the
//! agent as its one child process, reaping orphans until that child ends
//! and powering the VM off.
//!
//! # Two processes, and why PID 1 can reap blindly
//!
//! PID 1 inherits every orphan of the guest: a command's background process
//! whose parent exited is re-parented to it, and when it dies it stays a
//! zombie until PID 1 waits for it. If the agent itself were PID 1, its
//! reaper would have to call `waitpid(-1)`, and that steals the exit status
//! of processes tokio's child handling is about to wait for (tokio waits for
//! the pids it spawned, one by one, on `SIGCHLD`): a session would then
//! report a wrong exit code, or none.
//!
//! So PID 1 here ([`run_init`]) is a small synchronous supervisor without a
//! tokio runtime, and the agent runs in a child process ([`serve_port`],
//! started as `relay-agent --init-agent PORT`). PID 1's only own child is
//! that agent process; every other process it can ever wait for is an
//! orphan that nobody else will wait for. A blocking `wait()` for any child
//! therefore steals nothing: it reaps orphans as they die, and when the pid
//! it returns is the agent's, the agent has ended. The agent keeps tokio's
//! child handling exactly as outside a VM, because its session processes
//! are its own children (and no subreaper is set, so its grandchildren go
//! to PID 1 too when their parent exits).
//!
//! A side benefit: PID 1 survives the agent. When the agent ends, whether
//! by `core.shutdown` (exit 0), an error or a crash (even `kill -9 -1` from a
//! guest command, which spares PID 1), PID 1 syncs the filesystems and
//! powers the VM off, so the host sees the VM go away instead of a hang.
//!
//! # Boot sequence
//!
//! 1. Read `CLOCK_BOOTTIME` (the clock of `/proc/uptime`): the time the
//!    kernel took to reach `/init`, reported as `boot_time_ns` of
//!    `core.ready`.
//! 2. Mount devtmpfs on `/dev`, proc on `/proc`, sysfs on `/sys`, devpts on
//!    `/dev/pts` (for `tty` sessions) and a tmpfs on `/tmp`. A filesystem
//!    already mounted there (`EBUSY`) is fine.
//! 3. Load the modules of [`InitConfig::modules`] in order from
//!    [`InitConfig::modules_dir`] (`NAME.ko`) with `finit_module`. A missing
//!    file is skipped (the kernel may have the driver built in), and so is
//!    `EEXIST` (already loaded).
//! 4. Wait, at most [`InitConfig::port_timeout`], for the virtio port named
//!    [`InitConfig::port`] to appear under `/sys/class/virtio-ports` and its
//!    device node under `/dev`.
//! 5. Start the agent process with the boot and init times (`init_time_ns`
//!    is the end of step 4), and reap until it ends.
//! 6. `sync`, then `reboot(LINUX_REBOOT_CMD_POWER_OFF)`. If even that fails,
//!    [`run_init`] returns and PID 1 exits: the kernel panics, and with
//!    `panic=-1` and QEMU's `-no-reboot` the VM ends anyway.
//!
//! Any failure in steps 2 to 5 is logged and goes straight to step 6.
//!
//! # The agent process and the host connection
//!
//! [`serve_port`] opens the port and waits until the host side is connected
//! (the port polls `POLLHUP` while it is not, and reads end of file), so an
//! agent that starts before the relay has connected to QEMU's chardev does
//! not mistake that for the end of the stream. When the host goes away
//! (the relay stopped), it waits for the next connection and serves again,
//! sending a fresh `core.ready`; `core.shutdown` ends it. (What becomes of
//! output under way when the host goes: see [`serve_port`].)
//!
//! Logs go to stderr, which is the kernel console (`console=ttyS0`): the
//! initramfs carries a `/dev/console` node so the kernel can open it for
//! PID 1 before devtmpfs is mounted.

use std::convert::Infallible;
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::mount::MountFlags;
use rustix::process::{Pid, WaitOptions, WaitStatus};
use tracing::{debug, error, info};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::agent::{Agent, ServeEnd};
use crate::clock::boottime_ns;
use crate::error::{AgentError, TransportError};
use crate::transport::{find_port, open_device};

/// The modules that give a Debian 6.1 cloud kernel a virtio-serial port on
/// QEMU's `microvm` machine, in load order (each needs the ones before it).
pub const VIRTIO_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_console",
];

/// The port name [`InitConfig::default`] serves.
pub const DEFAULT_PORT: &str = "agent";

/// `PATH` of the agent process (and so of the commands it runs).
const AGENT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How often the port and the host connection are looked at while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What PID 1 does before it starts the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    /// The virtio port the agent serves (`name=` of QEMU's `virtserialport`).
    pub port: String,
    /// Where the modules are, as `NAME.ko`.
    pub modules_dir: PathBuf,
    /// Modules to load, in order.
    pub modules: Vec<String>,
    /// How long to wait for the port to appear.
    pub port_timeout: Duration,
}

impl Default for InitConfig {
    fn default() -> Self {
        InitConfig {
            port: DEFAULT_PORT.to_owned(),
            modules_dir: PathBuf::from("/lib/modules"),
            modules: VIRTIO_MODULES.iter().map(|&m| m.to_owned()).collect(),
            port_timeout: Duration::from_secs(10),
        }
    }
}

/// Why PID 1 could not bring the agent up, or could not power off.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A mount point could not be created.
    #[error("cannot create {}: {source}", path.display())]
    MountPoint {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A filesystem could not be mounted.
    #[error("cannot mount {fstype} on {}: {source}", target.display())]
    Mount {
        /// The filesystem type.
        fstype: &'static str,
        /// The mount point.
        target: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A module file could not be opened or loaded.
    #[error("cannot load module {}: {source}", path.display())]
    Module {
        /// The module file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The port did not appear in time.
    #[error("no virtio port named {name:?} appeared within {waited:?}: {last}")]
    PortTimeout {
        /// The port looked for.
        name: String,
        /// How long PID 1 waited.
        waited: Duration,
        /// The last lookup's error.
        last: TransportError,
    },
    /// The agent process could not be started.
    #[error("cannot start the agent process: {source}")]
    Spawn {
        /// The error.
        source: io::Error,
    },
    /// Waiting for children failed.
    #[error("waiting for child processes failed: {source}")]
    Wait {
        /// The error.
        source: io::Error,
    },
    /// The power-off request failed.
    #[error("cannot power off: {source}")]
    PowerOff {
        /// The error.
        source: io::Error,
    },
}

/// Runs PID 1 to its end: sets the guest up, runs the agent process, reaps
/// orphans, and powers the VM off when the agent ends (see the module
/// documentation). It returns only if powering off failed.
pub fn run_init(config: &InitConfig) -> Result<Infallible, InitError> {
    // First: the kernel handed over to /init a few microseconds ago.
    let boot_time_ns = boottime_ns();
    match bring_up(config, boot_time_ns) {
        Ok(agent) => supervise(agent),
        Err(err) => error!(%err, "init failed; powering off"),
    }
    power_off()
}

/// The name of the agent process's mode, as a command-line flag.
pub const AGENT_FLAG: &str = "--init-agent";

fn bring_up(config: &InitConfig, boot_time_ns: u64) -> Result<Pid, InitError> {
    mount_filesystems()?;
    info!(
        kernel = read_trimmed("/proc/version").as_deref().unwrap_or("?"),
        uptime = read_trimmed("/proc/uptime").as_deref().unwrap_or("?"),
        "init: PID 1 started"
    );
    load_modules(config)?;
    let device = wait_for_port(&config.port, config.port_timeout)?;
    let init_time_ns = boottime_ns();
    info!(
        port = %config.port,
        device = %device.display(),
        boot_ms = boot_time_ns / 1_000_000,
        init_ms = init_time_ns / 1_000_000,
        "init: port found; starting the agent"
    );
    let exe = std::env::current_exe().map_err(|source| InitError::Spawn { source })?;
    let child = Command::new(exe)
        .arg(AGENT_FLAG)
        .arg(&config.port)
        .arg("--boot-time-ns")
        .arg(boot_time_ns.to_string())
        .arg("--init-time-ns")
        .arg(init_time_ns.to_string())
        .env("PATH", AGENT_PATH)
        .current_dir("/")
        .spawn()
        .map_err(|source| InitError::Spawn { source })?;
    // The handle is dropped: PID 1 waits for the agent with `wait()` like
    // for every other child, so std never waits for it behind our back.
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| InitError::Spawn {
            source: io::Error::other("the agent process has no valid pid"),
        })?;
    Ok(pid)
}

/// Reaps every child until the agent process ends.
fn supervise(agent: Pid) {
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid == agent => {
                log_agent_end(status);
                return;
            }
            Ok(Some((pid, status))) => {
                debug!(
                    pid = pid.as_raw_nonzero().get(),
                    ?status,
                    "init: orphan reaped"
                );
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => {
                let err = InitError::Wait {
                    source: errno.into(),
                };
                error!(%err, "init: giving up on the agent");
                return;
            }
        }
    }
}

fn log_agent_end(status: WaitStatus) {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(0), _) => info!("init: the agent stopped; powering off"),
        (Some(code), _) => error!(code, "init: the agent failed; powering off"),
        (None, Some(signal)) => error!(signal, "init: the agent was killed; powering off"),
        (None, None) => error!(?status, "init: the agent ended; powering off"),
    }
}

/// Syncs and powers off. Returns only on failure.
fn power_off() -> Result<Infallible, InitError> {
    rustix::fs::sync();
    match rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
        Ok(()) => Err(InitError::PowerOff {
            source: io::Error::other("reboot(POWER_OFF) returned"),
        }),
        Err(errno) => Err(InitError::PowerOff {
            source: errno.into(),
        }),
    }
}

fn mount_filesystems() -> Result<(), InitError> {
    let nodev = MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV;
    let mounts: [(&str, &str, MountFlags, Option<&CStr>); 5] = [
        ("devtmpfs", "/dev", MountFlags::NOSUID, Some(c"mode=0755")),
        ("proc", "/proc", nodev, None),
        ("sysfs", "/sys", nodev, None),
        (
            "devpts",
            "/dev/pts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            Some(c"mode=0620,ptmxmode=0666"),
        ),
        (
            "tmpfs",
            "/tmp",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some(c"mode=1777"),
        ),
    ];
    for (fstype, target, flags, data) in mounts {
        let target = Path::new(target);
        if let Err(source) = std::fs::create_dir_all(target) {
            return Err(InitError::MountPoint {
                path: target.to_owned(),
                source,
            });
        }
        match rustix::mount::mount(fstype, target, fstype, flags, data) {
            Ok(()) => {}
            // Mounted already (by the kernel, or a second run).
            Err(rustix::io::Errno::BUSY) => {}
            Err(errno) => {
                return Err(InitError::Mount {
                    fstype,
                    target: target.to_owned(),
                    source: errno.into(),
                });
            }
        }
    }
    Ok(())
}

fn load_modules(config: &InitConfig) -> Result<(), InitError> {
    for name in &config.modules {
        let path = config.modules_dir.join(format!("{name}.ko"));
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                debug!(module = %name, "init: no module file; assuming it is built in");
                continue;
            }
            Err(source) => return Err(InitError::Module { path, source }),
        };
        match rustix::system::finit_module(&file, c"", 0) {
            Ok(()) => debug!(module = %name, "init: module loaded"),
            Err(rustix::io::Errno::EXIST) => debug!(module = %name, "init: module already loaded"),
            Err(errno) => {
                return Err(InitError::Module {
                    path,
                    source: errno.into(),
                });
            }
        }
    }
    Ok(())
}

/// Waits until the port is listed and its device node exists.
fn wait_for_port(name: &str, timeout: Duration) -> Result<PathBuf, InitError> {
    let start = Instant::now();
    loop {
        let last = match find_port(name) {
            Ok(device) if device.exists() => return Ok(device),
            Ok(device) => TransportError::OpenDevice {
                path: device,
                source: io::ErrorKind::NotFound.into(),
            },
            Err(err) => err,
        };
        if start.elapsed() >= timeout {
            return Err(InitError::PortTimeout {
                name: name.to_owned(),
                waited: timeout,
                last,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Serves the virtio port `name` until `core.shutdown`: opens it, waits for
/// the host to connect, serves, and after the host disconnects (end of
/// file) waits for it to come back and serves again.
///
/// Returns [`ServeEnd::Shutdown`] on `core.shutdown`; any error of the
/// agent or of the port ends it.
///
/// A port can be open only once at a time. A write that was under way when
/// the host went away stays blocked in the kernel until a host connects
/// again, and keeps the previous descriptor open until then; so the port is
/// reopened with retries ([`REOPEN_TIMEOUT`]). Those stale bytes reach the
/// next host before its `core.ready` (the relay discards whole frames that
/// come before `core.ready`; a frame cut in half by the disconnect cannot be
/// recovered by either side).
pub async fn serve_port(agent: Agent, name: &str) -> Result<ServeEnd, ServePortError> {
    loop {
        let device = find_port(name)?;
        let (reader, writer) = reopen(&device).await?;
        wait_for_host(&writer, &device).await?;
        info!(port = %name, device = %device.display(), "host connected; serving");
        match agent.clone().serve(reader, writer).await? {
            ServeEnd::Shutdown => return Ok(ServeEnd::Shutdown),
            ServeEnd::Eof => info!(port = %name, "host disconnected; waiting for it to return"),
        }
    }
}

/// How long [`serve_port`] retries opening a port that is still busy.
pub const REOPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens the port, retrying while a previous descriptor keeps it busy.
async fn reopen(device: &Path) -> Result<(tokio::fs::File, tokio::fs::File), ServePortError> {
    let start = Instant::now();
    loop {
        match open_device(device).await {
            Err(TransportError::OpenDevice { source, .. })
                if source.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error())
                    && start.elapsed() < REOPEN_TIMEOUT =>
            {
                debug!(device = %device.display(), "port still busy; retrying");
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            opened => return Ok(opened?),
        }
    }
}

/// Why [`serve_port`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServePortError {
    /// The port could not be found or opened.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Polling the port failed.
    #[error("cannot poll {}: {source}", path.display())]
    Poll {
        /// The device.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The agent stopped with an error.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Waits until the host side of the port is open: a virtio port reports
/// `POLLHUP` (and reads end of file) while it is not.
async fn wait_for_host(port: &impl AsFd, path: &Path) -> Result<(), ServePortError> {
    let mut waiting_since = None;
    loop {
        let mut fds = [PollFd::new(port, PollFlags::OUT)];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(_) if !fds[0].revents().contains(PollFlags::HUP) => return Ok(()),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(errno) => {
                return Err(ServePortError::Poll {
                    path: path.to_owned(),
                    source: errno.into(),
                });
            }
        }
        if waiting_since.is_none() {
            info!(device = %path.display(), "waiting for the host to connect");
            waiting_since = Some(Instant::now());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A log timer in seconds since boot (`CLOCK_BOOTTIME`), like the kernel's
/// own console lines, so the agent's lines and the kernel's line up.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootClock;

impl FormatTime for BootClock {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let ns = boottime_ns();
        write!(
            w,
            "[{:5}.{:06}]",
            ns / 1_000_000_000,
            ns % 1_000_000_000 / 1_000
        )
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_loads_the_virtio_modules_in_dependency_order() {
        let config = InitConfig::default();
        assert_eq!(config.port, DEFAULT_PORT);
        let at = |name: &str| config.modules.iter().position(|m| m == name).unwrap();
        assert!(at("virtio_ring") < at("virtio"));
        assert!(at("virtio") < at("virtio_mmio"));
        assert!(at("virtio_pci_modern_dev") < at("virtio_pci"));
        assert_eq!(
            config.modules.last().map(String::as_str),
            Some("virtio_console")
        );
    }

    #[test]
    fn missing_module_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let config = InitConfig {
            modules_dir: dir.path().to_owned(),
            ..InitConfig::default()
        };
        assert!(load_modules(&config).is_ok());
    }

    #[test]
    fn a_port_that_never_appears_times_out_with_the_lookup_error() {
        let err = wait_for_port("surely-no-such-port", Duration::from_millis(30)).unwrap_err();
        assert!(
            matches!(err, InitError::PortTimeout { ref name, .. } if name == "surely-no-such-port")
        );
    }
}
