//! `agent-relay exec`: run a command in the guest with streamed stdio,
//! optionally under a deadline.

use std::time::Duration;

use relay_client::{ExecEvent, ExecRequest};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::SocketArgs;
use crate::term::{self, RawMode};

/// Arguments of `exec`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// Run under a pseudo-terminal: the local terminal goes to raw mode and
    /// its size changes are forwarded.
    #[arg(long, short = 't')]
    tty: bool,
    /// An environment entry for the command (repeatable).
    #[arg(long, short = 'e', value_name = "K=V")]
    env: Vec<String>,
    /// Working directory in the guest.
    #[arg(long, short = 'w', value_name = "DIR")]
    cwd: Option<String>,
    /// User to run as in the guest (name or uid).
    #[arg(long, short = 'u', value_name = "USER")]
    user: Option<String>,
    /// Stop the command after SECS seconds: SIGTERM, then SIGKILL 2 s later
    /// if it is still running; exec then exits with code 124.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// exec's exit code when `--timeout` passed, as coreutils `timeout` has it.
pub(crate) const TIMED_OUT_CODE: u8 = 124;

/// How long a timed-out command has between SIGTERM and SIGKILL, and after
/// SIGKILL before exec stops waiting for its exit status.
const KILL_GRACE: Duration = Duration::from_secs(2);

fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|e| format!("not a number of seconds: {e}"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err("the timeout must be more than 0 seconds".to_owned());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("not a usable timeout: {e}"))
}

pub(crate) async fn run(args: ExecArgs) -> u8 {
    match exec(args).await {
        // The remote code is 0..=255 for a normal exit or 128+signal.
        Ok(code) => u8::try_from(code).unwrap_or(1),
        Err(error) => {
            if let Some(gave_up) = error.downcast_ref::<GaveUp>() {
                crate::fail(gave_up);
                u8::try_from(128 + gave_up.signal).unwrap_or(1)
            } else if let Some(timed_out) = error.downcast_ref::<TimedOut>() {
                crate::fail(timed_out);
                TIMED_OUT_CODE
            } else {
                crate::fail(error)
            }
        }
    }
}

async fn exec(args: ExecArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let client = args.socket.connect().await?;
    let mut command = args.command.into_iter();
    let program = command.next().unwrap_or_default();
    let mut request = ExecRequest::new(program, command);
    request.env = args.env;
    request.cwd = args.cwd;
    request.user = args.user;
    request.tty = args.tty;
    if args.tty
        && let Some((rows, cols)) = term::size()
    {
        request.rows = rows;
        request.cols = cols;
    }

    let session = client.exec(request).await?;
    let (input, mut events) = session.split();
    let raw = if args.tty { RawMode::enable()? } else { None };

    let stdin_input = input.clone();
    let stdin = tokio::spawn(async move {
        if let Err(error) = stdin_input.copy_stdin_from(tokio::io::stdin()).await {
            tracing::debug!(%error, "forwarding stdin stopped");
        }
    });
    let mut winch = signal(SignalKind::window_change())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut forwarded = 0;
    let deadline = tokio::time::sleep(args.timeout.unwrap_or(Duration::MAX));
    tokio::pin!(deadline);
    let mut escalation = Escalation::Running;
    let code = loop {
        tokio::select! {
            event = events.next() => match event? {
                Some(ExecEvent::Stdout(data)) => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                }
                Some(ExecEvent::Stderr(data)) => {
                    stderr.write_all(&data).await?;
                    stderr.flush().await?;
                }
                Some(ExecEvent::Started { .. }) => {}
                Some(ExecEvent::Exited(status)) => match escalation {
                    Escalation::Running => break status.code,
                    Escalation::Terminated => {
                        return Err(timed_out(args.timeout, TimeoutEnd::Terminated));
                    }
                    Escalation::Killed => {
                        return Err(timed_out(args.timeout, TimeoutEnd::Killed));
                    }
                },
                None => return Err("the session ended without an exit status".into()),
            },
            _ = winch.recv() => {
                if let Some((rows, cols)) = term::size() {
                    input.resize(rows, cols).await?;
                }
            }
            // Signals aimed at us go to the remote command; a second one
            // means the caller (a shell, `timeout`) wants us gone now.
            _ = interrupt.recv() => forward(&input, 2, &mut forwarded).await?,
            _ = terminate.recv() => forward(&input, 15, &mut forwarded).await?,
            _ = hangup.recv() => forward(&input, 1, &mut forwarded).await?,
            () = &mut deadline, if args.timeout.is_some() => {
                escalation = match escalation {
                    Escalation::Running => {
                        input.signal(SIGTERM).await?;
                        Escalation::Terminated
                    }
                    Escalation::Terminated => {
                        input.signal(SIGKILL).await?;
                        Escalation::Killed
                    }
                    Escalation::Killed => {
                        return Err(timed_out(args.timeout, TimeoutEnd::Abandoned));
                    }
                };
                deadline.as_mut().reset(Instant::now() + KILL_GRACE);
            }
        }
    };
    drop(raw);
    stdin.abort();
    Ok(code)
}

/// The signals `--timeout` sends.
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

/// How far a `--timeout` has gone with a command that outlived it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escalation {
    /// The deadline has not passed.
    Running,
    /// SIGTERM sent.
    Terminated,
    /// SIGKILL sent after the grace.
    Killed,
}

/// The error that ends an exec whose deadline passed (exit code 124).
/// Returning it drops the raw-mode guard, so the message that follows
/// starts on a restored terminal.
fn timed_out(after: Option<Duration>, end: TimeoutEnd) -> Box<dyn std::error::Error> {
    Box::new(TimedOut {
        after: after.unwrap_or_default().as_secs_f64(),
        end,
    })
}

/// The command outlived `exec --timeout`.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {after}s: {end} (exit code 124)")]
struct TimedOut {
    /// The `--timeout`, in seconds.
    after: f64,
    /// What became of the command.
    end: TimeoutEnd,
}

/// What became of a timed-out command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeoutEnd {
    /// It exited after SIGTERM.
    Terminated,
    /// It exited after SIGKILL, sent [`KILL_GRACE`] after SIGTERM.
    Killed,
    /// No exit status came even [`KILL_GRACE`] after SIGKILL; exec stopped
    /// waiting.
    Abandoned,
}

impl std::fmt::Display for TimeoutEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let grace = KILL_GRACE.as_secs();
        match self {
            TimeoutEnd::Terminated => write!(f, "the command was sent SIGTERM"),
            TimeoutEnd::Killed => write!(
                f,
                "the command was sent SIGTERM, then SIGKILL {grace}s later"
            ),
            TimeoutEnd::Abandoned => write!(
                f,
                "the command was sent SIGTERM, then SIGKILL, and gave no exit status \
                 {grace}s after that; no longer waiting"
            ),
        }
    }
}

/// Sends `signal` to the remote command, or gives up waiting for it when a
/// signal was already forwarded (exit code 128 + signal, as a shell reports).
async fn forward(
    input: &relay_client::ExecInput,
    signal: i32,
    forwarded: &mut u32,
) -> Result<(), Box<dyn std::error::Error>> {
    *forwarded += 1;
    if *forwarded > 1 {
        return Err(Box::new(GaveUp { signal }));
    }
    input.signal(signal).await?;
    Ok(())
}

/// exec stopped waiting for the remote command after a second signal.
#[derive(Debug, thiserror::Error)]
#[error("signal {signal} again: no longer waiting for the remote command")]
struct GaveUp {
    signal: i32,
}
