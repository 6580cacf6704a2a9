//! `relay-bench`: measures the relay side by side with a raw Unix socket, the
//! hop floor (the relay's two hops through a ring with no routing or policy)
//! and a naive relay of the reference design, in one run.
//!
//! ```text
//! relay-bench [run] [--quick | --smoke] [--out DIR] [--only NAME,NAME...]
//!                  [--runtime multi|current] [--device-wait park|spin] [--ring BYTES]
//! relay-bench list
//! relay-bench serve --impl=ours|naive|floor|raw --socket=PATH [...]   # one relay, for profiling
//! relay-bench client --socket=PATH --load=rtt|up|down [--count=N] [--bytes=N]
//! ```
//!
//! Run through `cargo xtask bench [--quick]` (release build). It prints a
//! table of medians over the repeats with their (min-max), whether each goal
//! is met (P1 latency, P2 bulk, P3 fan-in, P4 isolation, P5 memory, and
//! per-session flow control; see `scenarios`), and writes
//! `DIR/summary.json` (the rows),
//! `DIR/details.json` (every value, the machine, the verdicts) and
//! `DIR/summary.md` (the table for the README). `DIR` defaults to `target/bench`.
//!
//! Each measurement runs the implementation under test in its own process,
//! this binary again as `relay-bench serve --impl=raw|floor|naive|ours ...` (see
//! `serve.rs`); the end-to-end rows add `relay-bench agent`, the reference
//! agent on its stdio. The goals are reported, never asserted.
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark binary reports on its terminal"
)]

mod agent;
mod driver;
mod load;
mod naive;
mod protocol;
mod report;
mod scenarios;
mod serve;
mod transport;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use serde::Serialize;

use crate::report::{DetailRow, Verdict};
use crate::scenarios::Mode;

/// What `run` was asked for.
#[derive(Debug)]
struct RunArgs {
    mode: Mode,
    out: PathBuf,
    only: Option<Vec<String>>,
}

fn parse_run(args: &[String]) -> Result<RunArgs, String> {
    let mut run = RunArgs {
        mode: Mode::full(),
        out: PathBuf::from("target/bench"),
        only: None,
    };
    let mut runtime = run.mode.runtime;
    let mut wait = run.mode.wait;
    let mut ring = run.mode.ring;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => run.mode = Mode::quick(),
            "--smoke" => run.mode = Mode::smoke(),
            "--full" => run.mode = Mode::full(),
            "--out" => run.out = args.next().ok_or("--out needs a directory")?.into(),
            "--runtime" => {
                runtime = match args.next().map(String::as_str) {
                    Some("multi") => serve::Runtime::Multi,
                    Some("current") => serve::Runtime::Current,
                    _ => return Err("--runtime takes multi or current".into()),
                }
            }
            "--ring" => {
                ring = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n: &usize| n.is_power_of_two())
                    .ok_or("--ring takes a power of two (bytes)")?;
            }
            "--device-wait" => {
                wait = args
                    .next()
                    .and_then(|w| transport::DeviceWait::parse(w))
                    .ok_or("--device-wait takes park or spin")?;
            }
            "--only" => {
                let list = args.next().ok_or("--only needs scenario names")?;
                let names: Vec<String> = list.split(',').map(str::to_owned).collect();
                for name in &names {
                    if !scenarios::all().any(|s| s.name == name) {
                        return Err(format!(
                            "unknown scenario `{name}` (see `relay-bench list`)"
                        ));
                    }
                }
                run.only = Some(names);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    run.mode.runtime = runtime;
    run.mode.wait = wait;
    run.mode.ring = ring;
    Ok(run)
}

/// The machine a run happened on.
#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    load_before: String,
    load_after: String,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct Details<'a> {
    mode: &'static str,
    machine: &'a Machine,
    seconds: f64,
    rows: &'a [DetailRow],
    verdicts: &'a [Verdict],
    errors: &'a [String],
    notes: &'a [String],
}

fn run(args: RunArgs) -> Result<bool, String> {
    let started = Instant::now();
    let mut machine = Machine {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model: cpu_model(),
        load_before: load_average(),
        load_after: String::new(),
    };
    println!(
        "relay-bench, {} mode: {} CPUs ({}), load average {}",
        args.mode.name, machine.cpus, machine.cpu_model, machine.load_before
    );
    let selected: Vec<_> = scenarios::all()
        .filter(|s| {
            args.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|n| n == s.name))
        })
        .collect();
    let mut all = Vec::new();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    for scenario in selected {
        print!("{:<28} {} ", scenario.name, scenario.about);
        let took = Instant::now();
        let results = scenarios::run(&args.mode, scenario);
        println!(" {:.1}s", took.elapsed().as_secs_f64());
        for error in &results.errors {
            println!("  error: {error}");
            errors.push(format!("{}: {error}", scenario.name));
        }
        if !results
            .values
            .keys()
            .any(|(_, imp)| *imp == serve::Impl::Ours)
        {
            errors.push(format!("{}: no value measured", scenario.name));
        }
        notes.extend(
            results
                .notes
                .iter()
                .map(|n| format!("{}: {n}", scenario.name)),
        );
        rows.extend(report::rows(scenario.name, scenario.metrics, &results));
        all.push((scenario, results));
    }
    machine.load_after = load_average();
    let verdicts = scenarios::verdicts(&args.mode, &all);
    let table = report::table(&rows);
    println!("\n{table}");
    println!("medians over the repeats, (min-max); ratios are ours / baseline of the medians");
    println!("goals (reported, never asserted):");
    for verdict in &verdicts {
        println!("  {}", verdict.line());
    }
    println!(
        "load average {} before, {} after; {:.0}s in all",
        machine.load_before,
        machine.load_after,
        started.elapsed().as_secs_f64()
    );

    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let summary: Vec<_> = rows.iter().map(|r| &r.row).collect();
    let write = |name: &str, text: String| {
        let path = args.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(
        "summary.json",
        serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?,
    )?;
    let details = Details {
        mode: args.mode.name,
        machine: &machine,
        seconds: started.elapsed().as_secs_f64(),
        rows: &rows,
        verdicts: &verdicts,
        errors: &errors,
        notes: &notes,
    };
    write(
        "details.json",
        serde_json::to_string_pretty(&details).map_err(|e| e.to_string())?,
    )?;
    let mut markdown = table;
    markdown.push_str("\nGoals (reported, never asserted):\n\n");
    for verdict in &verdicts {
        markdown.push_str(&format!("- {}\n", verdict.line()));
    }
    write("summary.md", markdown)?;
    println!(
        "wrote {}/summary.json, details.json, summary.md",
        args.out.display()
    );
    for error in &errors {
        eprintln!("relay-bench: {error}");
    }
    Ok(errors.is_empty())
}

/// `relay-bench client --socket=PATH --load=rtt|up|down [--count=N]
/// [--bytes=N]`: one load against a running `serve`, for profiling.
fn client(args: &[String]) -> Result<(), String> {
    let mut socket = None;
    let mut kind = String::from("rtt");
    let mut count = 100_000usize;
    let mut bytes = 1u64 << 30;
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .ok_or(format!("expected --key=value, got `{arg}`"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{key}: {e}"));
        match key {
            "--socket" => socket = Some(PathBuf::from(value)),
            "--load" => kind = value.to_owned(),
            "--count" => count = number()? as usize,
            "--bytes" => bytes = number()?,
            _ => return Err(format!("unknown option `{key}`")),
        }
    }
    let socket = socket.ok_or("--socket is required")?;
    let mut conn = load::Conn::connect(&socket).map_err(|e| format!("connect: {e}"))?;
    let io = |e: std::io::Error| e.to_string();
    match kind.as_str() {
        "rtt" => {
            let pings = load::ping(
                &mut conn,
                count / 10,
                count,
                std::time::Duration::from_secs(10),
            )
            .map_err(io)?;
            println!("p50 {:.2} us, p99 {:.2} us", pings.p(50.0), pings.p(99.0));
        }
        "up" => {
            let elapsed = load::bulk_up(&mut conn, bytes, 64 * 1024).map_err(io)?;
            println!("{:.0} MiB/s", load::mib_per_s(bytes, elapsed));
        }
        "down" => {
            let got = load::bulk_down(&mut conn, bytes, 64 * 1024).map_err(io)?;
            println!(
                "{:.0} MiB/s{}",
                load::mib_per_s(got.bytes, got.elapsed),
                if got.cut_off { " (cut off)" } else { "" }
            );
        }
        other => return Err(format!("unknown load `{other}`")),
    }
    Ok(())
}

fn usage() -> &'static str {
    "usage: relay-bench [run] [--quick | --smoke] [--out DIR] [--only NAME,...]\n                   [--runtime multi|current] [--device-wait park|spin] [--ring BYTES]\n       relay-bench list"
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve::ServeOptions::parse(&args[1..])
            .and_then(|opts| serve::run(&opts))
            .map(|()| true),
        Some("agent") => serve::run_reference_agent().map(|()| true),
        Some("client") => client(&args[1..]).map(|()| true),
        Some("list") => {
            for s in scenarios::all() {
                println!("{:<28} {}", s.name, s.about);
            }
            Ok(true)
        }
        Some("help" | "--help" | "-h") => {
            println!("{}", usage());
            Ok(true)
        }
        Some("run") => parse_run(&args[1..]).and_then(run),
        _ => parse_run(&args).and_then(run),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("relay-bench: {error}\n{}", usage());
            ExitCode::from(2)
        }
    }
}
