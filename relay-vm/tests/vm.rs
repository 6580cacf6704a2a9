//! The real-microVM proof as a test: the relay drives the reference agent
//! inside a QEMU microvm. It runs when QEMU and the kernel and busybox
//! caches of `cargo xtask vm-test` are there, and otherwise skips itself
//! with a one-line reason (never installing or downloading anything).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "test code: a panic is the failure report, and the figures are printed"
)]

use relay_vm::packages::{cached_busybox, cached_kernel};
use relay_vm::{Layout, Options, host};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_drives_the_agent_inside_a_real_microvm() {
    let layout = Layout::from_env();
    let Some(qemu) = host::which(host::QEMU) else {
        println!(
            "skipped: {} is not installed (`cargo xtask vm-test` installs it)",
            host::QEMU
        );
        return;
    };
    let (Some(kernel), Some(busybox)) = (cached_kernel(&layout), cached_busybox(&layout)) else {
        println!(
            "skipped: no kernel/busybox cache in {} (`cargo xtask vm-test` fills it)",
            layout.cache().display()
        );
        return;
    };
    let mut lines = Vec::new();
    let mut progress = |line: &str| lines.push(line.to_owned());
    let result = relay_vm::boot_and_check(
        &layout,
        &Options::from_env(false),
        &qemu,
        &kernel,
        &busybox,
        &mut progress,
    )
    .await;
    match result {
        Ok(report) => println!("{report}"),
        Err(err) => panic!("{err}\n{}", lines.join("\n")),
    }
}
