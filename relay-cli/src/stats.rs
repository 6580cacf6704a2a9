//! `agent-relay stats`: a running relay's statistics, read from its stats
//! socket (one JSON line per connection).

use std::path::PathBuf;

use tokio::io::AsyncReadExt;

use crate::SocketArgs;
use crate::serve::stats_socket_for;

/// Arguments of `stats`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The stats socket [default: the relay socket + `.stats`].
    #[arg(long, value_name = "PATH")]
    stats_socket: Option<PathBuf>,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: StatsArgs) -> u8 {
    let path = args
        .stats_socket
        .unwrap_or_else(|| stats_socket_for(&args.socket.path()));
    let line = async {
        let mut stream = tokio::net::UnixStream::connect(&path).await?;
        let mut line = String::new();
        stream.read_to_string(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    let line = match line.await {
        Ok(line) => line,
        Err(error) => return crate::fail(format!("cannot read {}: {error}", path.display())),
    };
    let value: serde_json::Value = match serde_json::from_str(&line) {
        Ok(value) => value,
        Err(error) => {
            return crate::fail(format!("malformed stats from {}: {error}", path.display()));
        }
    };
    if args.json {
        println!("{}", line.trim_end());
    } else {
        print_flat("", &value);
    }
    0
}

/// Prints nested JSON as `key.sub  value` lines.
fn print_flat(prefix: &str, value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                print_flat(&key, value);
            }
        }
        other => println!("{prefix:<32} {other}"),
    }
}
