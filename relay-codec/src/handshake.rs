//! The relay's greeting to a new client, and all id-range arithmetic.
//!
//! On accept the relay writes an id prefix and then the cached `core.ready`
//! frame. The prefix has two forms:
//!
//! ```text
//! legacy (0.4.x):  +-------------------+
//!                  | offset: u32 BE    |   ids offset+1 .. offset+STEP
//!                  +-------------------+
//! bounds (0.5+):   +-------------------+-------------------------+
//!                  | start: u32 BE     | end_exclusive: u32 BE   |
//!                  +-------------------+-------------------------+
//! ```
//!
//! A reader tells them apart from the eight bytes after accept: in the legacy
//! form the second word is the ready frame's `len` (between 5 and 4 MiB) and
//! the offset is 0 or at least that large; in the bounds form the second word
//! is greater than the first.

use bytes::{BufMut, BytesMut};

use crate::error::HandshakeError;
use crate::frame::{Frame, read_u32};
use crate::wire::{FRAME_HEADER_SIZE, MAX_FRAME_SIZE};

/// Number of slots a legacy client assumes.
pub const LEGACY_SLOTS: u32 = 16;

/// Ids per legacy slot: slot `i` owns `[i * STEP, (i + 1) * STEP)`, and the
/// last slot also takes the remainder up to `u32::MAX`.
pub const LEGACY_STEP: u32 = u32::MAX / LEGACY_SLOTS;

const _: () = assert!(LEGACY_STEP == 268_435_455);

/// An inclusive range of correlation ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdRange {
    first: u32,
    last: u32,
}

impl IdRange {
    /// `first..=last`, or `None` when empty.
    pub const fn new(first: u32, last: u32) -> Option<IdRange> {
        if first > last {
            return None;
        }
        Some(IdRange { first, last })
    }

    /// The first id.
    pub const fn first(self) -> u32 {
        self.first
    }

    /// The last id (inclusive).
    pub const fn last(self) -> u32 {
        self.last
    }

    /// Whether `id` lies in the range.
    pub const fn contains(self, id: u32) -> bool {
        self.first <= id && id <= self.last
    }

    /// How many ids the range holds.
    pub const fn len(self) -> u64 {
        self.last as u64 - self.first as u64 + 1
    }

    /// Always false: an `IdRange` holds at least one id.
    pub const fn is_empty(self) -> bool {
        false
    }

    /// Ids a client may use: the range without id 0.
    pub const fn without_zero(self) -> Option<IdRange> {
        if self.first == 0 {
            IdRange::new(1, self.last)
        } else {
            Some(self)
        }
    }
}

/// The range legacy slot `slot` owns (all ids, including `slot * STEP`).
///
/// `slot` must be below [`LEGACY_SLOTS`]; larger values are clamped to the
/// last slot.
pub const fn legacy_slot_range(slot: u32) -> IdRange {
    let slot = if slot < LEGACY_SLOTS {
        slot
    } else {
        LEGACY_SLOTS - 1
    };
    let first = slot * LEGACY_STEP;
    let last = if slot == LEGACY_SLOTS - 1 {
        u32::MAX
    } else {
        first + LEGACY_STEP - 1
    };
    IdRange { first, last }
}

/// The legacy slot an id belongs to (the last slot takes the remainder).
pub const fn legacy_slot_of(id: u32) -> u32 {
    let slot = id / LEGACY_STEP;
    if slot < LEGACY_SLOTS {
        slot
    } else {
        LEGACY_SLOTS - 1
    }
}

/// Splits `1..u32::MAX` into `slots` equal ranges for the bounds form.
///
/// Returns the range of `slot`, or `None` when `slot >= slots` or `slots` is 0.
/// Id 0 is kept out of every range, and so is `u32::MAX`, which the
/// exclusive end of the bounds form cannot express.
pub fn bounds_slot_range(slot: u32, slots: u32) -> Option<IdRange> {
    if slot >= slots {
        return None;
    }
    let step = bounds_step(slots);
    let first = 1 + slot * step;
    IdRange::new(first, first + step - 1)
}

/// The bounds-form slot an id belongs to, if any.
pub fn bounds_slot_of(id: u32, slots: u32) -> Option<u32> {
    if id == 0 || slots == 0 {
        return None;
    }
    let slot = (id - 1) / bounds_step(slots);
    (slot < slots).then_some(slot)
}

fn bounds_step(slots: u32) -> u32 {
    (u32::MAX - 1) / slots.max(1)
}

/// The id prefix a relay writes on accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// `[offset: u32 BE]`; the client uses `offset + 1 .. offset + STEP`.
    Legacy {
        /// `slot * LEGACY_STEP`.
        offset: u32,
    },
    /// `[start: u32 BE][end_exclusive: u32 BE]`.
    Bounds {
        /// The ids the client owns.
        range: IdRange,
    },
}

impl Handshake {
    /// The ids the client may use for its requests (never 0).
    ///
    /// For the legacy form this is what a 0.4.x client assumes,
    /// `offset + 1 .. offset + STEP`, even in the last slot.
    pub fn client_ids(&self) -> Option<IdRange> {
        match *self {
            Handshake::Legacy { offset } => {
                IdRange::new(offset.checked_add(1)?, offset.checked_add(LEGACY_STEP - 1)?)
            }
            Handshake::Bounds { range } => range.without_zero(),
        }
    }

    /// Encoded size of the prefix.
    pub fn prefix_len(&self) -> usize {
        match self {
            Handshake::Legacy { .. } => 4,
            Handshake::Bounds { .. } => 8,
        }
    }

    /// Appends the prefix and the ready frame.
    ///
    /// A bounds range ending at `u32::MAX` is written with
    /// `end_exclusive = u32::MAX`, dropping that single id.
    pub fn encode(&self, ready: &Frame, dst: &mut BytesMut) {
        dst.reserve(self.prefix_len() + ready.wire_len());
        match *self {
            Handshake::Legacy { offset } => dst.put_u32(offset),
            Handshake::Bounds { range } => {
                dst.put_u32(range.first());
                dst.put_u32(range.last().saturating_add(1));
            }
        }
        dst.put_slice(ready.as_wire());
    }

    /// Decodes a greeting from the start of `buf`.
    ///
    /// Returns `Ok(None)` while more bytes are needed, otherwise the prefix,
    /// the ready frame and the bytes consumed.
    pub fn decode(buf: &[u8]) -> Result<Option<(Handshake, Frame, usize)>, HandshakeError> {
        let Some(words) = buf.first_chunk::<8>() else {
            return Ok(None);
        };
        let first = read_u32(&words[..4]);
        let second = read_u32(&words[4..]);
        let frame_len_range = FRAME_HEADER_SIZE as u32..=MAX_FRAME_SIZE as u32;
        let legacy = frame_len_range.contains(&second) && (first == 0 || first >= second);
        let (handshake, frame_start) = if legacy {
            (Handshake::Legacy { offset: first }, 4)
        } else {
            let range = match second
                .checked_sub(1)
                .and_then(|last| IdRange::new(first, last))
            {
                Some(range) if range.without_zero().is_some() => range,
                _ => {
                    return Err(HandshakeError::EmptyRange {
                        start: first,
                        end: second,
                    });
                }
            };
            (Handshake::Bounds { range }, 8)
        };
        let rest = &buf[frame_start..];
        let Some(prefix) = rest.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = crate::frame::check_len(u32::from_be_bytes(*prefix) as usize)? as usize;
        let total = 4 + len;
        if rest.len() < total {
            return Ok(None);
        }
        let frame = Frame::from_wire(bytes::Bytes::copy_from_slice(&rest[..total]))?;
        Ok(Some((handshake, frame, frame_start + total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Flags;

    fn ready() -> Frame {
        Frame::new(0, Flags::NONE, &[0xa0; 40]).unwrap()
    }

    #[test]
    fn legacy_slots_tile_the_whole_id_space() {
        assert_eq!(legacy_slot_range(0).first(), 0);
        for slot in 0..LEGACY_SLOTS - 1 {
            let here = legacy_slot_range(slot);
            let next = legacy_slot_range(slot + 1);
            assert_eq!(here.last() + 1, next.first());
            assert_eq!(legacy_slot_of(here.first()), slot);
            assert_eq!(legacy_slot_of(here.last()), slot);
        }
        assert_eq!(legacy_slot_range(15).last(), u32::MAX);
        assert_eq!(legacy_slot_of(u32::MAX), 15);
        assert_eq!(legacy_slot_of(15 * LEGACY_STEP), 15);
    }

    #[test]
    fn legacy_client_ids_start_after_the_offset() {
        let ids = Handshake::Legacy {
            offset: 2 * LEGACY_STEP,
        }
        .client_ids()
        .unwrap();
        assert_eq!(ids.first(), 2 * LEGACY_STEP + 1);
        assert_eq!(ids.last(), 3 * LEGACY_STEP - 1);
        assert_eq!(legacy_slot_of(ids.last()), 2);
    }

    #[test]
    fn bounds_slots_never_include_id_zero_and_do_not_overlap() {
        for slots in [1u32, 2, 16, 128, 1024] {
            let mut previous_last = 0;
            for slot in 0..slots {
                let range = bounds_slot_range(slot, slots).unwrap();
                assert_eq!(range.first(), previous_last + 1);
                assert_eq!(bounds_slot_of(range.first(), slots), Some(slot));
                assert_eq!(bounds_slot_of(range.last(), slots), Some(slot));
                previous_last = range.last();
            }
            assert!(bounds_slot_range(slots, slots).is_none());
            assert_eq!(bounds_slot_of(0, slots), None);
        }
    }

    #[test]
    fn both_forms_round_trip_with_their_ready_frame() {
        for handshake in [
            Handshake::Legacy { offset: 0 },
            Handshake::Legacy {
                offset: 15 * LEGACY_STEP,
            },
            Handshake::Bounds {
                range: bounds_slot_range(0, 128).unwrap(),
            },
            Handshake::Bounds {
                range: bounds_slot_range(127, 128).unwrap(),
            },
        ] {
            let mut buf = BytesMut::new();
            handshake.encode(&ready(), &mut buf);
            for cut in 0..buf.len() {
                assert_eq!(Handshake::decode(&buf[..cut]), Ok(None), "cut at {cut}");
            }
            buf.put_slice(b"next");
            let (decoded, frame, used) = Handshake::decode(&buf).unwrap().unwrap();
            assert_eq!(decoded, handshake);
            assert_eq!(frame, ready());
            assert_eq!(used, buf.len() - 4);
        }
    }

    #[test]
    fn an_empty_bounds_range_is_an_error() {
        let mut buf = BytesMut::new();
        buf.put_u32(0);
        buf.put_u32(1);
        buf.put_slice(ready().as_wire());
        assert_eq!(
            Handshake::decode(&buf),
            Err(HandshakeError::EmptyRange { start: 0, end: 1 })
        );
    }
}
