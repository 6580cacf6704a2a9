//! Round trips of one 64-byte frame at a time, against goal P1: ours within
//! 1.3x raw at p50 and 1.5x at p99.

use std::time::Duration;

use super::goals::{Judge, all_met, number, times};
use super::{Family, MeasureError, Mode, Scenario, WITH_FLOOR, failed, metric, start};
use crate::driver;
use crate::load::{self, Conn};
use crate::report::{Metric, Sample, Verdict};
use crate::serve::Impl;

/// The round trip's percentiles, and what the relay's own threads (every
/// thread but the guest's) spent per round trip: CPU time, and how often
/// they were scheduled in.
const LATENCY: &[Metric] = &[
    metric("p50", "us"),
    metric("p99", "us"),
    metric("relay_cpu", "us/rtt"),
    metric("relay_runs", "1/rtt"),
];

pub(super) const FAMILY: Family = Family {
    scenarios: &[
        Scenario {
            name: "rtt_64B",
            about: "P1: one client, one 64-byte frame at a time, echoed",
            impls: WITH_FLOOR,
            metrics: LATENCY,
            pinned: false,
            measures_memory: false,
            measure: round_trips,
        },
        Scenario {
            name: "rtt_64B_pinned",
            about: "P1: the same with every thread of every process on CPU 0",
            impls: WITH_FLOOR,
            metrics: LATENCY,
            pinned: true,
            measures_memory: false,
            measure: round_trips,
        },
    ],
    goals,
};

fn round_trips(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    let server = start(&mode.serve_options(imp))?;
    if driver::cpus_allowed(server.pid()).is_empty() {
        return Err(MeasureError::NoCpuList);
    }
    let mut conn = Conn::connect(server.socket()).map_err(failed("connect"))?;
    let before = server.relay_cpu();
    let pings = load::ping(
        &mut conn,
        mode.rtt_warmup,
        mode.rtt_pings,
        Duration::from_secs(10),
    )
    .map_err(failed("ping"))?;
    let relay = server.relay_cpu().since(before);
    if pings.completion() < 100.0 {
        return Err(MeasureError::RoundTripTimedOut);
    }
    let trips = mode.rtt_warmup + mode.rtt_pings;
    Ok(vec![
        ("p50", pings.p(50.0)),
        ("p99", pings.p(99.0)),
        ("relay_cpu", relay.us_per(trips)),
        ("relay_runs", relay.runs_per(trips)),
    ])
}

fn goals(judge: &Judge<'_>, _mode: &Mode) -> Vec<Verdict> {
    [
        ("rtt_64B", "unpinned"),
        ("rtt_64B_pinned", "pinned to CPU 0"),
    ]
    .into_iter()
    .map(|(name, label)| {
        let p50 = judge.ratio(name, "p50", Impl::Raw);
        let p99 = judge.ratio(name, "p99", Impl::Raw);
        Verdict {
            goal: "P1",
            what: format!(
                "round trip 64 B, {label}: p50 {} raw (goal <= 1.3x), p99 {} raw (goal <= 1.5x)",
                times(p50),
                times(p99)
            ),
            met: all_met(&[p50.map(|r| r <= 1.3), p99.map(|r| r <= 1.5)]),
        }
    })
    .chain(std::iter::once({
        // What the relay's own work costs, beside the two hops it must make.
        let floor = judge.ratio("rtt_64B_pinned", "p50", Impl::Floor);
        let naive = judge.ratio("rtt_64B_pinned", "p50", Impl::Naive);
        Verdict {
            goal: "P1",
            what: format!(
                "round trip 64 B, pinned to CPU 0: p50 {} the hop floor (goal <= 1.3x), {} naive (goal <= 0.9x)",
                times(floor),
                times(naive)
            ),
            met: all_met(&[floor.map(|r| r <= 1.3), naive.map(|r| r <= 0.9)]),
        }
    }))
    .chain(std::iter::once({
        let ours = judge.median("rtt_64B_pinned", "relay_cpu", Impl::Ours);
        let naive = judge.median("rtt_64B_pinned", "relay_cpu", Impl::Naive);
        Verdict {
            goal: "P1",
            what: format!(
                "relay CPU per round trip, pinned: ours {} us, naive {} us (goal: below naive)",
                number(ours, 2),
                number(naive, 2)
            ),
            met: ours.zip(naive).map(|(o, n)| o < n),
        }
    }))
    .collect()
}
