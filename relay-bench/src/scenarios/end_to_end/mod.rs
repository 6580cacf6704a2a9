//! End to end through the reference agent (relay-agent as a child process
//! on the ring's device end, driven with relay-client): what a user of the
//! relay sees, against goal E2E.
//!
//! Each row's floor (the `floor` column) is the same work done locally in
//! the same run, with no relay and no agent ([`local`]): the command's
//! output through a plain pipe, a local spawn-and-wait of the same command,
//! a file copied through user space. The relay's and the agent's CPU are
//! reported beside each row of ours ([`remote`]).

mod local;
mod remote;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::goals::{Judge, all_met, times};
use super::{Family, MeasureError, Mode, Scenario, bulk, failed, metric};
use crate::report::{Metric, Sample, Verdict};
use crate::serve::Impl;

/// The local floor beside ours.
const E2E: &[Impl] = &[Impl::Floor, Impl::Ours];

/// Execs (or round trips) before the clock starts.
const WARMUP: usize = 3;

const EXEC_LATENCY: &[Metric] = &[
    metric("p50", "ms"),
    metric("p99", "ms"),
    metric("relay_cpu", "us/exec"),
    metric("agent_cpu", "us/exec"),
];

const ROUND_TRIP: &[Metric] = &[
    metric("p50", "us"),
    metric("p99", "us"),
    metric("relay_cpu", "us/rtt"),
    metric("agent_cpu", "us/rtt"),
];

const STREAM: &[Metric] = &[
    metric("throughput", "MiB/s"),
    metric("relay_cpu", "us/MiB"),
    metric("agent_cpu", "us/MiB"),
];

const STDOUT: &[Metric] = &[
    bulk::DOWN[0],
    bulk::DOWN[1],
    bulk::DOWN[2],
    metric("relay_cpu", "us/MiB"),
    metric("agent_cpu", "us/MiB"),
];

pub(super) const FAMILY: Family = Family {
    scenarios: &[
        scenario(
            "e2e_exec_true",
            "E2E: `exec true` start to exit; floor: a local spawn-and-wait",
            EXEC_LATENCY,
            exec_true,
        ),
        scenario(
            "e2e_cat_rtt_64B",
            "E2E: 64 B through `cat`'s stdin and back; floor: a local `cat` on pipes",
            ROUND_TRIP,
            cat_round_trips,
        ),
        scenario(
            "e2e_exec_stdout_100MB",
            "E2E: exec stdout of `head -c N /dev/zero`; floor: the same through a plain pipe",
            STDOUT,
            exec_stdout,
        ),
        scenario(
            "e2e_exec_stdin_100MB",
            "E2E: exec stdin into `wc -c`; floor: the same through a plain pipe",
            STREAM,
            exec_stdin,
        ),
        scenario(
            "e2e_fs_put_1GiB",
            "E2E: fs put of a file; floor: a local copy through user space",
            STREAM,
            fs_put,
        ),
        scenario(
            "e2e_fs_get_1GiB",
            "E2E: fs get of a file; floor: a local copy through user space",
            STREAM,
            fs_get,
        ),
    ],
    goals,
};

const fn scenario(
    name: &'static str,
    about: &'static str,
    metrics: &'static [Metric],
    measure: super::Measure,
) -> Scenario {
    Scenario {
        name,
        about,
        impls: E2E,
        metrics,
        pinned: false,
        measures_memory: false,
        measure,
    }
}

fn exec_true(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    match imp {
        Impl::Floor => local::spawn_and_wait(mode.exec_rounds),
        _ => remote::exec_true(mode),
    }
}

fn cat_round_trips(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    match imp {
        Impl::Floor => local::cat_round_trips(mode.cat_rounds),
        _ => remote::cat_round_trips(mode),
    }
}

fn exec_stdout(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    match imp {
        Impl::Floor => local::pipe_stdout(mode.exec_stdout),
        _ => remote::exec_stdout(mode),
    }
}

fn exec_stdin(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    match imp {
        Impl::Floor => local::pipe_stdin(mode.exec_stdout),
        _ => remote::exec_stdin(mode),
    }
}

fn fs_put(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    match imp {
        Impl::Floor => local::copy(mode.fs_bytes),
        _ => remote::fs_transfer(mode, remote::Direction::Put),
    }
}

fn fs_get(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    match imp {
        Impl::Floor => local::copy(mode.fs_bytes),
        _ => remote::fs_transfer(mode, remote::Direction::Get),
    }
}

/// Latency is good below its floor's multiple; throughput above its share.
fn goals(judge: &Judge<'_>, _mode: &Mode) -> Vec<Verdict> {
    let start = judge.ratio("e2e_exec_true", "p50", Impl::Floor);
    let mut verdicts = vec![Verdict {
        goal: "E2E",
        what: format!(
            "exec start p50 {} a local spawn-and-wait (goal <= 1.2x)",
            times(start)
        ),
        met: start.map(|r| r <= 1.2),
    }];
    let stdout = judge.ratio("e2e_exec_stdout_100MB", "throughput", Impl::Floor);
    verdicts.push(Verdict {
        goal: "E2E",
        what: format!("exec stdout {} a plain pipe (goal >= 0.5x)", times(stdout)),
        met: stdout.map(|r| r >= 0.5),
    });
    let put = judge.ratio("e2e_fs_put_1GiB", "throughput", Impl::Floor);
    let get = judge.ratio("e2e_fs_get_1GiB", "throughput", Impl::Floor);
    verdicts.push(Verdict {
        goal: "E2E",
        what: format!(
            "fs put {} and get {} a local copy (goal >= 0.5x)",
            times(put),
            times(get)
        ),
        met: all_met(&[put.map(|r| r >= 0.5), get.map(|r| r >= 0.5)]),
    });
    verdicts
}

/// Sorted milliseconds' (or microseconds') p50 and p99.
fn percentiles(mut values: Vec<f64>) -> [(&'static str, f64); 2] {
    values.sort_by(f64::total_cmp);
    [
        ("p50", crate::load::percentile(&values, 50.0)),
        ("p99", crate::load::percentile(&values, 99.0)),
    ]
}

/// One byte pattern for the files and streams, so no row moves zeros the
/// kernel could skip.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Checks that `wc -c` printed `bytes`.
fn counted(wc_stdout: &[u8], bytes: u64) -> Result<(), MeasureError> {
    let got = String::from_utf8_lossy(wc_stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    if got == bytes {
        Ok(())
    } else {
        Err(MeasureError::ShortStdin {
            got,
            expected: bytes,
        })
    }
}

/// A source file of the pattern and a path for its copy, in a private
/// directory removed on drop. The agent runs on this machine, so the same
/// paths serve the local copy and the remote one. The directory is in
/// memory (`/dev/shm`) where there is one, so that a disk's writeback does
/// not drown what the relay costs.
struct Files {
    dir: PathBuf,
    source: PathBuf,
    target: PathBuf,
}

impl Files {
    fn new(bytes: u64) -> Result<Files, MeasureError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("relay-bench-fs-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(failed("create the fs directory"))?;
        let files = Files {
            source: dir.join("source"),
            target: dir.join("target"),
            dir,
        };
        let mut file = std::fs::File::create(&files.source).map_err(failed("create the source"))?;
        let chunk = pattern(1 << 20);
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])
                .map_err(failed("write the source"))?;
            left -= n as u64;
        }
        Ok(files)
    }

    /// Checks that the copy has every byte.
    fn check(&self, bytes: u64) -> Result<(), MeasureError> {
        let got = std::fs::metadata(&self.target)
            .map_err(failed("stat the copy"))?
            .len();
        if got == bytes {
            Ok(())
        } else {
            Err(MeasureError::ShortFile {
                got,
                expected: bytes,
            })
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
