//! `agent-relay`: the relay as a program, and the client commands that use it.
//!
//! - `serve` runs a relay on a Unix socket in front of a guest agent: the
//!   built-in reference agent as a child process (the default), a QEMU
//!   virtio-serial chardev socket, or any command speaking the protocol on
//!   its stdio. A device thread pumps the guest's byte stream into the ring,
//!   playing the VMM's console device.
//! - `exec`, `fs`, `stats` and `shutdown` talk to a running relay.
//! - `completions` and `man` describe the command itself, for shells and
//!   `man`.
//!
//! Logs go to stderr, filtered by `RUST_LOG`, as text or JSON
//! (`--log-format`).
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program talks to its terminal"
)]

mod console;
mod exec;
mod export;
mod fs;
mod logging;
mod metrics;
mod progress;
mod serve;
mod stats;
mod term;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Multiplexes many host programs onto one sandbox guest agent.
#[derive(Debug, Parser)]
#[command(name = "agent-relay", version, propagate_version = true)]
struct Cli {
    /// Log lines on stderr as human-readable text (coloured on a terminal
    /// unless NO_COLOR is set) or as one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "AGENT_RELAY_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    log_format: logging::LogFormat,
    /// No progress bars (they appear only on a terminal anyway).
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a relay in front of a guest agent.
    Serve(serve::ServeArgs),
    /// Run a command in the guest, streaming its stdin, stdout and stderr;
    /// exits with the command's exit code.
    Exec(exec::ExecArgs),
    /// Files in the guest: stat, ls, get, put, mkdir, rm, rmdir, cp, mv.
    Fs(fs::FsArgs),
    /// Show a running relay's statistics.
    Stats(stats::StatsArgs),
    /// Ask the guest to shut down (sends core.shutdown).
    Shutdown(SocketArgs),
    /// Print a shell completion script for bash, zsh or fish.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into a
    /// directory.
    Man {
        /// Write agent-relay.1 and a page for each subcommand
        /// (agent-relay-serve.1, agent-relay-fs-put.1, ...) into DIR
        /// instead, e.g. ~/.local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run the built-in reference agent over this process's stdin and stdout
    /// (what `serve --console local` starts).
    #[command(hide = true)]
    Agent(AgentArgs),
}

/// Arguments of the built-in agent.
#[derive(Debug, Clone, clap::Args)]
struct AgentArgs {
    /// Bytes of per-session credit to offer the relay.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    flow_window: u32,
    /// Offer no flow control (plain generation 1).
    #[arg(long)]
    no_flow: bool,
}

/// Where the relay listens.
#[derive(Debug, Clone, clap::Args)]
struct SocketArgs {
    /// The relay's socket [default: $XDG_RUNTIME_DIR/agent-relay/agent.sock,
    /// or under the temporary directory].
    #[arg(long, short = 's', env = "AGENT_RELAY_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Seconds to wait for the relay's greeting (a relay still waiting for
    /// its guest sends none); 0 waits for ever.
    #[arg(
        long,
        env = "AGENT_RELAY_CONNECT_TIMEOUT",
        default_value_t = 30.0,
        value_name = "SECS"
    )]
    connect_timeout: f64,
}

impl SocketArgs {
    fn path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(relay_server::default_socket_path)
    }

    /// Connects to the relay, giving up after `--connect-timeout`.
    async fn connect(&self) -> Result<relay_client::Client, relay_client::ClientError> {
        let timeout = (self.connect_timeout > 0.0)
            .then(|| std::time::Duration::try_from_secs_f64(self.connect_timeout).ok())
            .flatten();
        let config = relay_client::ClientConfig::default().with_connect_timeout(timeout);
        relay_client::Client::connect_with(self.path(), config).await
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) | Command::Agent(_) => "info",
        _ => "warn",
    };
    logging::init(cli.log_format, default_level);
    match cli.command {
        Command::Completions { shell } => {
            return describe(|out| {
                clap_complete::generate(shell, &mut Cli::command(), "agent-relay", out);
                Ok(())
            });
        }
        Command::Man { dir: Some(dir) } => {
            return match clap_mangen::generate_to(Cli::command(), &dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => ExitCode::from(fail(format!(
                    "cannot write the manual pages into {}: {error}",
                    dir.display()
                ))),
            };
        }
        Command::Man { dir: None } => {
            return describe(|out| clap_mangen::Man::new(Cli::command()).render(out));
        }
        _ => {}
    }
    let quiet = cli.quiet;
    // The relay runs on one thread: routing is cheap and one thread drains
    // a 1 MiB ring at gigabytes per second, its tasks wake each other
    // without crossing threads, and glibc keeps one malloc arena for its
    // frames instead of one per worker (measured in relay-bench: peak RSS
    // under a flood 39 MiB instead of 59 MiB, ping p99 under a flood 4x
    // instead of 22x idle, throughput unchanged). The clients and the agent
    // are other processes; `spawn_blocking` still has its own pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agent-relay: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args, cli.log_format).await,
            Command::Exec(args) => exec::run(args).await,
            Command::Fs(args) => fs::run(args, quiet).await,
            Command::Stats(args) => stats::run(args).await,
            Command::Shutdown(args) => shutdown(args).await,
            Command::Agent(args) => agent(args).await,
            Command::Completions { .. } | Command::Man { .. } => 0,
        }
    });
    // A read of our stdin may still be parked on a blocking thread (exec
    // forwards stdin); exit without waiting for it.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// Writes a description of the command (completions, man page) to stdout.
fn describe(write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| std::io::Write::flush(&mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        // `agent-relay man | head`: the reader has what it wanted.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => ExitCode::from(fail(error)),
    }
}

/// Reports an error the way every subcommand does, and gives exit code 1.
/// With JSON logs it is a log line too, so that stderr stays all JSON.
fn fail(error: impl std::fmt::Display) -> u8 {
    if logging::json() {
        tracing::error!(%error, "failed");
    } else {
        eprintln!("agent-relay: {error}");
    }
    1
}

async fn shutdown(args: SocketArgs) -> u8 {
    let result = async {
        let client = args.connect().await?;
        client.shutdown().await
    };
    match result.await {
        Ok(()) => 0,
        Err(error) => fail(error),
    }
}

async fn agent(args: AgentArgs) -> u8 {
    let agent = relay_agent::Agent::new(relay_agent::AgentConfig {
        flow_window: (!args.no_flow).then_some(args.flow_window),
        ..relay_agent::AgentConfig::default()
    });
    let console = match relay_agent::Transport::Stdio.open().await {
        Ok(console) => console,
        Err(error) => return fail(error),
    };
    match agent.serve(console.reader, console.writer).await {
        Ok(_) => 0,
        Err(error) => fail(error),
    }
}
