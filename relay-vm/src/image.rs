//! What the VM boots besides the kernel: the static binaries and the
//! initramfs.
//!
//! **The static build.** `relay-agent` (the guest's `/init`) and
//! `agent-relay` (the host's relay) come from one `cargo build --release
//! --target x86_64-unknown-linux-gnu` with `RUSTFLAGS='-C
//! target-feature=+crt-static'` (there is no musl target here) into
//! `target/vm/build`, so the flags never invalidate the main build cache,
//! and both binaries share one compile of their dependencies. Symbols and
//! debug info are left out (`CARGO_PROFILE_RELEASE_STRIP=symbols`, `DEBUG=false`):
//! the kernel unpacks the initramfs under TCG, where every megabyte shows.
//!
//! **The initramfs**, an uncompressed `newc` cpio (unpacking is faster than
//! decompressing under TCG):
//!
//! | path | what |
//! |---|---|
//! | `/init` | the static `relay-agent`; as PID 1 it runs its init mode |
//! | `/dev/console` | `c 5 1`, so the kernel can give `/init` a console before devtmpfs is mounted |
//! | `/bin/busybox` and a link per applet | the guest's shell and tools |
//! | `/lib/modules/NAME.ko` | the virtio modules `/init` loads, in `relay_agent::init::VIRTIO_MODULES` order, decompressed |
//! | `/etc/passwd`, `/etc/group` | root only |
//! | `/proc`, `/sys`, `/tmp`, ... | empty mount points |

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cpio::Archive;
use crate::error::VmError;
use crate::host::{run, show};
use crate::packages::Kernel;
use crate::{Layout, Progress};

/// The target triple of the static build.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Applets linked when `busybox --list-full` cannot be run here.
const FALLBACK_APPLETS: &[&str] = &[
    "bin/sh",
    "bin/cat",
    "bin/echo",
    "bin/false",
    "bin/true",
    "bin/ls",
    "bin/ps",
    "bin/sleep",
    "bin/uname",
    "bin/kill",
    "bin/dd",
    "usr/bin/head",
    "usr/bin/test",
    "usr/bin/tr",
    "usr/bin/wc",
    "usr/bin/sha256sum",
];

/// The two binaries of the static build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// The guest agent, `/init` of the initramfs.
    pub agent: PathBuf,
    /// The relay CLI, `agent-relay`.
    pub agent_relay: PathBuf,
}

/// The `cargo build` of the static binaries.
pub fn build_command(layout: &Layout, cargo: &OsStr) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--locked", "--release", "--target", TARGET])
        .arg("--target-dir")
        .arg(layout.build())
        .args(["--package", "relay-agent", "--package", "relay-cli"])
        .current_dir(&layout.root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // It would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    cmd
}

/// Builds the static binaries (cargo's own output goes to stderr).
pub fn build_binaries(
    layout: &Layout,
    cargo: &OsStr,
    progress: Progress<'_>,
) -> Result<Binaries, VmError> {
    let mut cmd = build_command(layout, cargo);
    let shown = show(&cmd);
    progress(&format!("building the static binaries: {shown}"));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|err| VmError::Command {
            command: shown.clone(),
            detail: format!("cannot start: {err}"),
        })?;
    if !status.success() {
        return Err(VmError::Command {
            command: shown,
            detail: format!("{status} (cargo's errors are above)"),
        });
    }
    let dir = layout.build().join(TARGET).join("release");
    let binaries = Binaries {
        agent: dir.join("relay-agent"),
        agent_relay: dir.join("agent-relay"),
    };
    for path in [&binaries.agent, &binaries.agent_relay] {
        if !path.is_file() {
            return Err(VmError::Missing {
                what: path.display().to_string(),
                place: dir.clone(),
            });
        }
    }
    Ok(binaries)
}

/// A written initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initramfs {
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Entries, the trailer not counted.
    pub entries: usize,
}

/// Writes the initramfs (see the module documentation) to `path`: to a
/// temporary file first, renamed into place, so a concurrent run (a test and
/// `vm-test` at once) never boots a half-written archive.
pub fn write_initramfs(
    path: &Path,
    agent: &Path,
    kernel: &Kernel,
    busybox: &Path,
) -> Result<Initramfs, VmError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(VmError::io(parent))?;
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(name);
    let result = write_archive(&temporary, agent, kernel, busybox).and_then(|entries| {
        fs::rename(&temporary, path).map_err(VmError::io(path))?;
        Ok(entries)
    });
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    let entries = result?;
    let bytes = fs::metadata(path).map_err(VmError::io(path))?.len();
    Ok(Initramfs {
        path: path.to_owned(),
        bytes,
        entries,
    })
}

/// Writes the archive; the number of entries.
fn write_archive(
    path: &Path,
    agent: &Path,
    kernel: &Kernel,
    busybox: &Path,
) -> Result<usize, VmError> {
    let file = fs::File::create(path).map_err(VmError::io(path))?;
    let mut writer = Writer {
        archive: Archive::new(BufWriter::new(file)),
        dirs: BTreeSet::new(),
        entries: 0,
        path,
    };
    for dir in [
        "bin", "dev", "etc", "lib", "proc", "root", "run", "sbin", "sys", "tmp", "usr/bin",
        "usr/sbin", "var",
    ] {
        writer.dir(dir)?;
    }
    writer.char_device("dev/console", 0o600, 5, 1)?;
    writer.file("init", 0o755, &read(agent)?)?;
    writer.file("bin/busybox", 0o755, &read(busybox)?)?;
    for applet in applets(busybox) {
        writer.symlink(&applet, "/bin/busybox")?;
    }
    for module in relay_agent::init::VIRTIO_MODULES {
        let source = kernel.module(module)?;
        writer.file(
            &format!("lib/modules/{module}.ko"),
            0o644,
            &module_bytes(&source)?,
        )?;
    }
    writer.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    writer.file("etc/group", 0o644, b"root:x:0:\n")?;
    let entries = writer.entries;
    writer.archive.finish().map_err(VmError::io(path))?;
    Ok(entries)
}

/// The archive plus the directories already in it (parents come first).
struct Writer<'a> {
    archive: Archive<BufWriter<fs::File>>,
    dirs: BTreeSet<String>,
    entries: usize,
    path: &'a Path,
}

impl Writer<'_> {
    fn dir(&mut self, dir: &str) -> Result<(), VmError> {
        if dir.is_empty() || self.dirs.contains(dir) {
            return Ok(());
        }
        if let Some((parent, _)) = dir.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.archive
            .dir(dir, 0o755)
            .map_err(VmError::io(self.path))?;
        self.dirs.insert(dir.to_owned());
        self.entries += 1;
        Ok(())
    }

    fn parent(&mut self, name: &str) -> Result<(), VmError> {
        match name.rsplit_once('/') {
            Some((parent, _)) => self.dir(parent),
            None => Ok(()),
        }
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), VmError> {
        self.parent(name)?;
        self.archive
            .file(name, perm, data)
            .map_err(VmError::io(self.path))?;
        self.entries += 1;
        Ok(())
    }

    fn symlink(&mut self, name: &str, target: &str) -> Result<(), VmError> {
        self.parent(name)?;
        self.archive
            .symlink(name, target)
            .map_err(VmError::io(self.path))?;
        self.entries += 1;
        Ok(())
    }

    fn char_device(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), VmError> {
        self.parent(name)?;
        self.archive
            .char_device(name, perm, major, minor)
            .map_err(VmError::io(self.path))?;
        self.entries += 1;
        Ok(())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, VmError> {
    fs::read(path).map_err(VmError::io(path))
}

/// Where busybox's applets go, from `busybox --list-full`, without the
/// ones that would shadow `/init` or are not wanted.
fn applets(busybox: &Path) -> Vec<String> {
    let mut cmd = Command::new(busybox);
    cmd.arg("--list-full");
    let listed = run(cmd).ok().map(|text| applet_paths(&text));
    match listed {
        Some(paths) if !paths.is_empty() => paths,
        _ => FALLBACK_APPLETS.iter().map(|&p| p.to_owned()).collect(),
    }
}

/// The applet paths of a `--list-full` listing that the initramfs takes.
pub fn applet_paths(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(|line| line.trim().trim_start_matches('/'))
        .filter(|path| !path.is_empty() && path.contains('/'))
        .filter(|path| !matches!(*path, "bin/busybox" | "sbin/init"))
        .map(str::to_owned)
        .collect()
}

/// A module's bytes, decompressed when the package ships it compressed.
fn module_bytes(path: &Path) -> Result<Vec<u8>, VmError> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else {
        return read(path);
    };
    let mut cmd = Command::new(tool);
    cmd.args(["-d", "-c", "-q"]).arg(path);
    let shown = show(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|err| VmError::Command {
            command: shown.clone(),
            detail: format!("cannot start (is {tool} installed?): {err}"),
        })?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: shown,
            detail: out.status.to_string(),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initramfs_holds_init_the_console_the_modules_and_the_tools() {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("k/lib/modules/6.1.0-1-cloud-amd64");
        fs::create_dir_all(modules.join("kernel/drivers")).unwrap();
        for module in relay_agent::init::VIRTIO_MODULES {
            let file = modules.join("kernel/drivers").join(format!("{module}.ko"));
            fs::write(file, module.as_bytes()).unwrap();
        }
        let kernel = Kernel {
            package: "linux-image-6.1.0-1-cloud-amd64".into(),
            release: "6.1.0-1-cloud-amd64".into(),
            vmlinuz: dir.path().join("vmlinuz"),
            modules,
        };
        let agent = dir.path().join("agent");
        fs::write(&agent, b"the agent").unwrap();
        // Not executable: the fallback applet list is used.
        let busybox = dir.path().join("busybox");
        fs::write(&busybox, b"the tools").unwrap();
        let path = dir.path().join("out/initramfs.cpio");
        let written = write_initramfs(&path, &agent, &kernel, &busybox).unwrap();
        let entries = crate::cpio::tests::read_all(&fs::read(&path).unwrap());
        assert_eq!(written.entries, entries.len());
        let find = |name: &str| entries.iter().find(|e| e.0 == name).unwrap().clone();
        assert_eq!(find("init").3, b"the agent");
        assert_eq!(find("init").1, 0o100_755);
        assert_eq!(
            (find("dev/console").1, find("dev/console").2),
            (0o020_600, (5, 1))
        );
        assert_eq!(find("usr/bin/sha256sum").3, b"/bin/busybox");
        assert_eq!(find("lib/modules/virtio_console.ko").3, b"virtio_console");
        // Every parent comes before its children.
        for (at, entry) in entries.iter().enumerate() {
            if let Some((parent, _)) = entry.0.rsplit_once('/') {
                assert!(entries[..at].iter().any(|e| e.0 == parent), "{}", entry.0);
            }
        }
        assert!(
            !dir.path()
                .join("out")
                .read_dir()
                .unwrap()
                .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".tmp") })
        );
    }

    #[test]
    fn applets_keep_their_directories_but_never_replace_init() {
        let listing = "linuxrc\nbin/sh\nsbin/init\nusr/bin/head\n/bin/cat\nbin/busybox\n";
        assert_eq!(applet_paths(listing), ["bin/sh", "usr/bin/head", "bin/cat"]);
    }

    #[test]
    fn the_static_build_has_its_own_target_dir_and_flags() {
        let layout = Layout {
            root: PathBuf::from("/ws"),
            work: PathBuf::from("/ws/target/vm"),
        };
        let cmd = build_command(&layout, OsStr::new("cargo"));
        let shown = show(&cmd);
        assert!(
            shown.contains("--target-dir /ws/target/vm/build"),
            "{shown}"
        );
        assert!(
            shown.contains("--target x86_64-unknown-linux-gnu"),
            "{shown}"
        );
        let rustflags = cmd
            .get_envs()
            .find(|(key, _)| *key == "RUSTFLAGS")
            .and_then(|(_, value)| value);
        assert_eq!(rustflags, Some(OsStr::new("-C target-feature=+crt-static")));
    }
}
