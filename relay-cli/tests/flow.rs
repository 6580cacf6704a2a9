//! Per-session flow control end to end: the real relay and the reference
//! agent. A slow reader throttles only its own process, a process that does
//! not read its stdin backpressures only its own client, and clients never
//! see a credit frame. Without the agent's offer, nothing changes.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use relay_client::{ClientError, ExecEvent, ExecRequest};
use relay_test_support::{Digest, HANG_GUARD, Sha256, hex};
use support::upstream::exec_request;
use support::{BIN, Serve};

/// Transfer size; `RELAY_FLOW_BYTES` overrides it for longer runs.
fn transfer_bytes() -> u64 {
    std::env::var("RELAY_FLOW_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000)
}

/// Round trips through a second client while a transfer runs, counted by
/// the quarter of the transfer each fell in.
struct Pinger {
    done: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<[u32; 4]>,
}

impl Pinger {
    /// Starts pinging `serve` alongside a transfer of `total` bytes.
    async fn start(serve: &Serve, total: u64) -> Pinger {
        let client = serve.client().await;
        let done = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let (stop, at) = (done.clone(), progress.clone());
        let task = tokio::spawn(async move {
            let mut quarters = [0u32; 4];
            while !stop.load(Ordering::Relaxed) {
                let output = client
                    .exec_output(ExecRequest::new("echo", ["ping"]), None)
                    .await
                    .unwrap();
                assert_eq!(output.stdout, b"ping\n");
                let quarter = at.load(Ordering::Relaxed) * 4 / total.max(1);
                quarters[quarter.min(3) as usize] += 1;
            }
            quarters
        });
        Pinger {
            done,
            progress,
            task,
        }
    }

    /// Records how many bytes of the transfer have gone.
    fn progress(&self, bytes: u64) {
        self.progress.store(bytes, Ordering::Relaxed);
    }

    /// Stops pinging; the round trips made in each quarter.
    async fn finish(self) -> [u32; 4] {
        self.done.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_byte_without_being_cut_off_while_others_keep_service() {
    let serve = Serve::start(&[]);
    let total = transfer_bytes();
    let reader = serve.client().await;
    let pinger = Pinger::start(&serve, total).await;

    let script = format!("head -c {total} /dev/urandom | tee /dev/stderr | sha256sum >&2");
    let session = reader
        .exec(ExecRequest::new("sh", ["-c", &script]))
        .await
        .unwrap();
    let (_input, mut events) = session.split();
    // Read at about 20 MB/s: far slower than the process writes.
    let pace = Duration::from_nanos(50);
    let start = Instant::now();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut trailer = Vec::new();
    let mut peak_queued = 0u64;
    let mut next_sample = received;
    let code = loop {
        match tokio::time::timeout(HANG_GUARD, events.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(ExecEvent::Stderr(data)) => {
                // The checksum line comes last, after the data on stderr.
                let take = (total - received).min(data.len() as u64) as usize;
                hasher.update(&data[..take]);
                trailer.extend_from_slice(&data[take..]);
                received += take as u64;
                pinger.progress(received);
                tokio::time::sleep_until((start + pace * received as u32).into()).await;
                if received >= next_sample {
                    next_sample += total / 8;
                    let stats = serve.stats();
                    peak_queued = peak_queued.max(stats["queued_bytes"].as_u64().unwrap());
                }
            }
            Some(ExecEvent::Exited(status)) => break status.code,
            Some(_) => {}
            None => panic!("the session ended without an exit"),
        }
    };
    let quarters = pinger.finish().await;
    assert_eq!(code, 0);
    assert_eq!(received, total);
    let expected = String::from_utf8(trailer).unwrap();
    assert!(
        expected.starts_with(&hex(&hasher.finalize())),
        "checksum line {expected:?}"
    );
    assert!(
        quarters.iter().all(|&n| n > 0),
        "pings in every quarter: {quarters:?}"
    );
    let stats = serve.stats();
    assert_eq!(stats["slow_over_budget"], 0);
    assert_eq!(stats["slow_stalled"], 0);
    let window = stats["flow"]["window"].as_u64().unwrap();
    assert!(stats["flow"]["credits_sent"].as_u64().unwrap() > 0);
    // The relay holds about a window per session, not the transfer.
    assert!(
        peak_queued <= 2 * window + (1 << 20),
        "peak queued {peak_queued}"
    );
    assert!(
        serve.peak_rss() < 64 << 20,
        "relay peak RSS {}",
        serve.peak_rss()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_does_not_read_its_stdin_backpressures_only_its_own_client() {
    let serve = Serve::start(&[]);
    let total = transfer_bytes();
    let writer = serve.client().await;
    let pinger = Pinger::start(&serve, total).await;

    // The process starts reading only after a while.
    let session = writer
        .exec(ExecRequest::new("sh", ["-c", "sleep 2; sha256sum"]))
        .await
        .unwrap();
    let (input, events) = session.split();
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    let mut n = 0u8;
    while sent < total {
        let len = (total - sent).min(chunk.len() as u64) as usize;
        chunk.iter_mut().for_each(|b| {
            *b = n;
            n = n.wrapping_add(1);
        });
        hasher.update(&chunk[..len]);
        tokio::time::timeout(HANG_GUARD, input.write_stdin(&chunk[..len]))
            .await
            .unwrap()
            .unwrap();
        sent += len as u64;
        pinger.progress(sent);
    }
    input.close_stdin().await.unwrap();
    let output = tokio::time::timeout(HANG_GUARD, events.output())
        .await
        .unwrap()
        .unwrap();
    let quarters = pinger.finish().await;
    assert_eq!(output.code, 0);
    let line = String::from_utf8(output.stdout).unwrap();
    assert!(line.starts_with(&hex(&hasher.finalize())), "{line:?}");
    assert!(
        quarters.iter().all(|&n| n > 0),
        "pings in every quarter: {quarters:?}"
    );
    let stats = serve.stats();
    assert_eq!(stats["slow_over_budget"], 0);
    assert!(
        stats["flow"]["client_waits"].as_u64().unwrap() > 0,
        "the writer was held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_agents_offer_a_slow_reader_is_cut_off_as_before() {
    let console = format!("stdio-of:exec {BIN} agent --no-flow");
    let serve = Serve::start(&["--console", &console, "--client-queue", "1048576"]);
    let client = serve.client().await;
    let mut session = client
        .exec(ExecRequest::new("head", ["-c", "50000000", "/dev/zero"]))
        .await
        .unwrap();
    // Do not read until the relay has given up on us.
    let start = Instant::now();
    while serve.stats()["slow_over_budget"] == 0 {
        assert!(start.elapsed() < HANG_GUARD, "never cut off");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = loop {
        match session.next_event().await {
            Ok(Some(_)) => {}
            other => break other,
        }
    };
    assert!(matches!(end, Err(ClientError::Disconnected(_))), "{end:?}");
    assert!(serve.stats()["flow"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_4_3_client_sees_no_credit_frame_even_when_credit_flows() {
    use microsandbox_protocol_04::codec::{read_message, write_message};
    use microsandbox_protocol_04::exec::{
        ExecExited, ExecRequest as TheirExec, ExecStdin, ExecStdout,
    };
    use microsandbox_protocol_04::message::{Message, MessageType};
    use tokio::io::AsyncReadExt;

    let serve = Serve::start(&[]);
    let stream = tokio::net::UnixStream::connect(&serve.socket)
        .await
        .unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let offset = rd.read_u32().await.unwrap();
    let ready = read_message(&mut rd).await.unwrap();
    assert_eq!(ready.t, MessageType::Ready, "the extended ready decodes");
    let id = offset + 1;
    let request: TheirExec = exec_request("cat", &[]);
    let total = 8 << 20;
    let writer = tokio::spawn(async move {
        write_message(
            &mut wr,
            &Message::with_payload(MessageType::ExecRequest, id, &request).unwrap(),
        )
        .await
        .unwrap();
        for _ in 0..total / (64 << 10) {
            let stdin = ExecStdin {
                data: vec![b'x'; 64 << 10],
            };
            write_message(
                &mut wr,
                &Message::with_payload(MessageType::ExecStdin, id, &stdin).unwrap(),
            )
            .await
            .unwrap();
        }
        let end = ExecStdin { data: Vec::new() };
        write_message(
            &mut wr,
            &Message::with_payload(MessageType::ExecStdin, id, &end).unwrap(),
        )
        .await
        .unwrap();
        wr
    });
    let mut echoed = 0usize;
    let code = loop {
        // Their decoder refuses unknown types: a credit frame would fail here.
        let message = tokio::time::timeout(HANG_GUARD, read_message(&mut rd))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.id, id);
        match message.t {
            MessageType::ExecStdout => {
                echoed += message.payload::<ExecStdout>().unwrap().data.len()
            }
            MessageType::ExecExited => break message.payload::<ExecExited>().unwrap().code,
            _ => {}
        }
    };
    let _wr = writer.await.unwrap();
    assert_eq!((code, echoed), (0, total));
    let stats = serve.stats();
    assert!(stats["flow"]["credits_sent"].as_u64().unwrap() > 0);
    assert!(stats["flow"]["credits_received"].as_u64().unwrap() > 0);
}
