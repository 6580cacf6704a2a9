//! The core against hostile peers, in virtual time: each test plays what a
//! guest that became root (or a misbehaving client) could send, at full
//! scale, and checks the bound or the outcome the relay promises.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use relay_codec::{Flags, FrameHeader};
use relay_router::{
    Action, AgentVerdict, ClientId, ClientVerdict, CutReason, DropReason, ReadyOutcome,
    RefuseReason, Router, RouterConfig, SlotLayout,
};

/// The server's per-frame overhead, as relay-server charges it.
const OVERHEAD: usize = 128;
/// The smallest frame there is: the 9-byte header.
const MINIMAL: usize = 9;

fn header(id: u32, flags: Flags) -> FrameHeader {
    FrameHeader { id, flags }
}

fn default_budgets() -> RouterConfig {
    RouterConfig {
        frame_overhead: OVERHEAD,
        ..RouterConfig::default()
    }
}

fn ready(router: &mut Router, offer: Option<u32>) {
    assert!(matches!(
        router.agent_ready(offer),
        ReadyOutcome::First { .. }
    ));
}

fn open(router: &mut Router, client: ClientId, id: u32) {
    assert_eq!(
        router.client_frame(client, header(id, Flags::SESSION_START), 64),
        ClientVerdict::Forward { shutdown: false }
    );
}

fn actions(router: &mut Router) -> Vec<Action> {
    std::iter::from_fn(|| router.poll_action()).collect()
}

/// `frames` minimal frames from the guest toward `clients` clients, one
/// reading everything as it arrives and the rest reading nothing. Returns
/// the most bytes charged at once and the clients cut off.
fn flood(clients: usize, frames: usize) -> (usize, Vec<ClientId>, usize) {
    let config = default_budgets();
    let bound = config.total_queue_budget;
    let mut router = Router::new(config).unwrap();
    ready(&mut router, None);
    let now = Instant::now();
    let admitted: Vec<_> = (0..clients).map(|_| router.connect(now).unwrap()).collect();
    let reader = admitted[0].client;
    let mut peak = 0;
    let mut cut = Vec::new();
    let mut read = 0;
    for n in 0..frames {
        let target = &admitted[n % clients];
        match router.agent_frame(header(target.ids.first(), Flags::NONE), MINIMAL, now) {
            AgentVerdict::Deliver { client, .. } if client == reader => {
                router.frames_left(client, MINIMAL + OVERHEAD, &[]);
                read += 1;
            }
            AgentVerdict::Deliver { .. } | AgentVerdict::Drop(DropReason::CutOff) => {}
            other => panic!("{other:?}"),
        }
        for action in actions(&mut router) {
            if let Action::CutOff { client, .. } = action {
                cut.push(client);
            }
        }
        peak = peak.max(router.queued_bytes());
        assert!(router.queued_bytes() <= bound);
    }
    (peak, cut, read)
}

#[test]
fn twenty_million_minimal_frames_toward_one_slow_reader_stay_within_its_budget() {
    let (peak, cut, read) = flood(2, 20_000_000);
    let per_client = RouterConfig::default().client_queue_budget;
    assert!(peak <= per_client, "peak {peak} > {per_client}");
    assert_eq!(cut.len(), 1, "the reader that does not read goes");
    assert_eq!(
        read, 10_000_000,
        "the one that reads gets every frame of its own"
    );
}

#[test]
fn twenty_million_minimal_frames_toward_fifteen_slow_readers_stay_within_the_total_budget() {
    let (peak, cut, read) = flood(16, 20_000_000);
    assert!(peak <= RouterConfig::default().total_queue_budget);
    assert_eq!(cut.len(), 15, "each reader that does not read goes, once");
    assert_eq!(read, 20_000_000 / 16);
}

#[test]
fn a_window_of_one_and_a_guest_that_never_reads_its_credit_cost_one_entry() {
    let mut router = Router::new(default_budgets()).unwrap();
    ready(&mut router, Some(1));
    assert_eq!(
        router.flow_window(),
        Some(64 * 1024),
        "the offer is clamped"
    );
    let now = Instant::now();
    let a = router.connect(now).unwrap();
    let id = a.ids.first();
    open(&mut router, a.client, id);
    for _ in 0..5_000_000 {
        let AgentVerdict::Deliver { client, credited } =
            router.agent_frame(header(id, Flags::NONE), 42, now)
        else {
            panic!("delivered");
        };
        assert!(credited);
        router.frames_left(client, 42 + OVERHEAD, &[(header(id, Flags::NONE), 42)]);
        assert!(router.control_backlog() <= 1);
    }
    let control = router.take_control();
    let [(credited, bytes)] = control.credits[..] else {
        panic!("one entry: {:?}", control.credits);
    };
    let sent = 5_000_000 * 42;
    assert_eq!(credited, id);
    assert!(
        sent - bytes < 32 * 1024,
        "all but less than half a window is due"
    );
    assert!(router.take_control().is_empty());
}

#[test]
fn a_departed_clients_sessions_earn_no_credit() {
    let mut router = Router::new(default_budgets()).unwrap();
    ready(&mut router, Some(64 * 1024));
    let now = Instant::now();
    let a = router.connect(now).unwrap();
    let id = a.ids.first();
    open(&mut router, a.client, id);
    router.disconnect(a.client);
    for _ in 0..1_000_000 {
        assert_eq!(
            router.agent_frame(header(id, Flags::NONE), 42, now),
            AgentVerdict::Drop(DropReason::Tombstoned)
        );
    }
    assert_eq!(router.take_control().credits, vec![]);
    assert_eq!(router.counters().agent_frames_dropped_tombstoned, 1_000_000);
}

#[test]
fn a_ready_storm_ends_the_sessions_once_and_holds_no_state() {
    let mut router = Router::new(default_budgets()).unwrap();
    ready(&mut router, Some(1 << 20));
    let now = Instant::now();
    let a = router.connect(now).unwrap();
    open(&mut router, a.client, a.ids.first());
    assert_eq!(
        router.agent_ready(Some(1 << 20)),
        ReadyOutcome::Restarted { sessions: 1 }
    );
    let first = actions(&mut router);
    assert!(first.contains(&Action::CutOff {
        client: a.client,
        reason: CutReason::AgentRestarted { sessions: 1 }
    }));
    for _ in 0..1_000_000 {
        assert_eq!(
            router.agent_ready(Some(1)),
            ReadyOutcome::Restarted { sessions: 0 }
        );
        assert_eq!(router.poll_action(), None);
    }
    assert_eq!(router.flow_window(), None, "flow control ended for good");
    assert_eq!(router.sessions_open(), 0);
    assert_eq!(router.control_backlog(), 0);
    assert_eq!(router.counters().agent_restarts, 1_000_001);
}

#[test]
fn credit_spam_is_ignored_or_wakes_each_reader_once() {
    let mut router = Router::new(default_budgets()).unwrap();
    ready(&mut router, Some(64 * 1024));
    let now = Instant::now();
    let a = router.connect(now).unwrap();
    let id = a.ids.first();
    open(&mut router, a.client, id);
    // Spend the credit: the next large frame is held.
    while router.client_frame(a.client, header(id, Flags::NONE), 60_000) != ClientVerdict::Hold {}
    for n in 0..1_000_000u32 {
        // Credit for unknown sessions, and one trickle for the real one.
        router.agent_credit(n.wrapping_mul(2_654_435_761), u32::MAX);
        router.agent_credit(id, 1);
    }
    assert_eq!(
        actions(&mut router),
        vec![Action::Wake(a.client)],
        "one wake"
    );
    assert!(router.counters().credits_ignored >= 999_000);
    assert_eq!(router.control_backlog(), 0);
    assert_eq!(router.sessions_open(), 1);
}

#[test]
fn session_churn_on_fresh_ids_keeps_the_table_at_the_sessions_open() {
    let mut router = Router::new(default_budgets()).unwrap();
    ready(&mut router, Some(64 * 1024));
    let now = Instant::now();
    let a = router.connect(now).unwrap();
    let first = a.ids.first();
    for n in 0..1_000_000u32 {
        let id = first + n % 100_000;
        open(&mut router, a.client, id);
        router.client_frame(a.client, header(id, Flags::TERMINAL), 9);
        assert!(router.sessions_open() <= 1);
    }
    router.disconnect(a.client);
    assert_eq!(router.sessions_open(), 0);
    assert_eq!(router.control_backlog(), 0);
    assert!(router.take_control().is_empty());
}

#[test]
fn the_1025th_session_is_refused_and_the_other_1024_go_on() {
    let mut router = Router::new(default_budgets()).unwrap();
    ready(&mut router, None);
    let now = Instant::now();
    let a = router.connect(now).unwrap();
    let first = a.ids.first();
    for id in first..first + 1024 {
        open(&mut router, a.client, id);
    }
    assert_eq!(
        router.client_frame(a.client, header(first + 1024, Flags::SESSION_START), 64),
        ClientVerdict::RefuseSession(RefuseReason::Limit { limit: 1024 })
    );
    assert!(router.is_connected(a.client));
    assert_eq!(router.sessions_of(a.client).len(), 1024);
    assert!(matches!(
        router.agent_frame(header(first, Flags::NONE), 64, now),
        AgentVerdict::Deliver { .. }
    ));
}

#[test]
fn a_reused_slot_never_sees_a_killed_session_that_still_streams() {
    let grace = Duration::from_secs(10);
    let mut router = Router::new(RouterConfig {
        layout: SlotLayout::Bounds { slots: 1 },
        max_clients: 1,
        quarantine_grace: grace,
        ..default_budgets()
    })
    .unwrap();
    ready(&mut router, None);
    let t0 = Instant::now();
    let old = router.connect(t0).unwrap();
    let id = old.ids.first();
    open(&mut router, old.client, id);
    router.disconnect(old.client);
    // The kill waits behind a full ring for a second: no grace yet.
    assert!(router.connect(t0 + grace * 2).is_err());
    let kills = router.take_control().kills;
    assert_eq!(kills, vec![id]);
    let killed = t0 + grace * 2;
    router.kills_written(&kills, killed);
    assert!(
        router.connect(killed + grace / 2).is_err(),
        "the grace runs from the kill"
    );
    // The guest ignores the kill and keeps streaming on the old session.
    let mut now = killed;
    let new = loop {
        now += Duration::from_millis(500);
        assert_eq!(
            router.agent_frame(header(id, Flags::NONE), 64, now),
            AgentVerdict::Drop(DropReason::Tombstoned)
        );
        if let Ok(admission) = router.connect(now) {
            break admission;
        }
    };
    assert!(now >= killed + grace, "handed out only after the grace");
    assert_eq!(router.counters().clients_admitted_beside_tombstones, 1);
    // The old session's frames still never reach the new owner, and its id
    // cannot be taken until the agent ends it.
    for _ in 0..1000 {
        assert_eq!(
            router.agent_frame(header(id, Flags::NONE), 64, now),
            AgentVerdict::Drop(DropReason::Tombstoned)
        );
    }
    assert_eq!(
        router.client_frame(new.client, header(id, Flags::SESSION_START), 64),
        ClientVerdict::RefuseSession(RefuseReason::IdInUse { id })
    );
    open(&mut router, new.client, id + 1);
    // The old terminal frame ends the tombstone, not the new session.
    assert_eq!(
        router.agent_frame(header(id, Flags::TERMINAL), 9, now),
        AgentVerdict::Drop(DropReason::Tombstoned)
    );
    assert_eq!(router.sessions_of(new.client), vec![id + 1]);
    open(&mut router, new.client, id);
    assert!(matches!(
        router.agent_frame(header(id, Flags::NONE), 64, now),
        AgentVerdict::Deliver { client, .. } if client == new.client
    ));
}

#[test]
fn a_silent_tombstone_is_forgotten_a_grace_after_its_last_frame() {
    let grace = Duration::from_secs(10);
    let mut router = Router::new(RouterConfig {
        quarantine_grace: grace,
        ..default_budgets()
    })
    .unwrap();
    ready(&mut router, None);
    let t0 = Instant::now();
    let a = router.connect(t0).unwrap();
    let id = a.ids.first();
    open(&mut router, a.client, id);
    router.disconnect(a.client);
    let kills = router.take_control().kills;
    router.kills_written(&kills, t0);
    router.agent_frame(header(id, Flags::NONE), 64, t0 + grace / 2);
    assert_eq!(router.next_deadline(), Some(t0 + grace / 2 + grace));
    assert_eq!(router.tick(t0 + grace), 0, "extended by the frame");
    assert_eq!(router.tick(t0 + grace / 2 + grace), 1);
    assert_eq!(router.sessions_tombstoned(), 0);
    assert_eq!(router.counters().sessions_abandoned, 1);
}
