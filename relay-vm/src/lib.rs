//! The real-microVM proof: boots the reference agent as `/init` of a QEMU
//! `microvm` guest (a Debian 6.1 cloud kernel, a virtio-serial port named
//! `agent`), serves it with the real relay (`agent-relay serve --console
//! unix:SOCK` on QEMU's chardev socket), and drives it through the client
//! library and the CLI.
//!
//! `cargo xtask vm-test` (CI's `vm` step) runs this crate's binary, which
//! calls [`run`]; the `vm` integration test calls [`boot_and_check`], the
//! same thing minus installing and downloading, when QEMU and the kernel
//! cache are already there, and skips itself otherwise. A crate of its own
//! because both need the same orchestration, xtask stays free of
//! dependencies (it only runs `cargo run -p relay-vm`), and none of it
//! belongs in the relay's layers: it depends on the agent library (for the
//! module list) and the client, and only tests use it.
//!
//! # Pieces
//!
//! - [`host`]: finds QEMU (installing it with apt when missing and running
//!   as root), decides between KVM and TCG, reads the host's TSC frequency.
//! - [`packages`]: Debian's 6.1 cloud kernel and `busybox-static` (the
//!   guest's shell and tools), fetched with `apt-get download` and unpacked
//!   with `dpkg -x` under `target/vm/cache`.
//! - [`image`]: the static `relay-agent` and `agent-relay` (one `cargo build`
//!   into `target/vm/build`, so the main build cache is untouched) and the
//!   initramfs, written by [`cpio`].
//! - [`machine`]: the QEMU process and the relay process of one boot, and
//!   their logs.
//! - [`scenario`]: the checks, and the figures in a [`Report`].
//!
//! Nothing here is a timing threshold: the waits are generous hang guards,
//! and the figures are printed, never asserted.

pub mod cpio;
pub mod host;
pub mod image;
pub mod machine;
pub mod packages;
pub mod scenario;

mod error;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use error::VmError;
pub use scenario::Report;

/// Where everything lives: the workspace, and `target/vm` below the target
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The workspace root (where the root `Cargo.toml` is).
    pub root: PathBuf,
    /// `<target dir>/vm`: caches, the static build, the initramfs, logs.
    pub work: PathBuf,
}

impl Layout {
    /// The layout of the workspace this crate was built in, honouring
    /// `CARGO_TARGET_DIR`.
    pub fn from_env() -> Layout {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        Layout {
            work: target.join("vm"),
            root,
        }
    }

    /// Downloaded and unpacked packages.
    pub fn cache(&self) -> PathBuf {
        self.work.join("cache")
    }

    /// The target directory of the static build.
    pub fn build(&self) -> PathBuf {
        self.work.join("build")
    }

    /// The initramfs written for the last run.
    pub fn initramfs(&self) -> PathBuf {
        self.work.join("initramfs.cpio")
    }

    /// Logs of the last run: `serial.log` (the guest console) and
    /// `relay.log` (`agent-relay serve`).
    pub fn logs(&self) -> PathBuf {
        self.work.join("logs")
    }
}

/// What [`run`] needs besides the layout.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `cargo` to build with (`$CARGO` when run by cargo).
    pub cargo: OsString,
    /// Whether a missing QEMU may be installed with apt (only as root).
    pub install: bool,
}

impl Options {
    /// `$CARGO` (or `cargo`), installing QEMU when allowed.
    pub fn from_env(install: bool) -> Options {
        Options {
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            install,
        }
    }
}

/// Progress lines for whoever runs this (the binary prints them; a test
/// may collect them).
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

/// The whole proof: QEMU, kernel and busybox (fetched when missing), the
/// static binaries, the initramfs, one boot, the scenario, and the report.
///
/// Returns [`VmError::Unavailable`] when QEMU is missing and cannot be
/// installed here (a caller may treat that as a skip).
pub async fn run(
    layout: &Layout,
    options: &Options,
    progress: Progress<'_>,
) -> Result<Report, VmError> {
    let qemu = host::ensure_qemu(options.install, progress)?;
    let kernel = packages::fetch_kernel(layout, progress)?;
    let busybox = packages::fetch_busybox(layout, progress)?;
    boot_and_check(layout, options, &qemu, &kernel, &busybox, progress).await
}

/// The proof with QEMU, the kernel and busybox already at hand: builds the
/// binaries and the initramfs, boots, runs the scenario.
pub async fn boot_and_check(
    layout: &Layout,
    options: &Options,
    qemu: &Path,
    kernel: &packages::Kernel,
    busybox: &Path,
    progress: Progress<'_>,
) -> Result<Report, VmError> {
    let binaries = image::build_binaries(layout, &options.cargo, progress)?;
    let initramfs = image::write_initramfs(&layout.initramfs(), &binaries.agent, kernel, busybox)?;
    progress(&format!(
        "initramfs: {} ({:.1} MiB, {} entries)",
        initramfs.path.display(),
        initramfs.bytes as f64 / (1024.0 * 1024.0),
        initramfs.entries
    ));
    let config = machine::MachineConfig {
        qemu: qemu.to_owned(),
        kernel: kernel.vmlinuz.clone(),
        release: kernel.release.clone(),
        initramfs: initramfs.path,
        accel: host::accel(),
        tsc_khz: host::tsc_khz(),
        agent_relay: binaries.agent_relay,
        logs: layout.logs(),
    };
    progress(&format!(
        "booting {} with {} (accel {}, tsc_early_khz {})",
        kernel.release,
        qemu.display(),
        config.accel,
        config
            .tsc_khz
            .map_or_else(|| "unknown: not passed".to_owned(), |khz| khz.to_string()),
    ));
    scenario::run(&config, progress).await
}
