//! The guest's kernel and tools, from Debian's packages without installing
//! them: `apt-get download` then `dpkg -x` into `target/vm/cache`.
//!
//! - The kernel: `linux-image-6.1.0-N-cloud-amd64`. The current `N` is what
//!   the metapackage `linux-image-cloud-amd64` depends on (when that is a
//!   6.1 kernel), else the highest `N` `apt-cache search` lists. Its
//!   `VIRTIO`, `VIRTIO_MMIO`, `VIRTIO_PCI` and `VIRTIO_CONSOLE` are modules,
//!   shipped uncompressed (`.ko`) in bookworm; `.ko.xz` and `.ko.zst` are
//!   handled too, with the `xz` or `zstd` tool.
//! - `busybox-static`: one static binary that is the guest's `sh`, `cat`,
//!   `sleep`, `uname`, `sha256sum` and the rest.
//!
//! A package already unpacked (marked by a `.complete` file) is used as it
//! is, without asking apt: delete `target/vm/cache` to fetch current ones.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::VmError;
use crate::host::{self, run};
use crate::{Layout, Progress};

/// The metapackage that names the current cloud kernel.
const KERNEL_META: &str = "linux-image-cloud-amd64";
/// The kernel series the guest uses.
const KERNEL_PREFIX: &str = "linux-image-6.1.0-";
const KERNEL_SUFFIX: &str = "-cloud-amd64";
/// The guest's tools.
const BUSYBOX: &str = "busybox-static";
/// Marks a completely unpacked package.
const COMPLETE: &str = ".complete";

/// An unpacked kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The package, such as `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// The release, such as `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the package.
    pub modules: PathBuf,
}

impl Kernel {
    /// Reads an unpacked package directory.
    fn open(package: &str, dir: &Path) -> Option<Kernel> {
        let release = package.strip_prefix("linux-image-")?.to_owned();
        let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
        let modules = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|base| dir.join(base).join(&release))
            .find(|path| path.is_dir())?;
        vmlinuz.is_file().then(|| Kernel {
            package: package.to_owned(),
            release,
            vmlinuz,
            modules,
        })
    }

    /// The file of module `name`: `name.ko`, or compressed `.ko.xz` /
    /// `.ko.zst`, anywhere below the modules directory.
    pub fn module(&self, name: &str) -> Result<PathBuf, VmError> {
        let wanted = [
            format!("{name}.ko"),
            format!("{name}.ko.xz"),
            format!("{name}.ko.zst"),
        ];
        find_file(&self.modules, &wanted)?.ok_or_else(|| VmError::Missing {
            what: format!("module {name}"),
            place: self.modules.clone(),
        })
    }
}

/// Depth-first search for a file with one of `names`.
fn find_file(dir: &Path, names: &[String]) -> Result<Option<PathBuf>, VmError> {
    let mut entries = fs::read_dir(dir)
        .map_err(VmError::io(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(VmError::io(dir))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(VmError::io(&path))?;
        if kind.is_dir() {
            if let Some(found) = find_file(&path, names)? {
                return Ok(Some(found));
            }
        } else if names.iter().any(|name| entry.file_name() == name.as_str()) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn kernel_cache(layout: &Layout) -> PathBuf {
    layout.cache().join("kernel")
}

fn busybox_cache(layout: &Layout) -> PathBuf {
    layout.cache().join("busybox")
}

/// The kernel already in the cache, if any.
pub fn cached_kernel(layout: &Layout) -> Option<Kernel> {
    let mut dirs: Vec<_> = fs::read_dir(kernel_cache(layout))
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join(COMPLETE).is_file())
        .collect();
    dirs.sort_by_key(|entry| entry.file_name());
    dirs.iter().rev().find_map(|entry| {
        let package = entry.file_name().to_string_lossy().into_owned();
        Kernel::open(&package, &entry.path())
    })
}

/// The busybox binary already in the cache, if any.
pub fn cached_busybox(layout: &Layout) -> Option<PathBuf> {
    let dir = busybox_cache(layout);
    let busybox = dir.join("bin/busybox");
    (dir.join(COMPLETE).is_file() && busybox.is_file()).then_some(busybox)
}

/// The cached kernel, or the current one downloaded and unpacked.
pub fn fetch_kernel(layout: &Layout, progress: Progress<'_>) -> Result<Kernel, VmError> {
    if let Some(kernel) = cached_kernel(layout) {
        progress(&format!("kernel: {} (cached)", kernel.package));
        return Ok(kernel);
    }
    let package = discover_kernel(progress)?;
    let dir = kernel_cache(layout).join(&package);
    download_and_unpack(layout, &package, &dir, progress)?;
    let kernel = Kernel::open(&package, &dir).ok_or_else(|| VmError::Missing {
        what: format!("boot/vmlinuz and lib/modules of {package}"),
        place: dir.clone(),
    })?;
    progress(&format!("kernel: {} (downloaded)", kernel.package));
    Ok(kernel)
}

/// The cached busybox, or `busybox-static` downloaded and unpacked.
pub fn fetch_busybox(layout: &Layout, progress: Progress<'_>) -> Result<PathBuf, VmError> {
    if let Some(busybox) = cached_busybox(layout) {
        return Ok(busybox);
    }
    let dir = busybox_cache(layout);
    download_and_unpack(layout, BUSYBOX, &dir, progress)?;
    cached_busybox(layout).ok_or_else(|| VmError::Missing {
        what: "bin/busybox".to_owned(),
        place: dir,
    })
}

/// The current 6.1 cloud kernel package, asking apt (after `apt-get
/// update`, as root, when apt knows none).
fn discover_kernel(progress: Progress<'_>) -> Result<String, VmError> {
    if let Some(package) = ask_apt_for_kernel()? {
        return Ok(package);
    }
    if host::is_root() {
        progress("apt knows no 6.1 cloud kernel; running `apt-get update`");
        host::apt_update()?;
        if let Some(package) = ask_apt_for_kernel()? {
            return Ok(package);
        }
    }
    Err(VmError::Unavailable {
        reason: format!(
            "apt lists no {KERNEL_PREFIX}N{KERNEL_SUFFIX} package (run `apt-get update` as root)"
        ),
    })
}

fn ask_apt_for_kernel() -> Result<Option<String>, VmError> {
    let mut depends = Command::new("apt-cache");
    depends.args(["depends", KERNEL_META]);
    // A metapackage apt does not know is not an error yet: try the search.
    if let Some(package) = run(depends).ok().as_deref().and_then(kernel_from_depends) {
        return Ok(Some(package));
    }
    let mut search = Command::new("apt-cache");
    search.args([
        "search",
        "--names-only",
        &format!("^{KERNEL_PREFIX}[0-9]+{KERNEL_SUFFIX}$"),
    ]);
    Ok(newest_kernel(&run(search)?))
}

/// Whether `name` is `linux-image-6.1.0-<N>-cloud-amd64`; its `N`.
fn kernel_abi(name: &str) -> Option<u32> {
    name.strip_prefix(KERNEL_PREFIX)?
        .strip_suffix(KERNEL_SUFFIX)?
        .parse()
        .ok()
}

/// The 6.1 kernel the metapackage depends on, from `apt-cache depends`.
pub fn kernel_from_depends(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends:")?.trim();
        kernel_abi(name).map(|_| name.to_owned())
    })
}

/// The highest-numbered 6.1 kernel in `apt-cache search` output.
pub fn newest_kernel(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| kernel_abi(name).map(|abi| (abi, name)))
        .max()
        .map(|(_, name)| name.to_owned())
}

/// `apt-get download` + `dpkg -x` into `dir` (replacing it), then marks it
/// complete and deletes the `.deb`.
fn download_and_unpack(
    layout: &Layout,
    package: &str,
    dir: &Path,
    progress: Progress<'_>,
) -> Result<(), VmError> {
    let downloads = layout.cache().join("downloads");
    fs::create_dir_all(&downloads).map_err(VmError::io(&downloads))?;
    progress(&format!("downloading {package} with apt-get download"));
    let mut download = Command::new("apt-get");
    if host::is_root() {
        // apt drops to its `_apt` user for downloads, which cannot write
        // here; it would fall back with a warning anyway.
        download.args(["-o", "APT::Sandbox::User=root"]);
    }
    download
        .args(["download", "-q", package])
        .current_dir(&downloads);
    if let Err(err) = run(download) {
        if !host::is_root() {
            return Err(err);
        }
        // Stale package lists name a version the mirror no longer has.
        progress("apt-get download failed; running `apt-get update` and trying again");
        host::apt_update()?;
        let mut again = Command::new("apt-get");
        again
            .args(["-o", "APT::Sandbox::User=root", "download", "-q", package])
            .current_dir(&downloads);
        run(again)?;
    }
    let deb = fs::read_dir(&downloads)
        .map_err(VmError::io(&downloads))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
        })
        .ok_or_else(|| VmError::Missing {
            what: format!("{package}_*.deb"),
            place: downloads.clone(),
        })?;
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(VmError::io(dir))?;
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(VmError::io(parent))?;
    }
    let mut unpack = Command::new("dpkg");
    unpack.arg("-x").arg(&deb).arg(dir);
    run(unpack)?;
    fs::write(dir.join(COMPLETE), package).map_err(VmError::io(dir.join(COMPLETE)))?;
    fs::remove_file(&deb).map_err(VmError::io(&deb))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metapackage_dependency_names_the_current_kernel() {
        let text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            kernel_from_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let backports = "linux-image-cloud-amd64\n  Depends: linux-image-6.12.9-cloud-amd64\n";
        assert_eq!(kernel_from_depends(backports), None);
    }

    #[test]
    fn the_search_picks_the_highest_abi_number_not_the_last_line() {
        let text = "linux-image-6.1.0-9-cloud-amd64 - Linux 6.1\n\
                    linux-image-6.1.0-56-cloud-amd64 - Linux 6.1\n\
                    linux-image-6.1.0-18-cloud-amd64 - Linux 6.1\n\
                    linux-image-6.1.0-99-cloud-amd64-dbg - debug\n";
        assert_eq!(
            newest_kernel(text).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(newest_kernel(""), None);
    }

    #[test]
    fn an_unpacked_kernel_is_found_with_its_modules() {
        let dir = tempfile::tempdir().unwrap();
        let package = "linux-image-6.1.0-7-cloud-amd64";
        let root = dir.path().join(package);
        let drivers = root.join("lib/modules/6.1.0-7-cloud-amd64/kernel/drivers/char");
        fs::create_dir_all(&drivers).unwrap();
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::write(root.join("boot/vmlinuz-6.1.0-7-cloud-amd64"), b"kernel").unwrap();
        fs::write(drivers.join("virtio_console.ko.xz"), b"module").unwrap();
        let kernel = Kernel::open(package, &root).unwrap();
        assert_eq!(kernel.release, "6.1.0-7-cloud-amd64");
        assert_eq!(
            kernel.module("virtio_console").unwrap(),
            drivers.join("virtio_console.ko.xz")
        );
        assert!(matches!(
            kernel.module("virtio_net"),
            Err(VmError::Missing { .. })
        ));
    }
}
