//! `relay-agent`: the reference guest agent as a program. It picks a
//! console, serves it until `core.shutdown` or end of file, and exits 0;
//! any error exits 1. Logs go to stderr (`RUST_LOG`, default `info`), never
//! to stdout, which carries the protocol with `--stdio`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser};
use relay_agent::{Agent, AgentConfig, Transport};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// The reference generation-1 guest agent: runs commands and moves files for
/// the host over one byte stream.
#[derive(Debug, Parser)]
#[command(name = "relay-agent", version, group(ArgGroup::new("console").multiple(false)))]
struct Args {
    /// Serve over this process's stdin and stdout (the default).
    #[arg(long, group = "console")]
    stdio: bool,
    /// Connect to the Unix socket at PATH and serve over it.
    #[arg(long, value_name = "PATH", group = "console")]
    unix: Option<PathBuf>,
    /// Serve over the virtio port named NAME (listed under /sys/class/virtio-ports).
    #[arg(long, value_name = "NAME", group = "console")]
    port: Option<String>,
    /// Serve over the character device at PATH, such as /dev/hvc0 (a terminal is put into raw mode).
    #[arg(long, value_name = "PATH", group = "console")]
    device: Option<PathBuf>,
}

impl Args {
    fn transport(self) -> Transport {
        match (self.unix, self.port, self.device) {
            (Some(path), _, _) => Transport::Unix(path),
            (_, Some(name), _) => Transport::Port(name),
            (_, _, Some(path)) => Transport::Device(path),
            _ => Transport::Stdio,
        }
    }
}

fn main() -> ExitCode {
    // First, so `init_time_ns` is as close to the process start as can be.
    let agent = Agent::new(AgentConfig::default());
    let transport = Args::parse().transport();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(%err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let console = match transport.open().await {
            Ok(console) => console,
            Err(err) => {
                error!(%err, "cannot open the console");
                return ExitCode::FAILURE;
            }
        };
        info!(?transport, "console open");
        match agent.serve(console.reader, console.writer).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                error!(%err, "agent failed");
                ExitCode::FAILURE
            }
        }
    });
    // A read of stdin or of a device may still be parked on a blocking
    // thread; it must not hold the exit.
    runtime.shutdown_background();
    code
}
