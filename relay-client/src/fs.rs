//! Filesystem operations on the guest: metadata, listings, streamed reads and writes.

use bytes::Bytes;
use relay_codec::payload::{FsEntry, FsOp, FsRequest, FsResponse, FsResponseData};
use relay_codec::{FS_CHUNK_SIZE, Message, MessageType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::deadline::{Deadline, within};
use crate::error::{Awaited, ClientError, FsOpKind};
use crate::session::{Session, SessionReceiver};

/// The agent's filesystem, reached through a [`Client`] (see
/// [`Client::fs`]). Cheap to clone.
///
/// Every operation is one session. A response with `ok: false` becomes
/// [`ClientError::Remote`] carrying the agent's error text.
///
/// With a request timeout (see [`Client::with_request_timeout`]), every
/// operation but [`Fs::read`] must be over in time, uploads and downloads
/// included, or fails with [`ClientError::Timeout`]; [`Fs::read`] is
/// bounded until its request is written. The protocol cannot cancel an fs
/// operation, so the agent may still carry it out; its id stays in flight
/// until the agent's answer arrives.
#[derive(Debug, Clone)]
pub struct Fs {
    client: Client,
}

/// A file being read: yields its chunks (each at most 3 MiB) in order.
/// Made by [`Fs::read`].
#[derive(Debug)]
pub struct FsReader {
    session: Session,
    path: String,
    done: bool,
}

impl Fs {
    pub(crate) fn new(client: Client) -> Fs {
        Fs { client }
    }

    /// Metadata of `path`.
    pub async fn stat(&self, path: impl Into<String>) -> Result<FsEntry, ClientError> {
        let op = FsOp::Stat { path: path.into() };
        match self.simple(&op).await? {
            Some(FsResponseData::Stat(entry)) => Ok(entry),
            _ => Err(missing_data(&op)),
        }
    }

    /// The entries of directory `path`.
    pub async fn list(&self, path: impl Into<String>) -> Result<Vec<FsEntry>, ClientError> {
        let op = FsOp::List { path: path.into() };
        match self.simple(&op).await? {
            Some(FsResponseData::List(entries)) => Ok(entries),
            _ => Err(missing_data(&op)),
        }
    }

    /// Creates directory `path` and its parents.
    pub async fn mkdir(&self, path: impl Into<String>) -> Result<(), ClientError> {
        self.simple(&FsOp::Mkdir { path: path.into() }).await?;
        Ok(())
    }

    /// Removes file `path`.
    pub async fn remove(&self, path: impl Into<String>) -> Result<(), ClientError> {
        self.simple(&FsOp::Remove { path: path.into() }).await?;
        Ok(())
    }

    /// Removes directory `path` and everything under it.
    pub async fn remove_dir(&self, path: impl Into<String>) -> Result<(), ClientError> {
        self.simple(&FsOp::RemoveDir { path: path.into() }).await?;
        Ok(())
    }

    /// Copies file `src` to `dst`.
    pub async fn copy(
        &self,
        src: impl Into<String>,
        dst: impl Into<String>,
    ) -> Result<(), ClientError> {
        let op = FsOp::Copy {
            src: src.into(),
            dst: dst.into(),
        };
        self.simple(&op).await?;
        Ok(())
    }

    /// Renames (moves) `src` to `dst`.
    pub async fn rename(
        &self,
        src: impl Into<String>,
        dst: impl Into<String>,
    ) -> Result<(), ClientError> {
        let op = FsOp::Rename {
            src: src.into(),
            dst: dst.into(),
        };
        self.simple(&op).await?;
        Ok(())
    }

    /// Starts reading file `path`; see [`FsReader::next_chunk`].
    pub async fn read(&self, path: impl Into<String>) -> Result<FsReader, ClientError> {
        self.read_within(path.into(), self.client.deadline()).await
    }

    async fn read_within(
        &self,
        path: String,
        deadline: Option<Deadline>,
    ) -> Result<FsReader, ClientError> {
        let session = self
            .open(FsOp::Read { path: path.clone() }, deadline)
            .await?;
        Ok(FsReader {
            session,
            path,
            done: false,
        })
    }

    /// Reads file `path` into `dst`, then flushes `dst`. Returns the bytes
    /// written.
    pub async fn read_to<W>(&self, path: impl Into<String>, mut dst: W) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        let deadline = self.client.deadline();
        let mut reader = self.read_within(path.into(), deadline).await?;
        let mut total = 0u64;
        while let Some(chunk) = within(deadline, Awaited::Reply, reader.next_chunk()).await? {
            within(deadline, Awaited::Local, async {
                dst.write_all(&chunk).await.map_err(ClientError::LocalIo)
            })
            .await?;
            total += chunk.len() as u64;
        }
        within(deadline, Awaited::Local, async {
            dst.flush().await.map_err(ClientError::LocalIo)
        })
        .await?;
        Ok(total)
    }

    /// Reads the whole of file `path` into memory.
    pub async fn read_all(&self, path: impl Into<String>) -> Result<Vec<u8>, ClientError> {
        let deadline = self.client.deadline();
        let mut reader = self.read_within(path.into(), deadline).await?;
        let mut data = Vec::new();
        while let Some(chunk) = within(deadline, Awaited::Reply, reader.next_chunk()).await? {
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }

    /// Writes `data` to file `path` (created with permission bits `mode`
    /// when given).
    pub async fn write(
        &self,
        path: impl Into<String>,
        mode: Option<u32>,
        data: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        self.write_from(path, mode, data.as_ref()).await?;
        Ok(())
    }

    /// Uploads everything `source` yields to file `path`, in `core.fs.data`
    /// chunks of at most 3 MiB, then an empty chunk, and waits for the
    /// agent's answer. Returns the bytes uploaded.
    ///
    /// If the agent answers before the upload is over (it could not open
    /// the file, say), the upload stops and its answer is the result.
    ///
    /// If reading `source` fails, or the request timeout passes before the
    /// last chunk is sent, the error is returned and the upload is left
    /// open on the agent's side: the protocol has no way to abort an
    /// upload, and ending it with an empty chunk would commit a truncated
    /// file. Its id stays in flight until the connection closes.
    pub async fn write_from<R>(
        &self,
        path: impl Into<String>,
        mode: Option<u32>,
        mut source: R,
    ) -> Result<u64, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        let op = FsOp::Write {
            path: path.into(),
            mode,
        };
        let deadline = self.client.deadline();
        let mut session = self.open(op.clone(), deadline).await?;
        let mut buf = Vec::new();
        let mut total = 0u64;
        loop {
            buf.clear();
            let n = within(deadline, Awaited::Local, async {
                (&mut source)
                    .take(FS_CHUNK_SIZE as u64)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(ClientError::LocalIo)
            })
            .await?;
            if let Some(frame) = session.receiver_mut().try_next_frame()? {
                // The agent answered early: the upload is over either way.
                let message = decode(session.id(), &frame)?;
                return response_result(&op, session.id(), message).map(|_| total);
            }
            // The last, empty chunk ends the upload.
            let sent = within(
                deadline,
                Awaited::Request,
                session.send_data(MessageType::FsData, &buf[..n]),
            )
            .await;
            match sent {
                Ok(()) => {}
                // The agent's answer has arrived meanwhile: report it.
                Err(ClientError::SessionClosed { .. }) => break,
                Err(error) => return Err(error),
            }
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        within(
            deadline,
            Awaited::Reply,
            finish(&op, session.receiver_mut()),
        )
        .await?;
        Ok(total)
    }

    async fn open(&self, op: FsOp, deadline: Option<Deadline>) -> Result<Session, ClientError> {
        let request = Message::FsRequest(FsRequest { op });
        self.client.open_within(&request, deadline).await
    }

    /// An operation whose only answer is the response.
    async fn simple(&self, op: &FsOp) -> Result<Option<FsResponseData>, ClientError> {
        let deadline = self.client.deadline();
        let mut session = self.open(op.clone(), deadline).await?;
        within(deadline, Awaited::Reply, finish(op, session.receiver_mut())).await
    }
}

impl FsReader {
    /// The session's correlation id.
    pub fn id(&self) -> u32 {
        self.session.id()
    }

    /// The next chunk of the file, or `None` once the agent has confirmed
    /// the whole file was sent. A failure reported by the agent (at the
    /// start or midway) is [`ClientError::Remote`].
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let id = self.session.id();
        let message = self.session.next_message().await?;
        match message {
            Some(Message::FsData(data)) => Ok(Some(Bytes::from(data.data))),
            Some(Message::FsResponse(response)) => {
                self.done = true;
                let op = FsOp::Read {
                    path: std::mem::take(&mut self.path),
                };
                check_response(&op, response).map(|_| None)
            }
            Some(other) => Err(ClientError::UnexpectedMessage {
                id,
                message_type: other.message_type(),
            }),
            None => Err(ClientError::SessionEnded { id }),
        }
    }
}

/// Waits for the response that ends an fs session.
async fn finish(
    op: &FsOp,
    receiver: &mut SessionReceiver,
) -> Result<Option<FsResponseData>, ClientError> {
    let id = receiver.id();
    let message = receiver.next_message().await?;
    response_result(op, id, message)
}

fn response_result(
    op: &FsOp,
    id: u32,
    message: Option<Message>,
) -> Result<Option<FsResponseData>, ClientError> {
    match message {
        Some(Message::FsResponse(response)) => check_response(op, response),
        Some(other) => Err(ClientError::UnexpectedMessage {
            id,
            message_type: other.message_type(),
        }),
        None => Err(ClientError::SessionEnded { id }),
    }
}

fn decode(id: u32, frame: &relay_codec::Frame) -> Result<Option<Message>, ClientError> {
    Message::from_frame(frame)
        .map(Some)
        .map_err(|source| ClientError::Decode { id, source })
}

fn check_response(op: &FsOp, response: FsResponse) -> Result<Option<FsResponseData>, ClientError> {
    if response.ok {
        return Ok(response.data);
    }
    let (op, path) = FsOpKind::of(op);
    Err(ClientError::Remote {
        op,
        path: path.to_owned(),
        message: response
            .error
            .unwrap_or_else(|| "the agent gave no reason".to_owned()),
    })
}

fn missing_data(op: &FsOp) -> ClientError {
    let (op, path) = FsOpKind::of(op);
    ClientError::MissingResponseData {
        op,
        path: path.to_owned(),
    }
}
