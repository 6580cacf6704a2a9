//! Unit tests, one per rule of the crate docs.

use std::time::Duration;

use relay_codec::{Flags, FrameHeader};

use super::*;
use relay_codec::{Handshake, LEGACY_STEP};

fn t0() -> Instant {
    Instant::now()
}

fn legacy() -> Router {
    Router::new(RouterConfig::default()).unwrap()
}

fn bounds(slots: u32, max_clients: u32) -> Router {
    Router::new(RouterConfig {
        layout: SlotLayout::Bounds { slots },
        max_clients,
        ..RouterConfig::default()
    })
    .unwrap()
}

fn header(id: u32, flags: Flags) -> FrameHeader {
    FrameHeader { id, flags }
}

const FORWARD: ClientVerdict = ClientVerdict::Forward { shutdown: false };

#[test]
fn legacy_clients_get_offsets_of_successive_slots_and_ids_after_them() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    let b = router.connect(t0()).unwrap();
    assert_eq!(a.handshake, Handshake::Legacy { offset: 0 });
    assert_eq!(
        b.handshake,
        Handshake::Legacy {
            offset: LEGACY_STEP
        }
    );
    assert_eq!(a.ids.first(), 1);
    assert_eq!(b.ids.first(), LEGACY_STEP + 1);
    assert_eq!(b.ids.last(), 2 * LEGACY_STEP - 1);
}

#[test]
fn bounds_clients_get_disjoint_ranges_that_exclude_id_zero() {
    let mut router = bounds(128, 128);
    let mut previous_last = 0;
    for _ in 0..128 {
        let admission = router.connect(t0()).unwrap();
        let Handshake::Bounds { range } = admission.handshake else {
            panic!("expected the bounds form");
        };
        assert_eq!(range, admission.ids);
        assert!(range.first() > previous_last);
        previous_last = range.last();
    }
    assert_eq!(router.clients_connected(), 128);
}

#[test]
fn a_configuration_with_more_clients_than_slots_is_refused() {
    let config = RouterConfig {
        max_clients: 17,
        ..RouterConfig::default()
    };
    assert_eq!(
        Router::new(config).unwrap_err(),
        ConfigError::TooManyClients {
            max_clients: 17,
            slots: 16
        }
    );
}

#[test]
fn a_frame_inside_the_clients_range_is_forwarded() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    let verdict = router.client_frame(a.client, header(a.ids.first(), Flags::NONE), 20);
    assert_eq!(verdict, FORWARD);
    assert_eq!(router.counters().client_frames_forwarded, 1);
}

#[test]
fn a_frame_outside_the_clients_range_rejects_the_client() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    let b = router.connect(t0()).unwrap();
    let verdict = router.client_frame(a.client, header(b.ids.first(), Flags::SESSION_START), 20);
    assert_eq!(
        verdict,
        ClientVerdict::Reject(RejectReason::IdOutOfRange {
            id: b.ids.first(),
            first: 1,
            last: LEGACY_STEP - 1
        })
    );
    assert_eq!(router.counters().clients_rejected, 1);
    assert_eq!(
        router.sessions_open(),
        0,
        "the rejected frame opened nothing"
    );
}

#[test]
fn the_slot_offset_itself_is_not_a_client_id() {
    let mut router = legacy();
    let _a = router.connect(t0()).unwrap();
    let b = router.connect(t0()).unwrap();
    assert!(matches!(
        router.client_frame(b.client, header(LEGACY_STEP, Flags::NONE), 20),
        ClientVerdict::Reject(RejectReason::IdOutOfRange { .. })
    ));
}

#[test]
fn id_zero_is_rejected_unless_it_is_a_shutdown() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    assert_eq!(
        router.client_frame(a.client, header(0, Flags::SHUTDOWN), 20),
        ClientVerdict::Forward { shutdown: true }
    );
    assert!(matches!(
        router.client_frame(a.client, header(0, Flags::NONE), 20),
        ClientVerdict::Reject(_)
    ));
}

#[test]
fn a_shutdown_inside_the_range_is_forwarded_with_a_drain_notification() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    assert_eq!(
        router.client_frame(a.client, header(a.ids.first(), Flags::SHUTDOWN), 20),
        ClientVerdict::Forward { shutdown: true }
    );
    assert_eq!(router.counters().shutdown_requests, 1);
}

#[test]
fn reserved_flag_bits_do_not_change_routing() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    let id = a.ids.first();
    assert_eq!(
        router.client_frame(a.client, header(id, Flags::from_bits(0xf8)), 20),
        FORWARD
    );
    assert_eq!(
        router.agent_frame(header(id, Flags::from_bits(0xf8)), 20, t0()),
        AgentVerdict::Deliver {
            client: a.client,
            credited: false
        }
    );
}

#[test]
fn session_start_opens_a_session_and_an_agent_terminal_closes_it() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    let id = a.ids.first() + 4;
    router.client_frame(a.client, header(id, Flags::SESSION_START), 20);
    assert_eq!(router.sessions_of(a.client), vec![id]);
    assert_eq!(
        router.agent_frame(header(id, Flags::TERMINAL), 20, t0()),
        AgentVerdict::Deliver {
            client: a.client,
            credited: false
        }
    );
    assert!(router.sessions_of(a.client).is_empty());
    let counters = router.counters();
    assert_eq!((counters.sessions_opened, counters.sessions_closed), (1, 1));
}

#[test]
fn a_client_terminal_also_closes_its_session() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    let id = a.ids.first();
    router.client_frame(a.client, header(id, Flags::SESSION_START), 20);
    router.client_frame(a.client, header(id, Flags::TERMINAL), 20);
    assert_eq!(router.sessions_open(), 0);
}

#[test]
fn a_session_past_the_limit_is_refused_and_the_client_keeps_its_others() {
    let mut router = Router::new(RouterConfig {
        max_sessions_per_client: 2,
        ..RouterConfig::default()
    })
    .unwrap();
    let a = router.connect(t0()).unwrap();
    let first = a.ids.first();
    assert_eq!(
        router.client_frame(a.client, header(first, Flags::SESSION_START), 20),
        FORWARD
    );
    assert_eq!(
        router.client_frame(a.client, header(first + 1, Flags::SESSION_START), 20),
        FORWARD
    );
    assert_eq!(
        router.client_frame(a.client, header(first + 2, Flags::SESSION_START), 20),
        ClientVerdict::RefuseSession(RefuseReason::Limit { limit: 2 })
    );
    assert!(router.is_connected(a.client));
    assert_eq!(router.sessions_of(a.client), vec![first, first + 1]);
    assert_eq!(router.counters().sessions_refused, 1);
    // Once one ends, a new one may open.
    router.agent_frame(header(first, Flags::TERMINAL), 20, t0());
    assert_eq!(
        router.client_frame(a.client, header(first + 2, Flags::SESSION_START), 20),
        FORWARD
    );
}

#[test]
fn agent_frames_reach_the_client_that_owns_the_id() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    let b = router.connect(t0()).unwrap();
    assert_eq!(
        router.agent_frame(header(b.ids.first() + 9, Flags::NONE), 20, t0()),
        AgentVerdict::Deliver {
            client: b.client,
            credited: false
        }
    );
    assert_eq!(
        router.agent_frame(header(a.ids.last(), Flags::NONE), 20, t0()),
        AgentVerdict::Deliver {
            client: a.client,
            credited: false
        }
    );
}

#[test]
fn agent_frames_with_id_zero_are_control_frames() {
    let mut router = legacy();
    assert_eq!(
        router.agent_frame(header(0, Flags::NONE), 20, t0()),
        AgentVerdict::Control
    );
    assert_eq!(router.counters().agent_control_frames, 1);
}

#[test]
fn agent_frames_for_a_free_slot_are_dropped_and_counted() {
    let mut router = legacy();
    assert_eq!(
        router.agent_frame(header(5 * LEGACY_STEP + 1, Flags::NONE), 20, t0()),
        AgentVerdict::Drop(DropReason::SlotFree)
    );
    assert_eq!(router.counters().agent_frames_dropped_free, 1);
}

#[test]
fn bounds_ids_between_and_beyond_the_slots_belong_to_no_one() {
    let mut router = bounds(4, 4);
    let step = u32::MAX / 4;
    for id in [step, 2 * step, 4 * step, 4 * step + 1] {
        assert_eq!(
            router.agent_frame(header(id, Flags::NONE), 20, t0()),
            AgentVerdict::Drop(DropReason::NoSlot),
            "id {id}"
        );
    }
}

#[test]
fn the_runtimes_reserved_id_is_dropped_in_both_layouts_even_with_every_slot_taken() {
    for mut router in [legacy(), bounds(4, 4)] {
        while router.connect(t0()).is_ok() {}
        assert_eq!(
            router.agent_frame(header(u32::MAX, Flags::TERMINAL), 20, t0()),
            AgentVerdict::Drop(DropReason::Reserved)
        );
        assert_eq!(router.counters().agent_frames_dropped_reserved, 1);
    }
}

#[test]
fn a_disconnect_kills_every_open_session_exactly_once() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    let first = a.ids.first();
    for id in [first + 2, first, first + 1] {
        router.client_frame(a.client, header(id, Flags::SESSION_START), 20);
    }
    router.agent_frame(header(first + 1, Flags::TERMINAL), 20, t0());
    assert_eq!(router.disconnect(a.client), 2);
    assert_eq!(router.take_control().kills, vec![first, first + 2]);
    assert_eq!(
        router.disconnect(a.client),
        0,
        "a second disconnect kills nothing"
    );
    assert!(router.take_control().is_empty());
    assert_eq!(router.counters().sessions_killed, 2);
}

#[test]
fn a_slot_without_open_sessions_is_free_at_once() {
    let mut router = bounds(1, 1);
    let a = router.connect(t0()).unwrap();
    router.disconnect(a.client);
    let b = router.connect(t0()).unwrap();
    assert_eq!(b.client.slot(), a.client.slot());
    assert_ne!(b.client, a.client);
}

#[test]
fn a_quarantined_slot_is_not_reused_until_its_sessions_end() {
    let mut router = bounds(1, 1);
    let now = t0();
    let a = router.connect(now).unwrap();
    let id = a.ids.first();
    router.client_frame(a.client, header(id, Flags::SESSION_START), 20);
    assert_eq!(router.disconnect(a.client), 1);
    let refusal = router.connect(now).unwrap_err();
    assert_eq!(refusal.quarantined, 1);
    assert_eq!(
        router.agent_frame(header(id, Flags::NONE), 20, t0()),
        AgentVerdict::Drop(DropReason::Tombstoned)
    );
    assert_eq!(
        router.agent_frame(header(id + 1, Flags::NONE), 20, t0()),
        AgentVerdict::Drop(DropReason::SlotQuarantined)
    );
    assert_eq!(
        router.agent_frame(header(id, Flags::TERMINAL), 20, t0()),
        AgentVerdict::Drop(DropReason::Tombstoned)
    );
    let b = router.connect(now).unwrap();
    assert_eq!(b.client.slot(), 0);
    assert_eq!(
        router.agent_frame(header(id, Flags::NONE), 20, t0()),
        AgentVerdict::Deliver {
            client: b.client,
            credited: false
        },
        "after the quarantine, the range belongs to the new client"
    );
}

#[test]
fn a_quarantine_ends_when_its_grace_period_passes() {
    let mut router = Router::new(RouterConfig {
        layout: SlotLayout::Bounds { slots: 1 },
        max_clients: 1,
        quarantine_grace: Duration::from_secs(3),
        ..RouterConfig::default()
    })
    .unwrap();
    let now = t0();
    let a = router.connect(now).unwrap();
    router.client_frame(a.client, header(a.ids.first(), Flags::SESSION_START), 20);
    router.disconnect(a.client);
    assert_eq!(
        router.next_deadline(),
        None,
        "the grace starts when the kill is written"
    );
    let kills = router.take_control().kills;
    router.kills_written(&kills, now);
    assert_eq!(router.next_deadline(), Some(now + Duration::from_secs(3)));
    assert_eq!(router.tick(now + Duration::from_secs(2)), 0);
    assert!(router.connect(now + Duration::from_secs(2)).is_err());
    assert!(router.connect(now + Duration::from_secs(3)).is_ok());
    let counters = router.counters();
    assert_eq!(
        (counters.quarantines_ended, counters.sessions_abandoned),
        (1, 1)
    );
    assert_eq!(router.next_deadline(), None);
}

#[test]
fn freed_slots_are_reused_least_recently_freed_first() {
    let mut router = bounds(3, 3);
    let a = router.connect(t0()).unwrap();
    let b = router.connect(t0()).unwrap();
    router.disconnect(b.client);
    router.disconnect(a.client);
    let slots: Vec<u32> = (0..3)
        .map(|_| router.connect(t0()).unwrap().client.slot())
        .collect();
    assert_eq!(slots, vec![2, 1, 0]);
}

#[test]
fn all_slots_busy_refuses_and_counts_then_admits_once_one_frees() {
    let mut router = bounds(8, 2);
    let a = router.connect(t0()).unwrap();
    let _b = router.connect(t0()).unwrap();
    assert_eq!(
        router.connect(t0()).unwrap_err(),
        Refusal {
            connected: 2,
            quarantined: 0,
            max_clients: 2
        }
    );
    assert_eq!(router.counters().clients_refused, 1);
    router.disconnect(a.client);
    assert!(router.connect(t0()).is_ok());
}

#[test]
fn frames_from_a_client_that_has_gone_are_stale() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    router.disconnect(a.client);
    assert_eq!(
        router.client_frame(a.client, header(a.ids.first(), Flags::NONE), 20),
        ClientVerdict::Stale
    );
    let b = router.connect(t0()).unwrap();
    assert_eq!(b.client.slot(), 1, "slot 0 rests while others are free");
}

#[test]
fn owner_names_the_client_of_an_id_without_counting_anything() {
    let mut router = legacy();
    let a = router.connect(t0()).unwrap();
    let before = router.counters();
    assert_eq!(router.owner(a.ids.first() + 3), Some(a.client));
    assert_eq!(router.owner(5 * LEGACY_STEP + 1), None);
    assert_eq!(router.owner(0), None);
    assert_eq!(router.counters(), before);
    assert_eq!(router.slot_range(0).unwrap().first(), 0);
}

#[test]
fn an_agent_restart_forgets_every_session_and_cuts_off_the_clients_that_had_some() {
    let mut router = legacy();
    let busy = router.connect(t0()).unwrap();
    let idle = router.connect(t0()).unwrap();
    let leaving = router.connect(t0()).unwrap();
    for id in [busy.ids.first(), busy.ids.first() + 1] {
        router.client_frame(busy.client, header(id, Flags::SESSION_START), 20);
    }
    router.client_frame(
        leaving.client,
        header(leaving.ids.first(), Flags::SESSION_START),
        20,
    );
    router.disconnect(leaving.client);
    assert_eq!(router.slots_quarantined(), 1);

    assert_eq!(
        router.agent_ready(None),
        ReadyOutcome::First { accept: None }
    );
    assert_eq!(
        router.agent_ready(None),
        ReadyOutcome::Restarted { sessions: 3 }
    );
    assert_eq!(
        router.poll_action(),
        Some(Action::CutOff {
            client: busy.client,
            reason: CutReason::AgentRestarted { sessions: 2 }
        })
    );
    assert_eq!(router.poll_action(), None, "the idle client stays");
    assert!(
        router.take_control().is_empty(),
        "no kill goes to the new agent"
    );
    assert_eq!(router.sessions_open(), 0);
    assert_eq!(router.slots_quarantined(), 0, "nothing left to wait for");
    assert_eq!(router.counters().sessions_abandoned, 3);
    assert!(router.is_connected(idle.client));
    // The busy client's disconnect now kills nothing.
    assert_eq!(router.disconnect(busy.client), 0);
}
