//! Ours: each end-to-end row through `serve`'s relay and the reference
//! agent, with the CPU both spent on it.

use std::time::Instant;

use relay_client::{Client, ClientError, ExecEvent, ExecRequest};

use super::{Files, WARMUP, counted, pattern, percentiles};
use crate::load;
use crate::report::Sample;
use crate::scenarios::{MeasureError, Mode, failed, mib, start};
use crate::serve::{Device, Impl};

/// Bytes per stdin write: one frame of the client's largest stdin chunk.
const STDIN_CHUNK: usize = 256 * 1024;

/// Which way a file goes.
#[derive(Debug, Clone, Copy)]
pub(in crate::scenarios) enum Direction {
    /// From this machine into the guest.
    Put,
    /// From the guest to this machine.
    Get,
}

/// What a measurement gives back: its sample, and how many units of work
/// (execs, round trips, MiB) the CPU figures are divided by.
type Measured = (Sample, f64);

/// Runs `work` with a client of a fresh relay that has the reference agent
/// behind it, and adds the CPU the relay's threads and the agent's process
/// spent per unit of the work (and, if `peak_rss`, the relay's peak RSS).
fn through_agent(
    mode: &Mode,
    peak_rss: bool,
    work: impl AsyncFnOnce(Client) -> Result<Measured, MeasureError>,
) -> Result<Sample, MeasureError> {
    let mut opts = mode.serve_options(Impl::Ours);
    opts.device = Device::Agent;
    let server = start(&opts)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(failed("runtime"))?;
    let (mut sample, relay, agent, units) = runtime.block_on(async {
        let client = Client::connect(server.socket())
            .await
            .map_err(client_error("connect"))?;
        let (relay, agent) = (server.relay_cpu(), server.agent_cpu());
        let (sample, units) = work(client).await?;
        let relay = server.relay_cpu().since(relay);
        let agent = server.agent_cpu().since(agent);
        Ok::<_, MeasureError>((sample, relay, agent, units))
    })?;
    sample.push(("relay_cpu", relay.ns as f64 / 1000.0 / units));
    sample.push(("agent_cpu", agent.ns as f64 / 1000.0 / units));
    if peak_rss {
        sample.push(("peak_rss", mib(server.memory().peak)));
    }
    Ok(sample)
}

fn client_error(step: &'static str) -> impl FnOnce(ClientError) -> MeasureError {
    move |source| MeasureError::Client { step, source }
}

pub(super) fn exec_true(mode: &Mode) -> Result<Sample, MeasureError> {
    let rounds = mode.exec_rounds;
    through_agent(mode, false, async |client| {
        let mut millis = Vec::with_capacity(rounds);
        for i in 0..rounds + WARMUP {
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
            if i >= WARMUP {
                millis.push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        Ok((percentiles(millis).to_vec(), (rounds + WARMUP) as f64))
    })
}

pub(super) fn cat_round_trips(mode: &Mode) -> Result<Sample, MeasureError> {
    let rounds = mode.cat_rounds;
    through_agent(mode, false, async |client| {
        let mut cat = client
            .exec(ExecRequest::new("cat", Vec::<String>::new()))
            .await
            .map_err(client_error("exec cat"))?;
        let sent = pattern(64);
        let mut micros = Vec::with_capacity(rounds);
        for i in 0..rounds + WARMUP {
            let start = Instant::now();
            cat.write_stdin(&sent)
                .await
                .map_err(client_error("cat stdin"))?;
            let mut back = 0;
            while back < sent.len() {
                match cat.next_event().await {
                    Ok(Some(ExecEvent::Stdout(data))) => back += data.len(),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(MeasureError::NoExitStatus),
                    Err(source) => {
                        return Err(MeasureError::Client {
                            step: "cat stdout",
                            source,
                        });
                    }
                }
            }
            if i >= WARMUP {
                micros.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        cat.close_stdin()
            .await
            .map_err(client_error("close cat's stdin"))?;
        cat.wait().await.map_err(client_error("cat's exit"))?;
        Ok((percentiles(micros).to_vec(), (rounds + WARMUP) as f64))
    })
}

pub(super) fn exec_stdout(mode: &Mode) -> Result<Sample, MeasureError> {
    let expected = mode.exec_stdout;
    through_agent(mode, true, async |client| {
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
        let cut_off = loop {
            match session.next_event().await {
                Ok(Some(ExecEvent::Stdout(data))) => bytes += data.len() as u64,
                Ok(Some(ExecEvent::Exited(status))) => {
                    if !status.success() {
                        return Err(MeasureError::Exited {
                            command: "head",
                            code: status.code,
                        });
                    }
                    break false;
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(MeasureError::NoExitStatus),
                // The relay cut the client off as a slow consumer.
                Err(ClientError::Disconnected(_)) => break true,
                Err(source) => {
                    return Err(MeasureError::Client {
                        step: "exec head",
                        source,
                    });
                }
            }
        };
        let elapsed = start.elapsed();
        if !cut_off && bytes != expected {
            return Err(MeasureError::ShortStdout {
                got: bytes,
                expected,
            });
        }
        let throughput = if cut_off {
            f64::NAN
        } else {
            load::mib_per_s(bytes, elapsed)
        };
        let sample = vec![
            ("throughput", throughput),
            ("received", 100.0 * bytes as f64 / expected as f64),
        ];
        Ok((sample, mib(bytes)))
    })
}

pub(super) fn exec_stdin(mode: &Mode) -> Result<Sample, MeasureError> {
    let bytes = mode.exec_stdout;
    through_agent(mode, false, async |client| {
        let start = Instant::now();
        let (input, events) = client
            .exec(ExecRequest::new("wc", ["-c"]))
            .await
            .map_err(client_error("exec wc"))?
            .split();
        let chunk = pattern(STDIN_CHUNK);
        let mut left = bytes;
        while left > 0 {
            let n = left.min(STDIN_CHUNK as u64) as usize;
            input
                .write_stdin(&chunk[..n])
                .await
                .map_err(client_error("wc stdin"))?;
            left -= n as u64;
        }
        input
            .close_stdin()
            .await
            .map_err(client_error("close wc's stdin"))?;
        let output = events.output().await.map_err(client_error("wc's output"))?;
        let elapsed = start.elapsed();
        counted(&output.stdout, bytes)?;
        let sample = vec![("throughput", load::mib_per_s(bytes, elapsed))];
        Ok((sample, mib(bytes)))
    })
}

pub(super) fn fs_transfer(mode: &Mode, direction: Direction) -> Result<Sample, MeasureError> {
    let bytes = mode.fs_bytes;
    let files = Files::new(bytes)?;
    let sample = through_agent(mode, false, async |client| {
        let fs = client.fs();
        let (source, target) = (path(&files.source)?, path(&files.target)?);
        let start = Instant::now();
        let moved = match direction {
            Direction::Put => {
                let local = tokio::fs::File::open(&files.source)
                    .await
                    .map_err(failed("open the source"))?;
                fs.write_from(target, None, local)
                    .await
                    .map_err(client_error("fs put"))?
            }
            Direction::Get => {
                let local = tokio::fs::File::create(&files.target)
                    .await
                    .map_err(failed("create the copy"))?;
                fs.read_to(source, local)
                    .await
                    .map_err(client_error("fs get"))?
            }
        };
        let elapsed = start.elapsed();
        if moved != bytes {
            return Err(MeasureError::ShortFile {
                got: moved,
                expected: bytes,
            });
        }
        let sample = vec![("throughput", load::mib_per_s(bytes, elapsed))];
        Ok((sample, mib(bytes)))
    })?;
    files.check(bytes)?;
    Ok(sample)
}

/// A path as the protocol's string.
fn path(path: &std::path::Path) -> Result<String, MeasureError> {
    path.to_str().map(str::to_owned).ok_or(MeasureError::Io {
        step: "a temporary path",
        source: std::io::Error::other("not UTF-8"),
    })
}
