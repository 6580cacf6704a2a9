//! The raw baseline: with the relay stopped, the host speaks the protocol
//! to the guest agent itself on QEMU's chardev socket, in the same VM and
//! boot as the relay path. The same echoes through `cat` and the same
//! stdout stream as the relay's steps, so the report can say what the
//! relay costs in a real VM.

use std::path::Path;
use std::time::Instant;

use bytes::BytesMut;
use relay_client::ExecRequest;
use relay_codec::payload::Data;
use relay_codec::{Frame, FrameHeader, Message, WIRE_HEADER_SIZE};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::exec::{ECHO_ROUNDS, echo_line};
use super::guest::within_step_guard;
use super::report::Report;
use super::transfer::{BIG_FILE, STDOUT_BYTES};
use crate::error::VmError;

const STEP: &str = "raw baseline";

/// Bytes of the host's read buffer.
const READ_BUFFER: usize = 256 * 1024;

/// The one session of the baseline: with no relay, every id is the host's.
const ID: u32 = 1;

/// The host on the chardev socket with no relay between it and the agent.
struct Direct<'a> {
    /// Read through a buffer, so a stream of small frames costs the host
    /// no more reads than the relay's own buffered reader makes.
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    path: &'a Path,
}

impl<'a> Direct<'a> {
    /// Connects and waits for the agent's `core.ready` (it greets every
    /// host that connects). Its flow-control offer goes unanswered, so the
    /// agent speaks the first generation's protocol, as to a 0.4 relay.
    async fn connect(path: &'a Path) -> Result<Direct<'a>, VmError> {
        let stream = UnixStream::connect(path).await.map_err(VmError::io(path))?;
        let (read, writer) = stream.into_split();
        let reader = BufReader::with_capacity(READ_BUFFER, read);
        let mut direct = Direct {
            reader,
            writer,
            path,
        };
        while !matches!(direct.message().await?, (_, Message::Ready(_))) {}
        Ok(direct)
    }

    /// The next frame from the agent, decoded.
    async fn message(&mut self) -> Result<(u32, Message), VmError> {
        let mut header = [0u8; WIRE_HEADER_SIZE];
        self.reader
            .read_exact(&mut header)
            .await
            .map_err(VmError::io(self.path))?;
        let (_, wire_len) = FrameHeader::parse(&header)
            .map_err(|e| VmError::check(STEP, format!("a bad frame header: {e}")))?;
        let mut wire = BytesMut::zeroed(wire_len);
        wire[..WIRE_HEADER_SIZE].copy_from_slice(&header);
        self.reader
            .read_exact(&mut wire[WIRE_HEADER_SIZE..])
            .await
            .map_err(VmError::io(self.path))?;
        let frame = Frame::from_wire(wire.freeze())
            .map_err(|e| VmError::check(STEP, format!("a bad frame: {e}")))?;
        let message = Message::from_frame(&frame)
            .map_err(|e| VmError::check(STEP, format!("a bad message: {e}")))?;
        Ok((frame.id(), message))
    }

    /// The next message of the baseline's session.
    async fn next(&mut self) -> Result<Message, VmError> {
        loop {
            if let (ID, message) = self.message().await? {
                return Ok(message);
            }
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), VmError> {
        let frame = message
            .to_frame(ID)
            .map_err(|e| VmError::check(STEP, format!("cannot encode: {e}")))?;
        self.writer
            .write_all(frame.as_wire())
            .await
            .map_err(VmError::io(self.path))
    }

    /// Asks for `cmd ARGS` (its `core.exec.started` is read with the rest
    /// of its messages, as the client does on the relay path).
    async fn exec(&mut self, cmd: &str, args: &[&str]) -> Result<(), VmError> {
        let request = ExecRequest::new(cmd, args.iter().copied());
        self.send(Message::ExecRequest(request)).await
    }

    /// Reads the session's stdout until its exit: the bytes and the code.
    async fn stdout_to_exit(&mut self) -> Result<(usize, i32), VmError> {
        let mut bytes = 0;
        loop {
            match self.next().await? {
                Message::ExecStdout(Data { data }) => bytes += data.len(),
                Message::ExecExited(exit) => return Ok((bytes, exit.code)),
                _ => {}
            }
        }
    }
}

/// Echoes through `cat` and the stdout stream of [`BIG_FILE`], straight to
/// the agent on `chardev` (no relay may be connected to it).
pub(super) async fn baseline(chardev: &Path, report: &mut Report) -> Result<(), VmError> {
    within_step_guard(STEP, "the raw baseline", async {
        let mut direct = Direct::connect(chardev).await?;

        let start = Instant::now();
        direct.exec("cat", &[]).await?;
        for round in 0..ECHO_ROUNDS {
            let line = echo_line(round);
            direct
                .send(Message::ExecStdin(Data {
                    data: line.clone().into_bytes(),
                }))
                .await?;
            let mut got = Vec::new();
            while got.len() < line.len() {
                if let Message::ExecStdout(Data { data }) = direct.next().await? {
                    got.extend_from_slice(&data);
                }
            }
            if got != line.as_bytes() {
                return Err(VmError::check(
                    STEP,
                    format!(
                        "echo {round} came back as {:?}",
                        String::from_utf8_lossy(&got)
                    ),
                ));
            }
        }
        report.raw_echo_rtt = start.elapsed() / ECHO_ROUNDS;
        direct
            .send(Message::ExecStdin(Data { data: Vec::new() }))
            .await?;
        direct.stdout_to_exit().await?;

        let start = Instant::now();
        direct.exec("cat", &[BIG_FILE]).await?;
        let (bytes, code) = direct.stdout_to_exit().await?;
        report.raw_stdout_time = start.elapsed();
        if code != 0 || bytes != STDOUT_BYTES {
            return Err(VmError::check(
                STEP,
                format!("`cat {BIG_FILE}` gave {bytes} bytes and exit code {code}"),
            ));
        }
        Ok(())
    })
    .await
}
