//! The relay's side of a greeting, for tests of clients and of relays'
//! peers: the bytes a relay writes on accept, and a fake relay that writes
//! them, then reads the client's frames and answers only when told to.

use bytes::BytesMut;
use futures_util::StreamExt;
use relay_codec::{Frame, FrameCodec, Handshake, Message};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

use crate::guard;

/// What a relay writes to a client it admits: the id prefix, then `ready`.
pub fn greeting(handshake: Handshake, ready: &Frame) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    handshake.encode(ready, &mut bytes);
    bytes.to_vec()
}

/// A relay played by the test: it greets, then reads the client's frames
/// and writes what the test tells it to.
#[derive(Debug)]
pub struct FakeRelay {
    frames: FramedRead<OwnedReadHalf, FrameCodec>,
    write: OwnedWriteHalf,
}

impl FakeRelay {
    /// Greets the client on `stream` with `handshake` and `ready`.
    pub async fn greet(stream: UnixStream, handshake: Handshake, ready: &Frame) -> FakeRelay {
        let (read, mut write) = stream.into_split();
        write
            .write_all(&greeting(handshake, ready))
            .await
            .expect("writing the greeting");
        FakeRelay {
            frames: FramedRead::new(read, FrameCodec::new()),
            write,
        }
    }

    /// The next frame the client sent; panics at the end of the stream, on
    /// a malformed frame or after the hang guard.
    pub async fn next_frame(&mut self) -> Frame {
        guard("a frame from the client", self.frames.next())
            .await
            .expect("a frame, not the end of the stream")
            .expect("a well-formed frame")
    }

    /// Writes a frame to the client.
    pub async fn send(&mut self, frame: &Frame) {
        self.write
            .write_all(frame.as_wire())
            .await
            .expect("writing to the client");
    }

    /// Writes `message` on `id` to the client.
    pub async fn send_message(&mut self, id: u32, message: &Message) {
        let frame = message.to_frame(id).expect("a message that fits a frame");
        self.send(&frame).await;
    }
}

#[cfg(test)]
mod tests {
    use relay_codec::{Flags, IdRange};

    use super::*;
    use crate::{RawClient, ready_frame};

    #[tokio::test]
    async fn a_raw_client_is_greeted_by_a_fake_relay_and_they_exchange_frames() {
        let range = IdRange::new(8, 15).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut relay =
            FakeRelay::greet(theirs, Handshake::Bounds { range }, &ready_frame(4)).await;
        let mut client = RawClient::handshake(ours).await.unwrap();
        assert_eq!((client.ids, client.ready.clone()), (range, ready_frame(4)));
        client.frame(8, Flags::SESSION_START, b"request").await;
        assert_eq!(relay.next_frame().await.body(), b"request");
        relay.send_message(8, &Message::Shutdown).await;
        assert_eq!(client.next().await.unwrap().flags(), Flags::SHUTDOWN);
        drop(relay);
        assert!(client.closed().await);
    }
}
