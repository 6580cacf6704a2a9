//! Our agent behind a relay that knows nothing of our flow-control
//! extension: a minimal pass-through written to the seed design (0.4.3:
//! one greeting, frames routed by id, the offer in `core.ready` never
//! answered, no credit ever returned), with a client that decodes every
//! frame it receives with microsandbox-protocol 0.4.3, which refuses any
//! message type it does not know.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use microsandbox_protocol::codec as seed_codec;
use relay_agent::{Agent, AgentConfig};
use relay_codec::payload::ExecRequest;
use relay_codec::{
    Frame, FrameCodec, FrameHeader, Handshake, Message, MessageType, WIRE_HEADER_SIZE, data_frame,
};
use relay_test_support::{greeting, guard};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite};

/// The pass-through relay of the seed design between one client and the
/// agent. Returns the client's end of the connection.
fn plain_relay(agent: DuplexStream) -> DuplexStream {
    let (client_side, relay_side) = tokio::io::duplex(256 * 1024);
    let (agent_read, mut agent_write) = tokio::io::split(agent);
    let (mut client_read, mut client_write) = tokio::io::split(relay_side);
    // Agent to client: wait for core.ready, greet with a legacy offset of
    // 0 and the ready frame, then forward every frame of the client's range.
    tokio::spawn(async move {
        let mut frames = FramedRead::new(agent_read, FrameCodec::new());
        let ready = frames.next().await.unwrap().unwrap();
        let greeting = greeting(Handshake::Legacy { offset: 0 }, &ready);
        client_write.write_all(&greeting).await.unwrap();
        while let Some(Ok(frame)) = frames.next().await {
            // Id 0 is the relay's own business: a seed relay drops it.
            if frame.id() != 0 && client_write.write_all(frame.as_wire()).await.is_err() {
                return;
            }
        }
    });
    // Client to agent: bytes as they come.
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut agent_write).await;
    });
    client_side
}

/// A client that reads with the seed design's decoder.
struct SeedClient {
    reader: ReadHalf<DuplexStream>,
    buf: BytesMut,
    writer: FramedWrite<WriteHalf<DuplexStream>, FrameCodec>,
}

impl SeedClient {
    async fn connect() -> SeedClient {
        let (agent_side, relay_side) = tokio::io::duplex(256 * 1024);
        let (agent_read, agent_write) = tokio::io::split(agent_side);
        // The defaults: flow control offered.
        let agent = Agent::new(AgentConfig::default());
        assert!(agent.config().flow_window.is_some());
        tokio::spawn(agent.serve(agent_read, agent_write));
        let (mut reader, writer) = tokio::io::split(plain_relay(relay_side));
        let mut buf = BytesMut::new();
        while buf.len() < 4 {
            assert!(reader.read_buf(&mut buf).await.unwrap() > 0);
        }
        buf.advance(4);
        let mut client = SeedClient {
            reader,
            buf,
            writer: FramedWrite::new(writer, FrameCodec::new()),
        };
        let ready = client.next().await;
        assert_eq!(
            Message::from_frame(&ready).unwrap().message_type(),
            MessageType::Ready
        );
        client
    }

    /// The next frame, after the seed decoder accepted it.
    async fn next(&mut self) -> Frame {
        loop {
            if let Some(header) = self.buf.first_chunk::<WIRE_HEADER_SIZE>() {
                let (_, wire_len) = FrameHeader::parse(header).unwrap();
                if self.buf.len() >= wire_len {
                    let wire = self.buf.split_to(wire_len).freeze();
                    let mut copy = wire.to_vec();
                    let seed = seed_codec::try_decode_from_buf(&mut copy);
                    assert!(
                        matches!(seed, Ok(Some(_))),
                        "the seed client rejects a frame: {seed:?}"
                    );
                    return Frame::from_wire(wire).unwrap();
                }
            }
            let read = guard("a frame", self.reader.read_buf(&mut self.buf)).await;
            assert!(read.unwrap() > 0, "the relay closed the connection");
        }
    }

    async fn send(&mut self, frame: Frame) {
        self.writer.send(frame).await.unwrap();
    }

    async fn exec(&mut self, id: u32, cmd: &str, args: &[&str]) {
        let request = Message::ExecRequest(ExecRequest::new(cmd, args.iter().copied()));
        self.send(request.to_frame(id).unwrap()).await;
    }

    async fn stdin(&mut self, id: u32, data: &[u8]) {
        self.send(data_frame(MessageType::ExecStdin, id, data).unwrap())
            .await;
    }

    /// Reads session `id` until it exits: stdout bytes and the exit code.
    async fn wait(&mut self, id: u32) -> (Vec<u8>, i32) {
        let mut stdout = Vec::new();
        loop {
            let frame = self.next().await;
            assert_eq!(frame.id(), id);
            match Message::from_frame(&frame).unwrap() {
                Message::ExecStdout(data) => stdout.extend_from_slice(&data.data),
                Message::ExecExited(exited) => return (stdout, exited.code),
                _ => {}
            }
        }
    }
}

const HUNDRED_MB: usize = 100_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_of_stdout_arrive_without_credit() {
    let mut client = SeedClient::connect().await;
    let size = HUNDRED_MB.to_string();
    client.exec(1, "head", &["-c", &size, "/dev/zero"]).await;
    client.stdin(1, b"").await;
    let mut received = 0usize;
    let code = loop {
        match Message::from_frame(&client.next().await).unwrap() {
            Message::ExecStdout(data) => received += data.data.len(),
            Message::ExecExited(exited) => break exited.code,
            _ => {}
        }
    };
    assert_eq!((received, code), (HUNDRED_MB, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_of_stdin_arrive_and_no_credit_reaches_the_client() {
    let mut client = SeedClient::connect().await;
    client.exec(1, "wc", &["-c"]).await;
    let chunk = vec![b'z'; 1 << 20];
    let mut sent = 0;
    while sent < HUNDRED_MB {
        let n = chunk.len().min(HUNDRED_MB - sent);
        client.stdin(1, &chunk[..n]).await;
        sent += n;
    }
    client.stdin(1, b"").await;
    // Every frame on the way passed the seed decoder (in `next`).
    let (stdout, code) = client.wait(1).await;
    assert_eq!(code, 0);
    assert_eq!(
        String::from_utf8(stdout).unwrap().trim(),
        HUNDRED_MB.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_round_trips_through_cat() {
    let mut client = SeedClient::connect().await;
    client.exec(1, "cat", &[]).await;
    let started = client.next().await;
    assert_eq!(
        Message::from_frame(&started).unwrap().message_type(),
        MessageType::ExecStarted
    );
    for round in 0..10_000u32 {
        let ping = [(round % 251) as u8; 64];
        client.stdin(1, &ping).await;
        let mut echoed = Vec::new();
        while echoed.len() < ping.len() {
            match Message::from_frame(&client.next().await).unwrap() {
                Message::ExecStdout(data) => echoed.extend_from_slice(&data.data),
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(echoed, ping);
    }
    client.stdin(1, b"").await;
    assert_eq!(client.wait(1).await.1, 0);
}
