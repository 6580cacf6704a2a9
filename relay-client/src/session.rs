//! The low-level session handle: receive a session's frames, send frames on its id.

use std::sync::Arc;

use relay_codec::{Flags, Frame, Message, MessageType, data_frame};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::client::Conn;
use crate::error::{ClientError, Disconnect};
use crate::sessions::Registration;

/// One session: the frames the agent sends on its id, and a way to send
/// more frames on it. Made by [`Client::open`](crate::Client::open).
///
/// Split it with [`Session::split`] to receive in one task and send from
/// another. Dropping the handle does not end the session on the agent's
/// side: its id stays in flight, and its frames are discarded, until its
/// TERMINAL frame arrives.
#[derive(Debug)]
pub struct Session {
    sender: SessionSender,
    receiver: SessionReceiver,
}

/// The sending half of a [`Session`]. Clones send on the same session.
#[derive(Debug, Clone)]
pub struct SessionSender {
    conn: Arc<Conn>,
    id: u32,
    generation: u64,
}

/// The receiving half of a [`Session`].
#[derive(Debug)]
pub struct SessionReceiver {
    conn: Arc<Conn>,
    id: u32,
    frames: mpsc::Receiver<Frame>,
    finished: bool,
}

impl Session {
    pub(crate) fn new(conn: Arc<Conn>, registration: Registration) -> Session {
        let Registration {
            id,
            generation,
            frames,
        } = registration;
        Session {
            sender: SessionSender {
                conn: Arc::clone(&conn),
                id,
                generation,
            },
            receiver: SessionReceiver {
                conn,
                id,
                frames,
                finished: false,
            },
        }
    }

    /// The session's correlation id.
    pub fn id(&self) -> u32 {
        self.sender.id
    }

    /// See [`SessionReceiver::next_frame`].
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        self.receiver.next_frame().await
    }

    /// See [`SessionReceiver::next_message`].
    pub async fn next_message(&mut self) -> Result<Option<Message>, ClientError> {
        self.receiver.next_message().await
    }

    /// See [`SessionSender::send`].
    pub async fn send(&self, message: &Message) -> Result<(), ClientError> {
        self.sender.send(message).await
    }

    /// See [`SessionSender::send_data`].
    pub async fn send_data(
        &self,
        message_type: MessageType,
        data: &[u8],
    ) -> Result<(), ClientError> {
        self.sender.send_data(message_type, data).await
    }

    /// Whether the session's TERMINAL frame has been received.
    pub fn is_finished(&self) -> bool {
        self.receiver.finished
    }

    /// The sending half (cloned).
    pub fn sender(&self) -> SessionSender {
        self.sender.clone()
    }

    /// Splits the handle into its two halves.
    pub fn split(self) -> (SessionSender, SessionReceiver) {
        (self.sender, self.receiver)
    }

    pub(crate) fn receiver_mut(&mut self) -> &mut SessionReceiver {
        &mut self.receiver
    }
}

impl SessionSender {
    /// The session's correlation id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends `message` on the session's id, with its type's default flags.
    ///
    /// Fails with [`ClientError::SessionClosed`] once the session's
    /// TERMINAL frame has arrived (its id may already serve a newer
    /// session) and with [`ClientError::Disconnected`] once the connection
    /// is gone. Waits while the socket does not take bytes (backpressure).
    ///
    /// Dropping the future midway never corrupts the stream, but the frame
    /// may still go out (with the next frame any session sends).
    pub async fn send(&self, message: &Message) -> Result<(), ClientError> {
        let frame = message
            .to_frame(self.id)
            .map_err(|source| ClientError::Encode {
                id: self.id,
                source,
            })?;
        self.send_frame(frame).await
    }

    /// Sends a data-carrying message (`core.exec.stdin`, `core.fs.data`)
    /// straight from a slice, copying it once into the frame.
    pub async fn send_data(
        &self,
        message_type: MessageType,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let frame =
            data_frame(message_type, self.id, data).map_err(|source| ClientError::Encode {
                id: self.id,
                source,
            })?;
        self.send_frame(frame).await
    }

    async fn send_frame(&self, frame: Frame) -> Result<(), ClientError> {
        self.conn
            .send(frame, Some((self.id, self.generation)))
            .await
    }
}

impl SessionReceiver {
    /// The session's correlation id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next frame the agent sent on this session, or `None` after the
    /// TERMINAL frame has been returned.
    ///
    /// Frames already received are returned before a disconnection is
    /// reported as [`ClientError::Disconnected`]. Cancel-safe.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        if self.finished {
            return Ok(None);
        }
        match self.frames.recv().await {
            Some(frame) => Ok(Some(self.accept(frame))),
            None => Err(self.disconnected()),
        }
    }

    /// The next frame decoded as a message, or `None` after the TERMINAL
    /// frame. A frame that does not decode is [`ClientError::Decode`]; the
    /// session goes on.
    pub async fn next_message(&mut self) -> Result<Option<Message>, ClientError> {
        let Some(frame) = self.next_frame().await? else {
            return Ok(None);
        };
        Message::from_frame(&frame)
            .map(Some)
            .map_err(|source| ClientError::Decode {
                id: self.id,
                source,
            })
    }

    /// Whether the session's TERMINAL frame has been received.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// A frame already received, without waiting.
    pub(crate) fn try_next_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        if self.finished {
            return Ok(None);
        }
        match self.frames.try_recv() {
            Ok(frame) => Ok(Some(self.accept(frame))),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(self.disconnected()),
        }
    }

    fn accept(&mut self, frame: Frame) -> Frame {
        if frame.flags().contains(Flags::TERMINAL) {
            self.finished = true;
        }
        frame
    }

    fn disconnected(&self) -> ClientError {
        // The router closes a session's channel before its TERMINAL frame
        // only when the connection ends, and it records why first.
        let reason = self.conn.sessions.closed().unwrap_or(Disconnect::Eof);
        ClientError::Disconnected(reason)
    }
}
