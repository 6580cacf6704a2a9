//! The router's settings.

use std::time::Duration;

use relay_codec::LEGACY_SLOTS;

use crate::SlotLayout;

/// Router settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Division of the id space.
    pub layout: SlotLayout,
    /// Most clients connected at once (at most the layout's slot count).
    pub max_clients: u32,
    /// How long a departed client's killed session may stay silent before
    /// it is forgotten; counted from when its kill was written, and again
    /// from every frame it sends after that.
    pub quarantine_grace: Duration,
    /// Most sessions one slot may hold: its client's open sessions plus the
    /// killed sessions of earlier owners not yet ended.
    pub max_sessions_per_client: usize,
    /// Bytes one client's queue may be charged (see `frame_overhead`).
    pub client_queue_budget: usize,
    /// Bytes all clients' queues may be charged together.
    pub total_queue_budget: usize,
    /// What one queued frame costs beyond its wire bytes (queue slot and
    /// allocation), as the server that holds the queues measures it.
    pub frame_overhead: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            layout: SlotLayout::Legacy,
            max_clients: LEGACY_SLOTS,
            quarantine_grace: Duration::from_secs(10),
            max_sessions_per_client: 1024,
            client_queue_budget: 16 << 20,
            total_queue_budget: 256 << 20,
            frame_overhead: 0,
        }
    }
}

impl RouterConfig {
    /// What a frame of `len` wire bytes is charged against the budgets.
    pub fn charge(&self, len: usize) -> usize {
        len.saturating_add(self.frame_overhead)
    }
}

/// A configuration the router cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The bounds layout needs at least one slot.
    #[error("the bounds layout needs at least one slot")]
    NoSlots,
    /// More clients than slots.
    #[error("max_clients {max_clients} exceeds the layout's {slots} slots")]
    TooManyClients {
        /// Requested maximum.
        max_clients: u32,
        /// Slots available.
        slots: u32,
    },
    /// `max_clients` of zero would refuse everyone.
    #[error("max_clients must be at least 1")]
    NoClients,
}
