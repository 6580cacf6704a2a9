//! Model-based test: random event sequences against a small reference model
//! of who owns which ids, which sessions are open and which slots rest.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use relay_codec::{Flags, FrameHeader, IdRange, bounds_slot_range, legacy_slot_range};
use relay_router::{
    AgentVerdict, ClientId, ClientVerdict, DropReason, Router, RouterConfig, SlotLayout,
};

#[derive(Debug, Clone)]
enum IdPick {
    /// `first + n` of the picked client's range.
    Own(usize, u32),
    /// An open session of some client, connected or departed.
    Session(usize),
    /// The first id of another slot.
    SlotStart(u32),
    Zero,
    Any(u32),
}

#[derive(Debug, Clone)]
enum Op {
    Connect,
    Disconnect(usize),
    ClientFrame(usize, IdPick, u8),
    AgentFrame(IdPick, u8),
    Tick(u64),
}

fn id_pick() -> impl Strategy<Value = IdPick> {
    prop_oneof![
        4 => (any::<usize>(), 0u32..6).prop_map(|(c, n)| IdPick::Own(c, n)),
        3 => any::<usize>().prop_map(IdPick::Session),
        1 => (0u32..16).prop_map(IdPick::SlotStart),
        1 => Just(IdPick::Zero),
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

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Connect),
        2 => any::<usize>().prop_map(Op::Disconnect),
        6 => (any::<usize>(), id_pick(), flags()).prop_map(|(c, p, f)| Op::ClientFrame(c, p, f)),
        6 => (id_pick(), flags()).prop_map(|(p, f)| Op::AgentFrame(p, f)),
        2 => (0u64..4).prop_map(Op::Tick),
    ]
}

fn config() -> impl Strategy<Value = RouterConfig> {
    let layout = prop_oneof![
        Just(SlotLayout::Legacy),
        (1u32..6).prop_map(|slots| SlotLayout::Bounds { slots }),
    ];
    (layout, 1u32..5, 0u64..4).prop_map(|(layout, max, grace)| RouterConfig {
        layout,
        max_clients: max.min(layout.slots()),
        quarantine_grace: Duration::from_secs(grace),
        max_sessions_per_client: 1_000,
    })
}

struct ModelClient {
    id: ClientId,
    ids: IdRange,
    sessions: BTreeSet<u32>,
}

struct Quarantine {
    until: Instant,
    sessions: BTreeSet<u32>,
}

struct Model {
    layout: SlotLayout,
    max_clients: u32,
    grace: Duration,
    connected: Vec<ModelClient>,
    quarantined: BTreeMap<u32, Quarantine>,
    /// Every (generation, session id) ever killed, to prove "exactly once".
    killed: BTreeSet<(u64, u32)>,
}

impl Model {
    fn routing_range(&self, slot: u32) -> IdRange {
        match self.layout {
            SlotLayout::Legacy => legacy_slot_range(slot),
            SlotLayout::Bounds { slots } => bounds_slot_range(slot, slots).unwrap(),
        }
    }

    fn slot_of(&self, id: u32) -> Option<u32> {
        (0..self.layout.slots()).find(|&s| self.routing_range(s).contains(id))
    }

    fn expire(&mut self, now: Instant) {
        self.quarantined.retain(|_, q| q.until > now);
    }

    fn pick_id(&self, pick: &IdPick, client: Option<&ModelClient>) -> u32 {
        match *pick {
            IdPick::Own(c, n) => {
                let owner = client.or_else(|| {
                    (!self.connected.is_empty()).then(|| &self.connected[c % self.connected.len()])
                });
                owner.map_or(n, |o| o.ids.first().saturating_add(n).min(o.ids.last()))
            }
            IdPick::Session(i) => {
                let all: Vec<u32> = self
                    .connected
                    .iter()
                    .flat_map(|c| c.sessions.iter().copied())
                    .chain(
                        self.quarantined
                            .values()
                            .flat_map(|q| q.sessions.iter().copied()),
                    )
                    .collect();
                if all.is_empty() {
                    1
                } else {
                    all[i % all.len()]
                }
            }
            IdPick::SlotStart(s) => self.routing_range(s % self.layout.slots()).first(),
            IdPick::Zero => 0,
            IdPick::Any(id) => id,
        }
    }

    fn disconnect(&mut self, router: &mut Router, index: usize, now: Instant) {
        let client = self.connected.remove(index);
        let kills = router.disconnect(client.id, now);
        let expected: Vec<u32> = client.sessions.iter().copied().collect();
        assert_eq!(kills, expected, "every open session is killed, in id order");
        for id in &kills {
            assert!(
                self.killed.insert((client.id.generation(), *id)),
                "session {id} killed twice"
            );
        }
        if !client.sessions.is_empty() {
            self.quarantined.insert(
                client.id.slot(),
                Quarantine {
                    until: now + self.grace,
                    sessions: client.sessions,
                },
            );
        }
    }
}

fn run(config: RouterConfig, ops: Vec<Op>) {
    let mut router = Router::new(config.clone()).unwrap();
    let mut now = Instant::now();
    let mut model = Model {
        layout: config.layout,
        max_clients: config.max_clients,
        grace: config.quarantine_grace,
        connected: Vec::new(),
        quarantined: BTreeMap::new(),
        killed: BTreeSet::new(),
    };
    for op in ops {
        match op {
            Op::Connect => {
                model.expire(now);
                let busy: BTreeSet<u32> = model
                    .connected
                    .iter()
                    .map(|c| c.id.slot())
                    .chain(model.quarantined.keys().copied())
                    .collect();
                let may_admit = (model.connected.len() as u32) < model.max_clients
                    && (busy.len() as u32) < model.layout.slots();
                match router.connect(now) {
                    Ok(admission) => {
                        assert!(may_admit, "admitted past the limit");
                        let slot = admission.client.slot();
                        assert!(!busy.contains(&slot), "slot {slot} handed out while busy");
                        assert!(!admission.ids.contains(0));
                        let routing = model.routing_range(slot);
                        assert!(routing.first() <= admission.ids.first());
                        if model.layout == SlotLayout::Legacy {
                            assert_eq!(admission.ids.first(), routing.first() + 1);
                        }
                        assert!(admission.ids.last() <= model.routing_range(slot).last());
                        model.connected.push(ModelClient {
                            id: admission.client,
                            ids: admission.ids,
                            sessions: BTreeSet::new(),
                        });
                    }
                    Err(refusal) => {
                        assert!(!may_admit, "refused with a slot free");
                        assert_eq!(refusal.connected as usize, model.connected.len());
                    }
                }
            }
            Op::Disconnect(i) => {
                if !model.connected.is_empty() {
                    let index = i % model.connected.len();
                    model.disconnect(&mut router, index, now);
                }
            }
            Op::ClientFrame(i, pick, bits) => {
                if model.connected.is_empty() {
                    continue;
                }
                let index = i % model.connected.len();
                let id = model.pick_id(&pick, Some(&model.connected[index]));
                let flags = Flags::from_bits(bits);
                let client = &mut model.connected[index];
                let in_range = client.ids.contains(id);
                let shutdown = flags.contains(Flags::SHUTDOWN);
                let verdict = router.client_frame(client.id, FrameHeader { id, flags });
                if in_range || (id == 0 && shutdown) {
                    assert_eq!(verdict, ClientVerdict::Forward { shutdown });
                    if id != 0
                        && flags.contains(Flags::SESSION_START)
                        && !flags.contains(Flags::TERMINAL)
                    {
                        client.sessions.insert(id);
                    }
                    if flags.contains(Flags::TERMINAL) {
                        client.sessions.remove(&id);
                    }
                } else {
                    assert!(matches!(verdict, ClientVerdict::Reject(_)), "{verdict:?}");
                    // The server disconnects a rejected client.
                    model.disconnect(&mut router, index, now);
                }
            }
            Op::AgentFrame(pick, bits) => {
                let id = model.pick_id(&pick, None);
                let flags = Flags::from_bits(bits);
                let verdict = router.agent_frame(FrameHeader { id, flags });
                let terminal = flags.contains(Flags::TERMINAL);
                if id == 0 {
                    assert_eq!(verdict, AgentVerdict::Control);
                    continue;
                }
                if id == u32::MAX {
                    assert_eq!(verdict, AgentVerdict::Drop(DropReason::Reserved));
                    continue;
                }
                let Some(slot) = model.slot_of(id) else {
                    assert_eq!(verdict, AgentVerdict::Drop(DropReason::NoSlot));
                    continue;
                };
                if let Some(owner) = model.connected.iter_mut().find(|c| c.id.slot() == slot) {
                    assert_eq!(
                        verdict,
                        AgentVerdict::Deliver(owner.id),
                        "delivered only to the slot's owner of now"
                    );
                    if terminal {
                        owner.sessions.remove(&id);
                    }
                } else if let Some(q) = model.quarantined.get_mut(&slot) {
                    assert_eq!(verdict, AgentVerdict::Drop(DropReason::SlotQuarantined));
                    if terminal {
                        q.sessions.remove(&id);
                        if q.sessions.is_empty() {
                            model.quarantined.remove(&slot);
                        }
                    }
                } else {
                    assert_eq!(verdict, AgentVerdict::Drop(DropReason::SlotFree));
                }
            }
            Op::Tick(secs) => {
                now += Duration::from_secs(secs);
                router.tick(now);
                model.expire(now);
            }
        }
        assert_eq!(router.clients_connected() as usize, model.connected.len());
        let open: usize = model
            .connected
            .iter()
            .map(|c| c.sessions.len())
            .sum::<usize>()
            + model
                .quarantined
                .values()
                .map(|q| q.sessions.len())
                .sum::<usize>();
        // Quarantines the model has expired but the router has not yet ticked
        // past still hold their sessions in the router.
        assert!(router.sessions_open() >= open);
        for client in &model.connected {
            let sessions: Vec<u32> = client.sessions.iter().copied().collect();
            assert_eq!(router.sessions_of(client.id), sessions);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_router_agrees_with_the_reference_model(
        config in config(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(config, ops);
    }
}
