//! Exec sessions under a pseudo-terminal (`tty: true`).
//!
//! portable-pty opens the pty and starts the process as a session leader
//! with the pty as its controlling terminal (job control, `SIGWINCH` on
//! resize, `/dev/tty`). Its reader, writer and wait are blocking, so each
//! tty session runs three small threads: output (pty to a bounded channel),
//! input (the session's input queue to the pty) and wait (`waitid` with
//! `WNOWAIT`, which reports the exit without reaping, so that this session's
//! task alone reaps the process and a signal can never reach a recycled pid).

use std::io::{Read, Write};
use std::sync::{Mutex, PoisonError};

use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use relay_codec::payload::{ExecRequest, ExecStarted};
use relay_codec::{Message, MessageType};
use rustix::process::{Pid, WaitId, WaitIdOptions, WaitIdStatus};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::exec::{self, Control, ExecIo, SIGKILL};
use crate::outbound::SendError;
use crate::queue::InputReceiver;
use crate::spawn::{self, StartError};

/// The end-of-file character of a terminal in canonical mode (`VEOF`, ^D).
const EOT: u8 = 0x04;

/// Output chunks in flight between the output thread and the session task.
const OUTPUT_CHUNKS: usize = 2;

/// The resize end of a tty session, shared with the console reader so a
/// resize takes effect before any stdin that follows it is delivered.
#[derive(Default)]
pub(crate) struct PtyControl {
    inner: Mutex<PtyInner>,
}

#[derive(Default)]
struct PtyInner {
    master: Option<Box<dyn MasterPty + Send>>,
    /// A size requested before the pty was open.
    pending: Option<PtySize>,
}

impl std::fmt::Debug for PtyControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("PtyControl")
            .field("open", &inner.master.is_some())
            .field("pending", &inner.pending)
            .finish()
    }
}

impl PtyControl {
    /// Sets the terminal size (the kernel sends `SIGWINCH` to the
    /// terminal's foreground process group).
    pub(crate) fn resize(&self, rows: u16, cols: u16) {
        let size = size(rows, cols);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match &inner.master {
            Some(master) => {
                if let Err(err) = master.resize(size) {
                    warn!(%err, "resizing the pty failed");
                }
            }
            None => inner.pending = Some(size),
        }
    }

    fn install(&self, master: Box<dyn MasterPty + Send>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(size) = inner.pending.take()
            && let Err(err) = master.resize(size)
        {
            warn!(%err, "resizing the pty failed");
        }
        inner.master = Some(master);
    }

    fn close(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .master = None;
    }
}

fn size(rows: u16, cols: u16) -> PtySize {
    PtySize {
        rows,
        cols,
        pixel_width: 0,
        pixel_height: 0,
    }
}

/// The process's side of a tty session once it runs.
struct Running {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    pid: u32,
    output: mpsc::Receiver<Vec<u8>>,
    exited: oneshot::Receiver<i32>,
}

pub(crate) async fn run(req: ExecRequest, io: ExecIo) {
    let ExecIo {
        out,
        stdin,
        mut control,
        pty,
        chunk,
    } = io;
    let mut running = match start(&req, &pty, stdin, chunk) {
        Ok(running) => running,
        Err(err) => return exec::start_failed(&out, &req.cmd, &err).await,
    };
    let pid = running.pid;
    let mut reaped = false;
    if out
        .message(&Message::ExecStarted(ExecStarted { pid }))
        .await
        .is_err()
    {
        return kill_and_reap(&mut running, reaped, &pty).await;
    }

    let mut code = None;
    let mut output_done = false;
    let mut control_open = true;
    let ended = loop {
        if let (Some(code), true) = (code, output_done) {
            break Ok(code);
        }
        tokio::select! {
            () = out.cancel_token().cancelled() => break Err(SendError::Cancelled),
            exited = &mut running.exited, if code.is_none() => {
                code = Some(exited.unwrap_or(spawn::EXIT_CANNOT_RUN));
                // The process is a zombie now: reaping returns at once.
                if let Err(err) = running.child.wait() {
                    warn!(pid, %err, "reaping the process failed");
                }
                reaped = true;
            }
            bytes = running.output.recv(), if !output_done => match bytes {
                Some(bytes) => {
                    if let Err(err) = out.data(MessageType::ExecStdout, &bytes).await {
                        break Err(err);
                    }
                }
                None => output_done = true,
            },
            ctl = control.recv(), if control_open => match ctl {
                Some(Control::Signal(signal)) => {
                    let running = !reaped && !has_exited(pid);
                    exec::deliver_signal(running.then_some(pid), pid, signal);
                }
                None => control_open = false,
            },
        }
    };
    match ended {
        Ok(code) => {
            debug!(pid, code, "exited");
            pty.close();
            exec::report_exit(&out, code).await;
        }
        Err(err) => {
            exec::log_send_error(&err);
            kill_and_reap(&mut running, reaped, &pty).await;
        }
    }
}

/// Opens the pty, starts the process and its three threads.
fn start(
    req: &ExecRequest,
    pty: &PtyControl,
    stdin: InputReceiver,
    chunk: usize,
) -> Result<Running, StartError> {
    let prepared = spawn::prepare(req)?;
    let pair = {
        let _guard = spawn::openpty_guard();
        native_pty_system()
            .openpty(size(req.rows, req.cols))
            .map_err(pty_error)?
    };
    let mut builder = CommandBuilder::new(&prepared.program);
    builder.args(&prepared.args);
    for (key, value) in &prepared.env {
        builder.env(key, value);
    }
    builder.cwd(&prepared.cwd);
    let child = pair.slave.spawn_command(builder).map_err(pty_error)?;
    // Only the process may hold the terminal's slave side: when it (and
    // whatever it started) is gone, reading the master ends.
    drop(pair.slave);
    let Some(pid) = child.process_id() else {
        return Err(StartError::Pty {
            reason: "the started process has no pid".into(),
        });
    };
    let mut child = child;
    let exited = match spawn_waiter(pid) {
        Ok(exited) => exited,
        Err(err) => {
            exec::deliver_signal(None, pid, SIGKILL);
            let _ = child.wait();
            return Err(err);
        }
    };
    let (tx, output) = mpsc::channel(OUTPUT_CHUNKS);
    let mut running = Running {
        child,
        pid,
        output,
        exited,
    };
    if let Err(err) = spawn::apply_limits(pid, &prepared.limits) {
        kill_now(&mut running);
        return Err(err);
    }
    let threads = pair
        .master
        .try_clone_reader()
        .and_then(|reader| Ok((reader, pair.master.take_writer()?)));
    let (reader, writer) = match threads {
        Ok(pair) => pair,
        Err(err) => {
            kill_now(&mut running);
            return Err(pty_error(err));
        }
    };
    let spawned = spawn_thread("relay-agent-pty-out", move || {
        read_output(reader, &tx, chunk)
    })
    .and_then(|()| spawn_thread("relay-agent-pty-in", move || write_input(writer, stdin)));
    if let Err(err) = spawned {
        kill_now(&mut running);
        return Err(StartError::Spawn { source: err });
    }
    pty.install(pair.master);
    debug!(pid, program = %prepared.program.display(), "started under a pty");
    Ok(running)
}

/// portable-pty reports `anyhow::Error`s; they are read through the traits
/// anyhow implements, so this crate needs no anyhow of its own.
fn pty_error<E>(err: E) -> StartError
where
    E: AsRef<dyn std::error::Error + Send + Sync> + std::fmt::Display,
{
    // A failed exec surfaces as the io::Error std reported; keep its errno so
    // a missing interpreter still reads as "No such file or directory".
    if let Some(code) = err
        .as_ref()
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::raw_os_error)
    {
        return StartError::Spawn {
            source: std::io::Error::from_raw_os_error(code),
        };
    }
    StartError::Pty {
        reason: format!("{err:#}"),
    }
}

fn spawn_thread(name: &str, body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(drop)
}

/// Starts the thread that waits for the process to exit without reaping it.
fn spawn_waiter(pid: u32) -> Result<oneshot::Receiver<i32>, StartError> {
    let (tx, rx) = oneshot::channel();
    let raw = i32::try_from(pid).ok().and_then(Pid::from_raw);
    spawn_thread("relay-agent-pty-wait", move || {
        let code = raw.map_or(spawn::EXIT_CANNOT_RUN, wait_without_reaping);
        let _ = tx.send(code);
    })
    .map_err(|source| StartError::Spawn { source })?;
    Ok(rx)
}

fn wait_without_reaping(pid: Pid) -> i32 {
    loop {
        match rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(Some(status)) => return code_of(&status),
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => {
                warn!(%err, "waiting for the pty process failed");
                return spawn::EXIT_CANNOT_RUN;
            }
        }
    }
}

/// Whether the (unreaped) process has exited, without reaping it.
fn has_exited(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return true;
    };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT | WaitIdOptions::NOHANG;
    matches!(
        rustix::process::waitid(WaitId::Pid(pid), options),
        Ok(Some(_))
    )
}

fn code_of(status: &WaitIdStatus) -> i32 {
    spawn::exit_code(status.exit_status(), status.terminating_signal())
}

/// Output thread: the pty's output into the session's channel, one chunk per
/// read, until the terminal closes (`EIO`, read as end of file) or the
/// session is gone.
fn read_output(mut reader: Box<dyn Read + Send>, tx: &mpsc::Sender<Vec<u8>>, chunk: usize) {
    let mut buf = vec![0; chunk.max(1)];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                debug!(%err, "reading the pty failed; treated as end of file");
                return;
            }
        }
    }
}

/// Input thread: queued stdin into the pty. The end marker becomes the
/// terminal's end-of-file character: twice when a line is pending (the
/// first one only flushes the partial line), once otherwise. The writer is
/// kept until the session is gone, because dropping it makes portable-pty
/// type a newline and another end-of-file.
fn write_input(mut writer: Box<dyn Write + Send>, mut queue: InputReceiver) {
    let mut line_pending = false;
    let mut open = true;
    while let Some(chunk) = queue.blocking_recv() {
        if !open {
            continue;
        }
        let written = if chunk.is_end() {
            open = false;
            let eof: &[u8] = if line_pending { &[EOT, EOT] } else { &[EOT] };
            writer.write_all(eof)
        } else {
            line_pending = chunk.data().last().is_some_and(|&b| b != b'\n');
            writer.write_all(chunk.data())
        };
        if let Err(err) = written.and_then(|()| writer.flush()) {
            debug!(%err, "the pty no longer takes input");
            return;
        }
    }
}

/// Kills the process group and reaps the process, blocking briefly: used
/// only while starting, before anything was reported to the client.
fn kill_now(running: &mut Running) {
    exec::deliver_signal(None, running.pid, SIGKILL);
    if let Err(err) = running.child.wait() {
        warn!(pid = running.pid, %err, "reaping a killed process failed");
    }
}

/// Kills the process group, waits for the exit and reaps the process.
async fn kill_and_reap(running: &mut Running, reaped: bool, pty: &PtyControl) {
    exec::deliver_signal(None, running.pid, SIGKILL);
    if !reaped {
        let _ = (&mut running.exited).await;
        if let Err(err) = running.child.wait() {
            warn!(pid = running.pid, %err, "reaping a killed process failed");
        }
    }
    pty.close();
}
