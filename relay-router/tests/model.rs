//! Model-based test: random event sequences played against the reference
//! model in `relay_router::model` (the same one the fuzz target uses).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::Duration;

use proptest::prelude::*;
use relay_codec::Flags;
use relay_router::model::{Event, IdPick, Scenario, run};
use relay_router::{RouterConfig, SlotLayout};

fn id_pick() -> impl Strategy<Value = IdPick> {
    prop_oneof![
        4 => (any::<u8>(), 0u8..6).prop_map(|(client, offset)| IdPick::Own { client, offset }),
        1 => (any::<u8>(), 0u8..2).prop_map(|(client, offset)| IdPick::OwnEnd { client, offset }),
        4 => any::<u8>().prop_map(|index| IdPick::Session { index }),
        1 => any::<u8>().prop_map(|slot| IdPick::SlotStart { slot }),
        1 => Just(IdPick::Zero),
        1 => Just(IdPick::Max),
        1 => any::<u32>().prop_map(IdPick::Any),
    ]
}

fn flags() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => Just(0u8),
        3 => Just(Flags::SESSION_START.bits()),
        3 => Just(Flags::TERMINAL.bits()),
        1 => Just(Flags::SHUTDOWN.bits()),
        1 => any::<u8>(),
    ]
}

fn len() -> impl Strategy<Value = u16> {
    prop_oneof![3 => 9u16..64, 1 => 9u16..=u16::MAX]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::Connect),
        1 => any::<u8>().prop_map(|client| Event::Disconnect { client }),
        6 => (any::<u8>(), id_pick(), flags(), len())
            .prop_map(|(client, id, flags, len)| Event::ClientFrame { client, id, flags, len }),
        6 => (id_pick(), flags(), len()).prop_map(|(id, flags, len)| Event::AgentFrame { id, flags, len }),
        3 => (any::<u8>(), 0u8..8, any::<bool>())
            .prop_map(|(client, frames, written)| Event::Drain { client, frames, written }),
        1 => (any::<u8>(), len()).prop_map(|(client, len)| Event::QueueOwn { client, len }),
        1 => any::<u8>().prop_map(|client| Event::Stall { client }),
        2 => Just(Event::WriteControl),
        1 => proptest::option::of(any::<u32>()).prop_map(|offer| Event::Ready { offer }),
        2 => (id_pick(), any::<u32>()).prop_map(|(id, bytes)| Event::Credit { id, bytes }),
        2 => (0u16..3000).prop_map(|millis| Event::Tick { millis }),
    ]
}

fn config() -> impl Strategy<Value = RouterConfig> {
    let layout = prop_oneof![
        Just(SlotLayout::Legacy),
        (1u32..6).prop_map(|slots| SlotLayout::Bounds { slots }),
    ];
    (
        layout,
        1u32..5,
        0u64..3000,
        1usize..5,
        1usize..200_000,
        1usize..400_000,
        0usize..256,
    )
        .prop_map(
            |(layout, max, grace, sessions, client_budget, total_budget, overhead)| RouterConfig {
                layout,
                max_clients: max.min(layout.slots()),
                quarantine_grace: Duration::from_millis(grace),
                max_sessions_per_client: sessions,
                client_queue_budget: client_budget,
                total_queue_budget: total_budget,
                frame_overhead: overhead,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_router_agrees_with_the_reference_model(
        config in config(),
        events in proptest::collection::vec(event(), 1..200),
    ) {
        // The relay serves nothing before core.ready: most runs start with one.
        let scenario = Scenario { config, events };
        if let Err(violation) = run(&scenario) {
            panic!("{violation}");
        }
    }
}
