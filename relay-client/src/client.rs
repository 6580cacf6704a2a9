//! The connection: handshake, the reader task that routes frames by id, and
//! the writer task that all senders share.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use relay_codec::payload::{ExecRequest, Ready};
use relay_codec::{
    CodecError, Flags, Frame, FrameCodec, Handshake, IdRange, Message, MessageError,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::error::{ClientError, Disconnect};
use crate::exec::{ExecSession, Output};
use crate::fs::Fs;
use crate::router::Router;
use crate::session::Session;

/// Tuning of a [`Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Frames buffered per session between the reader task and the
    /// session's handle (default 16, at least 1).
    ///
    /// When a session's buffer is full the reader task waits for its handle
    /// to take a frame, which stops reading the socket for *every* session
    /// of this client (see the crate documentation on backpressure).
    pub session_buffer: usize,
}

impl ClientConfig {
    /// The default configuration.
    pub const fn new() -> ClientConfig {
        ClientConfig { session_buffer: 16 }
    }

    /// Sets [`ClientConfig::session_buffer`].
    pub const fn with_session_buffer(mut self, frames: usize) -> ClientConfig {
        self.session_buffer = frames;
        self
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig::new()
    }
}

/// A connection to the relay. Cheap to clone: clones share the connection,
/// its id range and its writer.
///
/// The connection stays open while the client or any session handle made
/// from it is alive, and closes when the last one is dropped.
#[derive(Clone)]
pub struct Client {
    conn: Arc<Conn>,
}

type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Frames waiting for the writer task. Senders wait when it is full.
const OUTGOING_FRAMES: usize = 16;

/// A frame for the writer task, with where to report the outcome.
struct Outgoing {
    frame: Frame,
    /// Written only while this session (id, generation) is in flight.
    session: Option<(u32, u64)>,
    done: oneshot::Sender<Result<(), ClientError>>,
}

/// State shared by the client and its sessions.
pub(crate) struct Conn {
    pub(crate) router: Arc<Router>,
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
            .field("in_flight", &self.router.in_flight())
            .field("closed", &self.router.closed())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("conn", &self.conn).finish()
    }
}

impl Client {
    /// Connects to the relay's Unix socket at `path` and reads its handshake.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_with(path, ClientConfig::default()).await
    }

    /// [`Client::connect`] with a configuration.
    pub async fn connect_with(
        path: impl AsRef<Path>,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (read, write) = stream.into_split();
        Client::start(read, Box::new(write), config).await
    }

    /// Runs the protocol over any byte stream (a socket pair in tests, a
    /// proxied connection), starting with the relay's handshake.
    pub async fn from_stream<S>(stream: S) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Client::from_stream_with(stream, ClientConfig::default()).await
    }

    /// [`Client::from_stream`] with a configuration.
    pub async fn from_stream_with<S>(stream: S, config: ClientConfig) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        Client::start(read, Box::new(write), config).await
    }

    async fn start<R>(
        mut read: R,
        write: BoxWriter,
        config: ClientConfig,
    ) -> Result<Client, ClientError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (handshake, ready_frame, rest) = read_handshake(&mut read).await?;
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
        let router = Arc::new(Router::new(ids));
        let mut frames = FramedRead::new(read, FrameCodec::new());
        // Bytes that arrived with the greeting belong to the first frames.
        frames.read_buffer_mut().extend_from_slice(&rest);
        let reader = tokio::spawn(read_loop(frames, Arc::clone(&router))).abort_handle();
        let (outgoing, queue) = mpsc::channel(OUTGOING_FRAMES);
        tokio::spawn(write_loop(
            FramedWrite::new(write, FrameCodec::new()),
            queue,
            Arc::clone(&router),
        ));
        Ok(Client {
            conn: Arc::new(Conn {
                router,
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
        self.conn.router.in_flight()
    }

    /// Why the connection ended, or `None` while it is up.
    pub fn disconnect_reason(&self) -> Option<Disconnect> {
        self.conn.router.closed()
    }

    /// Opens a session: takes a free id, sends `request` on it (its type
    /// must be one that opens a session: `core.exec.request` or
    /// `core.fs.request`) and returns the session's handle.
    ///
    /// Fails with [`ClientError::IdsExhausted`] when every id of the range
    /// is in flight, at once, without waiting for one to free up.
    ///
    /// If this future is dropped before the request was handed to the
    /// writer, the id is free again; after, the request goes out whole and
    /// the id stays in flight until a TERMINAL frame for it arrives.
    pub async fn open(&self, request: &Message) -> Result<Session, ClientError> {
        let message_type = request.message_type();
        if !message_type.default_flags().contains(Flags::SESSION_START) {
            return Err(ClientError::NotASessionRequest { message_type });
        }
        let conn = &self.conn;
        let registration = conn.router.register(conn.config.session_buffer)?;
        let (id, generation) = (registration.id, registration.generation);
        let frame = match request.to_frame(id) {
            Ok(frame) => frame,
            Err(source) => {
                conn.router.release(id, generation);
                return Err(ClientError::Encode { id, source });
            }
        };
        let session = Session::new(Arc::clone(conn), registration);
        // Frees the id if this future is dropped before the request is queued.
        let mut unsent = Unsent {
            router: &conn.router,
            id,
            generation,
            armed: true,
        };
        let done = conn.queue(frame, Some((id, generation))).await;
        unsent.armed = false;
        let result = match done {
            Ok(done) => done.await.unwrap_or_else(|_| Err(conn.disconnected())),
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            conn.router.release(id, generation);
            return Err(error);
        }
        tracing::debug!(id, %message_type, "session opened");
        Ok(session)
    }

    /// Starts a command. See [`ExecSession`] for streaming its output and
    /// feeding its stdin.
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecSession, ClientError> {
        let session = self.open(&Message::ExecRequest(request)).await?;
        Ok(ExecSession::new(session))
    }

    /// Runs a command to completion, feeding it `stdin` (then closing its
    /// stdin; `None` closes it at once) while collecting its output.
    pub async fn exec_output(
        &self,
        request: ExecRequest,
        stdin: Option<bytes::Bytes>,
    ) -> Result<Output, ClientError> {
        self.exec(request).await?.output_with_stdin(stdin).await
    }

    /// The filesystem operations of the agent.
    pub fn fs(&self) -> Fs {
        Fs::new(self.clone())
    }

    /// Asks the sandbox to stop: sends `core.shutdown` with id 0 and the
    /// SHUTDOWN flag.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        let frame = Message::Shutdown
            .to_frame(0)
            .map_err(|source| ClientError::Encode { id: 0, source })?;
        debug_assert!(frame.flags().contains(Flags::SHUTDOWN));
        self.conn.send(frame, None).await?;
        tracing::debug!("shutdown requested");
        Ok(())
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
        if let Some(reason) = self.router.closed() {
            return Err(ClientError::Disconnected(reason));
        }
        if let Some((id, generation)) = session
            && !self.router.is_live(id, generation)
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
        ClientError::Disconnected(self.router.closed().unwrap_or(Disconnect::Eof))
    }
}

/// Releases an id whose request never reached the writer.
struct Unsent<'a> {
    router: &'a Router,
    id: u32,
    generation: u64,
    armed: bool,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.router.release(self.id, self.generation);
        }
    }
}

/// Writes queued frames in order, batching what is already queued into one
/// flush, until every sender is gone or a write fails.
async fn write_loop(
    mut writer: FramedWrite<BoxWriter, FrameCodec>,
    mut queue: mpsc::Receiver<Outgoing>,
    router: Arc<Router>,
) {
    let mut written = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(Outgoing {
            frame,
            session,
            done,
        }) = next.take()
        {
            let id = frame.id();
            let outcome = match session {
                _ if router.closed().is_some() => Err(ClientError::Disconnected(
                    router.closed().unwrap_or(Disconnect::Eof),
                )),
                Some((id, generation)) if !router.is_live(id, generation) => {
                    Err(ClientError::SessionClosed { id })
                }
                _ => match writer.feed(frame).await {
                    Ok(()) => Ok(()),
                    Err(CodecError::Io(error)) => {
                        let reason = Disconnect::Write(Arc::new(error));
                        tracing::warn!(%reason, "connection to the relay lost");
                        router.close(reason.clone());
                        let _ = done.send(Err(ClientError::Disconnected(reason)));
                        return;
                    }
                    Err(CodecError::Frame(error)) => Err(ClientError::Encode {
                        id,
                        source: MessageError::Frame(error),
                    }),
                },
            };
            match outcome {
                Ok(()) => written.push(done),
                Err(error) => {
                    let _ = done.send(Err(error));
                }
            }
            next = queue.try_recv().ok();
        }
        if let Err(error) = SinkExt::<Frame>::flush(&mut writer).await {
            let reason = match error {
                CodecError::Io(error) => Disconnect::Write(Arc::new(error)),
                CodecError::Frame(error) => Disconnect::Malformed(error),
            };
            tracing::warn!(%reason, "connection to the relay lost");
            router.close(reason.clone());
            for done in written.drain(..) {
                let _ = done.send(Err(ClientError::Disconnected(reason.clone())));
            }
            return;
        }
        for done in written.drain(..) {
            let _ = done.send(Ok(()));
        }
    }
    // Every sender is gone: close our side.
    let _ = SinkExt::<Frame>::close(&mut writer).await;
}

/// Reads the id prefix and the ready frame; returns them with any bytes
/// read past the greeting.
async fn read_handshake<R>(read: &mut R) -> Result<(Handshake, Frame, BytesMut), ClientError>
where
    R: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Some((handshake, ready, used)) = Handshake::decode(&buf)? {
            let _greeting = buf.split_to(used);
            return Ok((handshake, ready, buf));
        }
        let n = read
            .read_buf(&mut buf)
            .await
            .map_err(|source| ClientError::HandshakeRead { source })?;
        if n == 0 {
            return Err(ClientError::HandshakeTruncated {
                received: buf.len(),
            });
        }
    }
}

/// The reader task: routes every frame to its session's channel until the
/// stream ends, then ends every session with the reason.
async fn read_loop<R>(mut frames: FramedRead<R, FrameCodec>, router: Arc<Router>)
where
    R: AsyncRead + Unpin,
{
    let reason = loop {
        match frames.next().await {
            None => break Disconnect::Eof,
            Some(Err(CodecError::Io(error))) => break Disconnect::Read(Arc::new(error)),
            Some(Err(CodecError::Frame(error))) => break Disconnect::Malformed(error),
            Some(Ok(frame)) => deliver(&router, frame).await,
        }
    };
    match reason {
        Disconnect::Eof => tracing::debug!(%reason, "connection to the relay ended"),
        _ => tracing::warn!(%reason, "connection to the relay lost"),
    }
    router.close(reason);
}

async fn deliver(router: &Router, frame: Frame) {
    let id = frame.id();
    let flags = frame.flags();
    let Some(session) = router.route(id, flags) else {
        if id == 0 {
            // A relay may forward a new `core.ready` after an agent restart.
            tracing::debug!(?flags, "frame with id 0 dropped");
        } else {
            tracing::warn!(
                id,
                ?flags,
                "frame for an unknown or finished session dropped"
            );
        }
        return;
    };
    // Waiting here when the session's buffer is full is the backpressure:
    // the socket is not read until the session's handle takes a frame.
    if session.send(frame).await.is_err() {
        tracing::trace!(id, "session handle dropped; frame discarded");
    }
}
