//! The relay's memory, against goal P5: at most 16 MiB with 128 idle
//! clients, and a peak of at most the total budget + 16 MiB under endless
//! floods toward clients that never read.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::goals::{Judge, all_met, number};
use super::{
    ALL, BULK_FRAME, Family, MeasureError, Mode, OURS, Scenario, failed, metric, mib, start,
};
use crate::driver::Memory;
use crate::load::Conn;
use crate::protocol;
use crate::report::{Sample, Verdict};
use crate::serve::{Form, Impl, ServeOptions};

/// Per-client and total queue budgets of the flood scenarios.
const FLOOD_CLIENT_BUDGET: usize = 16 << 20;
const FLOOD_TOTAL_BUDGET: usize = 32 << 20;
/// Non-reading clients flooded at once with 64 KiB frames.
const FLOOD_CLIENTS: usize = 4;
/// Non-reading clients flooded at once with minimal frames.
const TINY_FLOOD_CLIENTS: usize = 15;
/// Clients of the idle scenario.
const IDLE_CLIENTS: usize = 128;
/// How often the flood checks memory and replaces cut-off clients.
const FLOOD_POLL: Duration = Duration::from_millis(20);

pub(super) const FAMILY: Family = Family {
    scenarios: &[
        Scenario {
            name: "memory_idle_128",
            about: "P5: relay RSS with 128 idle clients (bounds handshake)",
            impls: ALL,
            metrics: &[metric("rss", "MiB"), metric("rss_per_client", "KiB")],
            pinned: false,
            measures_memory: true,
            measure: idle_clients,
        },
        Scenario {
            name: "memory_flood",
            about: "P5: endless floods toward 4 clients that never read (replaced when cut off); budgets 16 MiB per client, 32 MiB total",
            impls: ALL,
            metrics: &[
                metric("peak_rss", "MiB"),
                metric("rss_growth", "MiB/s"),
                metric("cutoffs", "clients"),
            ],
            pinned: false,
            measures_memory: true,
            measure: flood,
        },
        Scenario {
            name: "memory_flood_tiny",
            about: "P5: the flood in minimal 10-byte frames toward 15 clients that never read; peak RSS beside the bound ARCHITECTURE.md states for the budgets",
            impls: ALL,
            metrics: &[
                metric("peak_rss", "MiB"),
                metric("bound", "MiB"),
                metric("rss_growth", "MiB/s"),
                metric("cutoffs", "clients"),
            ],
            pinned: false,
            measures_memory: true,
            measure: flood_of_tiny_frames,
        },
        Scenario {
            name: "memory_flood_one_arena",
            about: "P5: the flood scenario with MALLOC_ARENA_MAX=1 in the relay process (glibc keeps freed frames per thread arena)",
            impls: OURS,
            metrics: &[
                metric("peak_rss", "MiB"),
                metric("rss_growth", "MiB/s"),
                metric("cutoffs", "clients"),
            ],
            pinned: false,
            measures_memory: true,
            measure: flood_with_one_arena,
        },
    ],
    goals,
};

fn idle_clients(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    let mut opts = mode.serve_options(imp);
    opts.form = Form::Bounds(IDLE_CLIENTS as u32);
    let server = start(&opts)?;
    // One client first so that the relay's own first-use allocations are in
    // the baseline.
    let first = Conn::connect(server.socket()).map_err(failed("connect"))?;
    std::thread::sleep(mode.settle);
    let before = server.memory().rss;
    let mut clients = vec![first];
    for _ in 1..IDLE_CLIENTS {
        clients.push(Conn::connect(server.socket()).map_err(failed("connect"))?);
    }
    std::thread::sleep(mode.settle);
    let after = server.memory().rss;
    drop(clients);
    Ok(vec![
        ("rss", mib(after)),
        (
            "rss_per_client",
            after.saturating_sub(before) as f64 / (IDLE_CLIENTS - 1) as f64 / 1024.0,
        ),
    ])
}

/// Floods clients that never read; when the relay cuts one off, a new one
/// takes its place, for `flood_for`.
fn flood(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    flood_with(mode, mode.serve_options(imp), FLOOD_CLIENTS, BULK_FRAME)
}

/// Tiny frames cost the relay the most per byte: the bound must hold anyway.
fn flood_of_tiny_frames(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    let opts = mode.serve_options(imp);
    // ARCHITECTURE.md: baseline + 2 rings + the total budget + per reader
    // (clients, the control client, the agent) a read chunk and a frame.
    let readers = (TINY_FLOOD_CLIENTS + 2) as u64;
    let bound = (24 << 20)
        + 2 * opts.ring as u64
        + FLOOD_TOTAL_BUDGET as u64
        + readers * ((64 << 10) + relay_codec::MAX_FRAME_SIZE as u64);
    let mut sample = flood_with(mode, opts, TINY_FLOOD_CLIENTS, protocol::MIN_TAGGED)?;
    sample.insert(1, ("bound", mib(bound)));
    Ok(sample)
}

fn flood_with_one_arena(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    let mut opts = mode.serve_options(imp);
    opts.malloc_arenas = Some(1);
    flood_with(mode, opts, FLOOD_CLIENTS, BULK_FRAME)
}

/// A client that never reads, with an endless stream of `frame_len`-byte
/// frames toward it.
fn flooded_client(path: &Path, frame_len: usize) -> std::io::Result<Conn> {
    let mut conn = Conn::connect(path)?;
    conn.stream.write_all(&protocol::source_request(
        conn.id,
        protocol::ENDLESS,
        frame_len as u32,
    ))?;
    Ok(conn)
}

fn flood_with(
    mode: &Mode,
    mut opts: ServeOptions,
    clients: usize,
    frame_len: usize,
) -> Result<Sample, MeasureError> {
    let imp = opts.imp;
    opts.client_budget = FLOOD_CLIENT_BUDGET;
    opts.total_budget = FLOOD_TOTAL_BUDGET;
    let server = start(&opts)?;
    let path = server.socket();
    let mut control = Conn::connect(path).map_err(failed("connect"))?;
    let mut floods = Vec::new();
    for _ in 0..clients {
        floods.push(flooded_client(path, frame_len).map_err(failed("flood"))?);
    }
    let start_rss = server.memory().rss;
    let started = Instant::now();
    let mut cutoffs = 0u32;
    let mut last = Memory::default();
    while started.elapsed() < mode.flood_for {
        std::thread::sleep(FLOOD_POLL);
        last = server.memory();
        if imp == Impl::Naive && last.rss > mode.naive_rss_cap {
            break;
        }
        for conn in &mut floods {
            // A write fails once the relay has cut the client off.
            let probe = protocol::frame(conn.id, protocol::DATA, 64);
            if conn.stream.write_all(&probe).is_ok() {
                continue;
            }
            // Cut off: stop its stream at the agent, flood a new client.
            cutoffs += 1;
            let _ = control
                .stream
                .write_all(&protocol::stop_request(control.id, conn.id));
            *conn =
                flooded_client(path, frame_len).map_err(failed("replacing a flooded client"))?;
        }
    }
    let elapsed = started.elapsed();
    let peak = server.memory().peak.max(last.peak);
    Ok(vec![
        ("peak_rss", mib(peak)),
        (
            "rss_growth",
            (mib(last.rss) - mib(start_rss)) / elapsed.as_secs_f64(),
        ),
        ("cutoffs", f64::from(cutoffs)),
    ])
}

fn goals(judge: &Judge<'_>, _mode: &Mode) -> Vec<Verdict> {
    let mut out = Vec::new();
    let idle = judge
        .results("memory_idle_128")
        .and_then(|r| r.max("rss", Impl::Ours));
    out.push(Verdict {
        goal: "P5",
        what: format!(
            "128 idle clients: relay RSS {} MiB at most (goal <= 16 MiB)",
            number(idle, 1)
        ),
        met: all_met(&[idle.map(|p| p <= 16.0)]),
    });
    let limit = mib(FLOOD_TOTAL_BUDGET as u64) + 16.0;
    for (name, how) in [
        ("memory_flood", ""),
        (
            "memory_flood_one_arena",
            " (MALLOC_ARENA_MAX=1, not the default)",
        ),
    ] {
        let peak = judge
            .results(name)
            .and_then(|r| r.max("peak_rss", Impl::Ours));
        out.push(Verdict {
            goal: "P5",
            what: format!(
                "endless flood toward clients that never read{how}: relay peak RSS {} MiB at most (goal <= total budget {} MiB + 16 MiB = {limit} MiB)",
                number(peak, 1),
                FLOOD_TOTAL_BUDGET >> 20
            ),
            met: all_met(&[peak.map(|p| p <= limit)]),
        });
    }
    out
}
