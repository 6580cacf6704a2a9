//! The first steps: the guest boots and greets through the relay, and it
//! runs the guest's kernel, not the host's.

use std::time::Duration;

use relay_client::Client;

use super::guest::{connect_when_ready, run_cli};
use super::report::Report;
use crate::error::VmError;
use crate::machine::{Machine, MachineConfig};

/// Connects once the relay greets; the boot-to-ready time and the guest's
/// own times from `core.ready`.
pub(super) async fn first_greeting(
    machine: &Machine,
    report: &mut Report,
) -> Result<Client, VmError> {
    let client = connect_when_ready(machine.socket(), "boot").await?;
    report.boot_to_ready = machine.started().elapsed();
    let ready = client.ready();
    report.guest_boot = Duration::from_nanos(ready.boot_time_ns);
    report.guest_init = Duration::from_nanos(ready.init_time_ns);
    report.guest_ready = Duration::from_nanos(ready.ready_time_ns);
    Ok(client)
}

/// The kernel version as the guest's init logged it (or the kernel's own
/// `Linux version` line, if it was not quiet).
pub(super) fn kernel_line(serial: &str) -> String {
    serial
        .lines()
        .find(|line| line.contains("Linux version"))
        .map(|line| {
            let at = line.find("Linux version").unwrap_or(0);
            // The init logs it as a quoted field.
            line[at..].split('"').next().unwrap_or_default().to_owned()
        })
        .unwrap_or_else(|| "(no `Linux version` line on the guest console)".to_owned())
}

/// `uname -a` through the CLI must name the guest's kernel.
pub(super) async fn uname(
    machine: &Machine,
    config: &MachineConfig,
    report: &mut Report,
) -> Result<(), VmError> {
    let out = run_cli(machine, "uname", &["exec", "--", "uname", "-a"]).await?;
    report.uname = out.trim().to_owned();
    let release = report.uname.split_whitespace().nth(2).unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if release != config.release || !release.starts_with("6.1.") || release == host.trim() {
        return Err(VmError::check(
            "uname",
            format!(
                "guest release {release:?}: expected {:?} (the host runs {:?})",
                config.release,
                host.trim()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_line_is_cut_out_of_the_init_log() {
        let serial = "[    0.37] PCI: Fatal\n[    1.69]  INFO relay_agent::init: init: PID 1 started \
                      kernel=\"Linux version 6.1.0-56-cloud-amd64 (gcc) #1 SMP\" uptime=\"1.69\"\n";
        assert_eq!(
            kernel_line(serial),
            "Linux version 6.1.0-56-cloud-amd64 (gcc) #1 SMP"
        );
        assert!(kernel_line("nothing\n").starts_with("(no"));
    }
}
