//! `relay-agent`: the reference guest agent as a program. It picks a
//! console, serves it until `core.shutdown` or end of file, and exits 0;
//! any error exits 1. Logs go to stderr (`RUST_LOG`, default `info`), never
//! to stdout, which carries the protocol with `--stdio`.
//!
//! As `/init` of a microVM (PID 1 started without arguments, or `--init`)
//! it runs [`relay_agent::init::run_init`] instead, which starts this same
//! program again with the hidden `--init-agent PORT` to serve the port.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser};
use relay_agent::init::{self, BootClock, InitConfig};
use relay_agent::{Agent, AgentConfig, BootTimes, ServeEnd, Transport};
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
    /// Run as PID 1 of a microVM: mount /dev, /proc, /sys and /tmp, load the
    /// virtio modules, serve the virtio port `agent`, reap orphans, power off
    /// after core.shutdown. The default for PID 1 started without arguments;
    /// refused for any other process.
    #[arg(long, group = "console")]
    init: bool,
    /// The agent process that `--init` starts: serves virtio port NAME
    /// across host reconnects until core.shutdown.
    #[arg(long, value_name = "NAME", group = "console", hide = true)]
    init_agent: Option<String>,
    /// With --init-agent: when PID 1 started (ns of CLOCK_BOOTTIME).
    #[arg(long, requires = "init_agent", hide = true)]
    boot_time_ns: Option<u64>,
    /// With --init-agent: when PID 1 finished setting up (ns of CLOCK_BOOTTIME).
    #[arg(long, requires = "init_agent", hide = true)]
    init_time_ns: Option<u64>,
    /// Bytes of per-session credit to offer the relay in core.ready; the
    /// offer binds only once the relay accepts it.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    flow_window: u32,
    /// Offer no flow control: plain generation 1 whatever the relay knows.
    #[arg(long)]
    no_flow: bool,
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
    let times = BootTimes::capture();
    let pid1 = std::process::id() == 1;
    // The kernel starts /init without arguments.
    if pid1 && std::env::args_os().len() == 1 {
        return run_init();
    }
    let args = Args::parse();
    if args.init && pid1 {
        return run_init();
    }
    if let Some(port) = args.init_agent.clone() {
        return run_init_agent(&args, &port);
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if args.init {
        error!("--init runs only as PID 1 (the /init of a VM)");
        return ExitCode::from(2);
    }
    let agent = Agent::with_boot_times(
        AgentConfig {
            flow_window: (!args.no_flow).then_some(args.flow_window),
            ..AgentConfig::default()
        },
        times,
    );
    let transport = args.transport();

    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
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

/// Logs for the serial console: no colours, seconds since boot.
fn console_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(BootClock)
        .init();
}

fn run_init() -> ExitCode {
    console_logs();
    match init::run_init(&InitConfig::default()) {
        Ok(never) => match never {},
        Err(err) => {
            // PID 1 exits: the kernel panics, and `panic=-1` with QEMU's
            // `-no-reboot` ends the VM.
            error!(%err, "init: cannot power off; exiting");
            ExitCode::FAILURE
        }
    }
}

fn run_init_agent(args: &Args, port: &str) -> ExitCode {
    console_logs();
    let now = BootTimes::capture();
    let times = BootTimes {
        boot_time_ns: args.boot_time_ns.unwrap_or(now.boot_time_ns),
        init_time_ns: args.init_time_ns.unwrap_or(now.init_time_ns),
    };
    let agent = Agent::with_boot_times(AgentConfig::default(), times);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let code = match runtime.block_on(init::serve_port(agent, port)) {
        Ok(ServeEnd::Shutdown | ServeEnd::Eof) => ExitCode::SUCCESS,
        Err(err) => {
            error!(%err, "agent failed");
            ExitCode::FAILURE
        }
    };
    runtime.shutdown_background();
    code
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(err) => {
            error!(%err, "cannot start the async runtime");
            None
        }
    }
}
