//! End to end through the reference agent (relay-agent as a child process
//! on the ring's device end, driven with relay-client): what a user of the
//! relay sees. Reported for scale; no goal.

use std::time::Instant;

use relay_client::{Client, ClientError, ExecEvent, ExecRequest};

use super::goals::Judge;
use super::{Family, MeasureError, Mode, OURS, Scenario, bulk, failed, metric, mib, start};
use crate::driver::Server;
use crate::load;
use crate::report::{Sample, Verdict};
use crate::serve::{Device, Impl};

/// Execs before the clock starts.
const WARMUP_EXECS: usize = 3;

pub(super) const FAMILY: Family = Family {
    scenarios: &[
        Scenario {
            name: "e2e_exec_true",
            about: "end to end through the reference agent: `exec true` round trip",
            impls: OURS,
            metrics: &[metric("p50", "ms"), metric("p99", "ms")],
            pinned: false,
            measures_memory: false,
            measure: exec_true,
        },
        Scenario {
            name: "e2e_exec_stdout_100MB",
            about: "end to end through the reference agent: 100 MB of exec stdout (`head -c`)",
            impls: OURS,
            metrics: bulk::DOWN,
            pinned: false,
            measures_memory: false,
            measure: exec_stdout,
        },
    ],
    goals,
};

/// Our relay with the reference agent behind it.
fn reference_agent_server(mode: &Mode) -> Result<Server, MeasureError> {
    let mut opts = mode.serve_options(Impl::Ours);
    opts.device = Device::Agent;
    start(&opts)
}

fn block_on<T>(future: impl Future<Output = Result<T, MeasureError>>) -> Result<T, MeasureError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed("runtime"))?
        .block_on(future)
}

fn client_error(step: &'static str) -> impl FnOnce(ClientError) -> MeasureError {
    move |source| MeasureError::Client { step, source }
}

fn exec_true(mode: &Mode, _imp: Impl) -> Result<Sample, MeasureError> {
    let server = reference_agent_server(mode)?;
    block_on(async {
        let client = Client::connect(server.socket())
            .await
            .map_err(client_error("connect"))?;
        let mut millis = Vec::new();
        for i in 0..mode.exec_rounds + WARMUP_EXECS {
            let start = Instant::now();
            let output = client
                .exec_output(ExecRequest::new("true", Vec::<String>::new()), None)
                .await
                .map_err(client_error("exec true"))?;
            if output.code != 0 {
                return Err(MeasureError::Exited {
                    command: "true",
                    code: output.code,
                });
            }
            if i >= WARMUP_EXECS {
                millis.push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        millis.sort_by(f64::total_cmp);
        Ok(vec![
            ("p50", load::percentile(&millis, 50.0)),
            ("p99", load::percentile(&millis, 99.0)),
        ])
    })
}

fn exec_stdout(mode: &Mode, _imp: Impl) -> Result<Sample, MeasureError> {
    let server = reference_agent_server(mode)?;
    let expected = mode.exec_stdout;
    let (bytes, elapsed, cut_off) = block_on(async {
        let client = Client::connect(server.socket())
            .await
            .map_err(client_error("connect"))?;
        let start = Instant::now();
        let count = expected.to_string();
        let mut session = client
            .exec(ExecRequest::new(
                "head",
                ["-c", count.as_str(), "/dev/zero"],
            ))
            .await
            .map_err(client_error("exec head"))?;
        let mut bytes = 0u64;
        loop {
            match session.next_event().await {
                Ok(Some(ExecEvent::Stdout(data))) => bytes += data.len() as u64,
                Ok(Some(ExecEvent::Exited(status))) => {
                    if !status.success() {
                        return Err(MeasureError::Exited {
                            command: "head",
                            code: status.code,
                        });
                    }
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(MeasureError::NoExitStatus),
                // The relay cut the client off as a slow consumer.
                Err(ClientError::Disconnected(_)) => return Ok((bytes, start.elapsed(), true)),
                Err(source) => {
                    return Err(MeasureError::Client {
                        step: "exec head",
                        source,
                    });
                }
            }
        }
        if bytes != expected {
            return Err(MeasureError::ShortStdout {
                got: bytes,
                expected,
            });
        }
        Ok((bytes, start.elapsed(), false))
    })?;
    Ok(vec![
        (
            "throughput",
            if cut_off {
                f64::NAN
            } else {
                load::mib_per_s(bytes, elapsed)
            },
        ),
        ("received", 100.0 * bytes as f64 / expected as f64),
        ("peak_rss", mib(server.memory().peak)),
    ])
}

/// The end-to-end rows have no goal of their own.
fn goals(_judge: &Judge<'_>, _mode: &Mode) -> Vec<Verdict> {
    Vec::new()
}
