//! microsandbox's own 0.7 client library, over the bounds handshake, runs
//! execs through our relay and our agent: stdout, stderr, stdin, exit
//! codes and signals, with more than a hundred clients at once.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use microsandbox_agent_client::{AgentClient, AgentWireFormat, TypedMessage};
use microsandbox_protocol_07::exec::{
    ExecExited, ExecRequest, ExecSignal, ExecStderr, ExecStdin, ExecStdout,
};
use microsandbox_protocol_07::message::MessageType;
use relay_test_support::HANG_GUARD;
use support::Serve;
use support::upstream::exec_request;

fn request(cmd: &str, args: &[&str]) -> ExecRequest {
    exec_request(cmd, args)
}

/// What one exec produced.
#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    code: i32,
}

async fn connect(serve: &Serve) -> AgentClient {
    let stream = tokio::net::UnixStream::connect(&serve.socket)
        .await
        .unwrap();
    let client = AgentClient::connect_stream(stream).await.unwrap();
    assert_eq!(
        client.ready().wire_format,
        AgentWireFormat::Current,
        "the bounds prologue"
    );
    client
}

/// Runs one exec, writing `stdin` and closing it, optionally signalling
/// the process once it has started.
async fn run(
    client: &AgentClient,
    exec: ExecRequest,
    stdin: &[u8],
    signal: Option<i32>,
) -> Outcome {
    let mut stream = client
        .stream(TypedMessage::new(MessageType::ExecRequest, &exec))
        .await
        .unwrap();
    if !stdin.is_empty() {
        let data = ExecStdin {
            data: stdin.to_vec(),
        };
        stream
            .send(TypedMessage::new(MessageType::ExecStdin, &data))
            .await
            .unwrap();
    }
    if signal.is_none() {
        let end = ExecStdin { data: Vec::new() };
        stream
            .send(TypedMessage::new(MessageType::ExecStdin, &end))
            .await
            .unwrap();
    }
    let mut outcome = Outcome::default();
    loop {
        let message = tokio::time::timeout(HANG_GUARD, stream.recv())
            .await
            .unwrap()
            .unwrap()
            .expect("a terminal message");
        let t = message.t.as_str();
        if t == MessageType::ExecStarted.as_str() {
            if let Some(signal) = signal {
                let signal = ExecSignal { signal };
                stream
                    .send(TypedMessage::new(MessageType::ExecSignal, &signal))
                    .await
                    .unwrap();
            }
        } else if t == MessageType::ExecStdout.as_str() {
            outcome
                .stdout
                .extend(message.payload::<ExecStdout>().unwrap().data);
        } else if t == MessageType::ExecStderr.as_str() {
            outcome
                .stderr
                .extend(message.payload::<ExecStderr>().unwrap().data);
        } else if t == MessageType::ExecExited.as_str() {
            outcome.code = message.payload::<ExecExited>().unwrap().code;
            return outcome;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_and_twenty_upstream_clients_run_execs_over_the_bounds_handshake() {
    let serve = Serve::start(&["--handshake", "bounds", "--slots", "128"]);
    let mut clients = Vec::new();
    for _ in 0..120 {
        clients.push(connect(&serve).await);
    }
    let mut runs = tokio::task::JoinSet::new();
    for (n, client) in clients.into_iter().enumerate() {
        runs.spawn(async move {
            let input = format!("client {n}\n");
            let exec = request("sh", &["-c", "cat; echo to-stderr >&2; exit 3"]);
            let outcome = run(&client, exec, input.as_bytes(), None).await;
            assert_eq!(outcome.stdout, input.as_bytes(), "client {n}");
            assert_eq!(outcome.stderr, b"to-stderr\n", "client {n}");
            assert_eq!(outcome.code, 3, "client {n}");
            client
        });
    }
    // Keep every client connected until all have run.
    let mut done = Vec::new();
    while let Some(joined) = runs.join_next().await {
        done.push(joined.unwrap());
    }
    let stats = serve.stats();
    assert_eq!(stats["clients_connected"], 120, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_client_signals_a_process_and_reads_its_exit_code() {
    let serve = Serve::start(&["--handshake", "bounds"]);
    let client = connect(&serve).await;
    let outcome = run(&client, request("sleep", &["1000"]), b"", Some(15)).await;
    assert_eq!(outcome.code, 128 + 15);
}
