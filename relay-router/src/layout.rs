//! How the id space is divided between clients, and who a client is.

use relay_codec::{
    Handshake, IdRange, LEGACY_SLOTS, bounds_slot_of, bounds_slot_range, legacy_slot_of,
    legacy_slot_range,
};

/// How the id space is divided between clients; decides the handshake form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLayout {
    /// 16 slots of `u32::MAX / 16` ids, announced with the 4-byte offset that
    /// microsandbox 0.4.x clients expect.
    Legacy,
    /// `slots` equal ranges, announced as `[start, end)` (microsandbox 0.5+).
    Bounds {
        /// Number of slots (at least 1).
        slots: u32,
    },
}

impl SlotLayout {
    /// Number of slots of this layout.
    pub fn slots(self) -> u32 {
        match self {
            SlotLayout::Legacy => LEGACY_SLOTS,
            SlotLayout::Bounds { slots } => slots,
        }
    }

    /// Every id a slot owns (for routing agent frames).
    pub(crate) fn range(self, slot: u32) -> Option<IdRange> {
        match self {
            SlotLayout::Legacy => (slot < LEGACY_SLOTS).then(|| legacy_slot_range(slot)),
            SlotLayout::Bounds { slots } => bounds_slot_range(slot, slots),
        }
    }

    /// The slot an agent frame's id belongs to.
    pub(crate) fn slot_of(self, id: u32) -> Option<u32> {
        match self {
            SlotLayout::Legacy => Some(legacy_slot_of(id)),
            SlotLayout::Bounds { slots } => bounds_slot_of(id, slots),
        }
    }

    pub(crate) fn handshake(self, slot: u32, range: IdRange) -> Handshake {
        match self {
            SlotLayout::Legacy => Handshake::Legacy {
                offset: range.first(),
            },
            SlotLayout::Bounds { .. } => {
                debug_assert!(slot < self.slots());
                Handshake::Bounds { range }
            }
        }
    }
}

/// Identifies one connected client: its slot plus a generation, so an event
/// about a client that has gone never touches the slot's next owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    pub(crate) slot: u32,
    pub(crate) generation: u64,
}

impl ClientId {
    /// The slot the client occupies.
    pub fn slot(self) -> u32 {
        self.slot
    }

    /// Increases for every admission; unique for the router's lifetime.
    pub fn generation(self) -> u64 {
        self.generation
    }
}
