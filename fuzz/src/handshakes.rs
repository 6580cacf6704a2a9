//! Target `handshake_decoder`: the greeting a relay writes on accept, in
//! both forms.
//!
//! Two properties run on every input:
//!
//! 1. **Decoding any bytes** ([`check_bytes`]): a greeting that decodes
//!    re-encodes to exactly the bytes it was read from, every shorter prefix
//!    of it asks for more bytes, and its ids never include 0; an error stays
//!    an error whatever follows; "need more" on the whole input is "need
//!    more" on every prefix.
//! 2. **Decoding what a relay issues** ([`check_issued`]): the greeting of
//!    any legacy slot or any bounds slot, with any ready frame, decodes to
//!    the same form, range and frame, and the client's ids lie in its slot.

use bytes::BytesMut;
use relay_codec::{
    Flags, Frame, Handshake, LEGACY_SLOTS, LEGACY_STEP, MAX_BODY_SIZE, bounds_slot_of,
    bounds_slot_range, legacy_slot_of, legacy_slot_range,
};

use crate::Violation;
use crate::input::Input;

/// What [`check_bytes`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A greeting in this form.
    Greeting(Handshake),
    /// The bytes end before a greeting does.
    Incomplete,
    /// Not a greeting.
    Invalid,
}

/// Property 1 on one input.
pub fn check_bytes(bytes: &[u8]) -> Result<Decoded, Violation> {
    match Handshake::decode(bytes) {
        Ok(Some((handshake, frame, used))) => {
            check_decoded(bytes, handshake, &frame, used)?;
            Ok(Decoded::Greeting(handshake))
        }
        Ok(None) => {
            for cut in 0..bytes.len() {
                let shorter = Handshake::decode(&bytes[..cut]);
                if shorter != Ok(None) {
                    return Err(format!(
                        "{} bytes need more, but their first {cut} decode to {shorter:?}",
                        bytes.len()
                    ));
                }
            }
            Ok(Decoded::Incomplete)
        }
        Err(error) => {
            let mut longer = bytes.to_vec();
            longer.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 0, 0]);
            let again = Handshake::decode(&longer);
            if again != Err(error.clone()) {
                return Err(format!(
                    "an error ({error}) became {again:?} once more bytes arrived"
                ));
            }
            Ok(Decoded::Invalid)
        }
    }
}

fn check_decoded(
    bytes: &[u8],
    handshake: Handshake,
    frame: &Frame,
    used: usize,
) -> Result<(), Violation> {
    if used > bytes.len() || used != handshake.prefix_len() + frame.wire_len() {
        return Err(format!(
            "{handshake:?} with a {}-byte frame claims {used} of {} bytes",
            frame.wire_len(),
            bytes.len()
        ));
    }
    let mut encoded = BytesMut::new();
    handshake.encode(frame, &mut encoded);
    if encoded[..] != bytes[..used] {
        return Err(format!(
            "{handshake:?} decoded from {:?} re-encodes as {:?}",
            &bytes[..used.min(16)],
            &encoded[..encoded.len().min(16)]
        ));
    }
    for cut in 0..used {
        let shorter = Handshake::decode(&bytes[..cut]);
        if shorter != Ok(None) {
            return Err(format!(
                "a greeting of {used} bytes, cut at {cut}, decodes to {shorter:?}"
            ));
        }
    }
    // A legacy offset too close to u32::MAX leaves no room for the STEP ids
    // a 0.4.x client assumes: decode reads it (the prefix is well formed),
    // client_ids() says there are none, and a client reports that as an
    // error. No relay issues such an offset (the last slot's is 15 * STEP).
    let overflows = matches!(handshake, Handshake::Legacy { offset }
        if offset.checked_add(LEGACY_STEP - 1).is_none());
    match handshake.client_ids() {
        Some(ids) if !ids.contains(0) && !overflows => Ok(()),
        None if overflows => Ok(()),
        ids => Err(format!("{handshake:?} gives the client ids {ids:?}")),
    }
}

/// A greeting a relay issues: the slot layout, the slot, and the ready frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// `None` for the legacy layout, else the number of bounds slots.
    pub bounds_slots: Option<u32>,
    /// The client's slot.
    pub slot: u32,
    /// The cached `core.ready` frame (any frame will do for the handshake).
    pub ready: Frame,
}

impl Issued {
    /// Reads an issued greeting from fuzzer bytes.
    pub fn from_fuzz(input: &mut Input<'_>) -> Issued {
        let bounds_slots = input.bool().then(|| 1 + input.below(4096));
        let slot = input.below(bounds_slots.unwrap_or(LEGACY_SLOTS));
        let id = input.u32();
        let flags = Flags::from_bits(input.u8());
        let body = input.rest();
        let body = &body[..body.len().min(MAX_BODY_SIZE)];
        let ready = Frame::new(id, flags, body)
            .unwrap_or_else(|_| unreachable!("a body within MAX_BODY_SIZE always makes a frame"));
        Issued {
            bounds_slots,
            slot,
            ready,
        }
    }

    /// The handshake the relay writes for this slot.
    pub fn handshake(&self) -> Result<Handshake, Violation> {
        match self.bounds_slots {
            None => Ok(Handshake::Legacy {
                offset: legacy_slot_range(self.slot).first(),
            }),
            Some(slots) => bounds_slot_range(self.slot, slots)
                .map(|range| Handshake::Bounds { range })
                .ok_or_else(|| format!("slot {} of {slots} has no range", self.slot)),
        }
    }
}

/// Property 2 on one issued greeting.
pub fn check_issued(issued: &Issued) -> Result<(), Violation> {
    let handshake = issued.handshake()?;
    let mut bytes = BytesMut::new();
    handshake.encode(&issued.ready, &mut bytes);
    let len = bytes.len();
    for cut in 0..len {
        let shorter = Handshake::decode(&bytes[..cut]);
        if shorter != Ok(None) {
            return Err(format!(
                "{issued:?} cut at {cut} of {len} decodes to {shorter:?}"
            ));
        }
    }
    bytes.extend_from_slice(b"first frame");
    let decoded = Handshake::decode(&bytes);
    if decoded != Ok(Some((handshake, issued.ready.clone(), len))) {
        return Err(format!("{issued:?} ({handshake:?}) decodes to {decoded:?}"));
    }
    let Some(ids) = handshake.client_ids() else {
        return Err(format!("{handshake:?} gives the client no ids"));
    };
    let slot_of = |id| match issued.bounds_slots {
        None => Some(legacy_slot_of(id)),
        Some(slots) => bounds_slot_of(id, slots),
    };
    let own = Some(issued.slot);
    if ids.contains(0) || slot_of(ids.first()) != own || slot_of(ids.last()) != own {
        return Err(format!(
            "{handshake:?}: client ids {ids:?} leave slot {}",
            issued.slot
        ));
    }
    Ok(())
}

/// Both properties on one fuzzer input.
pub fn check(bytes: &[u8]) -> Result<Decoded, Violation> {
    let decoded = check_bytes(bytes)?;
    check_issued(&Issued::from_fuzz(&mut Input::new(bytes)))?;
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Frame {
        Frame::new(0, Flags::NONE, &[0xa3; 20]).unwrap()
    }

    #[test]
    fn every_issued_greeting_of_the_edge_slots_round_trips() {
        for (bounds_slots, slot) in [
            (None, 0),
            (None, 1),
            (None, 15),
            (Some(1), 0),
            (Some(128), 0),
            (Some(128), 127),
            (Some(4096), 4095),
        ] {
            check_issued(&Issued {
                bounds_slots,
                slot,
                ready: ready(),
            })
            .unwrap();
        }
    }

    #[test]
    fn decoded_bytes_are_sorted_into_greetings_gaps_and_errors() {
        let mut legacy = BytesMut::new();
        Handshake::Legacy {
            offset: 3 * LEGACY_STEP,
        }
        .encode(&ready(), &mut legacy);
        assert_eq!(
            check_bytes(&legacy),
            Ok(Decoded::Greeting(Handshake::Legacy {
                offset: 3 * LEGACY_STEP
            }))
        );
        assert_eq!(check_bytes(&legacy[..10]), Ok(Decoded::Incomplete));
        assert_eq!(check_bytes(&[0, 0, 0, 0, 0, 0, 0, 1]), Ok(Decoded::Invalid));
        assert_eq!(
            check_bytes(&[0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 2]),
            Ok(Decoded::Invalid),
            "a bounds range followed by a short frame length"
        );
    }

    #[test]
    fn a_legacy_offset_without_room_for_its_ids_decodes_to_no_ids() {
        // Found by the fuzzer: a well-formed prefix whose ids would overflow.
        let crash = [
            255, 255, 255, 4, 0, 0, 0, 5, 0, 255, 255, 255, 255, 4, 0, 0, 0, 0, 0, 255, 62, 255, 4,
            0, 0, 62, 255, 4, 0, 4, 152,
        ];
        let greeting = Handshake::Legacy {
            offset: 0xffff_ff04,
        };
        assert_eq!(check_bytes(&crash), Ok(Decoded::Greeting(greeting)));
        assert_eq!(greeting.client_ids(), None);
        check(&crash).unwrap();
    }

    #[test]
    fn issued_greetings_are_read_from_any_bytes() {
        let issued = Issued::from_fuzz(&mut Input::new(&[1, 0x10, 0x00, 0x05]));
        assert_eq!(
            issued.bounds_slots,
            Some(1),
            "0x1000 % 4096 slots, plus one"
        );
        check_issued(&issued).unwrap();
        for bytes in [&[][..], &[0], &[0xff; 3], &[0xff; 40]] {
            check(bytes).unwrap();
        }
    }
}
