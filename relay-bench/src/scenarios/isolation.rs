//! A pinging client beside clients that do not keep up, against goal P4:
//! every ping answered, and a loaded p99 at most twice the idle p99. The
//! client that never reads gets a burst or an endless flood, with or
//! without flow control, with rings of 1 MiB, 256 KiB or 64 KiB; the slow
//! reader's rows check per-session flow control: a client reading slowly
//! gets every byte, is never cut off, and holds up nobody.

use std::io::Write as _;

use super::goals::{Judge, all_met, number, percent, times};
use super::{
    ALL, BULK_FRAME, FLOW_WINDOW, Family, MeasureError, Mode, OURS, Scenario, connect, failed,
    metric, mib, start,
};
use crate::load::{self, Conn, SlowReader, Streamer};
use crate::protocol;
use crate::report::{Metric, Sample, Verdict};
use crate::serve::{Impl, ServeOptions};

/// The slow reader's pace, bytes per second: far below any stream's rate.
const SLOW_RATE: f64 = 20e6;

const ISOLATION: &[Metric] = &[
    metric("completed", "%"),
    metric("p99", "us"),
    metric("idle_p99", "us"),
    metric("p99_vs_idle", "x"),
    metric("bulk", "MiB/s"),
    metric("cutoffs", "clients"),
];
/// The ring-size variants: the figures that move with the ring.
const ISOLATION_RING: &[Metric] = &[
    metric("completed", "%"),
    metric("p99", "us"),
    metric("p99_vs_idle", "x"),
    metric("bulk", "MiB/s"),
];
const SLOW_READER: &[Metric] = &[
    metric("received", "%"),
    metric("cut_off", "0/1"),
    metric("completed", "%"),
    metric("p99", "us"),
    metric("idle_p99", "us"),
    metric("p99_vs_idle", "x"),
    metric("max", "us"),
    metric("peak_rss", "MiB"),
];

/// A row of the stuck-client table: `FLOOD` an endless flood toward the
/// client that never reads (else a burst), rings of `RING_KIB` KiB (0: the
/// run's ring), `FLOW` the agent offering flow control. Rows that vary the
/// ring or flow control measure ours alone: the baselines have neither.
const fn stuck_client_row<const FLOOD: bool, const RING_KIB: usize, const FLOW: bool>(
    name: &'static str,
    about: &'static str,
) -> Scenario {
    Scenario {
        name,
        about,
        impls: if FLOW || RING_KIB > 0 { OURS } else { ALL },
        metrics: if RING_KIB > 0 {
            ISOLATION_RING
        } else {
            ISOLATION
        },
        pinned: false,
        measures_memory: false,
        measure: stuck_client::<FLOOD, RING_KIB, FLOW>,
    }
}

pub(super) const FAMILY: Family = Family {
    scenarios: &[
        stuck_client_row::<false, 0, false>(
            "isolation_burst",
            "P4: a client that never reads gets an 8 MiB burst, another streams bulk, a third pings",
        ),
        stuck_client_row::<true, 0, false>(
            "isolation_flood",
            "P4: the same with an endless flood toward the client that never reads",
        ),
        stuck_client_row::<false, 0, true>(
            "isolation_burst_flow",
            "P4: the burst with the agent offering flow control (window 1 MiB; ours only: the baselines cannot return credit)",
        ),
        stuck_client_row::<true, 0, true>(
            "isolation_flood_flow",
            "P4: the flood with the agent offering flow control (window 1 MiB; ours only: the baselines cannot return credit)",
        ),
        stuck_client_row::<false, 256, false>(
            "isolation_burst_ring256KiB",
            "P4: the burst, 256 KiB rings instead of 1 MiB (ring size is ours alone)",
        ),
        stuck_client_row::<false, 256, true>(
            "isolation_burst_flow_ring256KiB",
            "P4: the burst with flow control, 256 KiB rings instead of 1 MiB (ring size is ours alone)",
        ),
        stuck_client_row::<true, 256, false>(
            "isolation_flood_ring256KiB",
            "P4: the flood, 256 KiB rings instead of 1 MiB (ring size is ours alone)",
        ),
        stuck_client_row::<true, 256, true>(
            "isolation_flood_flow_ring256KiB",
            "P4: the flood with flow control, 256 KiB rings instead of 1 MiB (ring size is ours alone)",
        ),
        stuck_client_row::<false, 64, false>(
            "isolation_burst_ring64KiB",
            "P4: the burst, 64 KiB rings instead of 1 MiB (ring size is ours alone)",
        ),
        stuck_client_row::<false, 64, true>(
            "isolation_burst_flow_ring64KiB",
            "P4: the burst with flow control, 64 KiB rings instead of 1 MiB (ring size is ours alone)",
        ),
        stuck_client_row::<true, 64, false>(
            "isolation_flood_ring64KiB",
            "P4: the flood, 64 KiB rings instead of 1 MiB (ring size is ours alone)",
        ),
        stuck_client_row::<true, 64, true>(
            "isolation_flood_flow_ring64KiB",
            "P4: the flood with flow control, 64 KiB rings instead of 1 MiB (ring size is ours alone)",
        ),
        Scenario {
            name: "isolation_slow_reader",
            about: "per-session flow control: a client reads a 64 KiB-frame stream at 20 MB/s beside a pinging client, here without it (ours cuts the reader off at its budget; naive stalls every client behind it)",
            impls: ALL,
            metrics: SLOW_READER,
            pinned: false,
            measures_memory: false,
            measure: slow_reader::<false>,
        },
        Scenario {
            name: "isolation_slow_reader_flow",
            about: "per-session flow control: the same with the agent offering it (window 1 MiB; ours only: the baselines cannot return credit)",
            impls: OURS,
            metrics: SLOW_READER,
            pinned: false,
            measures_memory: false,
            measure: slow_reader::<true>,
        },
    ],
    goals,
};

/// See [`stuck_client_row`].
fn stuck_client<const FLOOD: bool, const RING_KIB: usize, const FLOW: bool>(
    mode: &Mode,
    imp: Impl,
) -> Result<Sample, MeasureError> {
    let mut opts = mode.serve_options(imp);
    if RING_KIB > 0 {
        opts.ring = RING_KIB << 10;
    }
    if FLOW {
        opts.flow = Some(FLOW_WINDOW);
    }
    let toward_stuck = if FLOOD {
        protocol::ENDLESS
    } else {
        mode.isolation_burst
    };
    pings_beside_a_stuck_client(mode, &opts, toward_stuck)
}

/// A pinging client measured idle, then while a client that never reads is
/// sent `toward_stuck` bytes and another streams bulk.
fn pings_beside_a_stuck_client(
    mode: &Mode,
    opts: &ServeOptions,
    toward_stuck: u64,
) -> Result<Sample, MeasureError> {
    let imp = opts.imp;
    let mut server = start(opts)?;
    let path = server.socket();
    let mut pinger = Conn::connect(path).map_err(failed("connect"))?;
    let idle = load::ping(
        &mut pinger,
        mode.rtt_warmup / 4,
        mode.isolation_pings,
        mode.ping_timeout,
    )
    .map_err(failed("idle ping"))?;

    let mut stuck = connect(opts, path)?;
    stuck
        .stream
        .write_all(&stuck.source_request(toward_stuck, BULK_FRAME))
        .map_err(failed("flood request"))?;
    let streamer = Streamer::start(connect(opts, path)?, BULK_FRAME, mode.ping_timeout)
        .map_err(failed("bulk"))?;
    std::thread::sleep(mode.settle);
    let loaded = load::ping(&mut pinger, 0, mode.isolation_pings, mode.ping_timeout)
        .map_err(failed("ping"))?;
    let (bytes, elapsed) = streamer.finish().map_err(failed("bulk"))?;
    // Stop the stuck client's stream at the agent (ours may have cut the
    // client off already, so ask on another connection).
    let _ = pinger
        .stream
        .write_all(&protocol::stop_request(pinger.id, stuck.id));
    drop(stuck);

    let complete = loaded.completion() >= 100.0;
    let p99 = if complete { loaded.p(99.0) } else { f64::NAN };
    let mut sample = vec![
        ("completed", loaded.completion()),
        ("p99", p99),
        ("idle_p99", idle.p(99.0)),
        ("p99_vs_idle", p99 / idle.p(99.0)),
        ("bulk", load::mib_per_s(bytes, elapsed)),
    ];
    if imp == Impl::Ours {
        // Clients the relay cut off as slow consumers (the stuck one, we expect).
        let stats = server.stats().ok_or(MeasureError::NoStats)?;
        let count = |key: &str| stats[key].as_f64().unwrap_or(f64::NAN);
        sample.push((
            "cutoffs",
            count("slow_over_budget") + count("slow_total_budget") + count("slow_stalled"),
        ));
    }
    Ok(sample)
}

/// A pinging client measured idle, then while another client reads a
/// stream of `slow_total` bytes at [`SLOW_RATE`]; the agent offers flow
/// control when `FLOW` (ours only).
fn slow_reader<const FLOW: bool>(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    let mut opts = mode.serve_options(imp);
    if FLOW {
        opts.flow = Some(FLOW_WINDOW);
    }
    let server = start(&opts)?;
    let path = server.socket();
    let mut pinger = Conn::connect(path).map_err(failed("connect"))?;
    let idle = load::ping(
        &mut pinger,
        mode.rtt_warmup / 4,
        mode.isolation_pings,
        mode.ping_timeout,
    )
    .map_err(failed("idle ping"))?;
    let reader = SlowReader::start(
        connect(&opts, path)?,
        mode.slow_total,
        BULK_FRAME,
        SLOW_RATE,
    )
    .map_err(failed("slow reader"))?;
    std::thread::sleep(mode.settle);
    let loaded = load::ping(&mut pinger, 0, mode.isolation_pings, mode.ping_timeout)
        .map_err(failed("ping"))?;
    let got = reader.finish().map_err(failed("slow reader"))?;
    let asked = mode.slow_total / BULK_FRAME as u64 * BULK_FRAME as u64;
    let complete = loaded.completion() >= 100.0;
    let p99 = if complete { loaded.p(99.0) } else { f64::NAN };
    Ok(vec![
        (
            "received",
            100.0 * got.bytes.min(asked) as f64 / asked as f64,
        ),
        ("cut_off", if got.cut_off { 1.0 } else { 0.0 }),
        ("completed", loaded.completion()),
        ("p99", p99),
        ("idle_p99", idle.p(99.0)),
        ("p99_vs_idle", p99 / idle.p(99.0)),
        ("max", if complete { loaded.p(100.0) } else { f64::NAN }),
        ("peak_rss", mib(server.memory().peak)),
    ])
}

fn goals(judge: &Judge<'_>, _mode: &Mode) -> Vec<Verdict> {
    let mut out = Vec::new();
    // The goals are stated for the first two; the variants (flow control,
    // ring sizes) are held to the same bar, to compare.
    let stated = ["isolation_burst", "isolation_flood"];
    let variants = judge.names().filter(|name| {
        name.starts_with("isolation_") && !name.contains("slow_reader") && !stated.contains(name)
    });
    for name in stated.into_iter().chain(variants) {
        let results = judge.results(name);
        let completed = results.and_then(|r| {
            (!r.any_missing("completed", Impl::Ours)).then(|| r.min("completed", Impl::Ours))?
        });
        let missing_p99 = results.is_some_and(|r| r.any_missing("p99", Impl::Ours));
        let vs_idle = judge.median(name, "p99_vs_idle", Impl::Ours);
        out.push(Verdict {
            goal: "P4",
            what: format!(
                "{name}: pings completed {} (every repeat; goal 100%), p99 {} its idle p99 (goal <= 2x)",
                percent(completed),
                if missing_p99 {
                    "n/a".into()
                } else {
                    times(vs_idle)
                }
            ),
            met: all_met(&[
                completed.map(|c| c >= 100.0),
                vs_idle.map(|v| v <= 2.0 && !missing_p99),
            ]),
        });
    }

    for (name, how) in [
        ("isolation_slow_reader_flow", "with flow control"),
        ("isolation_slow_reader", "without flow control"),
    ] {
        let Some(r) = judge.results(name) else {
            continue;
        };
        let received = r.min("received", Impl::Ours);
        let cut = r.of("cut_off", Impl::Ours);
        let cut_count = cut.iter().filter(|&&c| c > 0.0).count();
        let completed = (!r.any_missing("completed", Impl::Ours))
            .then(|| r.min("completed", Impl::Ours))
            .flatten();
        let missing_p99 = r.any_missing("p99", Impl::Ours);
        let vs_idle = r.median("p99_vs_idle", Impl::Ours);
        let peak = r.max("peak_rss", Impl::Ours);
        out.push(Verdict {
            goal: "per-session flow control",
            what: format!(
                "a client reading at 20 MB/s beside a ping client, {how}: it received {} at least and was cut off in {cut_count} of {} repeats; pings completed {}, p99 {} its idle p99 (P4's bar: <= 2x); relay peak RSS {} MiB",
                percent(received),
                cut.len(),
                percent(completed),
                if missing_p99 {
                    "n/a".into()
                } else {
                    times(vs_idle)
                },
                number(peak, 1),
            ),
            met: all_met(&[
                received.map(|p| p >= 100.0),
                Some(cut_count == 0),
                completed.map(|c| c >= 100.0),
                vs_idle.map(|v| v <= 2.0 && !missing_p99),
            ]),
        });
    }
    out
}
