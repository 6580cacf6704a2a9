//! Writes the seed corpus of every fuzz target: `<dir>/<target>/seed-NNN`,
//! where `<dir>` is the first argument or `fuzz/corpus`.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports what it wrote"
)]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    for target in relay_fuzz::seeds::TARGETS {
        let target_dir = dir.join(target);
        let seeds = relay_fuzz::seeds::for_target(target);
        let written = std::fs::create_dir_all(&target_dir).and_then(|()| {
            for (n, seed) in seeds.iter().enumerate() {
                std::fs::write(target_dir.join(format!("seed-{n:03}")), seed)?;
            }
            Ok(())
        });
        if let Err(error) = written {
            eprintln!("write-seeds: {}: {error}", target_dir.display());
            return ExitCode::FAILURE;
        }
        println!("{:>3} seeds in {}", seeds.len(), target_dir.display());
    }
    ExitCode::SUCCESS
}
