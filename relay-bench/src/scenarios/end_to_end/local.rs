//! The floors: each end-to-end row's work done in this process, with no
//! relay and no agent in between.

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::{WARMUP, pattern, percentiles};
use crate::load;
use crate::report::Sample;
use crate::scenarios::{MeasureError, failed};

/// Bytes per read or write, as the agent's pipes move them.
const CHUNK: usize = 64 * 1024;
/// Bytes per read or write of a file copy, as the agent's fs chunks.
const FILE_CHUNK: usize = 1 << 20;

/// `true` spawned with its output piped and waited for, `rounds` times.
pub(super) fn spawn_and_wait(rounds: usize) -> Result<Sample, MeasureError> {
    let mut millis = Vec::with_capacity(rounds);
    for i in 0..rounds + WARMUP {
        let start = Instant::now();
        let output = Command::new("true")
            .stdin(Stdio::null())
            .output()
            .map_err(failed("spawn true"))?;
        if !output.status.success() {
            return Err(MeasureError::Exited {
                command: "true",
                code: output.status.code().unwrap_or(-1),
            });
        }
        if i >= WARMUP {
            millis.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(percentiles(millis).to_vec())
}

/// 64 bytes written to a local `cat` and read back, `rounds` times.
pub(super) fn cat_round_trips(rounds: usize) -> Result<Sample, MeasureError> {
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(failed("spawn cat"))?;
    let (Some(mut input), Some(mut output)) = (cat.stdin.take(), cat.stdout.take()) else {
        return Err(not_piped("cat's pipes"));
    };
    let sent = pattern(64);
    let mut back = [0u8; 64];
    let mut micros = Vec::with_capacity(rounds);
    for i in 0..rounds + WARMUP {
        let start = Instant::now();
        input.write_all(&sent).map_err(failed("write to cat"))?;
        output
            .read_exact(&mut back)
            .map_err(failed("read from cat"))?;
        if i >= WARMUP {
            micros.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(input);
    cat.wait().map_err(failed("wait for cat"))?;
    Ok(percentiles(micros).to_vec())
}

/// `head -c BYTES /dev/zero` read through a plain pipe.
pub(super) fn pipe_stdout(bytes: u64) -> Result<Sample, MeasureError> {
    let start = Instant::now();
    let mut head = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(failed("spawn head"))?;
    let mut out = head
        .stdout
        .take()
        .ok_or_else(|| not_piped("head's stdout"))?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = out.read(&mut buf).map_err(failed("read head"))?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    head.wait().map_err(failed("wait for head"))?;
    let elapsed = start.elapsed();
    if got != bytes {
        return Err(MeasureError::ShortStdout {
            got,
            expected: bytes,
        });
    }
    Ok(vec![
        ("throughput", load::mib_per_s(got, elapsed)),
        ("received", 100.0),
    ])
}

/// BYTES written through a plain pipe into `wc -c`.
pub(super) fn pipe_stdin(bytes: u64) -> Result<Sample, MeasureError> {
    let start = Instant::now();
    let mut wc = Command::new("wc")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(failed("spawn wc"))?;
    let mut input = wc.stdin.take().ok_or_else(|| not_piped("wc's stdin"))?;
    let chunk = pattern(CHUNK);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        input.write_all(&chunk[..n]).map_err(failed("write wc"))?;
        left -= n as u64;
    }
    drop(input);
    let output = wc.wait_with_output().map_err(failed("wait for wc"))?;
    let elapsed = start.elapsed();
    super::counted(&output.stdout, bytes)?;
    Ok(vec![("throughput", load::mib_per_s(bytes, elapsed))])
}

/// A file of BYTES copied to another through user space.
pub(super) fn copy(bytes: u64) -> Result<Sample, MeasureError> {
    let files = super::Files::new(bytes)?;
    let start = Instant::now();
    let mut from = File::open(&files.source).map_err(failed("open the source"))?;
    let mut to = File::create(&files.target).map_err(failed("create the copy"))?;
    let mut buf = vec![0u8; FILE_CHUNK];
    loop {
        let n = from.read(&mut buf).map_err(failed("read the source"))?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).map_err(failed("write the copy"))?;
    }
    drop(to);
    let elapsed = start.elapsed();
    files.check(bytes)?;
    Ok(vec![("throughput", load::mib_per_s(bytes, elapsed))])
}

/// A child's pipe that should be there and is not.
fn not_piped(step: &'static str) -> MeasureError {
    MeasureError::Io {
        step,
        source: std::io::Error::other("not piped"),
    }
}
