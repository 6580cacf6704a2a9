//! `agent-relay exec`: run a command in the guest with streamed stdio.

use relay_client::{Client, ExecEvent, ExecRequest};
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
        Err(error) => crate::fail(error),
    }
}

async fn exec(args: ExecArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let client = Client::connect(args.socket.path()).await?;
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
            // Without a tty, signals aimed at us go to the remote command.
            _ = interrupt.recv() => input.signal(2).await?,
            _ = terminate.recv() => input.signal(15).await?,
            _ = hangup.recv() => input.signal(1).await?,
        }
    };
    drop(raw);
    stdin.abort();
    Ok(code)
}
