//! `relay-vm`: runs the real-microVM proof and prints its figures; what
//! `cargo xtask vm-test` runs (see the library documentation).
//!
//! ```text
//! relay-vm [--no-install]
//! ```
//!
//! Exits 0 when every step passed, and also when QEMU is missing and cannot
//! be installed here (not root, or `--no-install`): that is a skip, said in
//! one line. Exits 1 on any failure, 2 on bad arguments.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports on its terminal"
)]

use std::process::ExitCode;

use relay_vm::{Layout, Options, VmError};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let install = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => true,
        ["--no-install"] => false,
        ["-h" | "--help"] => {
            println!(
                "usage: relay-vm [--no-install]\n\n\
                 Boots the reference agent as /init of a QEMU microvm, serves it with\n\
                 agent-relay, runs the scenario and prints the figures. QEMU is installed\n\
                 with apt-get when missing and running as root (unless --no-install)."
            );
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("relay-vm: unexpected arguments {args:?} (try --help)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("relay-vm: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let layout = Layout::from_env();
    let options = Options::from_env(install);
    let mut progress = |line: &str| println!("vm-test: {line}");
    let result = runtime.block_on(relay_vm::run(&layout, &options, &mut progress));
    match result {
        Ok(report) => {
            println!("\n{report}\n\nvm-test: passed");
            ExitCode::SUCCESS
        }
        Err(VmError::Unavailable { reason }) => {
            println!("vm-test skipped: {reason}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("vm-test failed: {err}");
            ExitCode::FAILURE
        }
    }
}
