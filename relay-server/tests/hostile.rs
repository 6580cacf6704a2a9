//! A hostile guest cannot flood the relay's log, and an agent restart
//! (`core.ready` again) ends the sessions that died with the old agent
//! instead of leaving their clients waiting for ever. One test per file
//! here: it installs the process-wide log subscriber.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use relay_codec::{Flags, Frame};
use relay_test_support::{echo, ready_frame};
use support::Harness;

/// A log sink that only counts the bytes written to it.
#[derive(Clone)]
struct Counted(Arc<AtomicUsize>);

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(buf.len(), Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_storm_ends_open_sessions_spares_idle_clients_and_logs_a_few_lines()
-> Result<(), Box<dyn std::error::Error>> {
    let logged = Arc::new(AtomicUsize::new(0));
    let sink = Counted(Arc::clone(&logged));
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .init();

    let harness = Harness::start(|c| c, echo()).await;
    let mut busy = harness.client().await;
    let mut idle = harness.client().await;
    busy.frame(busy.ids.first(), Flags::SESSION_START, b"request")
        .await;
    assert_eq!(busy.next().await.unwrap().body(), b"request");
    let before = logged.load(Ordering::Relaxed);

    const STORM: u64 = 100_000;
    let sender = harness.agent.sender();
    let storm = std::thread::spawn(move || {
        for n in 0..STORM {
            sender.send(ready_frame(n + 10).into_wire()).unwrap();
        }
    });
    storm.join().unwrap();
    let stats = harness
        .wait_stats("every ready seen", |s| s.ready_replaced == STORM)
        .await;
    assert!(
        busy.closed().await,
        "the client whose session died is closed"
    );
    assert_eq!(stats.agent_restart_disconnects, 1);
    assert_eq!(stats.sessions_open, 0);

    // The idle client is still served, and new clients get the latest ready.
    let frame = Frame::new(idle.ids.first(), Flags::NONE, b"still here")?;
    idle.send(frame.clone()).await;
    assert_eq!(idle.next().await.unwrap(), frame);
    let late = harness.client().await;
    assert_eq!(late.ready, ready_frame(STORM + 9));

    let storm_log = logged.load(Ordering::Relaxed) - before;
    assert!(
        storm_log < 4096,
        "{storm_log} bytes of log for {STORM} re-sent ready frames"
    );
    Ok(())
}
