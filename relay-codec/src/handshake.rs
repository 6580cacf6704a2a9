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

/// The bounds-form range of `slot`, exactly as microsandbox 0.7 issues it:
/// with `S = u32::MAX / slots`, slot `k` owns `[k*S + 1, (k+1)*S)`.
///
/// Returns `None` when `slot >= slots`, `slots` is 0, or the range would be
/// empty (more than `u32::MAX / 2` slots). The ids `k*S` (0 among them) and
/// the tail past `slots*S` belong to no slot; `u32::MAX` is always in the
/// tail ([`RUNTIME_RESERVED_ID`](crate::RUNTIME_RESERVED_ID)).
pub fn bounds_slot_range(slot: u32, slots: u32) -> Option<IdRange> {
    if slot >= slots {
        return None;
    }
    let step = u32::MAX / slots;
    let start = slot * step;
    IdRange::new(start + 1, start + step - 1)
}

/// The bounds-form slot an id belongs to, if any (see [`bounds_slot_range`]).
pub fn bounds_slot_of(id: u32, slots: u32) -> Option<u32> {
    if slots == 0 {
        return None;
    }
    let step = u32::MAX / slots;
    let slot = id / step;
    (slot < slots && step > 1 && !id.is_multiple_of(step)).then_some(slot)
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
    /// A bounds range ending at `u32::MAX` (which [`bounds_slot_range`]
    /// never issues) is written with `end_exclusive = u32::MAX`, dropping
    /// that single id.
    pub fn encode(&self, ready: &Frame, dst: &mut BytesMut) {
        dst.reserve(self.prefix_len() + ready.wire_len());
        self.encode_prefix(dst);
        dst.put_slice(ready.as_wire());
    }

    /// Appends the prefix alone (a relay that sends the cached ready frame
    /// after it without copying it).
    pub fn encode_prefix(&self, dst: &mut BytesMut) {
        match *self {
            Handshake::Legacy { offset } => dst.put_u32(offset),
            Handshake::Bounds { range } => {
                dst.put_u32(range.first());
                dst.put_u32(range.last().saturating_add(1));
            }
        }
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
    fn bounds_slots_are_upstreams_canonical_ranges() {
        for slots in [1u32, 2, 3, 15, 16, 128, 1024, 65_535] {
            let step = u32::MAX / slots;
            for slot in [0, 1, slots / 2, slots - 1]
                .into_iter()
                .filter(|&s| s < slots)
            {
                let Some(range) = bounds_slot_range(slot, slots) else {
                    panic!("slot {slot} of {slots} has no range");
                };
                // [k*S + 1, (k+1)*S), as microsandbox 0.7 validates them.
                assert_eq!(range.first(), slot * step + 1);
                assert_eq!(
                    u64::from(range.last()) + 1,
                    u64::from(slot + 1) * u64::from(step)
                );
                assert_eq!(bounds_slot_of(range.first(), slots), Some(slot));
                assert_eq!(bounds_slot_of(range.last(), slots), Some(slot));
                assert_eq!(bounds_slot_of(range.first() - 1, slots), None);
                assert_eq!(bounds_slot_of(range.last() + 1, slots), None);
            }
            assert!(bounds_slot_range(slots, slots).is_none());
            assert_eq!(bounds_slot_of(0, slots), None);
            assert_eq!(bounds_slot_of(u32::MAX, slots), None);
        }
        assert!(bounds_slot_range(0, u32::MAX).is_none());
        assert!(bounds_slot_range(0, 0).is_none());
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
