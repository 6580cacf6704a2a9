//! Raw clients of a relay: they read the greeting in either form (legacy,
//! a 4-byte offset; bounds, an 8-byte range; `Handshake::decode` tells
//! them apart), then speak frames and nothing more. [`RawClient`] runs on
//! tokio; [`BlockingClient`] on a std socket, for threads and for child
//! processes of a test.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use relay_codec::{CodecError, Flags, Frame, FrameCodec, Handshake, IdRange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::{HANG_GUARD, WireError, read_frame};

/// A client that reads its greeting, then sends and receives raw frames.
#[derive(Debug)]
pub struct RawClient {
    /// The id prefix the relay wrote.
    pub handshake: Handshake,
    /// The ready frame that followed it.
    pub ready: Frame,
    /// The ids this client owns.
    pub ids: IdRange,
    /// Frames from the relay (the greeting's leftovers first).
    pub rx: FramedRead<OwnedReadHalf, FrameCodec>,
    /// Frames to the relay.
    pub tx: FramedWrite<OwnedWriteHalf, FrameCodec>,
}

impl RawClient {
    /// Connects to the relay at `path` and reads its greeting; panics if
    /// either fails.
    pub async fn connect(path: &Path) -> RawClient {
        let stream = UnixStream::connect(path)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
        RawClient::handshake(stream)
            .await
            .expect("a greeting, not a refusal")
    }

    /// Reads the greeting on a connected stream; `None` when the relay
    /// closes the connection first (its way of refusing). Panics on a
    /// malformed greeting.
    pub async fn handshake(stream: UnixStream) -> Option<RawClient> {
        let (mut rd, wr) = stream.into_split();
        let mut buf = BytesMut::new();
        let (handshake, ready, used) = loop {
            if let Some(done) = Handshake::decode(&buf).expect("a well-formed greeting") {
                break done;
            }
            if rd.read_buf(&mut buf).await.expect("reading the greeting") == 0 {
                return None;
            }
        };
        let _ = buf.split_to(used);
        let mut rx = FramedRead::new(rd, FrameCodec::new());
        rx.read_buffer_mut().extend_from_slice(&buf);
        Some(RawClient {
            ids: handshake.client_ids().expect("a greeting that grants ids"),
            handshake,
            ready,
            rx,
            tx: FramedWrite::new(wr, FrameCodec::new()),
        })
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: Frame) {
        self.tx.send(frame).await.expect("sending a frame");
    }

    /// Sends a frame of `id`, `flags` and `body`.
    pub async fn frame(&mut self, id: u32, flags: Flags, body: &[u8]) {
        self.send(Frame::new(id, flags, body).expect("a body that fits a frame"))
            .await;
    }

    /// Writes bytes that need not form a frame, after the frames sent before.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        SinkExt::<Frame>::flush(&mut self.tx)
            .await
            .expect("flushing the frames before");
        let raw = self.tx.get_mut();
        raw.write_all(bytes).await.expect("writing raw bytes");
    }

    /// Closes the client's sending side (the relay reads the end of the stream).
    pub async fn shutdown_write(&mut self) {
        SinkExt::<Frame>::flush(&mut self.tx)
            .await
            .expect("flushing the frames before");
        self.tx
            .get_mut()
            .shutdown()
            .await
            .expect("shutting the socket down for writing");
    }

    /// The next frame, or `None` at the end of the stream or on an error;
    /// panics if neither comes within the hang guard.
    pub async fn next(&mut self) -> Option<Frame> {
        match self.next_within(HANG_GUARD).await {
            Ok(frame) => frame,
            Err(WireError::Timeout { .. }) => panic!("no frame and no end within the hang guard"),
            Err(_) => None,
        }
    }

    /// The next frame if one comes within `limit`; `Ok(None)` at the end of
    /// the stream.
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<Frame>, WireError> {
        match tokio::time::timeout(limit, self.rx.next()).await {
            Ok(Some(Ok(frame))) => Ok(Some(frame)),
            Ok(Some(Err(CodecError::Io(error)))) => Err(WireError::Io(error)),
            Ok(Some(Err(CodecError::Frame(error)))) => Err(WireError::Frame(error)),
            Ok(None) => Ok(None),
            Err(_) => Err(WireError::Timeout { waited: limit }),
        }
    }

    /// Reads until the relay closes this connection; true once it has.
    pub async fn closed(&mut self) -> bool {
        while self.next().await.is_some() {}
        true
    }
}

/// A [`RawClient`] on a blocking std socket, whose reads time out after the
/// hang guard. As a [`Read`] it yields what follows the greeting.
#[derive(Debug)]
pub struct BlockingClient {
    /// The id prefix the relay wrote.
    pub handshake: Handshake,
    /// The ready frame that followed it.
    pub ready: Frame,
    /// The ids this client owns.
    pub ids: IdRange,
    stream: std::os::unix::net::UnixStream,
    /// Bytes read with the greeting that belong to what follows it.
    leftover: Vec<u8>,
}

impl BlockingClient {
    /// Connects to the relay at `path` and reads its greeting.
    pub fn connect(path: &Path) -> Result<BlockingClient, WireError> {
        let stream = std::os::unix::net::UnixStream::connect(path)?;
        stream.set_read_timeout(Some(HANG_GUARD))?;
        BlockingClient::handshake(stream)
    }

    /// Reads the greeting on a connected blocking stream.
    pub fn handshake(
        mut stream: std::os::unix::net::UnixStream,
    ) -> Result<BlockingClient, WireError> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (handshake, ready, used) = loop {
            if let Some(done) = Handshake::decode(&buf)? {
                break done;
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(WireError::ClosedBeforeGreeting {
                        received: buf.len(),
                    });
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {
                    return Err(WireError::Timeout { waited: HANG_GUARD });
                }
                Err(e) => return Err(e.into()),
            }
        };
        let ids = handshake
            .client_ids()
            .ok_or(WireError::ClosedBeforeGreeting { received: used })?;
        buf.drain(..used);
        Ok(BlockingClient {
            handshake,
            ready,
            ids,
            stream,
            leftover: buf,
        })
    }

    /// The next frame from the relay.
    pub fn read_frame(&mut self) -> Result<Frame, WireError> {
        read_frame(self)
    }

    /// Sends a frame.
    pub fn write_frame(&mut self, frame: &Frame) -> io::Result<()> {
        self.stream.write_all(frame.as_wire())
    }
}

impl Read for BlockingClient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.leftover.is_empty() {
            return self.stream.read(buf);
        }
        let n = self.leftover.len().min(buf.len());
        buf[..n].copy_from_slice(&self.leftover[..n]);
        self.leftover.drain(..n);
        Ok(n)
    }
}

impl Write for BlockingClient {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{greeting, ready_frame, temp_dir};

    #[test]
    fn a_blocking_client_reads_either_greeting_and_keeps_what_follows_it() {
        let after = Frame::new(9, Flags::TERMINAL, b"after").unwrap();
        let range = IdRange::new(100, 199).unwrap();
        for handshake in [Handshake::Legacy { offset: 0 }, Handshake::Bounds { range }] {
            let dir = temp_dir();
            let path = dir.path().join("relay.sock");
            let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            let after = after.clone();
            let relay = std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().unwrap();
                let mut bytes = greeting(handshake, &ready_frame(1));
                bytes.extend_from_slice(after.as_wire());
                stream.write_all(&bytes).unwrap();
            });
            let mut client = BlockingClient::connect(&path).unwrap();
            relay.join().unwrap();
            assert_eq!(client.handshake, handshake);
            assert_eq!(client.ready, ready_frame(1));
            assert_eq!(client.ids, handshake.client_ids().unwrap());
            assert_eq!(client.read_frame().unwrap().body(), b"after");
            assert!(matches!(client.read_frame(), Err(WireError::Io(_))));
        }
    }

    #[tokio::test]
    async fn a_relay_that_closes_without_a_greeting_is_a_refusal() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        assert!(RawClient::handshake(ours).await.is_none());
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(theirs);
        assert!(matches!(
            BlockingClient::handshake(ours),
            Err(WireError::ClosedBeforeGreeting { received: 0 })
        ));
    }
}
