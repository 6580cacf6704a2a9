//! The connection: connecting within a deadline, the handle that opens
//! sessions, and the state the client and its sessions share.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use relay_codec::payload::{ExecRequest, Ready};
use relay_codec::{Flags, Frame, FrameCodec, Handshake, IdRange, Message};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::config::ClientConfig;
use crate::deadline::{Deadline, within};
use crate::error::{Awaited, ClientError, Disconnect};
use crate::exec::{ExecSession, Output};
use crate::fs::Fs;
use crate::session::Session;
use crate::sessions::SessionTable;
use crate::tasks::{BoxWriter, Outgoing, read_handshake, read_loop, write_loop};

/// A connection to the relay. Cheap to clone: clones share the connection,
/// its id range and its writer.
///
/// The connection stays open while the client or any session handle made
/// from it is alive, and closes when the last one is dropped.
///
/// Each handle carries a request timeout (from
/// [`ClientConfig::request_timeout`], or set with
/// [`Client::with_request_timeout`]); see the crate documentation on
/// deadlines.
#[derive(Clone)]
pub struct Client {
    conn: Arc<Conn>,
    request_timeout: Option<Duration>,
}

/// Frames waiting for the writer task. Senders wait when it is full.
const OUTGOING_FRAMES: usize = 16;

/// State shared by the client and its sessions.
pub(crate) struct Conn {
    pub(crate) sessions: Arc<SessionTable>,
    outgoing: mpsc::Sender<Outgoing>,
    handshake: Handshake,
    ids: IdRange,
    ready: Ready,
    ready_frame: Frame,
    config: ClientConfig,
    reader: AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The reader task holds the read half; stopping it closes the socket.
        self.reader.abort();
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("handshake", &self.handshake)
            .field("ids", &self.ids)
            .field("in_flight", &self.sessions.in_flight())
            .field("closed", &self.sessions.closed())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("conn", &self.conn)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Client {
    /// Connects to the relay's Unix socket at `path` and reads its
    /// greeting, within [`ClientConfig::DEFAULT_CONNECT_TIMEOUT`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_with(path, ClientConfig::default()).await
    }

    /// [`Client::connect`] with a configuration.
    ///
    /// Fails with [`ClientError::Timeout`] when the socket connect and the
    /// whole greeting take longer than [`ClientConfig::connect_timeout`];
    /// its [`Awaited`] says which part did not arrive.
    pub async fn connect_with(
        path: impl AsRef<Path>,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        let deadline = Deadline::after(config.connect_timeout);
        let path = path.as_ref();
        let stream = within(deadline, Awaited::Connect, async {
            UnixStream::connect(path)
                .await
                .map_err(|source| ClientError::Connect {
                    path: path.to_path_buf(),
                    source,
                })
        })
        .await?;
        let (read, write) = stream.into_split();
        Client::start(read, Box::new(write), config, deadline).await
    }

    /// Runs the protocol over any byte stream (a socket pair in tests, a
    /// proxied connection), starting with the relay's greeting, within
    /// [`ClientConfig::DEFAULT_CONNECT_TIMEOUT`].
    pub async fn from_stream<S>(stream: S) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Client::from_stream_with(stream, ClientConfig::default()).await
    }

    /// [`Client::from_stream`] with a configuration: the greeting must be
    /// complete within [`ClientConfig::connect_timeout`].
    pub async fn from_stream_with<S>(stream: S, config: ClientConfig) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let deadline = Deadline::after(config.connect_timeout);
        let (read, write) = tokio::io::split(stream);
        Client::start(read, Box::new(write), config, deadline).await
    }

    async fn start<R>(
        mut read: R,
        write: BoxWriter,
        config: ClientConfig,
        deadline: Option<Deadline>,
    ) -> Result<Client, ClientError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (handshake, ready_frame, rest) = read_handshake(&mut read, deadline).await?;
        let ids = handshake
            .client_ids()
            .ok_or(ClientError::NoClientIds { handshake })?;
        let ready = match Message::from_frame(&ready_frame) {
            Ok(Message::Ready(ready)) => ready,
            Ok(other) => {
                return Err(ClientError::NotReady {
                    message_type: other.message_type(),
                });
            }
            Err(source) => return Err(ClientError::BadReady { source }),
        };
        tracing::debug!(
            ?handshake,
            first_id = ids.first(),
            last_id = ids.last(),
            "connected to the relay"
        );
        let sessions = Arc::new(SessionTable::new(ids));
        let mut frames = FramedRead::new(read, FrameCodec::new());
        // Bytes that arrived with the greeting belong to the first frames.
        frames.read_buffer_mut().extend_from_slice(&rest);
        let reader = tokio::spawn(read_loop(frames, Arc::clone(&sessions))).abort_handle();
        let (outgoing, queue) = mpsc::channel(OUTGOING_FRAMES);
        tokio::spawn(write_loop(
            FramedWrite::new(write, FrameCodec::new()),
            queue,
            Arc::clone(&sessions),
        ));
        Ok(Client {
            request_timeout: config.request_timeout,
            conn: Arc::new(Conn {
                sessions,
                outgoing,
                handshake,
                ids,
                ready,
                ready_frame,
                config,
                reader,
            }),
        })
    }

    /// The greeting's id prefix, in the form the relay chose.
    pub fn handshake(&self) -> Handshake {
        self.conn.handshake
    }

    /// The ids this client uses for its sessions (never 0).
    pub fn ids(&self) -> IdRange {
        self.conn.ids
    }

    /// The agent's `core.ready` payload, as cached by the relay.
    pub fn ready(&self) -> &Ready {
        &self.conn.ready
    }

    /// The `core.ready` frame exactly as received.
    pub fn ready_frame(&self) -> &Frame {
        &self.conn.ready_frame
    }

    /// Sessions in flight: opened and not yet ended by a TERMINAL frame.
    pub fn in_flight(&self) -> usize {
        self.conn.sessions.in_flight()
    }

    /// Why the connection ended, or `None` while it is up.
    pub fn disconnect_reason(&self) -> Option<Disconnect> {
        self.conn.sessions.closed()
    }

    /// Opens a session: takes a free id, sends `request` on it (its type
    /// must be one that opens a session: `core.exec.request` or
    /// `core.fs.request`) and returns the session's handle.
    ///
    /// Fails with [`ClientError::IdsExhausted`] when every id of the range
    /// is in flight, at once, without waiting for one to free up.
    ///
    /// With a request timeout, fails with [`ClientError::Timeout`]
    /// ([`Awaited::Request`]) when the request is not written in time; the
    /// session's later frames are not bounded.
    ///
    /// If this future is dropped (or times out) before the request was
    /// handed to the writer, the id is free again; after, the request goes
    /// out whole and the id stays in flight until a TERMINAL frame for it
    /// arrives.
    pub async fn open(&self, request: &Message) -> Result<Session, ClientError> {
        self.open_within(request, self.deadline()).await
    }

    /// [`Client::open`], bounded by `deadline`.
    pub(crate) async fn open_within(
        &self,
        request: &Message,
        deadline: Option<Deadline>,
    ) -> Result<Session, ClientError> {
        within(deadline, Awaited::Request, self.open_unbounded(request)).await
    }

    async fn open_unbounded(&self, request: &Message) -> Result<Session, ClientError> {
        let (session, pending) = self.send_request(request).await?;
        self.confirm(pending).await?;
        Ok(session)
    }

    /// Takes an id and queues `request` on it, without waiting for it to be
    /// written. Cancel-safe: dropped before the request is queued, the id
    /// is free again.
    async fn send_request(&self, request: &Message) -> Result<(Session, Pending), ClientError> {
        let message_type = request.message_type();
        if !message_type.default_flags().contains(Flags::SESSION_START) {
            return Err(ClientError::NotASessionRequest { message_type });
        }
        let conn = &self.conn;
        let registration = conn
            .sessions
            .register(conn.config.session_buffer, conn.config.max_sessions)?;
        let (id, generation) = (registration.id, registration.generation);
        let frame = match request.to_frame(id) {
            Ok(frame) => frame,
            Err(source) => {
                conn.sessions.release(id, generation);
                return Err(ClientError::Encode { id, source });
            }
        };
        let session = Session::new(Arc::clone(conn), registration);
        // Frees the id if this future is dropped before the request is queued.
        let mut unsent = Unsent {
            sessions: &conn.sessions,
            id,
            generation,
            armed: true,
        };
        let queued = conn.queue(frame, Some((id, generation))).await;
        unsent.armed = false;
        match queued {
            Ok(written) => {
                tracing::trace!(id, %message_type, "request queued");
                let pending = Pending {
                    id,
                    generation,
                    written,
                };
                Ok((session, pending))
            }
            Err(error) => {
                conn.sessions.release(id, generation);
                Err(error)
            }
        }
    }

    /// Waits until a queued request is written. A request that could not be
    /// written frees its id; dropped midway, the request still goes out (or
    /// the writer frees the id) and the id stays in flight until its
    /// TERMINAL frame.
    async fn confirm(&self, pending: Pending) -> Result<(), ClientError> {
        let Pending {
            id,
            generation,
            written,
        } = pending;
        let result = written
            .await
            .unwrap_or_else(|_| Err(self.conn.disconnected()));
        match result {
            Ok(()) => {
                tracing::debug!(id, "session opened");
                Ok(())
            }
            Err(error) => {
                self.conn.sessions.release(id, generation);
                Err(error)
            }
        }
    }

    /// Starts a command. See [`ExecSession`] for streaming its output and
    /// feeding its stdin.
    ///
    /// With a request timeout, fails with [`ClientError::Timeout`]
    /// ([`Awaited::Request`]) when the request is not written in time; a
    /// command whose request was already queued is then killed
    /// ([`ExecInput::kill`], sent in the background), since nobody holds
    /// its handle. The session's later events are not bounded.
    ///
    /// [`ExecInput::kill`]: crate::ExecInput::kill
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecSession, ClientError> {
        self.exec_within(request, self.deadline()).await
    }

    async fn exec_within(
        &self,
        request: ExecRequest,
        deadline: Option<Deadline>,
    ) -> Result<ExecSession, ClientError> {
        let message = Message::ExecRequest(request);
        let (session, pending) =
            within(deadline, Awaited::Request, self.send_request(&message)).await?;
        let session = ExecSession::new(session);
        let confirmed = within(deadline, Awaited::Request, self.confirm(pending)).await;
        if let Err(ClientError::Timeout { after, .. }) = &confirmed {
            session.input().kill_in_background(*after);
        }
        confirmed.map(|()| session)
    }

    /// Runs a command to completion, feeding it `stdin` (then closing its
    /// stdin; `None` closes it at once) while collecting its output.
    ///
    /// With a request timeout, the whole run must end in time: past the
    /// deadline the command is killed ([`ExecInput::kill`], sent in the
    /// background) and the result is [`ClientError::Timeout`]
    /// ([`Awaited::Request`] while the request was being written,
    /// [`Awaited::Reply`] after). Its id stays in flight until the agent
    /// reports the exit.
    ///
    /// [`ExecInput::kill`]: crate::ExecInput::kill
    pub async fn exec_output(
        &self,
        request: ExecRequest,
        stdin: Option<bytes::Bytes>,
    ) -> Result<Output, ClientError> {
        let deadline = self.deadline();
        let session = self.exec_within(request, deadline).await?;
        let input = session.input();
        let result = within(deadline, Awaited::Reply, session.output_with_stdin(stdin)).await;
        if let Err(ClientError::Timeout { after, .. }) = &result {
            input.kill_in_background(*after);
        }
        result
    }

    /// The filesystem operations of the agent.
    pub fn fs(&self) -> Fs {
        Fs::new(self.clone())
    }

    /// Asks the sandbox to stop: sends `core.shutdown` with id 0 and the
    /// SHUTDOWN flag. With a request timeout, fails with
    /// [`ClientError::Timeout`] ([`Awaited::Request`]) when the frame is not
    /// written in time (it may still go out).
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        let frame = Message::Shutdown
            .to_frame(0)
            .map_err(|source| ClientError::Encode { id: 0, source })?;
        debug_assert!(frame.flags().contains(Flags::SHUTDOWN));
        within(
            self.deadline(),
            Awaited::Request,
            self.conn.send(frame, None),
        )
        .await?;
        tracing::debug!("shutdown requested");
        Ok(())
    }

    /// A handle on the same connection whose requests have `timeout` as
    /// their deadline (`None`: no deadline), whatever
    /// [`ClientConfig::request_timeout`] said. Its [`Client::fs`] inherits it.
    ///
    /// ```no_run
    /// # async fn run(client: relay_client::Client) -> Result<(), relay_client::ClientError> {
    /// use std::time::Duration;
    ///
    /// let quick = client.with_request_timeout(Some(Duration::from_secs(5)));
    /// let entry = quick.fs().stat("/etc/hostname").await?;
    /// # let _ = entry;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_request_timeout(&self, timeout: Option<Duration>) -> Client {
        Client {
            conn: Arc::clone(&self.conn),
            request_timeout: timeout,
        }
    }

    /// This handle's request timeout.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }

    /// The deadline of a request starting now.
    pub(crate) fn deadline(&self) -> Option<Deadline> {
        Deadline::after(self.request_timeout)
    }
}

impl Conn {
    /// Writes one frame (the writer task flushes it) and waits until it is
    /// written. With `session`, the frame is written only while that session
    /// (id and generation) is in flight; the writer checks just before
    /// writing, so a frame of an ended session never follows the request of
    /// a newer session that reuses its id.
    ///
    /// Cancel-safe: dropped before the frame is queued, nothing is sent;
    /// after, the frame still goes out whole.
    pub(crate) async fn send(
        &self,
        frame: Frame,
        session: Option<(u32, u64)>,
    ) -> Result<(), ClientError> {
        let done = self.queue(frame, session).await?;
        done.await.unwrap_or_else(|_| Err(self.disconnected()))
    }

    /// Hands a frame to the writer task, waiting for room.
    async fn queue(
        &self,
        frame: Frame,
        session: Option<(u32, u64)>,
    ) -> Result<oneshot::Receiver<Result<(), ClientError>>, ClientError> {
        if let Some(reason) = self.sessions.closed() {
            return Err(ClientError::Disconnected(reason));
        }
        if let Some((id, generation)) = session
            && !self.sessions.is_live(id, generation)
        {
            return Err(ClientError::SessionClosed { id });
        }
        let (done, outcome) = oneshot::channel();
        let item = Outgoing {
            frame,
            session,
            done,
        };
        self.outgoing
            .send(item)
            .await
            .map_err(|_| self.disconnected())?;
        Ok(outcome)
    }

    fn disconnected(&self) -> ClientError {
        ClientError::Disconnected(self.sessions.closed().unwrap_or(Disconnect::Eof))
    }
}

/// A request handed to the writer, not yet reported written.
struct Pending {
    id: u32,
    generation: u64,
    written: oneshot::Receiver<Result<(), ClientError>>,
}

/// Releases an id whose request never reached the writer.
struct Unsent<'a> {
    sessions: &'a SessionTable,
    id: u32,
    generation: u64,
    armed: bool,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.sessions.release(self.id, self.generation);
        }
    }
}
