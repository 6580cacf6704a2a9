//! `agent-relay serve`: a relay on a Unix socket in front of a guest.

use std::path::PathBuf;
use std::time::Duration;

use relay_server::{HandshakeForm, Relay, RelayConfig, RelayError};
use tokio::signal::unix::{SignalKind, signal};

use crate::SocketArgs;
use crate::console::{self, ConsoleSpec, Device};
use crate::export::MetricsFile;
use crate::logging::LogFormat;

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// The guest: `local` (the built-in agent as a child process),
    /// `unix:PATH` (a QEMU virtio-serial chardev socket) or `stdio-of:CMD`
    /// (a command speaking the protocol on its stdio).
    #[arg(long, default_value = "local", value_name = "CONSOLE")]
    console: ConsoleSpec,
    /// Most clients at once [default: every slot of the handshake form].
    #[arg(long, value_name = "N")]
    max_clients: Option<u32>,
    /// Handshake form: `legacy` (4-byte offset, 16 slots, microsandbox 0.4)
    /// or `bounds` (8-byte range, --slots slots, microsandbox 0.5+).
    #[arg(long, default_value = "legacy", value_parser = ["legacy", "bounds"])]
    handshake: String,
    /// Id ranges of the bounds handshake.
    #[arg(long, default_value_t = 128, value_name = "N")]
    slots: u32,
    /// Bytes of each ring (a power of two), between a child console's
    /// device threads and the relay; a socket console has no ring (the
    /// relay reads and writes the socket itself).
    #[arg(long, default_value_t = SERVE_RING_CAPACITY, value_name = "BYTES")]
    ring_capacity: usize,
    /// Bytes queued toward one client before it is cut off as a slow consumer.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    client_queue: usize,
    /// Bytes queued toward all clients together.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    total_queue: usize,
    /// Seconds to wait for the guest's core.ready.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    ready_timeout: u64,
    /// Permission bits of the socket, in octal.
    #[arg(long, default_value = "600", value_parser = parse_mode, value_name = "MODE")]
    socket_mode: u32,
    /// Stats socket for `agent-relay stats` [default: the socket path + `.stats`].
    #[arg(long, value_name = "PATH")]
    stats_socket: Option<PathBuf>,
    /// Keep the statistics as Prometheus text in this file (for node
    /// exporter's textfile collector: a `.prom` file in its directory),
    /// rewritten every --metrics-interval and removed when serve stops.
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
    /// Seconds between rewrites of --metrics-file.
    #[arg(
        long,
        default_value = "10",
        value_parser = parse_interval,
        value_name = "SECS",
        requires = "metrics_file"
    )]
    metrics_interval: Duration,
}

/// Ring size for `serve`: a quarter of the library's 1 MiB default. A reply
/// waits behind whatever stream bytes are in the guest-to-host ring before
/// it; relay-bench measured the loaded ping p99 at about half with 256 KiB
/// rings and no loss of throughput (64 KiB rings halve bulk rates).
const SERVE_RING_CAPACITY: usize = 256 * 1024;

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8).map_err(|e| format!("not an octal mode: {e}"))
}

/// A number of seconds (fractions allowed), at least 0.01.
pub(crate) fn parse_interval(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|e| format!("not a number of seconds: {e}"))?;
    if secs.is_nan() || secs < 0.01 {
        return Err("the interval must be at least 0.01 seconds".to_owned());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("not a usable interval: {e}"))
}

/// The stats socket that goes with a relay socket.
pub(crate) fn stats_socket_for(socket: &std::path::Path) -> PathBuf {
    let mut path = socket.as_os_str().to_owned();
    path.push(".stats");
    PathBuf::from(path)
}

/// Runs `serve`; `log_format` goes to the local agent too, so all of
/// stderr is in one format.
pub(crate) async fn run(args: ServeArgs, log_format: LogFormat) -> u8 {
    let socket = args.socket.path();
    let form = match args.handshake.as_str() {
        "bounds" => HandshakeForm::Bounds { slots: args.slots },
        _ => HandshakeForm::Legacy,
    };
    let stats_socket = args
        .stats_socket
        .clone()
        .unwrap_or_else(|| stats_socket_for(&socket));
    let ready_timeout = Duration::from_secs(args.ready_timeout);
    let mut config = RelayConfig::new(&socket)
        .with_handshake(form)
        .with_socket_mode(args.socket_mode)
        .with_client_queue_budget(args.client_queue)
        .with_total_queue_budget(args.total_queue)
        .with_ready_timeout(ready_timeout)
        .with_control_socket(&stats_socket);
    if let Some(max) = args.max_clients {
        config = config.with_max_clients(max);
    }

    let command = match args.console.command(log_format) {
        Ok(command) => command,
        Err(error) => return crate::fail(format!("cannot open console {}: {error}", args.console)),
    };
    let (mut relay, child_console) = match (&args.console, command) {
        // A socket needs no device threads: the relay reads and writes it
        // itself, so a frame crosses no thread the chardev does not.
        (ConsoleSpec::Unix(path), _) => {
            let stream = match console::connect_unix(path, ready_timeout).await {
                Ok(stream) => stream,
                Err(error) => {
                    return crate::fail(format!("cannot open console {}: {error}", args.console));
                }
            };
            let (read, write) = stream.into_split();
            match Relay::start(config, read, write) {
                Ok(relay) => (relay, None),
                Err(error) => return crate::fail(error),
            }
        }
        (_, command) => {
            let (device_end, relay_end) = match relay_ring::duplex(args.ring_capacity) {
                Ok(pair) => pair,
                Err(error) => return crate::fail(format!("cannot create the ring: {error}")),
            };
            match Relay::start_on_ring(config, relay_end) {
                Ok(relay) => (relay, command.map(|command| (command, device_end))),
                Err(error) => return crate::fail(error),
            }
        }
    };
    let metrics = match &args.metrics_file {
        None => None,
        Some(path) => {
            match MetricsFile::start(path, args.metrics_interval, relay.stats_handle()).await {
                Ok(metrics) => Some(metrics),
                Err(error) => {
                    relay.shutdown();
                    let _ = relay.join().await;
                    return crate::fail(format!("--metrics-file: {error}"));
                }
            }
        }
    };
    let device = match child_console {
        None => Device::none(),
        Some((command, device_end)) => {
            let (ring_reader, ring_writer) = device_end.split();
            match tokio::task::spawn_blocking(move || {
                Device::start(command, ring_reader, ring_writer)
            })
            .await
            {
                Ok(Ok(device)) => device,
                Ok(Err(error)) => {
                    relay.shutdown();
                    let _ = relay.join().await;
                    if let Some(metrics) = metrics {
                        metrics.stop().await;
                    }
                    return crate::fail(format!("cannot open console {}: {error}", args.console));
                }
                Err(error) => return crate::fail(error),
            }
        }
    };
    // The one line that names the socket: the relay's span leaves the
    // path out of every later line (see `logging`).
    tracing::info!(
        console = %args.console,
        socket = %socket.display(),
        stats = %stats_socket.display(),
        metrics = args.metrics_file.as_ref().map(|path| tracing::field::display(path.display())),
        "serving"
    );

    let stop = relay.shutdown_handle();
    let signals = tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received; shutting down");
        stop.shutdown();
    });
    let drain = relay.drain_requests();
    let ready = relay.ready().await;
    if ready {
        tracing::info!("guest ready; accepting clients");
    }
    let result = relay.join().await;
    signals.abort();
    if let Some(metrics) = metrics {
        metrics.stop().await;
    }
    let shutdown_requested = *drain.borrow() > 0;
    let grace = Duration::from_secs(5);
    tokio::task::spawn_blocking(move || device.finish(grace))
        .await
        .ok();
    match result {
        Ok(_) => 0,
        Err(RelayError::AgentClosed) if shutdown_requested => {
            tracing::info!("the guest shut down as a client asked");
            0
        }
        Err(error) => crate::fail(error),
    }
}
