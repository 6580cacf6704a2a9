//! `agent-relay exec`: run a command in the guest with streamed stdio.

use relay_client::{ExecEvent, ExecRequest};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};

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
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) async fn run(args: ExecArgs) -> u8 {
    match exec(args).await {
        // The remote code is 0..=255 for a normal exit or 128+signal.
        Ok(code) => u8::try_from(code).unwrap_or(1),
        Err(error) => match error.downcast_ref::<GaveUp>() {
            Some(gave_up) => {
                crate::fail(gave_up);
                u8::try_from(128 + gave_up.signal).unwrap_or(1)
            }
            None => crate::fail(error),
        },
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
                Some(ExecEvent::Exited(status)) => break status.code,
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
        }
    };
    drop(raw);
    stdin.abort();
    Ok(code)
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
#[derive(Debug)]
struct GaveUp {
    signal: i32,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "signal {} again: no longer waiting for the remote command",
            self.signal
        )
    }
}

impl std::error::Error for GaveUp {}
