//! The host side: QEMU (found, or installed with apt as root), the choice
//! between KVM and TCG, the host's TSC frequency, and running tools.
//!
//! **Accelerator.** `/dev/kvm` alone proves little: on these machines it is
//! a paravirtual hypervisor (`kvm_pvm`) that cannot run a stock kernel. Real
//! hardware KVM loads `kvm_intel` or `kvm_amd`, so [`accel`] picks KVM only
//! when `/sys/module/kvm_intel` or `/sys/module/kvm_amd` exists (and
//! `/dev/kvm` does), and TCG otherwise.
//!
//! **TSC frequency.** The guest's TSC ticks at the host's rate (TCG reads
//! the host's TSC; so does KVM), and a guest that has to calibrate it itself
//! under TCG hangs now and then, so the kernel gets `tsc_early_khz`.
//! [`tsc_khz`] takes the kernel's own figure from `dmesg` (`tsc: Refined TSC
//! clocksource calibration: X MHz`, else `tsc: Detected X MHz processor`),
//! and falls back to the first `cpu MHz` of `/proc/cpuinfo`, which is the
//! TSC rate on CPUs with `constant_tsc` (the norm) and on VMs that report
//! `tsc_known_freq`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Progress;
use crate::error::VmError;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// The Debian packages that provide it (cpio too, which the README's
/// manual recipe installs; the initramfs itself is written in Rust).
pub const QEMU_PACKAGES: &[&str] = &["qemu-system-x86", "cpio"];

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's portable code generator.
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// KVM when hardware KVM is loaded and `/dev/kvm` exists, TCG otherwise.
pub fn accel() -> Accel {
    let hardware = ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
        .iter()
        .any(|module| Path::new(module).exists());
    if hardware && Path::new("/dev/kvm").exists() {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// The host's TSC frequency in kHz (see the module documentation).
pub fn tsc_khz() -> Option<u64> {
    let dmesg = Command::new("dmesg")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned());
    if let Some(khz) = dmesg.as_deref().and_then(tsc_khz_from_dmesg) {
        return Some(khz);
    }
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .as_deref()
        .and_then(tsc_khz_from_cpuinfo)
}

/// The refined calibration if the kernel logged one, else the detected rate.
pub fn tsc_khz_from_dmesg(log: &str) -> Option<u64> {
    let find = |marker: &str| {
        log.lines().rev().find_map(|line| {
            let rest = &line[line.find(marker)? + marker.len()..];
            mhz_to_khz(rest.split_whitespace().next()?)
        })
    };
    find("Refined TSC clocksource calibration: ").or_else(|| find("tsc: Detected "))
}

/// The first `cpu MHz` line.
pub fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "cpu MHz").then(|| mhz_to_khz(value.trim()))?
    })
}

/// `"2599.998"` → 2599998, without going through floating point.
fn mhz_to_khz(mhz: &str) -> Option<u64> {
    let (whole, fraction) = mhz.split_once('.').unwrap_or((mhz, ""));
    let mut digits: String = fraction.chars().take(3).collect();
    while digits.len() < 3 {
        digits.push('0');
    }
    let khz = whole.parse::<u64>().ok()?.checked_mul(1000)? + digits.parse::<u64>().ok()?;
    (khz > 0).then_some(khz)
}

/// A program on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether this process runs as root (and so may use apt-get install).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// QEMU's path, installing it first when it is missing, `install` allows
/// and this process is root. [`VmError::Unavailable`] otherwise.
pub fn ensure_qemu(install: bool, progress: Progress<'_>) -> Result<PathBuf, VmError> {
    if let Some(qemu) = which(QEMU) {
        return Ok(qemu);
    }
    let command = format!(
        "apt-get install -y --no-install-recommends {}",
        QEMU_PACKAGES.join(" ")
    );
    if !install {
        return Err(VmError::Unavailable {
            reason: format!("{QEMU} is not installed (install it with `{command}`)"),
        });
    }
    if !is_root() {
        return Err(VmError::Unavailable {
            reason: format!(
                "{QEMU} is not installed, and installing it needs root: run `sudo {command}`"
            ),
        });
    }
    progress(&format!("{QEMU} not found; running `{command}`"));
    let apt_install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends"])
            .args(QEMU_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(cmd)
    };
    if apt_install().is_err() {
        // Most often: the package lists were never fetched on this machine.
        progress("apt-get install failed; running `apt-get update` and trying again");
        apt_update()?;
        apt_install()?;
    }
    which(QEMU).ok_or_else(|| VmError::Missing {
        what: QEMU.to_owned(),
        place: PathBuf::from("PATH"),
    })
}

/// `apt-get update` (quietly).
pub(crate) fn apt_update() -> Result<(), VmError> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["update", "-q"]);
    run(cmd).map(drop)
}

/// Runs a command to completion; its stdout on success, an error with the
/// end of its output otherwise.
pub(crate) fn run(mut cmd: Command) -> Result<String, VmError> {
    let shown = show(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|err| VmError::Command {
            command: shown.clone(),
            detail: format!("cannot start: {err}"),
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(VmError::Command {
        command: shown,
        detail: format!("{}\n{}", out.status, tail(&text, 20)),
    })
}

/// A command line as text, for messages.
pub(crate) fn show(cmd: &Command) -> String {
    let mut shown = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    shown
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refined_tsc_calibration_wins_over_the_detected_rate() {
        let log = "[    0.000057] tsc: Detected 2599.998 MHz processor\n\
                   [    1.2] tsc: Refined TSC clocksource calibration: 2600.001 MHz\n";
        assert_eq!(tsc_khz_from_dmesg(log), Some(2_600_001));
        let log = "[    0.000057] tsc: Detected 2599.998 MHz processor\n";
        assert_eq!(tsc_khz_from_dmesg(log), Some(2_599_998));
        assert_eq!(tsc_khz_from_dmesg("nothing here\n"), None);
    }

    #[test]
    fn cpuinfo_gives_the_first_cpu_mhz() {
        let cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2599.998\nflags\t: tsc\n\
                       processor\t: 1\ncpu MHz\t\t: 1200.000\n";
        assert_eq!(tsc_khz_from_cpuinfo(cpuinfo), Some(2_599_998));
        assert_eq!(tsc_khz_from_cpuinfo("cpu MHz : 3000\n"), Some(3_000_000));
        assert_eq!(tsc_khz_from_cpuinfo("cpu MHz : 2.5\n"), Some(2_500));
        assert_eq!(tsc_khz_from_cpuinfo("cpu MHz : 0\n"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
