//! Fault injection and soak tests: clients and agents that die mid-frame,
//! an agent that stops reading, a client that stops reading under a flood
//! of maximal frames, and a peer of another user. Each test checks that
//! nothing leaks (descriptors, sessions, memory), nothing is lost, and
//! nobody else is disturbed.
//!
//! Sizes are small by default so `cargo xtask ci` stays fast. `RELAY_SOAK=1`
//! selects the large sizes reported in the README; `RELAY_SOAK_CYCLES=N`
//! sets the connect/disconnect cycles alone. Each test prints its figures on
//! lines starting with `figure:` (run with `--no-capture` to see them).
//! There are no timing thresholds: time is only reported, and waits have a
//! generous hang guard.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "test code: a panic is the failure report, and figures are printed"
)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use relay_codec::payload::{ExecExited, ExecSignal};
use relay_codec::{FRAME_HEADER_SIZE, Flags, Frame, FrameError, MAX_FRAME_SIZE, Message};
use relay_server::{RelayConfig, RelayError, StatsSnapshot};
use support::{Behaviour, HANG_GUARD, Harness, TestClient, silent};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

type Test = Result<(), Box<dyn std::error::Error>>;

/// Tests in this file measure the whole process (descriptors, memory), so
/// they take turns even when a harness runs them as threads of one process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: usize = 1 << 20;

/// The size of a soak: `large` with `RELAY_SOAK=1`, else `default`;
/// `override_var` (when set to a number) wins over both.
fn soak_size(override_var: &str, default: usize, large: usize) -> usize {
    if let Some(n) = std::env::var(override_var)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if std::env::var("RELAY_SOAK").is_ok_and(|v| v == "1") {
        large
    } else {
        default
    }
}

/// Open descriptors of this process.
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A `Vm*` line of /proc/self/status, in bytes.
fn vm(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

/// Polls `f` until it returns `Some`, within the hang guard.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < HANG_GUARD, "never reached: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The relay holds no client, session, resting slot or queued byte.
fn idle(stats: &StatsSnapshot) -> bool {
    stats.clients_connected == 0
        && stats.sessions_open == 0
        && stats.slots_quarantined == 0
        && stats.queued_bytes == 0
}

/// An agent that answers a kill (`core.exec.signal` 9) with the session's
/// end (`core.exec.exited` 137), as a real agent does once the process dies,
/// and echoes frames whose body starts with "ping".
fn kill_responder() -> Behaviour {
    Box::new(|frame| {
        if frame.body().starts_with(b"ping") {
            return vec![frame.clone()];
        }
        match Message::from_frame(frame) {
            Ok(Message::ExecSignal(ExecSignal { signal: 9 })) => vec![
                Message::ExecExited(ExecExited { code: 137 })
                    .to_frame(frame.id())
                    .unwrap(),
            ],
            _ => Vec::new(),
        }
    })
}

fn is_kill(frame: &Frame) -> bool {
    Message::from_frame(frame) == Ok(Message::ExecSignal(ExecSignal { signal: 9 }))
}

/// The first bytes of a frame that announces `len` and carries `body_sent`
/// body bytes: a frame cut off in the middle.
fn partial_frame(id: u32, len: usize, body_sent: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + body_sent);
    bytes.extend_from_slice(&(len as u32).to_be_bytes());
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push(Flags::NONE.bits());
    bytes.resize(9 + body_sent, 0x5c);
    bytes
}

/// Connects, waiting while the listen backlog is full (a non-blocking
/// connect says `WouldBlock` then, when hang-ups arrive faster than the
/// relay accepts them).
async fn connect(path: &Path) -> UnixStream {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path).await {
            Ok(stream) => return stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(start.elapsed() < HANG_GUARD, "the backlog never drained");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// Connects and reads the greeting, retrying while every slot is taken
/// (a refusal is the relay's explicit answer to a full house). Returns the
/// client and how many refusals it took.
async fn connect_retrying(path: &Path) -> (TestClient, u64) {
    let mut refused = 0;
    let start = Instant::now();
    loop {
        let stream = connect(path).await;
        if let Some(client) = TestClient::handshake(stream).await {
            return (client, refused);
        }
        refused += 1;
        assert!(start.elapsed() < HANG_GUARD, "refused for too long");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One connect/disconnect cycle: with `mid_frame`, open a session, then
/// die in the middle of the next frame; without, hang up before reading
/// the greeting. Returns the session id opened (if any) and the refusals
/// seen.
async fn cycle(path: &Path, n: usize, mid_frame: bool) -> (Option<u32>, u64) {
    if !mid_frame {
        drop(connect(path).await);
        return (None, 0);
    }
    let (mut client, refused) = connect_retrying(path).await;
    let id = client.ids.first() + (n % 1000) as u32;
    client
        .frame(id, Flags::SESSION_START, b"core.exec.request")
        .await;
    let TestClient { rx, tx, .. } = client;
    let mut raw = tx.into_inner();
    raw.write_all(&partial_frame(id, 1000, 100)).await.unwrap();
    drop(raw);
    drop(rx);
    (Some(id), refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_disconnect_cycles_cut_mid_frame_or_mid_handshake_leak_nothing() -> Test {
    let _serial = SERIAL.lock().await;
    let cycles = soak_size("RELAY_SOAK_CYCLES", 1_000, 10_000);
    let workers = 4;
    let harness = Harness::start(|c| c, kill_responder()).await;
    let fds_before = fd_count();
    let rss_before = vm("VmRSS:");
    let started = Instant::now();

    let path = Arc::new(harness.socket());
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut sessions = Vec::new();
            let mut refused = 0;
            // Each worker alternates the two kinds of cycle.
            for (i, n) in (worker..cycles).step_by(workers).enumerate() {
                let (session, r) = cycle(&path, n, i % 2 == 0).await;
                sessions.extend(session);
                refused += r;
            }
            (sessions, refused)
        }));
    }
    let mut sessions = Vec::new();
    let mut retried = 0;
    for task in tasks {
        let (s, r) = tokio::time::timeout(HANG_GUARD, task).await??;
        sessions.extend(s);
        retried += r;
    }
    let cycled = started.elapsed();
    let mid_frame = sessions.len();
    let mid_handshake = cycles - mid_frame;

    // Every connection accepted (the last hang-ups may still wait in the
    // listen backlog), every client gone, every session killed and ended.
    let connections = cycles as u64 + retried;
    let stats = harness
        .wait_stats("every client gone and every session ended", |s| {
            s.clients_admitted + s.clients_refused == connections
                && idle(s)
                && s.kills_sent == mid_frame as u64
        })
        .await;
    let fds_peak_after = fd_count();
    let fds_after = eventually("descriptors back to the baseline", || {
        let now = fd_count();
        (now <= fds_before).then_some(now)
    })
    .await;
    let rss_after = vm("VmRSS:");

    assert_eq!(fds_after, fds_before, "no descriptor leaked");
    assert_eq!(stats.sessions_opened, mid_frame as u64);
    assert_eq!(
        stats.clients_malformed, mid_frame as u64,
        "each cut frame counted"
    );
    assert_eq!(stats.clients_rejected, 0);
    // The agent saw each session start and exactly one kill for it, and
    // never a partial frame (its decoder would have failed).
    let frames = harness.agent.received();
    let mut started_ids: Vec<u32> = frames
        .iter()
        .filter(|f| f.flags() == Flags::SESSION_START)
        .map(Frame::id)
        .collect();
    let mut killed_ids: Vec<u32> = frames
        .iter()
        .filter(|f| is_kill(f))
        .map(Frame::id)
        .collect();
    started_ids.sort_unstable();
    killed_ids.sort_unstable();
    sessions.sort_unstable();
    assert_eq!(started_ids, sessions);
    assert_eq!(killed_ids, sessions, "one kill per session, no more");
    assert_eq!(
        frames.len(),
        2 * mid_frame,
        "nothing else reached the agent"
    );

    // The relay still serves.
    let mut client = harness.client().await;
    let id = client.ids.first();
    client.frame(id, Flags::NONE, b"ping after the storm").await;
    assert_eq!(client.next().await.unwrap().body(), b"ping after the storm");

    println!(
        "figure: cycles {cycles} ({mid_frame} cut mid-frame, {mid_handshake} mid-handshake) in {:.1}s; \
         refused then retried {retried}, refused in all {}; fds {fds_before} before, {fds_peak_after} \
         when the relay went idle, {fds_after} after; sessions open {}, clients connected {}, \
         kills {}; VmRSS {:.1} MiB before, {:.1} MiB after",
        cycled.as_secs_f64(),
        stats.clients_refused,
        stats.sessions_open,
        stats.clients_connected,
        stats.kills_sent,
        mib(rss_before),
        mib(rss_after),
    );
    Ok(())
}

/// Sends pings on its own id until `stop`, then `tail` more; each must come
/// back intact and in order. Returns how many round trips it made, and the
/// client, still connected.
async fn ping_until(
    mut client: TestClient,
    stop: Arc<AtomicBool>,
    tail: usize,
) -> (usize, TestClient) {
    let id = client.ids.first() + 1;
    let mut n = 0;
    let mut after_stop = 0;
    while after_stop < tail {
        if stop.load(Ordering::Relaxed) {
            after_stop += 1;
        }
        let body = format!("ping {n}");
        client.frame(id, Flags::NONE, body.as_bytes()).await;
        let reply = client.next().await.expect("a reply");
        assert_eq!((reply.id(), reply.body()), (id, body.as_bytes()));
        n += 1;
    }
    (n, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_in_the_middle_of_a_4_mib_frame_disturbs_no_one() -> Test {
    let _serial = SERIAL.lock().await;
    let harness = Harness::start(|c| c, kill_responder()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut pingers = Vec::new();
    for _ in 0..3 {
        let client = harness.client().await;
        pingers.push(tokio::spawn(ping_until(client, stop.clone(), 50)));
    }

    let mut victim = harness.client().await;
    let id = victim.ids.first();
    let whole = Frame::new(
        id,
        Flags::NONE,
        &vec![0x11; MAX_FRAME_SIZE - FRAME_HEADER_SIZE],
    )?;
    victim.send(whole.clone()).await;
    let TestClient { rx, tx, .. } = victim;
    let mut raw = tx.into_inner();
    let cut = partial_frame(id + 1, MAX_FRAME_SIZE, 2 * MIB);
    raw.write_all(&cut).await?;
    drop(raw);
    drop(rx);
    let stats = harness
        .wait_stats("the victim disconnected as malformed", |s| {
            s.clients_malformed == 1
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let mut pings = 0;
    let mut still_here = Vec::new();
    for pinger in pingers {
        let (n, client) = tokio::time::timeout(HANG_GUARD, pinger).await??;
        pings += n;
        still_here.push(client);
    }

    let frames = harness.agent.received();
    let from_victim: Vec<&Frame> = frames.iter().filter(|f| victim_id(f, id)).collect();
    assert_eq!(
        from_victim.len(),
        1,
        "only the whole frame reached the agent"
    );
    assert_eq!(from_victim[0], &whole);
    assert!(
        frames
            .iter()
            .all(|f| f.id() == id || f.body().starts_with(b"ping")),
        "no partial or foreign frame reached the agent"
    );
    let after = harness.relay.stats();
    assert_eq!(
        after.clients_connected, 3,
        "the pingers are still connected"
    );
    assert_eq!(after.dropped, Default::default());
    println!(
        "figure: victim sent one whole 4 MiB frame, then {:.1} MiB of a second and died; \
         agent got the whole one only; 3 other clients made {pings} ping round trips around it; \
         malformed {}, pingers still connected {}",
        mib(cut.len()),
        stats.clients_malformed,
        after.clients_connected,
    );
    Ok(())
}

fn victim_id(frame: &Frame, first: u32) -> bool {
    frame.id() == first || frame.id() == first + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stream_closed_mid_frame_ends_the_relay_as_truncated_and_every_client_sees_eof()
-> Test {
    let _serial = SERIAL.lock().await;
    let Harness { relay, agent, dir } = Harness::start(|c| c, silent()).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(TestClient::connect(&dir.join("agent.sock")).await);
    }
    let first = clients[0].ids.first();
    agent.send(&Frame::new(first, Flags::NONE, b"whole")?);
    let cut = partial_frame(first, 1000, 100);
    agent.send_raw(cut.clone());
    let closed_at = Instant::now();
    agent.close();

    let mut waits = Vec::new();
    for (n, client) in clients.iter_mut().enumerate() {
        if n == 0 {
            assert_eq!(client.next().await.unwrap().body(), b"whole");
        }
        assert!(client.closed().await);
        waits.push(closed_at.elapsed());
    }
    let result = relay.join().await;
    let expected = FrameError::Truncated {
        have: cut.len(),
        need: 4 + 1000,
    };
    assert!(
        matches!(&result, Err(RelayError::AgentProtocol(e)) if *e == expected),
        "{result:?}"
    );
    assert!(
        !dir.join("agent.sock").exists(),
        "the socket file is removed"
    );
    let slowest = waits.iter().max().unwrap();
    println!(
        "figure: agent closed after {} of {} bytes of a frame: relay ended with {:?}; \
         all 4 clients saw EOF within {:.1} ms",
        cut.len(),
        4 + 1000,
        result.err(),
        slowest.as_secs_f64() * 1000.0,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_writing_to_an_agent_that_stopped_reading_wait_and_lose_nothing() -> Test {
    let _serial = SERIAL.lock().await;
    let ring = 1 << 16;
    let clients = 4;
    let frames_per_client = soak_size("RELAY_SOAK_BACKPRESSURE_FRAMES", 512, 2048);
    let body_len = 32 * 1024;
    let attempted = clients * frames_per_client * (body_len + 9);
    let harness = Harness::start_with_ring(ring, |c| c, silent()).await;
    harness.agent.pause_reading();
    let rss_before = vm("VmRSS:");

    let mut progress = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..clients {
        let client = harness.client().await;
        let done = Arc::new(AtomicUsize::new(0));
        progress.push(done.clone());
        writers.push(tokio::spawn(async move {
            let mut client = client;
            let id = client.ids.first();
            let mut body = vec![0u8; body_len];
            for seq in 0..frames_per_client {
                body[..8].copy_from_slice(&(seq as u64).to_be_bytes());
                body[8..16].copy_from_slice(&u64::from(id).to_be_bytes());
                client.frame(id, Flags::NONE, &body).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
            client
        }));
    }

    // The ring fills, then the writers stop getting anywhere.
    harness
        .wait_stats("the host-to-guest ring full", |s| {
            s.ring.is_some_and(|r| r.host_to_guest == r.capacity)
        })
        .await;
    let sent = || {
        progress
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    };
    let mut frozen = sent();
    let mut unchanged = 0;
    while unchanged < 10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = sent();
        unchanged = if now == frozen { unchanged + 1 } else { 0 };
        frozen = now;
    }
    let paused = harness.relay.stats();
    let rss_paused = vm("VmRSS:");
    for (writer, &done) in writers.iter().zip(&frozen) {
        assert!(!writer.is_finished(), "a writer is held back");
        assert!(done < frames_per_client);
    }
    // What the relay accepted fits in the ring, plus at most the one read
    // the agent had begun before it paused.
    assert!(
        paused.client_to_agent_bytes as usize <= 2 * ring,
        "{paused:?}"
    );
    let in_flight = frozen.iter().sum::<usize>() * (body_len + 9);
    let growth = rss_paused.saturating_sub(rss_before);
    assert!(
        growth < 16 * MIB,
        "memory stays bounded while {:.0} MiB wait: grew {:.1} MiB",
        mib(attempted),
        mib(growth)
    );

    let resumed = Instant::now();
    harness.agent.resume_reading();
    for writer in writers {
        tokio::time::timeout(HANG_GUARD, writer).await??;
    }
    let total = clients * frames_per_client;
    let frames = harness
        .agent
        .wait_for("every frame", |f| f.len() >= total)
        .await;
    let drained = resumed.elapsed();
    assert_eq!(frames.len(), total, "nothing duplicated");
    let mut next_seq = std::collections::HashMap::new();
    for frame in &frames {
        let body = frame.body();
        assert_eq!(body.len(), body_len);
        let seq = u64::from_be_bytes(body[..8].try_into()?);
        let owner = u64::from_be_bytes(body[8..16].try_into()?);
        assert_eq!(owner, u64::from(frame.id()), "frames never mix");
        let expected = next_seq.entry(frame.id()).or_insert(0u64);
        assert_eq!(seq, *expected, "in order, none missing");
        *expected += 1;
    }
    assert_eq!(next_seq.len(), clients);
    let stats = harness.relay.stats();
    assert_eq!(stats.client_to_agent_frames, total as u64);
    assert_eq!(stats.dropped, Default::default());
    println!(
        "figure: {clients} clients tried to send {:.0} MiB to a paused agent through a {} KiB ring: \
         writes stopped after {frozen:?} frames of 32 KiB ({:.2} MiB in flight, relay accepted {} bytes, \
         ring {}/{}); VmRSS grew {:.1} MiB; after resume all {total} frames arrived in order in {:.0} ms, \
         0 dropped",
        mib(attempted),
        ring / 1024,
        mib(in_flight),
        paused.client_to_agent_bytes,
        paused.ring.map_or(0, |r| r.host_to_guest),
        paused.ring.map_or(0, |r| r.capacity),
        mib(growth),
        drained.as_secs_f64() * 1000.0,
    );
    Ok(())
}

/// Sends the same frame from a thread until `stop` or `limit` frames,
/// without copying it (the test's own memory stays flat).
fn flood(harness: &Harness, frame: &Frame, stop: Arc<AtomicBool>, limit: usize) {
    let tx = harness.agent.sender();
    let wire = frame.clone().into_wire();
    std::thread::spawn(move || {
        for _ in 0..limit {
            if stop.load(Ordering::Relaxed) || tx.send(wire.clone()).is_err() {
                return;
            }
        }
    });
}

/// Memory margin over a budget: the frame the agent reader is assembling,
/// its staging buffer, the pinger, and allocator slack.
const RSS_MARGIN: usize = 16 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_flood_of_4_mib_frames_to_a_non_reader_is_cut_at_its_budget_within_memory()
-> Test {
    let _serial = SERIAL.lock().await;
    let client_budget = 32 * MIB;
    let total_budget = 64 * MIB;
    let harness = Harness::start_with_ring(
        1 << 20,
        |c| {
            c.with_client_queue_budget(client_budget)
                .with_total_queue_budget(total_budget)
        },
        kill_responder(),
    )
    .await;
    let mut sleeper = harness.client().await;
    let pinger = harness.client().await;
    let big = Frame::new(
        sleeper.ids.first(),
        Flags::NONE,
        &vec![0xab; MAX_FRAME_SIZE - FRAME_HEADER_SIZE],
    )?;
    let rss_before = vm("VmRSS:");
    let stop = Arc::new(AtomicBool::new(false));
    let ping_stop = Arc::new(AtomicBool::new(false));
    let pings = tokio::spawn(ping_until(pinger, ping_stop.clone(), 20));
    let started = Instant::now();
    flood(&harness, &big, stop.clone(), usize::MAX);

    let mut peak_queued = 0;
    let mut peak_rss = 0;
    let stats = eventually("the sleeper cut off", || {
        let stats = harness.relay.stats();
        peak_queued = peak_queued.max(stats.queued_bytes);
        peak_rss = peak_rss.max(vm("VmRSS:"));
        (stats.slow_consumers() > 0).then_some(stats)
    })
    .await;
    let cut_after = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    ping_stop.store(true, Ordering::Relaxed);
    let (pings, _pinger) = tokio::time::timeout(HANG_GUARD, pings).await??;
    assert!(sleeper.closed().await);
    let hwm_growth = vm("VmHWM:").saturating_sub(rss_before);

    assert_eq!(stats.slow_over_budget, 1, "cut for its budget: {stats:?}");
    assert_eq!((stats.slow_stalled, stats.slow_total_budget), (0, 0));
    assert!(peak_queued <= client_budget);
    // Outside the queue: the frame being assembled and the one refused.
    let limit = client_budget + 2 * MAX_FRAME_SIZE + RSS_MARGIN;
    assert!(
        hwm_growth <= limit,
        "peak RSS grew {:.1} MiB; the {} MiB budget allows {:.0} MiB",
        mib(hwm_growth),
        client_budget / MIB,
        mib(limit)
    );
    let after = harness.relay.stats();
    assert!(after.dropped.slow_consumer >= 1);
    println!(
        "figure: endless 4 MiB flood to a non-reader: cut for its budget (over_budget {}, stalled {}) \
         after {:.0} ms and {} frames from the agent; peak queued {:.1} MiB (client budget {} MiB, \
         total {} MiB); peak RSS growth {:.1} MiB (VmHWM - VmRSS before), sampled peak {:.1} MiB, \
         limit {:.0} MiB (budget + 2 frames + {} MiB); frames dropped as slow consumer {}; \
         pinger made {pings} round trips",
        stats.slow_over_budget,
        stats.slow_stalled,
        cut_after.as_secs_f64() * 1000.0,
        stats.agent_frames,
        mib(peak_queued),
        client_budget / MIB,
        total_budget / MIB,
        mib(hwm_growth),
        mib(peak_rss.saturating_sub(rss_before)),
        mib(limit),
        RSS_MARGIN / MIB,
        after.dropped.slow_consumer,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_4_mib_frames_below_budget_to_a_non_reader_is_cut_at_its_stall_timeout() -> Test
{
    let _serial = SERIAL.lock().await;
    let client_budget = 64 * MIB;
    let stall = Duration::from_millis(500);
    let burst = 8;
    let harness = Harness::start_with_ring(
        1 << 20,
        |c| {
            c.with_client_queue_budget(client_budget)
                .with_total_queue_budget(2 * client_budget)
                .with_stall_timeout(stall)
        },
        kill_responder(),
    )
    .await;
    let mut sleeper = harness.client().await;
    let pinger = harness.client().await;
    let big = Frame::new(
        sleeper.ids.first(),
        Flags::NONE,
        &vec![0xcd; MAX_FRAME_SIZE - FRAME_HEADER_SIZE],
    )?;
    let rss_before = vm("VmRSS:");
    let ping_stop = Arc::new(AtomicBool::new(false));
    let pings = tokio::spawn(ping_until(pinger, ping_stop.clone(), 20));
    flood(&harness, &big, Arc::new(AtomicBool::new(false)), burst);
    let burst_bytes = burst * (MAX_FRAME_SIZE + 4);
    let queued = harness
        .wait_stats("the whole burst queued", |s| {
            s.queued_bytes >= burst_bytes || s.slow_consumers() > 0
        })
        .await;
    let burst_in = Instant::now();
    let stats = harness
        .wait_stats("the sleeper cut off", |s| s.slow_consumers() > 0)
        .await;
    let cut_after = burst_in.elapsed();
    ping_stop.store(true, Ordering::Relaxed);
    let (pings, _pinger) = tokio::time::timeout(HANG_GUARD, pings).await??;
    assert!(sleeper.closed().await);
    let hwm_growth = vm("VmHWM:").saturating_sub(rss_before);

    assert_eq!(stats.slow_stalled, 1, "cut for stalling: {stats:?}");
    assert_eq!((stats.slow_over_budget, stats.slow_total_budget), (0, 0));
    assert!(
        hwm_growth <= burst_bytes + RSS_MARGIN,
        "peak RSS grew {:.1} MiB for a {:.0} MiB burst",
        mib(hwm_growth),
        mib(burst_bytes)
    );
    println!(
        "figure: burst of {burst} x 4 MiB ({:.0} MiB, budget {} MiB) to a non-reader: cut for stalling \
         (stalled {}, over_budget {}) {:.0} ms after the burst was queued (stall timeout {} ms); \
         {:.1} MiB queued then; peak RSS growth {:.1} MiB; pinger made {pings} round trips",
        mib(burst_bytes),
        client_budget / MIB,
        stats.slow_stalled,
        stats.slow_over_budget,
        cut_after.as_secs_f64() * 1000.0,
        stall.as_millis(),
        mib(queued.queued_bytes),
        mib(hwm_growth),
    );
    Ok(())
}

/// Set in a re-executed copy of this test binary: connect to this socket
/// as a client, report what happened on stdout, and exit.
const PEER_CHILD_SOCKET: &str = "RELAY_FAULTS_PEER_SOCKET";
const PEER_RESULT: &str = "peer-result:";
/// The uid and gid the child runs as (`nobody` / `nogroup`).
const OTHER_ID: u32 = 65_534;

/// The child's side: connect, read until a greeting or EOF, report.
fn peer_child(socket: &str) {
    use std::io::Read;
    let outcome = match std::os::unix::net::UnixStream::connect(socket) {
        Err(error) => format!("connect failed: {error}"),
        Ok(mut stream) => {
            stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match relay_codec::Handshake::decode(&buf) {
                    Ok(Some(_)) => break "greeting".to_owned(),
                    Ok(None) => {}
                    Err(error) => break format!("bad greeting: {error}"),
                }
                match stream.read(&mut chunk) {
                    Ok(0) => break "closed before a greeting".to_owned(),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(error) => break format!("read failed: {error}"),
                }
            }
        }
    };
    println!("{PEER_RESULT} {outcome}");
}

/// Runs this test binary again as `uid`, playing [`peer_child`] against
/// `socket`; returns its report.
fn connect_as(uid: u32, socket: &Path, test_name: &str) -> String {
    use std::os::unix::process::CommandExt;
    let run = |exe: &Path| {
        std::process::Command::new(exe)
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(PEER_CHILD_SOCKET, socket)
            .current_dir("/")
            .gid(uid)
            .uid(uid)
            .output()
    };
    let exe = std::env::current_exe().unwrap();
    let output = match run(&exe) {
        // The build directory may be private (a checkout under /root):
        // run a copy that the other user can read.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let dir = support::temp_dir().join("exe");
            std::fs::create_dir_all(&dir).unwrap();
            for path in [dir.parent().unwrap(), &dir] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            let copy = dir.join("faults");
            std::fs::copy(&exe, &copy).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            let output = run(&copy);
            let _ = std::fs::remove_dir_all(&dir);
            output
        }
        other => other,
    }
    .unwrap_or_else(|e| panic!("cannot run {} as uid {uid}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        // libtest may print "test NAME ... " on the same line first.
        .find_map(|l| l.split_once(PEER_RESULT))
        .map(|(_, result)| result.trim().to_owned())
        .unwrap_or_else(|| {
            panic!(
                "the child reported nothing ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_uid_is_refused_when_the_uid_check_is_on() -> Test {
    if let Ok(socket) = std::env::var(PEER_CHILD_SOCKET) {
        peer_child(&socket);
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        println!("skipped: running a client under another uid needs root");
        return Ok(());
    }
    // A socket anyone may open, so the uid check is what refuses.
    let harness = Harness::start(
        |c| {
            let dir = c.socket_path().parent().unwrap().join("open");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            RelayConfig::new(dir.join("agent.sock")).with_socket_mode(0o666)
        },
        silent(),
    )
    .await;
    let socket = harness.relay.socket_path().to_owned();
    let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let parent = socket.parent().unwrap();
    std::fs::set_permissions(
        parent.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )?;

    let child = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || {
            connect_as(
                OTHER_ID,
                &socket,
                "a_peer_with_another_uid_is_refused_when_the_uid_check_is_on",
            )
        }
    });
    let outcome = tokio::time::timeout(HANG_GUARD, child).await??;
    assert_eq!(outcome, "closed before a greeting");
    let stats = harness
        .wait_stats("the refusal counted", |s| s.peers_refused == 1)
        .await;
    assert_eq!(stats.clients_admitted, 0, "the stranger never took a slot");
    let _owner = TestClient::connect(&socket).await;
    println!(
        "figure: a client of uid {OTHER_ID} on a 0666 socket: {outcome:?}; peers_refused {}, \
         admitted {}; the relay's own uid then connected",
        stats.peers_refused, stats.clients_admitted
    );
    Ok(())
}
