//! Counters the relay keeps as it runs, and the snapshot its owner reads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use relay_router::RouterCounters;
use serde::Serialize;

/// Live counters, updated with relaxed atomics (they are statistics, not
/// synchronisation).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) peers_refused: AtomicU64,
    pub(crate) clients_malformed: AtomicU64,
    pub(crate) slow_over_budget: AtomicU64,
    pub(crate) slow_total_budget: AtomicU64,
    pub(crate) slow_stalled: AtomicU64,
    pub(crate) restart_disconnects: AtomicU64,
    pub(crate) client_frames: AtomicU64,
    pub(crate) client_bytes: AtomicU64,
    pub(crate) agent_frames: AtomicU64,
    pub(crate) agent_bytes: AtomicU64,
    pub(crate) delivered_frames: AtomicU64,
    pub(crate) delivered_bytes: AtomicU64,
    pub(crate) pre_ready_discarded: AtomicU64,
    pub(crate) control_discarded: AtomicU64,
    pub(crate) ready_replaced: AtomicU64,
    pub(crate) dropped_slow_consumer: AtomicU64,
    pub(crate) dropped_client_gone: AtomicU64,
    pub(crate) kills_sent: AtomicU64,
    pub(crate) credits_sent: AtomicU64,
    pub(crate) credits_received: AtomicU64,
    pub(crate) flow_waits: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// What the stats read from the board, under its lock.
#[derive(Debug)]
pub(crate) struct BoardView {
    pub(crate) router: RouterCounters,
    pub(crate) connected: u32,
    pub(crate) quarantined: u32,
    pub(crate) sessions_open: usize,
    pub(crate) sessions_tombstoned: usize,
    pub(crate) queued_bytes: usize,
    /// Window and sessions tracked, when flow control is on.
    pub(crate) flow: Option<(u32, usize)>,
}

/// Ring occupancy as reported by the agent transport, when it is a ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RingOccupancy {
    /// Bytes waiting in the guest-to-host ring.
    pub guest_to_host: usize,
    /// Bytes waiting in the host-to-guest ring.
    pub host_to_guest: usize,
    /// Capacity of each ring.
    pub capacity: usize,
}

/// A point-in-time view of the relay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Clients connected now.
    pub clients_connected: u32,
    /// Clients admitted since start.
    pub clients_admitted: u64,
    /// Connections refused because every slot was taken.
    pub clients_refused: u64,
    /// Connections refused by the peer-uid check.
    pub peers_refused: u64,
    /// Clients disconnected for a routing violation.
    pub clients_rejected: u64,
    /// Clients disconnected for a malformed frame.
    pub clients_malformed: u64,
    /// Slow consumers cut off because their queue exceeded its budget.
    pub slow_over_budget: u64,
    /// Slow consumers cut off because the total budget was reached.
    pub slow_total_budget: u64,
    /// Slow consumers cut off because their queue stalled.
    pub slow_stalled: u64,
    /// Clients disconnected because the agent restarted under their open
    /// sessions.
    pub agent_restart_disconnects: u64,
    /// Slots resting after their client left.
    pub slots_quarantined: u32,
    /// Sessions open now (including killed ones the agent has not ended).
    pub sessions_open: usize,
    /// Of those, sessions of departed clients that were killed and that the
    /// agent has not ended yet.
    pub sessions_tombstoned: usize,
    /// Sessions opened since start.
    pub sessions_opened: u64,
    /// Session requests the relay answered itself with an error because
    /// their client had its limit of sessions open.
    pub sessions_refused: u64,
    /// Kill signals sent for sessions of departed clients.
    pub kills_sent: u64,
    /// Frames forwarded from clients to the agent.
    pub client_to_agent_frames: u64,
    /// Bytes forwarded from clients to the agent.
    pub client_to_agent_bytes: u64,
    /// Frames read from the agent.
    pub agent_frames: u64,
    /// Bytes read from the agent.
    pub agent_bytes: u64,
    /// Frames written to clients.
    pub agent_to_client_frames: u64,
    /// Bytes written to clients.
    pub agent_to_client_bytes: u64,
    /// Bytes charged for frames queued toward clients now (wire bytes plus
    /// a fixed per-frame overhead, as the budgets count them).
    pub queued_bytes: usize,
    /// Frames dropped, by reason. Every drop is counted here.
    pub dropped: DropCounts,
    /// Times the agent sent `core.ready` again.
    pub ready_replaced: u64,
    /// Ring occupancy, when the agent transport is a ring.
    pub ring: Option<RingOccupancy>,
    /// Per-session flow control, when the agent offered it.
    pub flow: Option<FlowStats>,
}

/// Per-session credit between relay and agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FlowStats {
    /// Bytes of credit per session and direction, as the relay accepted them.
    pub window: u32,
    /// Sessions with credit state now.
    pub sessions: usize,
    /// `core.flow.credit` frames sent to the agent.
    pub credits_sent: u64,
    /// `core.flow.credit` frames received from the agent.
    pub credits_received: u64,
    /// Times a client's frame was held until its session had credit.
    pub client_waits: u64,
}

/// Frames the relay discarded, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    /// Agent frames that arrived before the first `core.ready`.
    pub before_ready: u64,
    /// Agent frames on the connection id (0) the relay does not use: any
    /// but `core.ready`, and `core.flow.credit` once flow control is in use.
    pub agent_control: u64,
    /// Agent frames for a slot without a client.
    pub slot_free: u64,
    /// Agent frames for a slot resting after its client left.
    pub slot_quarantined: u64,
    /// Agent frames whose id belongs to no slot.
    pub no_slot: u64,
    /// Frames queued for a client cut off as a slow consumer.
    pub slow_consumer: u64,
    /// Frames queued for a client that disconnected.
    pub client_gone: u64,
    /// Agent frames on the runtime's reserved id (`u32::MAX`).
    pub reserved_id: u64,
    /// Agent frames for a session killed when its client left.
    pub tombstoned: u64,
}

impl StatsSnapshot {
    pub(crate) fn build(
        counters: &Counters,
        board: BoardView,
        ring: Option<RingOccupancy>,
    ) -> StatsSnapshot {
        let BoardView {
            router,
            connected,
            quarantined,
            sessions_open,
            sessions_tombstoned,
            queued_bytes,
            flow,
        } = board;
        let get = |c: &AtomicU64| c.load(Relaxed);
        StatsSnapshot {
            clients_connected: connected,
            clients_admitted: router.clients_admitted,
            clients_refused: router.clients_refused,
            peers_refused: get(&counters.peers_refused),
            clients_rejected: router.clients_rejected,
            clients_malformed: get(&counters.clients_malformed),
            slow_over_budget: get(&counters.slow_over_budget),
            slow_total_budget: get(&counters.slow_total_budget),
            slow_stalled: get(&counters.slow_stalled),
            agent_restart_disconnects: get(&counters.restart_disconnects),
            slots_quarantined: quarantined,
            sessions_open,
            sessions_tombstoned,
            sessions_opened: router.sessions_opened,
            sessions_refused: router.sessions_refused,
            kills_sent: get(&counters.kills_sent),
            client_to_agent_frames: get(&counters.client_frames),
            client_to_agent_bytes: get(&counters.client_bytes),
            agent_frames: get(&counters.agent_frames),
            agent_bytes: get(&counters.agent_bytes),
            agent_to_client_frames: get(&counters.delivered_frames),
            agent_to_client_bytes: get(&counters.delivered_bytes),
            queued_bytes,
            dropped: DropCounts {
                before_ready: get(&counters.pre_ready_discarded),
                agent_control: get(&counters.control_discarded),
                slot_free: router.agent_frames_dropped_free,
                slot_quarantined: router.agent_frames_dropped_quarantined,
                no_slot: router.agent_frames_dropped_no_slot,
                slow_consumer: get(&counters.dropped_slow_consumer),
                client_gone: get(&counters.dropped_client_gone),
                reserved_id: router.agent_frames_dropped_reserved,
                tombstoned: router.agent_frames_dropped_tombstoned,
            },
            ready_replaced: get(&counters.ready_replaced),
            ring,
            flow: flow.map(|(window, sessions)| FlowStats {
                window,
                sessions,
                credits_sent: get(&counters.credits_sent),
                credits_received: get(&counters.credits_received),
                client_waits: get(&counters.flow_waits),
            }),
        }
    }

    /// Clients cut off as slow consumers, for any of the three reasons.
    pub fn slow_consumers(&self) -> u64 {
        self.slow_over_budget + self.slow_total_budget + self.slow_stalled
    }
}
