//! Target `router_events`: the router played against its reference model
//! (`relay_router::model`, the same one its property test uses) with an
//! event sequence decoded from the fuzzer's bytes. The model checks every
//! verdict, action, query and counter after each event, and the promises on
//! their own: a frame reaches only the current holder of its slot and never
//! a killed session's; each session of a departed client is killed exactly
//! once; the bytes charged never exceed the budgets.
//!
//! This module only turns bytes into a [`Scenario`] and back.

use std::time::Duration;

pub use relay_router::model::{Event, IdPick, Report, Scenario, run};
use relay_router::{RouterConfig, SlotLayout};

use crate::Violation;
use crate::input::{Input, Output};

/// Most events decoded from one input.
pub const MAX_EVENTS: usize = 512;

/// Decodes fuzzer bytes: a configuration, then events until the input ends
/// or [`MAX_EVENTS`] is reached.
pub fn decode(bytes: &[u8]) -> Scenario {
    let mut input = Input::new(bytes);
    let layout = match input.below(9) {
        0 => SlotLayout::Legacy,
        n => SlotLayout::Bounds { slots: n },
    };
    let config = RouterConfig {
        layout,
        max_clients: 1 + input.below(layout.slots()),
        quarantine_grace: Duration::from_millis(u64::from(input.below(1000))),
        max_sessions_per_client: 1 + input.below(4) as usize,
        client_queue_budget: 1 + input.below(1 << 18) as usize,
        total_queue_budget: 1 + input.below(1 << 20) as usize,
        frame_overhead: input.below(256) as usize,
    };
    let mut events = Vec::new();
    while !input.is_empty() && events.len() < MAX_EVENTS {
        events.push(event(&mut input));
    }
    Scenario { config, events }
}

/// The bytes [`decode`] reads back as `scenario` (its configuration must be
/// one `decode` can produce).
pub fn encode(scenario: &Scenario) -> Vec<u8> {
    let mut out = Output::new();
    let config = &scenario.config;
    let slots = config.layout.slots();
    match config.layout {
        SlotLayout::Legacy => out.below(0, 9),
        SlotLayout::Bounds { slots } => out.below(slots, 9),
    };
    out.below(config.max_clients - 1, slots);
    out.below(config.quarantine_grace.as_millis() as u32, 1000);
    out.below(config.max_sessions_per_client as u32 - 1, 4);
    out.below(config.client_queue_budget as u32 - 1, 1 << 18);
    out.below(config.total_queue_budget as u32 - 1, 1 << 20);
    out.below(config.frame_overhead as u32, 256);
    for event in &scenario.events {
        write_event(*event, &mut out);
    }
    out.into_bytes()
}

/// The property on one fuzzer input.
pub fn check(bytes: &[u8]) -> Result<Report, Violation> {
    run(&decode(bytes))
}

const EVENT_KINDS: u32 = 16;

fn event(input: &mut Input<'_>) -> Event {
    match input.below(EVENT_KINDS) {
        0 | 1 => Event::Connect,
        2 => Event::Disconnect { client: input.u8() },
        3..=5 => Event::ClientFrame {
            client: input.u8(),
            id: id_pick(input),
            flags: input.u8(),
            len: input.u16(),
        },
        6..=8 => Event::AgentFrame {
            id: id_pick(input),
            flags: input.u8(),
            len: input.u16(),
        },
        9 => Event::Drain {
            client: input.u8(),
            frames: input.u8(),
            written: input.below(2) == 1,
        },
        10 => Event::QueueOwn {
            client: input.u8(),
            len: input.u16(),
        },
        11 => Event::Stall { client: input.u8() },
        12 => Event::WriteControl,
        13 => Event::Ready {
            offer: (input.below(2) == 1).then(|| input.u32()),
        },
        14 => Event::Credit {
            id: id_pick(input),
            bytes: input.u32(),
        },
        _ => Event::Tick {
            millis: input.u16(),
        },
    }
}

fn write_event(event: Event, out: &mut Output) {
    match event {
        Event::Connect => {
            out.below(0, EVENT_KINDS);
        }
        Event::Disconnect { client } => {
            out.below(2, EVENT_KINDS).u8(client);
        }
        Event::ClientFrame {
            client,
            id,
            flags,
            len,
        } => {
            out.below(3, EVENT_KINDS).u8(client);
            write_id_pick(id, out);
            out.u8(flags).u16(len);
        }
        Event::AgentFrame { id, flags, len } => {
            out.below(6, EVENT_KINDS);
            write_id_pick(id, out);
            out.u8(flags).u16(len);
        }
        Event::Drain {
            client,
            frames,
            written,
        } => {
            out.below(9, EVENT_KINDS)
                .u8(client)
                .u8(frames)
                .below(u32::from(written), 2);
        }
        Event::QueueOwn { client, len } => {
            out.below(10, EVENT_KINDS).u8(client).u16(len);
        }
        Event::Stall { client } => {
            out.below(11, EVENT_KINDS).u8(client);
        }
        Event::WriteControl => {
            out.below(12, EVENT_KINDS);
        }
        Event::Ready { offer } => {
            out.below(13, EVENT_KINDS);
            match offer {
                Some(window) => out.below(1, 2).u32(window),
                None => out.below(0, 2),
            };
        }
        Event::Credit { id, bytes } => {
            out.below(14, EVENT_KINDS);
            write_id_pick(id, out);
            out.u32(bytes);
        }
        Event::Tick { millis } => {
            out.below(15, EVENT_KINDS).u16(millis);
        }
    }
}

fn id_pick(input: &mut Input<'_>) -> IdPick {
    match input.below(8) {
        0 | 1 => IdPick::Own {
            client: input.u8(),
            offset: input.u8(),
        },
        2 => IdPick::OwnEnd {
            client: input.u8(),
            offset: input.u8(),
        },
        3 | 4 => IdPick::Session { index: input.u8() },
        5 => IdPick::SlotStart { slot: input.u8() },
        6 => match input.below(3) {
            0 => IdPick::Zero,
            1 => IdPick::Max,
            _ => IdPick::Any(input.u32()),
        },
        _ => IdPick::Any(input.u32()),
    }
}

fn write_id_pick(pick: IdPick, out: &mut Output) {
    match pick {
        IdPick::Own { client, offset } => {
            out.below(0, 8).u8(client).u8(offset);
        }
        IdPick::OwnEnd { client, offset } => {
            out.below(2, 8).u8(client).u8(offset);
        }
        IdPick::Session { index } => {
            out.below(3, 8).u8(index);
        }
        IdPick::SlotStart { slot } => {
            out.below(5, 8).u8(slot);
        }
        IdPick::Zero => {
            out.below(6, 8).below(0, 3);
        }
        IdPick::Max => {
            out.below(6, 8).below(1, 3);
        }
        IdPick::Any(id) => {
            out.below(7, 8).u32(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(layout: SlotLayout, max_clients: u32, grace_ms: u64) -> RouterConfig {
        RouterConfig {
            layout,
            max_clients,
            quarantine_grace: Duration::from_millis(grace_ms),
            max_sessions_per_client: 2,
            client_queue_budget: 1000,
            total_queue_budget: 1500,
            frame_overhead: 100,
        }
    }

    #[test]
    fn scenarios_round_trip_through_fuzz_bytes() {
        let scenario = Scenario {
            config: config(SlotLayout::Bounds { slots: 8 }, 5, 999),
            events: vec![
                Event::Connect,
                Event::Disconnect { client: 3 },
                Event::ClientFrame {
                    client: 1,
                    id: IdPick::OwnEnd {
                        client: 2,
                        offset: 1,
                    },
                    flags: 0xff,
                    len: 9,
                },
                Event::AgentFrame {
                    id: IdPick::Any(0xdead_beef),
                    flags: 1,
                    len: 65_535,
                },
                Event::AgentFrame {
                    id: IdPick::Zero,
                    flags: 0,
                    len: 20,
                },
                Event::AgentFrame {
                    id: IdPick::Max,
                    flags: 0,
                    len: 20,
                },
                Event::AgentFrame {
                    id: IdPick::SlotStart { slot: 9 },
                    flags: 0,
                    len: 20,
                },
                Event::Credit {
                    id: IdPick::Session { index: 4 },
                    bytes: 7,
                },
                Event::Drain {
                    client: 1,
                    frames: 3,
                    written: true,
                },
                Event::QueueOwn { client: 0, len: 40 },
                Event::Stall { client: 2 },
                Event::WriteControl,
                Event::Ready { offer: Some(1) },
                Event::Ready { offer: None },
                Event::Tick { millis: 65_535 },
            ],
        };
        assert_eq!(decode(&encode(&scenario)), scenario);
        let legacy = Scenario {
            config: config(SlotLayout::Legacy, 16, 0),
            events: vec![],
        };
        assert_eq!(decode(&encode(&legacy)), legacy);
    }

    #[test]
    fn any_bytes_make_a_scenario_that_passes() {
        let mut state = 0x9e37_79b9_u32;
        for len in [0usize, 1, 5, 40, 400, 4000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            check(&bytes).unwrap();
        }
    }
}
