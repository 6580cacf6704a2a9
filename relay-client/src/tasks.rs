//! The connection's tasks: reading the greeting, the reader task that
//! routes frames by id, and the writer task that all senders share.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use relay_codec::{CodecError, Flags, Frame, FrameCodec, Handshake, MessageError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::deadline::{Deadline, within};
use crate::error::{Awaited, ClientError, Disconnect};
use crate::sessions::SessionTable;

/// The write half of the connection, whatever the stream.
pub(crate) type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A frame for the writer task, with where to report the outcome.
pub(crate) struct Outgoing {
    pub(crate) frame: Frame,
    /// Written only while this session (id, generation) is in flight.
    pub(crate) session: Option<(u32, u64)>,
    pub(crate) done: oneshot::Sender<Result<(), ClientError>>,
}

/// Writes queued frames in order, batching what is already queued into one
/// flush, until every sender is gone or a write fails.
pub(crate) async fn write_loop(
    mut writer: FramedWrite<BoxWriter, FrameCodec>,
    mut queue: mpsc::Receiver<Outgoing>,
    sessions: Arc<SessionTable>,
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
            let frame_flags = frame.flags();
            let outcome = match session {
                _ if sessions.closed().is_some() => Err(ClientError::Disconnected(
                    sessions.closed().unwrap_or(Disconnect::Eof),
                )),
                Some((id, generation)) if !sessions.is_live(id, generation) => {
                    Err(ClientError::SessionClosed { id })
                }
                _ => match writer.feed(frame).await {
                    Ok(()) => Ok(()),
                    Err(CodecError::Io(error)) => {
                        let reason = Disconnect::Write(Arc::new(error));
                        tracing::warn!(%reason, "connection to the relay lost");
                        sessions.close(reason.clone());
                        let _ = done.send(Err(ClientError::Disconnected(reason)));
                        return;
                    }
                    Err(CodecError::Frame(error)) => {
                        // A request that never went out gets no answer: its
                        // id is free again (its caller may be gone already).
                        if let Some((id, generation)) = session
                            && frame_flags.contains(Flags::SESSION_START)
                        {
                            sessions.release(id, generation);
                        }
                        Err(ClientError::Encode {
                            id,
                            source: MessageError::Frame(error),
                        })
                    }
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
            sessions.close(reason.clone());
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

/// Reads the id prefix and the ready frame before `deadline`; returns them
/// with any bytes read past the greeting.
pub(crate) async fn read_handshake<R>(
    read: &mut R,
    deadline: Option<Deadline>,
) -> Result<(Handshake, Frame, BytesMut), ClientError>
where
    R: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Some((handshake, ready, used)) = Handshake::decode(&buf)? {
            let _greeting = buf.split_to(used);
            return Ok((handshake, ready, buf));
        }
        // Below this many bytes the form of the prefix is not known yet.
        let awaited = if buf.len() < BOUNDS_PREFIX_LEN {
            Awaited::Handshake
        } else {
            Awaited::Ready
        };
        let n = within(deadline, awaited, async {
            read.read_buf(&mut buf)
                .await
                .map_err(|source| ClientError::HandshakeRead { source })
        })
        .await?;
        if n == 0 {
            return Err(ClientError::HandshakeTruncated {
                received: buf.len(),
            });
        }
    }
}

/// Length of the bounds form's prefix, the longer one: the greeting's first
/// eight bytes tell the two forms apart.
const BOUNDS_PREFIX_LEN: usize = 8;

/// The reader task: routes every frame to its session's channel until the
/// stream ends, then ends every session with the reason.
pub(crate) async fn read_loop<R>(mut frames: FramedRead<R, FrameCodec>, sessions: Arc<SessionTable>)
where
    R: AsyncRead + Unpin,
{
    let reason = loop {
        match frames.next().await {
            None => break Disconnect::Eof,
            Some(Err(CodecError::Io(error))) => break Disconnect::Read(Arc::new(error)),
            Some(Err(CodecError::Frame(error))) => break Disconnect::Malformed(error),
            Some(Ok(frame)) => deliver(&sessions, frame).await,
        }
    };
    match reason {
        Disconnect::Eof => tracing::debug!(%reason, "connection to the relay ended"),
        _ => tracing::warn!(%reason, "connection to the relay lost"),
    }
    sessions.close(reason);
}

async fn deliver(sessions: &SessionTable, frame: Frame) {
    let id = frame.id();
    let flags = frame.flags();
    let Some(session) = sessions.route(id, flags) else {
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
