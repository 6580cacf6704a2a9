//! Backpressure and budgets: clients writing to an agent that stopped
//! reading, and floods of maximal frames toward a client that never reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use relay_codec::{FRAME_HEADER_SIZE, Flags, Frame, MAX_FRAME_SIZE};
use relay_server::RelayConfig;
use relay_test_support::{HANG_GUARD, RawClient, eventually, sink};

use super::{MIB, SERIAL, Test, kill_responder, mib, ping_until, soak_size, vm};
use crate::support::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_writing_to_an_agent_that_stopped_reading_wait_and_lose_nothing() -> Test {
    let _serial = SERIAL.lock().await;
    let ring = 1 << 16;
    let clients = 4;
    let frames_per_client = soak_size("RELAY_SOAK_BACKPRESSURE_FRAMES", 512, 2048);
    let body_len = 32 * 1024;
    let attempted = clients * frames_per_client * (body_len + 9);
    let harness = Harness::start_with_ring(ring, |c| c, sink()).await;
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

/// Memory margin over a budget: the frame the agent reader is assembling,
/// its staging buffer, the pinger, and allocator slack.
const RSS_MARGIN: usize = 16 * MIB;

/// A relay over a 1 MiB ring with a sleeper that never reads and a pinger
/// that keeps pinging, ready for a flood of maximal frames.
struct Flood {
    harness: Harness,
    sleeper: RawClient,
    /// A maximal frame for the sleeper.
    big: Frame,
    rss_before: usize,
    ping_stop: Arc<AtomicBool>,
    pings: tokio::task::JoinHandle<(usize, RawClient)>,
}

impl Flood {
    /// The relay configured by `config`; `fill` is the big frame's body byte.
    async fn start(config: impl FnOnce(RelayConfig) -> RelayConfig, fill: u8) -> Flood {
        let harness = Harness::start_with_ring(1 << 20, config, kill_responder()).await;
        let sleeper = harness.client().await;
        let pinger = harness.client().await;
        let body = vec![fill; MAX_FRAME_SIZE - FRAME_HEADER_SIZE];
        let big = Frame::new(sleeper.ids.first(), Flags::NONE, &body).unwrap();
        let rss_before = vm("VmRSS:");
        let ping_stop = Arc::new(AtomicBool::new(false));
        let pings = tokio::spawn(ping_until(pinger, ping_stop.clone(), 20));
        Flood {
            harness,
            sleeper,
            big,
            rss_before,
            ping_stop,
            pings,
        }
    }

    /// Once the sleeper is cut off: stops the pinger and returns its round
    /// trips and how far the peak RSS grew over the start.
    async fn finish(&mut self) -> (usize, usize) {
        self.ping_stop.store(true, Ordering::Relaxed);
        let (pings, _pinger) = tokio::time::timeout(HANG_GUARD, &mut self.pings)
            .await
            .unwrap()
            .unwrap();
        assert!(self.sleeper.closed().await);
        (pings, vm("VmHWM:").saturating_sub(self.rss_before))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_flood_of_4_mib_frames_to_a_non_reader_is_cut_at_its_budget_within_memory()
-> Test {
    let _serial = SERIAL.lock().await;
    let client_budget = 32 * MIB;
    let total_budget = 64 * MIB;
    let mut flood = Flood::start(
        |c| {
            c.with_client_queue_budget(client_budget)
                .with_total_queue_budget(total_budget)
        },
        0xab,
    )
    .await;
    let harness = &flood.harness;
    let rss_before = flood.rss_before;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    harness.agent.source(&flood.big, usize::MAX, &stop);

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
    let (pings, hwm_growth) = flood.finish().await;

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
    let after = flood.harness.relay.stats();
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
    let mut flood = Flood::start(
        |c| {
            c.with_client_queue_budget(client_budget)
                .with_total_queue_budget(2 * client_budget)
                .with_stall_timeout(stall)
        },
        0xcd,
    )
    .await;
    let harness = &flood.harness;
    let never = Arc::new(AtomicBool::new(false));
    harness.agent.source(&flood.big, burst, &never);
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
    let (pings, hwm_growth) = flood.finish().await;

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
