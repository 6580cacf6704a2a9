//! The scenarios, how each is measured, and the goals they are checked
//! against, one module per family:
//!
//! - [`latency`]: round trips of one small frame (goal P1);
//! - [`bulk`]: 64 KiB frames each way, with and without budgets and flow
//!   control (P2: throughput, and the relay's memory during a transfer);
//! - [`fan_in`]: many clients pipelining echoes at once (P3);
//! - [`isolation`]: a client that never reads, or reads slowly, must not
//!   hold up a pinging client (P4, and per-session flow control for the
//!   slow reader);
//! - [`memory`]: the relay's memory with idle clients and under floods
//!   toward clients that never read (P5);
//! - [`end_to_end`]: `exec` through the reference agent (reported, no goal).
//!
//! Every measurement starts a fresh `serve` process for one implementation,
//! so memory peaks belong to that measurement alone; the implementations
//! take turns within each repeat (the order rotates from repeat to repeat)
//! after a warm-up, and the tables report medians over the repeats.

mod bulk;
mod end_to_end;
mod fan_in;
mod goals;
mod isolation;
mod latency;
mod memory;
mod mode;

use std::io::{self, Write as _};
use std::path::Path;

use relay_client::ClientError;

pub(crate) use self::mode::Mode;
use crate::driver::{self, Server};
use crate::load::Conn;
use crate::report::{Metric, Results, Sample, Verdict};
use crate::serve::{Impl, ServeOptions};

/// Frames of the bulk, isolation and memory scenarios.
const BULK_FRAME: usize = 64 * 1024;
/// The bench agent's flow-control window where it offers flow control
/// (the reference agent's default).
const FLOW_WINDOW: u32 = 1 << 20;

/// Every implementation, and ours alone (for what only ours can do).
const ALL: &[Impl] = &[Impl::Raw, Impl::Naive, Impl::Ours];
/// The same with the hop floor, for the rows whose cost is per hop (the
/// floor has no policy to measure memory or isolation against).
const WITH_FLOOR: &[Impl] = &[Impl::Raw, Impl::Floor, Impl::Naive, Impl::Ours];
const OURS: &[Impl] = &[Impl::Ours];

/// How one measurement gets its sample.
type Measure = fn(&Mode, Impl) -> Result<Sample, MeasureError>;

/// One scenario: what it measures and how.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    pub(crate) impls: &'static [Impl],
    pub(crate) metrics: &'static [Metric],
    /// Run every thread (clients, relay, agent) on CPU 0.
    pub(crate) pinned: bool,
    /// Repeated [`Mode::memory_repeats`] times instead of [`Mode::repeats`].
    measures_memory: bool,
    measure: Measure,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A family of scenarios and the goals they are checked against.
struct Family {
    scenarios: &'static [Scenario],
    goals: fn(&goals::Judge<'_>, &Mode) -> Vec<Verdict>,
}

/// Every family, in the order they run and their goals are listed.
const FAMILIES: &[Family] = &[
    latency::FAMILY,
    bulk::FAMILY,
    fan_in::FAMILY,
    isolation::FAMILY,
    memory::FAMILY,
    end_to_end::FAMILY,
];

/// Every scenario, in the order they run.
pub(crate) fn all() -> impl Iterator<Item = &'static Scenario> {
    FAMILIES.iter().flat_map(|family| family.scenarios)
}

/// Why one measurement gave no sample.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MeasureError {
    /// A step of the measurement failed on a socket or the server process.
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    /// The client library failed.
    #[error("{step}: {source}")]
    Client {
        step: &'static str,
        #[source]
        source: ClientError,
    },
    /// A round trip got no answer within its hang guard.
    #[error("a round trip timed out")]
    RoundTripTimedOut,
    /// `/proc` did not say which CPUs the server may use.
    #[error("cannot read the server's CPU list")]
    NoCpuList,
    /// Our relay did not answer `stats`.
    #[error("no stats from the relay")]
    NoStats,
    /// A command in the guest failed.
    #[error("`{command}` exited {code}")]
    Exited { command: &'static str, code: i32 },
    /// An exec session ended without its exit status.
    #[error("the session ended without an exit status")]
    NoExitStatus,
    /// A command's stdout was not what it should have been.
    #[error("{got} bytes of stdout, expected {expected}")]
    ShortStdout { got: u64, expected: u64 },
    /// A command counted other than what it was sent on stdin.
    #[error("{got} bytes reached stdin, expected {expected}")]
    ShortStdin { got: u64, expected: u64 },
    /// A copied file is not as long as its source.
    #[error("the copy has {got} bytes, expected {expected}")]
    ShortFile { got: u64, expected: u64 },
}

/// The [`MeasureError::Io`] of `step`.
fn failed(step: &'static str) -> impl FnOnce(io::Error) -> MeasureError {
    move |source| MeasureError::Io { step, source }
}

/// Runs one scenario: its repeats, each implementation once per round in a
/// rotating order.
pub(crate) fn run(mode: &Mode, scenario: &Scenario) -> Results {
    let repeats = if scenario.measures_memory {
        mode.memory_repeats
    } else {
        mode.repeats
    };
    let body = move |mode: Mode| {
        let mut results = Results::default();
        if scenario.pinned
            && let Err(error) = driver::pin_current_thread(0)
        {
            results.errors.push(format!("cannot pin to CPU 0: {error}"));
            return results;
        }
        for round in 0..repeats {
            let n = scenario.impls.len();
            for k in 0..n {
                let imp = scenario.impls[(round + k) % n];
                print!(".");
                let _ = std::io::stdout().flush();
                match (scenario.measure)(&mode, imp) {
                    Ok(sample) => results.add(imp, &sample),
                    Err(error) => results
                        .errors
                        .push(format!("{} round {round}: {error}", imp.name())),
                }
            }
        }
        results
    };
    let mode = mode.clone();
    // A thread of its own, so pinning never outlives the scenario.
    std::thread::scope(|s| {
        s.spawn(|| body(mode)).join().unwrap_or_else(|_| Results {
            errors: vec!["the scenario panicked".into()],
            ..Results::default()
        })
    })
}

/// The goals, checked against the medians (100% completion against every
/// repeat, memory against the largest repeat), family by family.
pub(crate) fn verdicts(mode: &Mode, results: &[(&'static Scenario, Results)]) -> Vec<Verdict> {
    let judge = goals::Judge::new(results);
    FAMILIES
        .iter()
        .flat_map(|family| (family.goals)(&judge, mode))
        .collect()
}

const fn metric(name: &'static str, unit: &'static str) -> Metric {
    Metric { name, unit }
}

fn start(opts: &ServeOptions) -> Result<Server, MeasureError> {
    Server::start(opts).map_err(failed("starting the server"))
}

/// A client of the server started with `opts`: it opens its streams as
/// sessions where the bench agent offers flow control (ours only), since
/// the relay credits sessions only.
fn connect(opts: &ServeOptions, path: &Path) -> Result<Conn, MeasureError> {
    let mut conn = Conn::connect(path).map_err(failed("connect"))?;
    conn.sessions = opts.imp == Impl::Ours && opts.flow.is_some();
    Ok(conn)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_unique() {
        let mut names: Vec<_> = all().map(|s| s.name).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn every_scenario_reports_metrics_for_ours() {
        for scenario in all() {
            assert!(!scenario.metrics.is_empty(), "{}", scenario.name);
            assert!(scenario.impls.contains(&Impl::Ours), "{}", scenario.name);
        }
    }
}
