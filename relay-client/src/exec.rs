//! Exec sessions: output events, a stdin sink, signals, resizes and the exit status.

use std::time::Duration;

use bytes::Bytes;
use relay_codec::payload::{ExecResize, ExecSignal};
use relay_codec::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::ClientError;
use crate::session::{Session, SessionReceiver, SessionSender};

/// Largest stdin chunk per frame. Small enough that one session's upload
/// does not hold the shared writer for long, large enough to amortise the
/// frame header.
const STDIN_CHUNK_SIZE: usize = 256 * 1024;

/// Read size of [`ExecInput::copy_stdin_from`]: what one read of an
/// interactive source returns is forwarded at once.
const STDIN_READ_SIZE: usize = 64 * 1024;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus {
    /// The exit code; 128 + signal number when a signal ended the process.
    pub code: i32,
}

impl ExitStatus {
    /// Whether the code is 0.
    pub fn success(self) -> bool {
        self.code == 0
    }
}

/// Everything a finished command wrote, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// All stdout bytes, in order.
    pub stdout: Vec<u8>,
    /// All stderr bytes, in order.
    pub stderr: Vec<u8>,
    /// The exit code.
    pub code: i32,
}

impl Output {
    /// The exit status.
    pub fn status(&self) -> ExitStatus {
        ExitStatus { code: self.code }
    }
}

/// What an exec session reports, in the order the agent sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The process is running.
    Started {
        /// Its pid in the guest.
        pid: u32,
    },
    /// A chunk of stdout.
    Stdout(Bytes),
    /// A chunk of stderr.
    Stderr(Bytes),
    /// The process ended; the last event of the session.
    Exited(ExitStatus),
}

/// A running command. Made by [`Client::exec`](crate::Client::exec).
///
/// For a caller that pumps stdin and output concurrently (a CLI), split it
/// with [`ExecSession::split`]: the [`ExecInput`] half (cloneable) writes
/// stdin, signals and resizes; the [`ExecEvents`] half yields output.
///
/// Keep reading events while the command runs: a session whose events are
/// not read fills its buffer and then stalls the whole connection (see the
/// crate documentation). Dropping the handle does not stop the command;
/// use [`ExecInput::kill`] for that.
#[derive(Debug)]
pub struct ExecSession {
    input: ExecInput,
    events: ExecEvents,
}

/// The sending half of an exec session: stdin, signals, resizes.
///
/// Every method fails with [`ClientError::SessionClosed`] once the command
/// has exited and its exit frame has arrived.
#[derive(Debug, Clone)]
pub struct ExecInput {
    sender: SessionSender,
}

/// The receiving half of an exec session: output and the exit status.
#[derive(Debug)]
pub struct ExecEvents {
    receiver: SessionReceiver,
    pid: Option<u32>,
    exited: Option<ExitStatus>,
}

impl ExecSession {
    pub(crate) fn new(session: Session) -> ExecSession {
        let (sender, receiver) = session.split();
        ExecSession {
            input: ExecInput { sender },
            events: ExecEvents {
                receiver,
                pid: None,
                exited: None,
            },
        }
    }

    /// The session's correlation id.
    pub fn id(&self) -> u32 {
        self.input.id()
    }

    /// The pid, once the `Started` event has been read.
    pub fn pid(&self) -> Option<u32> {
        self.events.pid
    }

    /// The stdin / signal / resize half (cloned).
    pub fn input(&self) -> ExecInput {
        self.input.clone()
    }

    /// Splits into the sending and the receiving half.
    pub fn split(self) -> (ExecInput, ExecEvents) {
        (self.input, self.events)
    }

    /// See [`ExecEvents::next`].
    pub async fn next_event(&mut self) -> Result<Option<ExecEvent>, ClientError> {
        self.events.next().await
    }

    /// See [`ExecInput::write_stdin`].
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ClientError> {
        self.input.write_stdin(data).await
    }

    /// See [`ExecInput::close_stdin`].
    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        self.input.close_stdin().await
    }

    /// See [`ExecInput::signal`].
    pub async fn signal(&self, signal: i32) -> Result<(), ClientError> {
        self.input.signal(signal).await
    }

    /// See [`ExecInput::resize`].
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        self.input.resize(rows, cols).await
    }

    /// See [`ExecInput::kill`].
    pub async fn kill(&self) -> Result<(), ClientError> {
        self.input.kill().await
    }

    /// Waits for the command to end, discarding its output.
    pub async fn wait(self) -> Result<ExitStatus, ClientError> {
        self.events.wait().await
    }

    /// Collects the command's output until it ends.
    pub async fn output(self) -> Result<Output, ClientError> {
        self.events.output().await
    }

    /// Feeds `stdin` (then closes it; `None` closes it at once) while
    /// collecting the output, concurrently, so a command that writes before
    /// it has read all its input cannot deadlock the exchange.
    pub async fn output_with_stdin(self, stdin: Option<Bytes>) -> Result<Output, ClientError> {
        let (input, events) = self.split();
        let feed = async {
            if let Some(data) = stdin {
                input.write_stdin(&data).await?;
            }
            input.close_stdin().await
        };
        let (fed, output) = tokio::join!(feed, events.output());
        let output = output?;
        if let Err(error) = fed {
            // The command may exit without reading all its input; its
            // output and code are the result that matters.
            tracing::debug!(id = input.id(), %error, "stdin not fully delivered");
        }
        Ok(output)
    }
}

impl ExecInput {
    /// The session's correlation id.
    pub fn id(&self) -> u32 {
        self.sender.id()
    }

    /// Writes `data` to the command's stdin, in chunks of at most 256 KiB.
    /// An empty `data` sends nothing (an empty chunk would close stdin).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(STDIN_CHUNK_SIZE) {
            self.sender.send_data(MessageType::ExecStdin, chunk).await?;
        }
        Ok(())
    }

    /// Closes the command's stdin (an empty `core.exec.stdin`).
    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        self.sender.send_data(MessageType::ExecStdin, &[]).await
    }

    /// Copies `source` to the command's stdin until its end, forwarding
    /// each read as it completes, then closes stdin. Returns the bytes copied.
    pub async fn copy_stdin_from<R>(&self, mut source: R) -> Result<u64, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        let mut buf = vec![0u8; STDIN_READ_SIZE];
        let mut total = 0u64;
        loop {
            let n = source.read(&mut buf).await.map_err(ClientError::LocalIo)?;
            if n == 0 {
                break;
            }
            self.write_stdin(&buf[..n]).await?;
            total += n as u64;
        }
        self.close_stdin().await?;
        Ok(total)
    }

    /// Delivers signal number `signal` to the command's process.
    pub async fn signal(&self, signal: i32) -> Result<(), ClientError> {
        self.sender
            .send(&Message::ExecSignal(ExecSignal { signal }))
            .await
    }

    /// Sends SIGKILL (9).
    pub async fn kill(&self) -> Result<(), ClientError> {
        self.signal(9).await
    }

    /// Sends SIGKILL from a task of its own, giving up after `grace`, so
    /// a caller whose deadline passed returns at once. A command that has
    /// exited meanwhile is left alone (the frame is refused, never sent to
    /// a newer session on the id).
    pub(crate) fn kill_in_background(&self, grace: Duration) {
        let input = self.clone();
        tokio::spawn(async move {
            let id = input.id();
            match tokio::time::timeout(grace, input.kill()).await {
                Ok(Ok(())) => tracing::debug!(id, "deadline passed; command killed"),
                Ok(Err(error)) => tracing::debug!(id, %error, "deadline passed; kill not sent"),
                Err(_elapsed) => {
                    tracing::warn!(id, ?grace, "deadline passed; kill not written in time");
                }
            }
        });
    }

    /// Tells a tty session its new terminal size.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        self.sender
            .send(&Message::ExecResize(ExecResize { rows, cols }))
            .await
    }
}

impl ExecEvents {
    /// The session's correlation id.
    pub fn id(&self) -> u32 {
        self.receiver.id()
    }

    /// The pid, once the `Started` event has been read.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The exit status, once the `Exited` event has been read.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exited
    }

    /// The next event, or `None` after [`ExecEvent::Exited`].
    ///
    /// A message that has no place in an exec session is
    /// [`ClientError::UnexpectedMessage`]; a session that ends without an
    /// exit status is then [`ClientError::SessionEnded`].
    ///
    /// Cancel-safe: dropping the future before it completes loses no event,
    /// so it can sit in a `tokio::select!` beside a stdin read.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, ClientError> {
        if self.exited.is_some() {
            return Ok(None);
        }
        let id = self.receiver.id();
        let Some(message) = self.receiver.next_message().await? else {
            return Err(ClientError::SessionEnded { id });
        };
        let event = match message {
            Message::ExecStarted(started) => {
                self.pid = Some(started.pid);
                ExecEvent::Started { pid: started.pid }
            }
            Message::ExecStdout(data) => ExecEvent::Stdout(Bytes::from(data.data)),
            Message::ExecStderr(data) => ExecEvent::Stderr(Bytes::from(data.data)),
            Message::ExecExited(exited) => {
                let status = ExitStatus { code: exited.code };
                self.exited = Some(status);
                tracing::debug!(id, code = status.code, "command exited");
                ExecEvent::Exited(status)
            }
            other => {
                return Err(ClientError::UnexpectedMessage {
                    id,
                    message_type: other.message_type(),
                });
            }
        };
        Ok(Some(event))
    }

    /// Waits for the command to end, discarding the output not read yet.
    pub async fn wait(mut self) -> Result<ExitStatus, ClientError> {
        loop {
            if let Some(status) = self.exited {
                return Ok(status);
            }
            if self.next().await?.is_none() {
                return Err(ClientError::SessionEnded { id: self.id() });
            }
        }
    }

    /// Collects the output not read yet until the command ends.
    pub async fn output(mut self) -> Result<Output, ClientError> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        loop {
            if let Some(status) = self.exited {
                return Ok(Output {
                    stdout,
                    stderr,
                    code: status.code,
                });
            }
            match self.next().await? {
                Some(ExecEvent::Stdout(chunk)) => stdout.extend_from_slice(&chunk),
                Some(ExecEvent::Stderr(chunk)) => stderr.extend_from_slice(&chunk),
                Some(ExecEvent::Started { .. } | ExecEvent::Exited(_)) => {}
                None => return Err(ClientError::SessionEnded { id: self.id() }),
            }
        }
    }
}
