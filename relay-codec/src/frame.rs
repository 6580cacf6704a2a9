//! The raw frame: routing header plus an undecoded body, kept as its wire image.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::FrameError;
use crate::wire::{FRAME_HEADER_SIZE, Flags, LEN_PREFIX_SIZE, MAX_FRAME_SIZE, WIRE_HEADER_SIZE};

/// The routing header of a frame: everything a relay needs to route it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Correlation id.
    pub id: u32,
    /// Flags byte.
    pub flags: Flags,
}

/// One frame, held as the exact bytes it has on the wire (length prefix
/// included), so routing and forwarding never re-encode or copy it.
///
/// A `Frame` is always well formed: `len` agrees with the buffer and lies in
/// `FRAME_HEADER_SIZE..=MAX_FRAME_SIZE`.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    wire: Bytes,
}

impl Frame {
    /// Builds a frame from its parts, copying `body` once.
    pub fn new(id: u32, flags: Flags, body: &[u8]) -> Result<Frame, FrameError> {
        let len = check_len(FRAME_HEADER_SIZE + body.len())?;
        let mut wire = BytesMut::with_capacity(LEN_PREFIX_SIZE + len as usize);
        wire.put_u32(len);
        wire.put_u32(id);
        wire.put_u8(flags.bits());
        wire.put_slice(body);
        Ok(Frame {
            wire: wire.freeze(),
        })
    }

    /// Wraps a complete wire image, checking that it is exactly one frame.
    pub fn from_wire(wire: Bytes) -> Result<Frame, FrameError> {
        let Some(prefix) = wire.first_chunk::<LEN_PREFIX_SIZE>() else {
            return Err(FrameError::Truncated {
                have: wire.len(),
                need: WIRE_HEADER_SIZE,
            });
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        check_len(len)?;
        let need = LEN_PREFIX_SIZE + len;
        if wire.len() != need {
            return Err(FrameError::LengthMismatch {
                len,
                actual: wire.len() - LEN_PREFIX_SIZE,
            });
        }
        Ok(Frame { wire })
    }

    /// Wraps a buffer already checked by a decoder.
    pub(crate) fn from_checked(wire: Bytes) -> Frame {
        debug_assert!(Frame::from_wire(wire.clone()).is_ok());
        Frame { wire }
    }

    /// The correlation id.
    pub fn id(&self) -> u32 {
        read_u32(&self.wire[LEN_PREFIX_SIZE..])
    }

    /// The flags byte.
    pub fn flags(&self) -> Flags {
        Flags::from_bits(self.wire[LEN_PREFIX_SIZE + 4])
    }

    /// Id and flags together.
    pub fn header(&self) -> FrameHeader {
        FrameHeader {
            id: self.id(),
            flags: self.flags(),
        }
    }

    /// The CBOR body, undecoded.
    pub fn body(&self) -> &[u8] {
        &self.wire[WIRE_HEADER_SIZE..]
    }

    /// The whole frame as it goes on the wire, prefix included.
    pub fn as_wire(&self) -> &[u8] {
        &self.wire
    }

    /// The whole frame as shared bytes (cheap to clone).
    pub fn into_wire(self) -> Bytes {
        self.wire
    }

    /// Bytes the frame occupies on the wire, prefix included.
    pub fn wire_len(&self) -> usize {
        self.wire.len()
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.wire
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("id", &self.id())
            .field("flags", &self.flags())
            .field("body_len", &self.body().len())
            .finish()
    }
}

/// Checks a `len` value against the protocol bounds.
pub(crate) fn check_len(len: usize) -> Result<u32, FrameError> {
    if len < FRAME_HEADER_SIZE {
        return Err(FrameError::FrameTooShort { len });
    }
    if len > MAX_FRAME_SIZE {
        return Err(FrameError::FrameTooLarge {
            len,
            max: MAX_FRAME_SIZE,
        });
    }
    // The bound above keeps `len` within u32 (checked at compile time in `wire`).
    Ok(len as u32)
}

/// Reads a big-endian u32 from the first four bytes; callers check the length.
pub(crate) fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_frame_lays_out_prefix_header_and_body() {
        let frame = Frame::new(0x0102_0304, Flags::TERMINAL, b"xyz").unwrap();
        assert_eq!(
            frame.as_wire(),
            &[0, 0, 0, 8, 1, 2, 3, 4, 1, b'x', b'y', b'z']
        );
        assert_eq!(frame.id(), 0x0102_0304);
        assert_eq!(frame.flags(), Flags::TERMINAL);
        assert_eq!(frame.body(), b"xyz");
        assert_eq!(frame.wire_len(), 12);
    }

    #[test]
    fn from_wire_rejects_a_length_that_disagrees_with_the_buffer() {
        let wire = Bytes::from_static(&[0, 0, 0, 6, 0, 0, 0, 1, 0]);
        assert_eq!(
            Frame::from_wire(wire),
            Err(FrameError::LengthMismatch { len: 6, actual: 5 })
        );
    }

    #[test]
    fn from_wire_rejects_a_short_len() {
        let wire = Bytes::from_static(&[0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(
            Frame::from_wire(wire),
            Err(FrameError::FrameTooShort { len: 4 })
        );
    }

    #[test]
    fn a_body_larger_than_the_maximum_cannot_become_a_frame() {
        let body = vec![0u8; MAX_FRAME_SIZE - FRAME_HEADER_SIZE + 1];
        assert_eq!(
            Frame::new(1, Flags::NONE, &body),
            Err(FrameError::FrameTooLarge {
                len: MAX_FRAME_SIZE + 1,
                max: MAX_FRAME_SIZE
            })
        );
        let body = &body[1..];
        assert_eq!(
            Frame::new(1, Flags::NONE, body).unwrap().wire_len(),
            MAX_FRAME_SIZE + 4
        );
    }
}
