//! `agent-relay stats`: a running relay's statistics, read from its stats
//! socket (one JSON line per connection), as a table, JSON or Prometheus
//! text; once, or refreshed with rates per second (`--watch`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::SocketArgs;
use crate::metrics::{self, Kind};
use crate::serve::{parse_interval, stats_socket_for};

/// Arguments of `stats`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The stats socket [default: the relay socket + `.stats`].
    #[arg(long, value_name = "PATH")]
    stats_socket: Option<PathBuf>,
    /// Output: `text` (a table), `json` (the relay's line) or `openmetrics`
    /// (Prometheus text with `# HELP`/`# TYPE`, ending with `# EOF`).
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    format: StatsFormat,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Refresh every SECS seconds (default 2); the table adds rates per
    /// second. The screen is cleared only when stdout is a terminal.
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "2",
        value_parser = parse_interval
    )]
    watch: Option<Duration>,
    /// With `--watch`: stop after N snapshots.
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
}

/// How `stats` prints a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatsFormat {
    /// An aligned table of `field value` rows.
    Text,
    /// The JSON line the relay sent.
    Json,
    /// Prometheus text exposition (see `metrics`).
    #[value(alias = "prometheus")]
    Openmetrics,
}

/// ANSI: cursor home, clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

pub(crate) async fn run(args: StatsArgs) -> u8 {
    let path = args
        .stats_socket
        .clone()
        .unwrap_or_else(|| stats_socket_for(&args.socket.path()));
    let format = if args.json {
        StatsFormat::Json
    } else {
        args.format
    };
    let Some(interval) = args.watch else {
        return match read(&path).await {
            Ok((line, value)) => {
                // A closed pipe (`stats | head`) is not an error.
                let _ = write_out(&show(format, &line, &value, Rates::Off));
                0
            }
            Err(error) => crate::fail(error),
        };
    };
    // JSON stays a stream of lines (for `jq`, a log); the other forms are
    // blocks, redrawn in place on a terminal and apart from each other
    // otherwise.
    let clear = format != StatsFormat::Json && std::io::stdout().is_terminal();
    let separate = format != StatsFormat::Json && !clear;
    let mut previous: Option<(Instant, Value)> = None;
    let mut shown = 0u64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (line, value) = match read(&path).await {
            Ok(read) => read,
            Err(error) => return crate::fail(error),
        };
        let now = Instant::now();
        let rates = match &previous {
            None => Rates::First,
            Some((then, before)) => Rates::Since {
                elapsed: now.duration_since(*then),
                before,
            },
        };
        let mut block = String::new();
        if clear {
            block.push_str(CLEAR);
        } else if separate && shown > 0 {
            block.push('\n');
        }
        if format == StatsFormat::Text {
            block.push_str(&format!(
                "{}  every {}s\n",
                path.display(),
                interval.as_secs_f64()
            ));
        }
        block.push_str(&show(format, &line, &value, rates));
        if write_out(&block).is_err() {
            // The reader went away (a closed pipe): nothing more to show.
            return 0;
        }
        shown += 1;
        if args.count.is_some_and(|count| shown >= count) {
            return 0;
        }
        previous = Some((now, value));
    }
}

/// Writes `text` to stdout and flushes it.
fn write_out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// Connecting or reading failed.
    #[error("cannot read {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The line was not JSON.
    #[error("malformed stats from {path}: {source}", path = path.display())]
    Malformed {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// One snapshot: the relay's line and its parsed value.
async fn read(path: &Path) -> Result<(String, Value), ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = tokio::net::UnixStream::connect(path).await.map_err(io)?;
    let mut line = String::new();
    stream.read_to_string(&mut line).await.map_err(io)?;
    let value = serde_json::from_str(&line).map_err(|source| ReadError::Malformed {
        path: path.to_owned(),
        source,
    })?;
    Ok((line, value))
}

/// What the table compares a snapshot with.
#[derive(Debug, Clone, Copy)]
enum Rates<'a> {
    /// Nothing: a single snapshot, no rate column.
    Off,
    /// The first snapshot of `--watch`: a rate column of `-`.
    First,
    /// A later one: rates since `before`, taken `elapsed` ago.
    Since {
        elapsed: Duration,
        before: &'a Value,
    },
}

/// A snapshot in `format`.
fn show(format: StatsFormat, line: &str, value: &Value, rates: Rates<'_>) -> String {
    match format {
        StatsFormat::Json => format!("{}\n", line.trim_end()),
        StatsFormat::Openmetrics => metrics::render(value),
        StatsFormat::Text => table(value, rates),
    }
}

/// `field value` rows; under `--watch` a third column with each counter's
/// rate per second since the previous snapshot (`-` when there is none).
fn table(value: &Value, rates: Rates<'_>) -> String {
    let before = match rates {
        Rates::Since { elapsed, before } => Some((elapsed, metrics::fields(before))),
        Rates::Off | Rates::First => None,
    };
    let mut out = String::new();
    if !matches!(rates, Rates::Off) {
        out.push_str(&format!(
            "{:<32} {:>16} {:>14}\n",
            "field", "value", "per second"
        ));
    }
    for field in metrics::fields(value) {
        let shown = format_number(field.value);
        let rate = match (rates, &before) {
            (Rates::Off, _) => None,
            _ if field.kind != Kind::Counter => Some(String::new()),
            (_, None) => Some("-".to_owned()),
            (_, Some((elapsed, fields))) => Some(
                fields
                    .iter()
                    .find(|old| old.path == field.path)
                    .map_or_else(
                        || "-".to_owned(),
                        |old| format_rate(field.value - old.value, *elapsed),
                    ),
            ),
        };
        match rate {
            None => out.push_str(&format!("{:<32} {shown}\n", field.path)),
            Some(rate) => out.push_str(&format!("{:<32} {shown:>16} {rate:>14}\n", field.path)),
        }
    }
    out
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

/// A counter's change over `elapsed`, per second, one decimal; `-` when
/// there is no telling (no time passed, or the counter went down: another
/// relay answers on the socket now).
fn format_rate(delta: f64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || delta < 0.0 {
        return "-".to_owned();
    }
    format!("{:.1}", delta / secs)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Rates, table};

    #[test]
    fn the_watch_table_shows_counter_rates_and_leaves_gauges_without() {
        let before = serde_json::json!({ "agent_bytes": 1000, "clients_connected": 1 });
        let now = serde_json::json!({ "agent_bytes": 5000, "clients_connected": 3 });
        let text = table(
            &now,
            Rates::Since {
                elapsed: Duration::from_secs(2),
                before: &before,
            },
        );
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(rows.contains(&vec!["agent_bytes", "5000", "2000.0"]));
        assert!(rows.contains(&vec!["clients_connected", "3"]));
        let first = table(&now, Rates::First);
        assert!(
            first
                .lines()
                .any(|l| l.split_whitespace().eq(["agent_bytes", "5000", "-"]))
        );
    }
}
