//! `cargo xtask`: the project's single entry point for checks.
//!
//! `cargo xtask ci` runs every CI step in order and stops at the first
//! failure; `cargo xtask ci <step>` runs one step. CI runs exactly
//! `cargo xtask ci` (through `.ci/run`), so a local run and CI are the same.
//!
//! `cargo xtask bench [--quick]` runs the benchmarks of `relay-bench` in
//! release mode (a few minutes, or under one with `--quick`) and writes
//! `target/bench/summary.json`; CI runs only the `bench-smoke` step.
//! `cargo xtask vm-test` (the `vm` step) boots the reference agent as
//! `/init` of a QEMU microVM and drives it through the relay (crate
//! `relay-vm`); it installs QEMU with apt when missing and run as root.
//! `cargo xtask fuzz [--seconds N] [TARGET...]` runs the fuzz targets (see
//! the `fuzz` module).
//!
//! Adding a step is one line in [`STEPS`]: a name, a description and a
//! function that runs it (usually one or two [`Env::cargo`] commands).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool reports on its terminal"
)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

mod fuzz;
#[cfg(test)]
mod tidy;

/// One CI step: what `cargo xtask ci <name>` runs.
struct Step {
    /// The name given on the command line.
    name: &'static str,
    /// One line for the step list.
    about: &'static str,
    /// Runs the step from the repository root.
    run: fn(&Env) -> Result<(), String>,
}

/// The CI steps, in the order `cargo xtask ci` runs them.
const STEPS: &[Step] = &[
    Step {
        name: "fmt",
        about: "rustfmt check of every crate (cargo fmt --all -- --check)",
        run: fmt,
    },
    Step {
        name: "clippy",
        about: "clippy on all targets, warnings are errors",
        run: clippy,
    },
    Step {
        name: "test",
        about: "all tests (cargo nextest if installed, else cargo test), then doctests",
        run: test,
    },
    Step {
        name: "doc",
        about: "rustdoc of every crate, warnings are errors",
        run: doc,
    },
    Step {
        name: "loom",
        about: "loom model checks of the ring's memory ordering and wakeup protocol",
        run: loom,
    },
    Step {
        name: "fuzz-build",
        about: "fuzz crate on stable: fmt, build the targets (libFuzzer links; no coverage), lib tests, clippy",
        run: fuzz::build_step,
    },
    Step {
        name: "bench-smoke",
        about: "every benchmark scenario once at tiny sizes (checks they run; no thresholds)",
        run: bench_smoke,
    },
    Step {
        name: "vm",
        about: "the relay and the agent in a real QEMU microVM (installs QEMU as root; TCG)",
        run: vm,
    },
];

/// Step names that later issues add; asking for one says so instead of
/// treating it as a typo.
const RESERVED: &[&str] = &[];

/// Where and with which cargo the steps run.
struct Env {
    root: PathBuf,
    cargo: OsString,
}

impl Env {
    fn from_process() -> Env {
        // Cargo sets CARGO for `cargo run`; use the same toolchain for the steps.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Env { root, cargo }
    }

    /// A `cargo` command in the repository root with `args`.
    fn cargo(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.args(args).current_dir(&self.root);
        cmd
    }
}

fn fmt(env: &Env) -> Result<(), String> {
    run(env.cargo(&["fmt", "--all", "--", "--check"]))
}

fn clippy(env: &Env) -> Result<(), String> {
    run(env.cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test(env: &Env) -> Result<(), String> {
    if has_nextest(env) {
        run(env.cargo(&["nextest", "run", "--workspace", "--locked"]))?;
        // nextest does not run doctests.
        run(env.cargo(&["test", "--workspace", "--locked", "--doc"]))
    } else {
        println!("cargo-nextest is not installed: using cargo test (doctests included)");
        run(env.cargo(&["test", "--workspace", "--locked"]))
    }
}

fn loom(env: &Env) -> Result<(), String> {
    // Its own target dir: the loom cfg would otherwise rebuild everything in target/.
    let mut cmd = env.cargo(&[
        "test",
        "--package",
        "relay-ring",
        "--release",
        "--lib",
        "--locked",
        "--target-dir",
        "target/loom",
        "loom",
    ]);
    cmd.env("RUSTFLAGS", "--cfg loom");
    run(cmd)
}

fn bench_smoke(env: &Env) -> Result<(), String> {
    // A debug build: it reuses what the test step compiled, and the smoke
    // run only checks that every scenario runs.
    run(env.cargo(&[
        "run",
        "--package",
        "relay-bench",
        "--locked",
        "--",
        "run",
        "--smoke",
        "--out",
        "target/bench/smoke",
    ]))
}

fn vm(env: &Env) -> Result<(), String> {
    // A debug build of the driver, so it reuses what the test step
    // compiled; what it measures (agent-relay and the guest agent) it
    // builds itself, static and optimised, into target/vm/build.
    run(env.cargo(&["run", "--package", "relay-vm", "--locked", "--"]))
}

/// `cargo xtask bench [--quick]`: the benchmarks in release mode.
fn bench(env: &Env, quick: bool) -> Result<(), String> {
    let mut args = vec![
        "run",
        "--release",
        "--package",
        "relay-bench",
        "--locked",
        "--",
        "run",
        "--out",
        "target/bench",
    ];
    if quick {
        args.push("--quick");
    }
    run(env.cargo(&args))
}

fn doc(env: &Env) -> Result<(), String> {
    let mut cmd = env.cargo(&["doc", "--workspace", "--no-deps", "--locked"]);
    cmd.env("RUSTDOCFLAGS", "-D warnings");
    run(cmd)
}

fn has_nextest(env: &Env) -> bool {
    env.cargo(&["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs a command to completion, echoing it first; a non-zero exit is an error.
fn run(mut cmd: Command) -> Result<(), String> {
    let shown = show(&cmd);
    println!("$ {shown}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

fn show(cmd: &Command) -> String {
    let mut shown = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            shown.push_str(&format!("{}={:?} ", key.to_string_lossy(), value));
        }
    }
    shown.push_str("cargo");
    for arg in cmd.get_args() {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    shown
}

fn usage() -> String {
    let mut text = String::from(
        "usage: cargo xtask ci [STEP]\n\
         \x20      cargo xtask fuzz [--seconds N] [TARGET...]\n\
         \x20      cargo xtask bench [--quick]\n\
         \x20      cargo xtask vm-test\n\n\
         `ci` runs every CI step in order (stopping at the first failure), or only STEP.\n\
         `fuzz` runs each fuzz target (all by default) for N seconds (default 60); it needs\n\
         cargo-fuzz and a nightly toolchain and says so when they are missing.\n\
         `bench` runs the benchmarks in release mode (a few minutes; --quick: under one)\n\
         and writes target/bench/summary.json.\n\
         `vm-test` runs the `vm` step alone: the relay and the agent in a QEMU microVM.\n\nsteps:\n",
    );
    for step in STEPS {
        text.push_str(&format!("  {:<12} {}\n", step.name, step.about));
    }
    if !RESERVED.is_empty() {
        text.push_str(&format!(
            "\nreserved for later issues: {}\n",
            RESERVED.join(", ")
        ));
    }
    text
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// Print the usage and succeed.
    Help,
    /// Run these steps (indices into [`STEPS`]), in order.
    Run(Vec<usize>),
    /// Run the benchmarks (quick or full).
    Bench { quick: bool },
    /// Run the fuzz targets.
    Fuzz(fuzz::FuzzRequest),
    /// Print this error and the usage, and fail.
    Bad(String),
}

fn parse(args: &[String]) -> Request {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        [] | ["help" | "-h" | "--help"] | ["ci", "help" | "-h" | "--help"] => Request::Help,
        ["ci"] => Request::Run((0..STEPS.len()).collect()),
        ["ci", name] => match STEPS.iter().position(|s| s.name == name) {
            Some(index) => Request::Run(vec![index]),
            None if RESERVED.contains(&name) => Request::Bad(format!(
                "step `{name}` is reserved for a later issue and not implemented yet"
            )),
            None => Request::Bad(format!("unknown step `{name}`")),
        },
        ["fuzz", ref rest @ ..] => match fuzz::parse(rest) {
            Ok(request) => Request::Fuzz(request),
            Err(error) => Request::Bad(error),
        },
        ["vm-test"] => match STEPS.iter().position(|s| s.name == "vm") {
            Some(index) => Request::Run(vec![index]),
            None => Request::Bad("no `vm` step".into()),
        },
        ["vm-test", ..] => Request::Bad("`vm-test` takes no arguments".into()),
        ["bench"] => Request::Bench { quick: false },
        ["bench", "--quick"] => Request::Bench { quick: true },
        ["bench", ..] => Request::Bad("`bench` takes only `--quick`".into()),
        [task, ..] if task != "ci" => Request::Bad(format!("unknown task `{task}`")),
        _ => Request::Bad("`ci` takes at most one step".into()),
    }
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

fn run_steps(env: &Env, indices: &[usize]) -> ExitCode {
    let total = Instant::now();
    let mut done: Vec<(&str, Duration, bool)> = Vec::new();
    for (n, &index) in indices.iter().enumerate() {
        let step = &STEPS[index];
        println!(
            "\n==> [{}/{}] {}: {}",
            n + 1,
            indices.len(),
            step.name,
            step.about
        );
        let started = Instant::now();
        let result = (step.run)(env);
        done.push((step.name, started.elapsed(), result.is_ok()));
        if let Err(error) = result {
            eprintln!("\nxtask: step `{}` failed: {error}", step.name);
            break;
        }
    }
    println!("\n==> summary");
    for (name, took, ok) in &done {
        let mark = if *ok { "ok  " } else { "FAIL" };
        println!("  {mark} {name:<12} {:>8}", format_duration(*took));
    }
    for &index in &indices[done.len()..] {
        println!("  skip {:<12}", STEPS[index].name);
    }
    let all_ok = done.len() == indices.len() && done.iter().all(|(_, _, ok)| *ok);
    println!(
        "  {} in {}",
        if all_ok { "passed" } else { "FAILED" },
        format_duration(total.elapsed())
    );
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Request::Help => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        Request::Bad(error) => {
            eprintln!("xtask: {error}\n\n{}", usage());
            ExitCode::from(2)
        }
        Request::Run(indices) => run_steps(&Env::from_process(), &indices),
        Request::Bench { quick } => match bench(&Env::from_process(), quick) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("xtask: {error}");
                ExitCode::FAILURE
            }
        },
        Request::Fuzz(request) => match fuzz::fuzz(&Env::from_process(), &request) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("xtask fuzz: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ci_alone_runs_every_step_in_table_order() {
        assert_eq!(
            parse(&args(&["ci"])),
            Request::Run((0..STEPS.len()).collect())
        );
        let names: Vec<&str> = STEPS.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "fmt",
                "clippy",
                "test",
                "doc",
                "loom",
                "fuzz-build",
                "bench-smoke",
                "vm"
            ]
        );
    }

    #[test]
    fn bench_runs_full_or_quick_and_nothing_else() {
        assert_eq!(parse(&args(&["bench"])), Request::Bench { quick: false });
        assert_eq!(
            parse(&args(&["bench", "--quick"])),
            Request::Bench { quick: true }
        );
        assert!(matches!(
            parse(&args(&["bench", "--fast"])),
            Request::Bad(_)
        ));
        assert!(usage().contains("cargo xtask bench [--quick]"));
    }

    #[test]
    fn ci_with_a_step_name_runs_only_that_step() {
        for (index, step) in STEPS.iter().enumerate() {
            assert_eq!(parse(&args(&["ci", step.name])), Request::Run(vec![index]));
        }
    }

    #[test]
    fn help_and_unknown_steps_show_the_step_list() {
        assert_eq!(parse(&args(&["ci", "--help"])), Request::Help);
        assert_eq!(parse(&args(&[])), Request::Help);
        assert!(matches!(parse(&args(&["ci", "lint"])), Request::Bad(e) if e.contains("lint")));
        assert!(matches!(parse(&args(&["build"])), Request::Bad(_)));
        assert!(matches!(
            parse(&args(&["ci", "fmt", "test"])),
            Request::Bad(_)
        ));
        let usage = usage();
        for step in STEPS {
            assert!(usage.contains(step.name));
        }
    }

    #[test]
    fn reserved_steps_are_named_as_such_until_they_exist() {
        for name in RESERVED {
            if STEPS.iter().any(|s| s.name == *name) {
                continue;
            }
            assert!(
                matches!(parse(&args(&["ci", name])), Request::Bad(e) if e.contains("reserved"))
            );
        }
    }

    #[test]
    fn fuzz_takes_seconds_and_targets() {
        assert_eq!(
            parse(&args(&["fuzz", "--seconds", "10", "frame_decoder"])),
            Request::Fuzz(fuzz::FuzzRequest {
                seconds: 10,
                targets: vec!["frame_decoder".into()],
            })
        );
        assert!(matches!(
            parse(&args(&["fuzz", "--seconds", "x"])),
            Request::Bad(_)
        ));
        assert!(usage().contains("cargo xtask fuzz"));
    }

    #[test]
    fn vm_test_is_the_vm_step_alone() {
        assert_eq!(parse(&args(&["vm-test"])), parse(&args(&["ci", "vm"])));
        assert!(matches!(parse(&args(&["vm-test", "x"])), Request::Bad(_)));
        assert!(usage().contains("cargo xtask vm-test"));
    }

    #[test]
    fn step_names_are_unique() {
        for (i, a) in STEPS.iter().enumerate() {
            for b in &STEPS[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }
}
