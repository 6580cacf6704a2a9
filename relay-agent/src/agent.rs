//! The agent: its configuration and the console reader that decodes frames
//! and dispatches them to the session table (`sessions`).

use std::io;
use std::time::Duration;

use futures_util::StreamExt;
use relay_codec::{CodecError, FrameCodec, FrameError, Message, MessageError, MessageType};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::BootTimes;
use crate::error::AgentError;
use crate::outbound::{Outbound, write_frames};
use crate::sessions::Sessions;

/// Tunables of an [`Agent`]. Every buffer the agent keeps is bounded by one
/// of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Bytes of client input (stdin, fs upload data) queued per session.
    /// Without flow control, when a session's queue is full the console
    /// reader waits for it to drain (the generation-1 behaviour); with it,
    /// each queue holds at least a window plus one maximal frame, which the
    /// relay's credit keeps it within. Default 1 MiB.
    pub input_queue_bytes: usize,
    /// Bytes of frames waiting for the console, all sessions together; when
    /// it is spent, sessions wait and stop reading their processes' output.
    /// Default 8 MiB.
    pub outbound_budget: usize,
    /// Largest read from a process's stdout, stderr or pty; each read
    /// becomes one frame. Default 64 KiB.
    pub output_chunk: usize,
    /// Size of the `core.fs.data` chunks of a file read, at most
    /// [`relay_codec::FS_CHUNK_SIZE`]. Default 256 KiB: a quarter of the default flow
    /// window, so a read keeps chunks in flight while credit for the
    /// earlier ones comes back, where chunks of a whole window or more
    /// would stop and wait after each.
    pub fs_chunk: usize,
    /// Sessions open at once; a request beyond this is answered with an
    /// error (exec: code 126, fs: `ok: false`). Default 1024.
    pub max_sessions: usize,
    /// How long [`Agent::serve`], once it ends, waits for frames already
    /// queued to reach the console. Default 5 s.
    pub flush_timeout: Duration,
    /// Per-session credit offered to the relay in `core.ready`: bytes in
    /// flight per session and direction. With it, a slow client throttles
    /// only its own session's process instead of being cut off, and the
    /// console reader never waits for one session. The offer binds nothing
    /// until the relay answers `core.flow.accept` (with the window it
    /// chose): before that, and for ever behind a relay that does not know
    /// the extension, the agent speaks plain generation 1 (no credit frames,
    /// nothing held). `None` makes no offer. Default `Some(1 MiB)`.
    pub flow_window: Option<u32>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            input_queue_bytes: 1024 * 1024,
            outbound_budget: 8 * 1024 * 1024,
            output_chunk: 64 * 1024,
            fs_chunk: 256 * 1024,
            max_sessions: 1024,
            flush_timeout: Duration::from_secs(5),
            flow_window: Some(1 << 20),
        }
    }
}

/// How [`Agent::serve`] ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeEnd {
    /// A `core.shutdown` message arrived.
    Shutdown,
    /// The console reached end of file (the host closed it).
    Eof,
}

/// The guest agent. Build one, then [`serve`](Agent::serve) a console.
#[derive(Debug, Clone)]
pub struct Agent {
    config: AgentConfig,
    times: BootTimes,
}

/// Why the console reader stopped before EOF or shutdown.
#[derive(Debug)]
enum Stop {
    Malformed(FrameError),
    Read(io::Error),
    WriterGone,
    Encode(MessageError),
}

impl Agent {
    /// An agent whose `core.ready` reports this process's start and now as
    /// its boot and init times (see [`BootTimes::capture`]).
    pub fn new(config: AgentConfig) -> Agent {
        Agent::with_boot_times(config, BootTimes::capture())
    }

    /// An agent with boot times measured by its caller (an init that did
    /// work before the agent was built).
    pub fn with_boot_times(config: AgentConfig, times: BootTimes) -> Agent {
        Agent { config, times }
    }

    /// The configuration in force.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Serves one console until `core.shutdown` or end of file: sends
    /// `core.ready`, then runs every request that arrives.
    ///
    /// Either way every session's process group is killed and reaped before
    /// this returns, and frames already queued are flushed (for at most
    /// [`AgentConfig::flush_timeout`]). A malformed frame or an I/O error on
    /// the console ends it with an error, after the same cleanup.
    pub async fn serve<R, W>(self, reader: R, writer: W) -> Result<ServeEnd, AgentError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let (outbound, queue) = Outbound::new(self.config.outbound_budget);
        let writer_failed = CancellationToken::new();
        let write = async {
            let written = write_frames(queue, writer).await;
            if written.is_err() {
                writer_failed.cancel();
            }
            written
        };
        let read = self.read_console(reader, outbound, writer_failed.clone());
        tokio::pin!(write, read);
        // Both run concurrently: the writer keeps draining while the reader
        // waits for room in a session's input queue.
        let mut written = None;
        let read_end = loop {
            tokio::select! {
                end = &mut read => break end,
                result = &mut write, if written.is_none() => written = Some(result),
            }
        };
        let written = match written {
            Some(result) => result,
            None => match tokio::time::timeout(self.config.flush_timeout, &mut write).await {
                Ok(result) => result,
                Err(_) => {
                    warn!(
                        timeout = ?self.config.flush_timeout,
                        "the console did not take the last frames in time"
                    );
                    Ok(())
                }
            },
        };
        match read_end {
            Ok(end) => {
                if let Err(err) = written {
                    debug!(%err, "flushing the console at the end failed");
                }
                info!(?end, "agent stopped");
                Ok(end)
            }
            Err(Stop::WriterGone) => Err(AgentError::ConsoleWrite {
                source: written
                    .err()
                    .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into()),
            }),
            Err(Stop::Malformed(source)) => Err(AgentError::MalformedStream { source }),
            Err(Stop::Read(source)) => Err(AgentError::ConsoleRead { source }),
            Err(Stop::Encode(source)) => Err(AgentError::Encode {
                message: MessageType::Ready.wire_name(),
                source,
            }),
        }
    }

    async fn read_console<R>(
        &self,
        reader: R,
        outbound: Outbound,
        writer_failed: CancellationToken,
    ) -> Result<ServeEnd, Stop>
    where
        R: AsyncRead + Unpin + Send,
    {
        let ready = Message::Ready(self.times.ready_now(self.config.flow_window))
            .to_frame(0)
            .map_err(Stop::Encode)?;
        outbound.send(ready).await.map_err(|_| Stop::WriterGone)?;
        info!(flow_window = ?self.config.flow_window, "ready");
        let mut sessions = Sessions::new(&self.config, outbound);
        let mut frames = FramedRead::new(reader, FrameCodec::new());
        let end = loop {
            tokio::select! {
                biased;
                () = writer_failed.cancelled() => break Err(Stop::WriterGone),
                Some(joined) = sessions.tasks.join_next_with_id() => sessions.finished(joined),
                next = frames.next() => match next {
                    None => {
                        info!("console closed");
                        break Ok(ServeEnd::Eof);
                    }
                    Some(Ok(frame)) => {
                        if let Some(end) = sessions.dispatch(frame, &writer_failed).await {
                            break Ok(end);
                        }
                    }
                    Some(Err(CodecError::Frame(FrameError::Truncated { have, need }))) => {
                        // The host went away in the middle of a frame (a relay
                        // that stopped): an end like any other.
                        warn!(have, need, "console closed inside a frame");
                        break Ok(ServeEnd::Eof);
                    }
                    Some(Err(CodecError::Frame(err))) => {
                        error!(%err, "malformed frame on the console; stopping");
                        break Err(Stop::Malformed(err));
                    }
                    Some(Err(CodecError::Io(err))) => {
                        error!(%err, "reading the console failed; stopping");
                        break Err(Stop::Read(err));
                    }
                },
            }
        };
        sessions.end_all().await;
        end
    }
}
