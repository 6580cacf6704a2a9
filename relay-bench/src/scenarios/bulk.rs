//! 64 KiB frames each way between one client and the agent, against goal
//! P2: client to agent at least 0.8x raw; agent to client at least 0.6x raw
//! and 3x naive, with the relay's peak RSS at most 64 MiB during a 1 GiB
//! transfer. Agent to client runs with the default budgets, with budgets
//! too large to cut the client off, and with flow control.

use super::goals::{Judge, all_met, number, percent, times};
use super::{
    BULK_FRAME, FLOW_WINDOW, Family, MeasureError, Mode, Scenario, WITH_FLOOR, connect, failed,
    metric, mib, start,
};
use crate::load::{self, Conn};
use crate::report::{Metric, Sample, Verdict};
use crate::serve::{Impl, ServeOptions};

/// Budgets large enough never to cut a client off.
const UNBUDGETED: usize = 64 << 30;

const UP: &[Metric] = &[metric("throughput", "MiB/s"), metric("peak_rss", "MiB")];
/// The metrics of a transfer toward a client that may be cut off.
pub(super) const DOWN: &[Metric] = &[
    metric("throughput", "MiB/s"),
    metric("received", "%"),
    metric("peak_rss", "MiB"),
];

pub(super) const FAMILY: Family = Family {
    scenarios: &[
        Scenario {
            name: "bulk_64KiB_client_to_agent",
            about: "P2: one client writes 64 KiB frames, the agent sinks them",
            impls: WITH_FLOOR,
            metrics: UP,
            pinned: false,
            measures_memory: false,
            measure: client_to_agent,
        },
        Scenario {
            name: "bulk_64KiB_agent_to_client",
            about: "P2: the agent streams 64 KiB frames to one client, default budgets (throughput: none if the relay cut the client off)",
            impls: WITH_FLOOR,
            metrics: DOWN,
            pinned: false,
            measures_memory: false,
            measure: agent_to_client,
        },
        Scenario {
            name: "bulk_64KiB_agent_to_client_unbudgeted",
            about: "P2: the same with budgets too large to cut the client off: how far the relay falls behind",
            impls: WITH_FLOOR,
            metrics: DOWN,
            pinned: false,
            measures_memory: false,
            measure: agent_to_client_unbudgeted,
        },
        Scenario {
            name: "bulk_64KiB_agent_to_client_flow",
            about: "P2: the agent streams 64 KiB frames to one client, default budgets, ours with flow control (window 1 MiB); raw and naive as in the row above (neither returns credit, so their agent offers none)",
            impls: WITH_FLOOR,
            metrics: DOWN,
            pinned: false,
            measures_memory: false,
            measure: agent_to_client_with_flow,
        },
    ],
    goals,
};

fn client_to_agent(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    let server = start(&mode.serve_options(imp))?;
    let mut conn = Conn::connect(server.socket()).map_err(failed("connect"))?;
    load::bulk_up(&mut conn, mode.bulk_warmup, BULK_FRAME).map_err(failed("warm-up"))?;
    let elapsed = load::bulk_up(&mut conn, mode.bulk_up, BULK_FRAME).map_err(failed("bulk"))?;
    let sent = mode.bulk_up / BULK_FRAME as u64 * BULK_FRAME as u64;
    Ok(vec![
        ("throughput", load::mib_per_s(sent, elapsed)),
        ("peak_rss", mib(server.memory().peak)),
    ])
}

fn agent_to_client(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    transfer_down(mode, &mode.serve_options(imp))
}

fn agent_to_client_unbudgeted(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    let mut opts = mode.serve_options(imp);
    opts.client_budget = UNBUDGETED;
    opts.total_budget = UNBUDGETED;
    transfer_down(mode, &opts)
}

fn agent_to_client_with_flow(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    let mut opts = mode.serve_options(imp);
    opts.flow = Some(FLOW_WINDOW);
    transfer_down(mode, &opts)
}

/// A warm-up and then `bulk_down` bytes toward one client, unless the
/// relay cut the client off during the warm-up.
fn transfer_down(mode: &Mode, opts: &ServeOptions) -> Result<Sample, MeasureError> {
    let server = start(opts)?;
    let mut conn = connect(opts, server.socket())?;
    let warm =
        load::bulk_down(&mut conn, mode.bulk_warmup, BULK_FRAME).map_err(failed("warm-up"))?;
    let got = if warm.cut_off {
        warm
    } else {
        load::bulk_down(&mut conn, mode.bulk_down, BULK_FRAME).map_err(failed("bulk"))?
    };
    let asked = if warm.cut_off {
        mode.bulk_warmup
    } else {
        mode.bulk_down
    };
    Ok(vec![
        (
            "throughput",
            if got.cut_off {
                f64::NAN
            } else {
                load::mib_per_s(got.bytes, got.elapsed)
            },
        ),
        ("received", 100.0 * got.bytes as f64 / asked as f64),
        ("peak_rss", mib(server.memory().peak)),
    ])
}

fn goals(judge: &Judge<'_>, mode: &Mode) -> Vec<Verdict> {
    let mut out = Vec::new();
    let up = judge.ratio("bulk_64KiB_client_to_agent", "throughput", Impl::Raw);
    out.push(Verdict {
        goal: "P2",
        what: format!("bulk client->agent {} raw (goal >= 0.8x)", times(up)),
        met: all_met(&[up.map(|r| r >= 0.8)]),
    });

    let down = "bulk_64KiB_agent_to_client";
    let vs_raw = judge.ratio(down, "throughput", Impl::Raw);
    let vs_naive = judge.ratio(down, "throughput", Impl::Naive);
    let results = judge.results(down);
    let cut = results.map(|r| r.any_missing("throughput", Impl::Ours));
    let least = results.and_then(|r| r.min("received", Impl::Ours));
    let free = "bulk_64KiB_agent_to_client_unbudgeted";
    let free_peak = judge
        .results(free)
        .and_then(|r| r.max("peak_rss", Impl::Ours));
    out.push(Verdict {
        goal: "P2",
        what: format!(
            "bulk agent->client {} raw (goal >= 0.6x), {} naive (goal >= 3x){}; without budgets {} raw, {} naive, peak RSS {} MiB",
            times(vs_raw),
            times(vs_naive),
            if cut == Some(true) {
                format!(
                    "; the relay cut the reading client off as a slow consumer (it received as little as {:.0}%)",
                    least.unwrap_or(0.0)
                )
            } else {
                String::new()
            },
            times(judge.ratio(free, "throughput", Impl::Raw)),
            times(judge.ratio(free, "throughput", Impl::Naive)),
            number(free_peak, 0),
        ),
        met: if cut == Some(true) {
            Some(false)
        } else {
            all_met(&[vs_raw.map(|r| r >= 0.6), vs_naive.map(|r| r >= 3.0)])
        },
    });

    let peak = results.and_then(|r| r.max("peak_rss", Impl::Ours));
    let size = if mode.bulk_down < 1 << 30 {
        "; the goal is for 1 GiB, run the full mode"
    } else {
        ""
    };
    out.push(Verdict {
        goal: "P2",
        what: if cut == Some(true) {
            format!(
                "relay peak RSS during a {} MiB agent->client transfer: the transfer never completed with the default budgets (peak {} MiB until the cut-off); without budgets the peak was {} MiB (goal <= 64 MiB{size})",
                mode.bulk_down >> 20,
                number(peak, 1),
                number(free_peak, 0),
            )
        } else {
            format!(
                "relay peak RSS during a {} MiB agent->client transfer: {} MiB at most (goal <= 64 MiB{size})",
                mode.bulk_down >> 20,
                number(peak, 1),
            )
        },
        met: if cut == Some(true) {
            Some(false)
        } else {
            all_met(&[peak.map(|p| p <= 64.0)])
        },
    });

    let flow = "bulk_64KiB_agent_to_client_flow";
    if let Some(results) = judge.results(flow) {
        let vs_raw = judge.ratio(flow, "throughput", Impl::Raw);
        let vs_naive = judge.ratio(flow, "throughput", Impl::Naive);
        let cut = results.any_missing("throughput", Impl::Ours);
        let least = results.min("received", Impl::Ours);
        let peak = results.max("peak_rss", Impl::Ours);
        out.push(Verdict {
            goal: "P2",
            what: format!(
                "with flow control (window 1 MiB): bulk agent->client {} raw (goal >= 0.6x), {} naive (goal >= 3x), received {} at least, relay peak RSS {} MiB during a {} MiB transfer (goal <= 64 MiB{size})",
                times(vs_raw),
                times(vs_naive),
                percent(least),
                number(peak, 1),
                mode.bulk_down >> 20,
            ),
            met: if cut {
                Some(false)
            } else {
                all_met(&[
                    vs_raw.map(|r| r >= 0.6),
                    vs_naive.map(|r| r >= 3.0),
                    peak.map(|p| p <= 64.0),
                ])
            },
        });
    }
    out
}
