//! Many clients at once, each pipelining 32 echoes of 64 bytes, against
//! goal P3: at least 0.4x raw and 4x naive in frames per second.

use super::goals::{Judge, all_met, times};
use super::{Family, MeasureError, Mode, Scenario, WITH_FLOOR, failed, metric, start};
use crate::load;
use crate::report::{Metric, Sample, Verdict};
use crate::serve::{Form, Impl};

const FAN_IN: &[Metric] = &[metric("throughput", "frames/s")];

/// Echoes each client has in flight at once.
const PIPELINED: usize = 32;
/// Rounds before the clock starts.
const WARMUP_ROUNDS: usize = 3;

pub(super) const FAMILY: Family = Family {
    scenarios: &[
        Scenario {
            name: "fanin_16_legacy",
            about: "P3: 16 clients (legacy handshake) each pipelining 32 x 64 B echoes",
            impls: WITH_FLOOR,
            metrics: FAN_IN,
            pinned: false,
            measures_memory: false,
            measure: legacy_clients_16,
        },
        Scenario {
            name: "fanin_128_bounds",
            about: "P3: 128 clients (bounds handshake) each pipelining 32 x 64 B echoes",
            impls: WITH_FLOOR,
            metrics: FAN_IN,
            pinned: false,
            measures_memory: false,
            measure: bounds_clients_128,
        },
    ],
    goals,
};

fn fan_in(
    mode: &Mode,
    imp: Impl,
    form: Form,
    clients: usize,
    rounds: usize,
) -> Result<Sample, MeasureError> {
    let mut opts = mode.serve_options(imp);
    opts.form = form;
    let server = start(&opts)?;
    let rate = load::fan_in(server.socket(), clients, PIPELINED, WARMUP_ROUNDS, rounds)
        .map_err(failed("fan-in"))?;
    Ok(vec![("throughput", rate)])
}

fn legacy_clients_16(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    fan_in(mode, imp, Form::Legacy, 16, mode.fan_in_rounds_16)
}

fn bounds_clients_128(mode: &Mode, imp: Impl) -> Result<Sample, MeasureError> {
    fan_in(mode, imp, Form::Bounds(128), 128, mode.fan_in_rounds_128)
}

fn goals(judge: &Judge<'_>, _mode: &Mode) -> Vec<Verdict> {
    ["fanin_16_legacy", "fanin_128_bounds"]
        .into_iter()
        .map(|name| {
            let vs_raw = judge.ratio(name, "throughput", Impl::Raw);
            let vs_naive = judge.ratio(name, "throughput", Impl::Naive);
            Verdict {
                goal: "P3",
                what: format!(
                    "{name}: {} raw (goal >= 0.4x), {} naive (goal >= 4x)",
                    times(vs_raw),
                    times(vs_naive)
                ),
                met: all_met(&[vs_raw.map(|r| r >= 0.4), vs_naive.map(|n| n >= 4.0)]),
            }
        })
        .collect()
}
