//! Test double: a fake relay that greets the client and then plays a
//! scripted agent on the same socket (relay-test-support's greeting and
//! scripted agent, with the [`agent::FakeAgent`] script), serving exec from
//! a few canned commands and fs from memory, and reporting what it saw.

mod agent;
mod memfs;
mod microsandbox;

use relay_client::{Client, ClientConfig, ClientError, ExecRequest, ExecSession, Output};
use relay_codec::{Flags, Frame, Handshake, Message};
use relay_test_support::{READY, ScriptedAgent, greeting};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// How the fake agent encodes the frames it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// With relay-codec.
    Ours,
    /// With microsandbox-protocol 0.4.3 (ready and exec messages).
    Microsandbox,
}

/// What the fake agent saw, returned when its connection ends.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Ids of SESSION_START frames, in arrival order.
    pub(crate) sessions: Vec<u32>,
    /// Ids of SESSION_START frames for a session the agent still had open.
    pub(crate) reused_in_flight: Vec<u32>,
    /// Client frames whose id lies outside the client's range (id 0
    /// `core.shutdown` excepted).
    pub(crate) out_of_range: Vec<u32>,
    /// `core.shutdown` frames: (id, flags).
    pub(crate) shutdowns: Vec<(u32, Flags)>,
    /// Sizes of the `core.fs.data` chunks uploaded, the final empty one included.
    pub(crate) upload_chunks: Vec<usize>,
    /// Frames that did not decode.
    pub(crate) undecodable: usize,
}

/// A client connected to a fresh fake relay greeting with `handshake`.
pub(crate) async fn client(handshake: Handshake) -> (Client, JoinHandle<Report>) {
    client_with(handshake, Encoding::Ours, ClientConfig::default()).await
}

/// [`client`] with an encoding and a client configuration.
pub(crate) async fn client_with(
    handshake: Handshake,
    encoding: Encoding,
    config: ClientConfig,
) -> (Client, JoinHandle<Report>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fake = spawn_fake(theirs, handshake, encoding);
    let client = Client::from_stream_with(ours, config).await.unwrap();
    (client, fake)
}

/// Serves one connection: greets, then plays the agent until the client
/// closes, shuts down, or a script closes the connection.
pub(crate) fn spawn_fake(
    stream: UnixStream,
    handshake: Handshake,
    encoding: Encoding,
) -> JoinHandle<Report> {
    let ids = handshake.client_ids().unwrap();
    let script = agent::FakeAgent::new(ids, encoding);
    let fake = ScriptedAgent::on_unix(stream.into_std().unwrap(), script);
    let ready = encode(encoding, 0, &Message::Ready(READY));
    fake.send_raw(greeting(handshake, &ready));
    tokio::spawn(async move { fake.ended().await.report })
}

/// Runs `cmd ARGS` with no stdin to its end.
pub(crate) async fn run(client: &Client, cmd: &str, args: &[&str]) -> Output {
    try_run(client, cmd, args)
        .await
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"))
}

/// Starts `cmd ARGS` in a session of its own.
pub(crate) async fn start(client: &Client, cmd: &str, args: &[&str]) -> ExecSession {
    client
        .exec(ExecRequest::new(cmd, args.iter().copied()))
        .await
        .unwrap_or_else(|e| panic!("starting {cmd} {args:?}: {e}"))
}

/// [`run`], for a command that may fail.
pub(crate) async fn try_run(
    client: &Client,
    cmd: &str,
    args: &[&str],
) -> Result<Output, ClientError> {
    client
        .exec_output(ExecRequest::new(cmd, args.iter().copied()), None)
        .await
}

/// Encodes a message the way the chosen peer would.
fn encode(encoding: Encoding, id: u32, message: &Message) -> Frame {
    if encoding == Encoding::Microsandbox
        && let Some(theirs) = microsandbox::encode(id, message)
    {
        return theirs;
    }
    message.to_frame(id).unwrap()
}
