//! Exec sessions with pipes, and the replies every exec session shares
//! (start failures, malformed requests, the exit code).

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;

use relay_codec::payload::{Data, ExecExited, ExecRequest, ExecStarted};
use relay_codec::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::outbound::{SendError, SessionOut};
use crate::pty::{self, PtyControl};
use crate::queue::InputReceiver;
use crate::spawn::{self, EXIT_MALFORMED, StartError};

/// `SIGKILL`.
pub(crate) const SIGKILL: i32 = 9;

/// Requests for a running exec session that the console reader passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Deliver this signal.
    Signal(i32),
}

/// What an exec session needs besides its request.
#[derive(Debug)]
pub(crate) struct ExecIo {
    pub(crate) out: SessionOut,
    pub(crate) stdin: InputReceiver,
    pub(crate) control: mpsc::Receiver<Control>,
    pub(crate) pty: Arc<PtyControl>,
    /// Bytes read from a pipe or the pty at once (one frame per read).
    pub(crate) chunk: usize,
}

/// Runs one exec session to its end: `started`, output, `exited`; or the
/// start-failure reply. Returns without sending anything more when the
/// agent shuts down, after killing and reaping the process.
pub(crate) async fn run(req: ExecRequest, io: ExecIo) {
    if req.tty {
        pty::run(req, io).await;
    } else {
        run_piped(req, io).await;
    }
}

async fn run_piped(req: ExecRequest, io: ExecIo) {
    let ExecIo {
        out,
        stdin,
        mut control,
        chunk,
        ..
    } = io;
    let prepared = match spawn::prepare(&req) {
        Ok(prepared) => prepared,
        Err(err) => return start_failed(&out, &req.cmd, &err).await,
    };
    let mut cmd = Command::new(&prepared.program);
    cmd.arg0(&prepared.argv0)
        .args(&prepared.args)
        .envs(prepared.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&prepared.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: signals after the main process ended, and
        // the kill on shutdown, reach whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(run_as) = &prepared.run_as {
        cmd.uid(run_as.uid).gid(run_as.gid);
    }
    let spawned = {
        let _guard = spawn::spawn_guard();
        cmd.spawn()
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(source) => return start_failed(&out, &req.cmd, &StartError::Spawn { source }).await,
    };
    let Some(pid) = child.id() else {
        // Only possible if the child was already reaped, which nothing did.
        return start_failed(&out, &req.cmd, &StartError::NotFound).await;
    };
    if let Err(err) = spawn::apply_limits(pid, &prepared.limits) {
        kill_and_reap(&mut child, pid).await;
        return start_failed(&out, &req.cmd, &err).await;
    }
    debug!(pid, program = %prepared.program.display(), "started");
    if out
        .message(&Message::ExecStarted(ExecStarted { pid }))
        .await
        .is_err()
    {
        return kill_and_reap(&mut child, pid).await;
    }

    let stdout = pump(child.stdout.take(), MessageType::ExecStdout, &out, chunk);
    let stderr = pump(child.stderr.take(), MessageType::ExecStderr, &out, chunk);
    let feed = feed_stdin(child.stdin.take(), stdin);
    tokio::pin!(stdout, stderr, feed);
    let (mut stdout_done, mut stderr_done, mut feed_done) = (false, false, false);
    let mut code = None;
    let mut control_open = true;
    let ended = loop {
        if let (Some(code), true, true) = (code, stdout_done, stderr_done) {
            break Ok(code);
        }
        tokio::select! {
            () = out.cancel_token().cancelled() => break Err(SendError::Cancelled),
            status = child.wait(), if code.is_none() => {
                code = Some(match status {
                    Ok(status) => spawn::exit_code(status.code(), status.signal()),
                    Err(err) => {
                        warn!(pid, %err, "waiting for the process failed");
                        spawn::EXIT_CANNOT_RUN
                    }
                });
            }
            sent = &mut stdout, if !stdout_done => match sent {
                Ok(()) => stdout_done = true,
                Err(err) => break Err(err),
            },
            sent = &mut stderr, if !stderr_done => match sent {
                Ok(()) => stderr_done = true,
                Err(err) => break Err(err),
            },
            () = &mut feed, if !feed_done => feed_done = true,
            ctl = control.recv(), if control_open => match ctl {
                Some(Control::Signal(signal)) => {
                    // Reap the process if it has exited, so the signal goes
                    // to the group. `child.id()` is `None` once it is
                    // reaped, and reaping happens only in this task: a
                    // signal never reaches a recycled pid.
                    if let Err(err) = child.try_wait() {
                        debug!(pid, %err, "checking the process failed");
                    }
                    deliver_signal(child.id(), pid, signal);
                }
                None => control_open = false,
            },
        }
    };
    match ended {
        Ok(code) => {
            debug!(pid, code, "exited");
            report_exit(&out, code).await;
        }
        Err(err) => {
            log_send_error(&err);
            kill_and_reap(&mut child, pid).await;
        }
    }
}

/// Sends the terminal `core.exec.exited`.
pub(crate) async fn report_exit(out: &SessionOut, code: i32) {
    if let Err(err) = out
        .terminal(&Message::ExecExited(ExecExited { code }))
        .await
    {
        log_send_error(&err);
    }
}

/// Logs why a session stopped sending.
pub(crate) fn log_send_error(err: &SendError) {
    match err {
        SendError::Cancelled => debug!("session ended by shutdown"),
        SendError::WriterGone => debug!("console writer gone; session ended"),
        SendError::Encode(err) => warn!(%err, "cannot encode a reply"),
    }
}

/// Signals a session's processes.
///
/// `SIGKILL` (how the relay ends the sessions of a client that has gone)
/// goes to the whole process group, so nothing the session started stays
/// behind holding its pipes, and to the main process too in case it moved
/// to a group of its own. Other signals go to the main process while it
/// runs (a shell decides what its children get) and to the group once it
/// has been reaped.
pub(crate) fn deliver_signal(live_pid: Option<u32>, pgid: u32, signal: i32) {
    let delivered = match live_pid {
        Some(pid) if signal == SIGKILL => {
            let group = spawn::signal_group(pgid, signal);
            spawn::signal_process(pid, signal).or(group)
        }
        Some(pid) => spawn::signal_process(pid, signal),
        None => spawn::signal_group(pgid, signal),
    };
    match delivered {
        Ok(()) => debug!(pid = pgid, signal, "signal delivered"),
        Err(err) => debug!(pid = pgid, signal, %err, "signal not delivered"),
    }
}

/// Kills the process group and the process, and reaps the process.
async fn kill_and_reap(child: &mut Child, pid: u32) {
    deliver_signal(None, pid, SIGKILL);
    if let Err(err) = child.start_kill() {
        debug!(pid, %err, "kill after exit");
    }
    if let Err(err) = child.wait().await {
        warn!(pid, %err, "reaping a killed process failed");
    }
}

/// Streams one pipe to the console, one frame per read, until end of file.
async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    t: MessageType,
    out: &SessionOut,
    chunk: usize,
) -> Result<(), SendError> {
    let Some(mut pipe) = pipe else {
        return Ok(());
    };
    let mut buf = vec![0; chunk.max(1)];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => out.data(t, &buf[..n]).await?,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                debug!(%err, stream = %t, "reading the pipe failed; treated as end of file");
                return Ok(());
            }
        }
    }
}

/// Writes queued stdin chunks to the process until the end marker, a write
/// error (the process closed its stdin) or the end of the queue. The queue
/// is dropped on return, so later stdin for this session is discarded
/// instead of filling the queue.
async fn feed_stdin(stdin: Option<ChildStdin>, mut queue: InputReceiver) {
    let Some(mut stdin) = stdin else {
        return;
    };
    while let Some(chunk) = queue.recv().await {
        if chunk.is_end() {
            break;
        }
        if let Err(err) = stdin.write_all(chunk.data()).await {
            debug!(%err, "stdin closed by the process");
            break;
        }
        // Dropping the chunk frees its room in the queue and, with flow
        // control on, returns its credit to the relay.
    }
}

/// Answers a command that could not start: a stderr line, then
/// `core.exec.exited` with 127 or 126.
pub(crate) async fn start_failed(out: &SessionOut, cmd: &str, err: &StartError) {
    debug!(cmd, %err, "cannot run");
    let text = format!("relay-agent: cannot run {cmd:?}: {err}\n");
    error_reply(out, text, err.exit_code()).await;
}

/// Answers a malformed request on its id: a stderr line, then
/// `core.exec.exited` with code 2.
pub(crate) async fn malformed(out: &SessionOut, reason: &str) {
    let text = format!("relay-agent: malformed request: {reason}\n");
    error_reply(out, text, EXIT_MALFORMED).await;
}

async fn error_reply(out: &SessionOut, text: String, code: i32) {
    let stderr = Message::ExecStderr(Data {
        data: text.into_bytes(),
    });
    if let Err(err) = out.message(&stderr).await {
        return log_send_error(&err);
    }
    report_exit(out, code).await;
}
