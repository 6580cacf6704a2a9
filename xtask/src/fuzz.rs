//! `cargo xtask fuzz`: runs every fuzz target of `fuzz/` for a fixed time,
//! and the `fuzz-build` CI step that keeps the fuzz crate building on stable.
//!
//! Fuzzing needs cargo-fuzz and a nightly toolchain (libFuzzer's coverage
//! instrumentation is nightly-only); when either is missing the command says
//! which one and how to get it, and fails. Targets run one after another
//! with no sanitizer (the fuzzed crates forbid unsafe code; overflow checks
//! and debug assertions stay on), each starting from the seeds that
//! `fuzz/src/bin/write_seeds.rs` writes into `fuzz/corpus/<target>`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{Env, format_duration, run};

/// What `cargo xtask fuzz` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FuzzRequest {
    /// Seconds per target.
    pub(crate) seconds: u64,
    /// Targets to run; empty means all of them.
    pub(crate) targets: Vec<String>,
}

/// Seconds per target when `--seconds` is not given.
pub(crate) const DEFAULT_SECONDS: u64 = 60;

/// Parses the arguments after `fuzz`.
pub(crate) fn parse(args: &[&str]) -> Result<FuzzRequest, String> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        let value = match arg.split_once('=') {
            Some(("--seconds", value)) => Some(value),
            _ if arg == "--seconds" => Some(
                *args
                    .next()
                    .ok_or_else(|| "`--seconds` needs a number".to_owned())?,
            ),
            _ => None,
        };
        match value {
            Some(value) => {
                seconds = value
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("`--seconds {value}`: not a positive number"))?;
            }
            None if arg.starts_with('-') => return Err(format!("unknown option `{arg}`")),
            None => targets.push(arg.to_owned()),
        }
    }
    Ok(FuzzRequest { seconds, targets })
}

/// The CI step: the fuzz crate builds (targets included) on the stable
/// toolchain, its library's tests pass, and it is formatted and lint-clean.
///
/// libfuzzer-sys compiles libFuzzer with the system C++ compiler and links
/// on stable; only the coverage instrumentation of a real fuzzing run
/// needs nightly. The crate is its own workspace, so it builds in
/// `fuzz/target`, apart from the main workspace's artifacts.
///
/// Not `--locked`: `fuzz/Cargo.lock` also lists the dependencies of the
/// workspace crates it fuzzes, so a dependency added to one of those would
/// otherwise fail this step until someone refreshed the fuzz lock. Cargo
/// still keeps every version the lock pins; it only adds what is new.
pub(crate) fn build_step(env: &Env) -> Result<(), String> {
    let manifest = ["--manifest-path", "fuzz/Cargo.toml"];
    let with = |args: &[&str], tail: &[&str]| {
        let all: Vec<&str> = args.iter().chain(&manifest).chain(tail).copied().collect();
        env.cargo(&all)
    };
    // Not `--all`: that would also format the main workspace the path dependencies live in.
    run(with(&["fmt"], &["--", "--check"]))?;
    run(with(&["build"], &["--bins"]))?;
    run(with(&["test"], &["--lib"]))?;
    run(with(
        &["clippy"],
        &["--all-targets", "--", "-D", "warnings"],
    ))
}

/// What one target's run did.
struct Ran {
    target: String,
    execs: Option<u64>,
    seconds: f64,
    corpus: usize,
}

/// `cargo xtask fuzz`: seeds, then each target for `request.seconds`.
pub(crate) fn fuzz(env: &Env, request: &FuzzRequest) -> Result<(), String> {
    let available = targets(&env.root)?;
    let chosen: Vec<String> = if request.targets.is_empty() {
        available.clone()
    } else {
        for target in &request.targets {
            if !available.contains(target) {
                return Err(format!(
                    "no fuzz target `{target}` (there are: {})",
                    available.join(", ")
                ));
            }
        }
        request.targets.clone()
    };
    toolchain_check()?;

    println!("==> seeds");
    run(env.cargo(&[
        "run",
        "--quiet",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--bin",
        "write-seeds",
    ]))?;

    let started = Instant::now();
    let mut done = Vec::new();
    for (n, target) in chosen.iter().enumerate() {
        println!(
            "\n==> [{}/{}] fuzz {target} for {}s",
            n + 1,
            chosen.len(),
            request.seconds
        );
        done.push(run_target(env, target, request.seconds)?);
    }

    println!("\n==> fuzz summary");
    println!(
        "  {:<20} {:>14} {:>9} {:>12} {:>8}",
        "target", "execs", "seconds", "execs/s", "corpus"
    );
    let mut total = 0;
    for ran in &done {
        let execs = ran.execs.map_or("?".to_owned(), |e| e.to_string());
        let rate = ran
            .execs
            .map_or("?".to_owned(), |e| format!("{:.0}", e as f64 / ran.seconds));
        println!(
            "  {:<20} {execs:>14} {:>9.1} {rate:>12} {:>8}",
            ran.target, ran.seconds, ran.corpus
        );
        total += ran.execs.unwrap_or(0);
    }
    println!(
        "  {:<20} {total:>14} in {}, no crash",
        "total",
        format_duration(started.elapsed())
    );
    Ok(())
}

/// The fuzz targets: the files of `fuzz/fuzz_targets`, by name.
fn targets(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("fuzz").join("fuzz_targets");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Fails with what is missing and how to get it, unless `rustup run
/// nightly cargo fuzz` can work.
fn toolchain_check() -> Result<(), String> {
    let works = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(Command::new("rustup").arg("--version")) {
        return Err(
            "cannot fuzz: rustup is not installed, and cargo-fuzz needs a nightly \
                    toolchain through it (https://rustup.rs)"
                .into(),
        );
    }
    if !works(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        return Err(
            "cannot fuzz: no nightly toolchain (libFuzzer's coverage instrumentation \
                    needs one): `rustup toolchain install nightly`"
                .into(),
        );
    }
    if !works(Command::new("rustup").args(["run", "nightly", "cargo", "fuzz", "--version"])) {
        return Err("cannot fuzz: cargo-fuzz is not installed: `cargo install cargo-fuzz`".into());
    }
    Ok(())
}

/// Runs one target, keeping libFuzzer's output in `fuzz/target/xtask-fuzz/<target>.log`
/// and echoing its progress lines.
fn run_target(env: &Env, target: &str, seconds: u64) -> Result<Ran, String> {
    let log_dir = env.root.join("fuzz").join("target").join("xtask-fuzz");
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    let log_path = log_dir.join(format!("{target}.log"));
    let mut log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "fuzz",
        "run",
        "--sanitizer",
        "none",
    ])
    .arg(target)
    .arg("--")
    .arg(format!("-max_total_time={seconds}"))
    .arg("-print_final_stats=1")
    .current_dir(&env.root)
    .stdout(Stdio::inherit())
    .stderr(Stdio::piped());
    let shown: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    println!("$ rustup {}", shown.join(" "));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not start cargo fuzz: {e}"))?;
    let mut execs = None;
    // Lines of a panic message still to echo (the message follows "panicked at").
    let mut panic_lines = 0u32;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                execs = n.trim().parse().ok();
            }
            if line.contains("panicked at") {
                panic_lines = 8;
            } else if line.starts_with("stack backtrace") {
                panic_lines = 0;
            }
            let progress = [
                "DONE",
                "pulse",
                "ERROR",
                "SUMMARY",
                "Compiling",
                "Failing input",
            ]
            .iter()
            .any(|word| line.contains(word));
            if progress || panic_lines > 0 || line.starts_with("stat::") {
                println!("  {line}");
            }
            panic_lines = panic_lines.saturating_sub(1);
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cargo fuzz did not finish: {e}"))?;
    if !status.success() {
        return Err(format!(
            "fuzz target `{target}` failed ({status}); full output in {}, crash input under fuzz/artifacts/{target}/",
            log_path.display()
        ));
    }
    Ok(Ran {
        target: target.to_owned(),
        execs,
        seconds: started.elapsed().as_secs_f64(),
        corpus: corpus_size(&env.root.join("fuzz").join("corpus").join(target)),
    })
}

fn corpus_size(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_targets_are_read_in_any_order() {
        assert_eq!(
            parse(&["--seconds", "30", "router_events"]),
            Ok(FuzzRequest {
                seconds: 30,
                targets: vec!["router_events".into()]
            })
        );
        assert_eq!(
            parse(&["frame_decoder", "--seconds=5"]),
            Ok(FuzzRequest {
                seconds: 5,
                targets: vec!["frame_decoder".into()]
            })
        );
        assert_eq!(
            parse(&[]),
            Ok(FuzzRequest {
                seconds: DEFAULT_SECONDS,
                targets: vec![]
            })
        );
    }

    #[test]
    fn a_bad_duration_or_option_is_an_error() {
        assert!(parse(&["--seconds"]).is_err());
        assert!(parse(&["--seconds", "0"]).is_err());
        assert!(parse(&["--seconds", "ten"]).is_err());
        assert!(parse(&["--jobs", "2"]).is_err());
    }

    #[test]
    fn every_fuzz_target_file_is_declared_as_a_bin() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let names = targets(&root).unwrap();
        assert_eq!(
            names,
            [
                "frame_decoder",
                "handshake_decoder",
                "message_decoder",
                "router_events"
            ]
        );
        // Each is declared as a [[bin]] of the fuzz crate.
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
        for name in &names {
            assert!(
                manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
                "{name} is not a [[bin]] of fuzz/Cargo.toml"
            );
        }
    }
}
