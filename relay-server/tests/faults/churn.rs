//! Clients and agents that die mid-frame or mid-handshake, one after the
//! other or while others are served.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use relay_codec::{FRAME_HEADER_SIZE, Flags, Frame, FrameError, MAX_FRAME_SIZE};
use relay_server::RelayError;
use relay_test_support::{HANG_GUARD, RawClient, eventually, partial_frame, sink};
use tokio::net::UnixStream;

use super::{
    MIB, SERIAL, Test, fd_count, idle, is_kill, kill_responder, mib, ping_until, soak_size, vm,
};
use crate::support::Harness;

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
async fn connect_retrying(path: &Path) -> (RawClient, u64) {
    let mut refused = 0;
    let start = Instant::now();
    loop {
        let stream = connect(path).await;
        if let Some(client) = RawClient::handshake(stream).await {
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
    client.send_raw(&partial_frame(id, 1000, 100)).await;
    drop(client);
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
    let cut = partial_frame(id + 1, MAX_FRAME_SIZE, 2 * MIB);
    victim.send_raw(&cut).await;
    drop(victim);
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
    let Harness { relay, agent, dir } = Harness::start(|c| c, sink()).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(RawClient::connect(&dir.path().join("agent.sock")).await);
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
        !dir.path().join("agent.sock").exists(),
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
