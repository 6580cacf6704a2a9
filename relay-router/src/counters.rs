//! Counts of every decision the router made.

/// Counters of every decision; all only ever increase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterCounters {
    /// Connections admitted.
    pub clients_admitted: u64,
    /// Of those, into a slot still holding killed sessions of an earlier owner.
    pub clients_admitted_beside_tombstones: u64,
    /// Connections refused for lack of a slot.
    pub clients_refused: u64,
    /// Clients rejected for a protocol violation.
    pub clients_rejected: u64,
    /// Clients cut off by the router (budgets, stalls, agent restarts).
    pub clients_cut_off: u64,
    /// Client disconnections processed (any cause).
    pub clients_disconnected: u64,
    /// Sessions opened by clients.
    pub sessions_opened: u64,
    /// Session requests refused (limit or an id still in use).
    pub sessions_refused: u64,
    /// Sessions closed by a `TERMINAL` frame (killed ones included).
    pub sessions_closed: u64,
    /// Kill requests produced for sessions of departed clients.
    pub sessions_killed: u64,
    /// Killed sessions forgotten after their grace, or open ones forgotten
    /// when the agent restarted.
    pub sessions_abandoned: u64,
    /// Client frames forwarded to the agent.
    pub client_frames_forwarded: u64,
    /// Shutdown requests seen.
    pub shutdown_requests: u64,
    /// Agent frames delivered to a client.
    pub agent_frames_delivered: u64,
    /// Agent frames with id 0.
    pub agent_control_frames: u64,
    /// Agent frames dropped because their slot was free.
    pub agent_frames_dropped_free: u64,
    /// Agent frames dropped because their slot was quarantined.
    pub agent_frames_dropped_quarantined: u64,
    /// Agent frames dropped because their id belongs to no slot.
    pub agent_frames_dropped_no_slot: u64,
    /// Agent frames dropped because their id is the runtime's reserved one.
    pub agent_frames_dropped_reserved: u64,
    /// Agent frames dropped because their session was killed.
    pub agent_frames_dropped_tombstoned: u64,
    /// Agent frames dropped because their client was being cut off.
    pub agent_frames_dropped_cut_off: u64,
    /// Quarantined slots that became free.
    pub quarantines_ended: u64,
    /// `core.ready` frames after the first.
    pub agent_restarts: u64,
    /// `core.flow.credit` frames for no session the relay credits.
    pub credits_ignored: u64,
    /// Client frames held for credit.
    pub client_frames_held: u64,
}
