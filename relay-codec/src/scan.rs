//! Finding frames in a byte stream without keeping them: the header parser
//! every reader of raw bytes uses, and a zero-copy scanner over one fixed
//! buffer that hands out small frames whole (borrowed) and large ones as a
//! header plus a skip of their body.
//!
//! For peers that look at frames and let them go (a bench agent, a test
//! double, a plain relay). The relay itself keeps frames it queues with
//! [`FrameAssembler`](crate::FrameAssembler), which gives each its own
//! allocation.

use std::io::{self, Read};

use crate::error::FrameError;
use crate::frame::{FrameHeader, check_len};
use crate::wire::{Flags, LEN_PREFIX_SIZE, WIRE_HEADER_SIZE};

impl FrameHeader {
    /// Reads a frame's first [`WIRE_HEADER_SIZE`] bytes: its routing header
    /// and its whole wire length (the length prefix included), with the
    /// prefix checked against the protocol's bounds.
    pub fn parse(bytes: &[u8; WIRE_HEADER_SIZE]) -> Result<(FrameHeader, usize), FrameError> {
        let [l0, l1, l2, l3, i0, i1, i2, i3, flags] = *bytes;
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        check_len(len)?;
        let header = FrameHeader {
            id: u32::from_be_bytes([i0, i1, i2, i3]),
            flags: Flags::from_bits(flags),
        };
        Ok((header, LEN_PREFIX_SIZE + len))
    }
}

/// Bytes past the header a large frame's report includes (when the frame
/// has them): enough for a peer to tell what the frame is.
pub const LARGE_PEEK: usize = 16;

/// One frame found by a [`FrameScanner`].
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned<'a> {
    /// A frame of at most the scanner's whole-frame size, all of it.
    Whole {
        /// Its routing header.
        header: FrameHeader,
        /// Its wire image, length prefix included.
        wire: &'a [u8],
    },
    /// A larger frame: its body is skipped as it arrives, never copied.
    Large {
        /// Its routing header.
        header: FrameHeader,
        /// Its whole wire length.
        wire_len: usize,
        /// Its first bytes: the header and up to [`LARGE_PEEK`] body bytes.
        head: &'a [u8],
    },
}

impl Scanned<'_> {
    /// The frame's routing header.
    pub fn header(&self) -> FrameHeader {
        match self {
            Scanned::Whole { header, .. } | Scanned::Large { header, .. } => *header,
        }
    }

    /// The frame's whole wire length.
    pub fn wire_len(&self) -> usize {
        match self {
            Scanned::Whole { wire, .. } => wire.len(),
            Scanned::Large { wire_len, .. } => *wire_len,
        }
    }

    /// The frame's first body byte, if it has one (and it was seen).
    pub fn first_body_byte(&self) -> Option<u8> {
        match self {
            Scanned::Whole { wire, .. } => wire.get(WIRE_HEADER_SIZE).copied(),
            Scanned::Large { head, .. } => head.get(WIRE_HEADER_SIZE).copied(),
        }
    }
}

/// Finds frames in a byte stream read into one fixed buffer. Frames of at
/// most `whole_max` bytes come out whole; larger ones by header, their
/// bodies skipped, so a sink costs little more than its reads.
#[derive(Debug)]
pub struct FrameScanner {
    buf: Box<[u8]>,
    head: usize,
    tail: usize,
    /// Body bytes of a large frame still to skip.
    skip: usize,
    whole_max: usize,
}

impl FrameScanner {
    /// A scanner reading up to `capacity` bytes at a time (at least twice
    /// `whole_max`), handing out frames of up to `whole_max` bytes whole.
    pub fn new(capacity: usize, whole_max: usize) -> FrameScanner {
        let whole_max = whole_max.max(WIRE_HEADER_SIZE + LARGE_PEEK);
        FrameScanner {
            buf: vec![0; capacity.max(2 * whole_max)].into_boxed_slice(),
            head: 0,
            tail: 0,
            skip: 0,
            whole_max,
        }
    }

    /// Adds bytes that were read elsewhere (a handshake's leftovers).
    /// Returns how many fitted.
    pub fn seed(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = bytes.len().min(spare.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
        n
    }

    /// Reads once from `reader` into the free space; `Ok(0)` at end of stream.
    pub fn fill(&mut self, reader: &mut impl Read) -> io::Result<usize> {
        let n = reader.read(self.spare())?;
        self.filled(n);
        Ok(n)
    }

    /// The free space to read into; call [`filled`](Self::filled) after.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        } else if self.buf.len() - self.tail < self.whole_max {
            self.buf.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        &mut self.buf[self.tail..]
    }

    /// Records `n` bytes read into [`spare`](Self::spare).
    pub fn filled(&mut self, n: usize) {
        self.tail = (self.tail + n).min(self.buf.len());
    }

    /// Whether part of a frame has been read but not all of it.
    pub fn is_mid_frame(&self) -> bool {
        self.skip > 0 || self.head < self.tail
    }

    /// The next frame in what was read, or `None` until more is read. An
    /// error is a malformed stream: the scanner must not be used again.
    pub fn next_frame(&mut self) -> Result<Option<Scanned<'_>>, FrameError> {
        if self.skip > 0 {
            let n = self.skip.min(self.tail - self.head);
            self.head += n;
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        let start = self.head;
        let avail = self.tail - start;
        let Some(bytes) = self.buf[start..self.tail].first_chunk::<WIRE_HEADER_SIZE>() else {
            return Ok(None);
        };
        let (header, wire_len) = FrameHeader::parse(bytes)?;
        if wire_len <= self.whole_max {
            if avail < wire_len {
                return Ok(None);
            }
            self.head += wire_len;
            let wire = &self.buf[start..start + wire_len];
            return Ok(Some(Scanned::Whole { header, wire }));
        }
        let peek = WIRE_HEADER_SIZE + LARGE_PEEK;
        if avail < peek {
            return Ok(None);
        }
        let now = wire_len.min(avail);
        self.head += now;
        self.skip = wire_len - now;
        let head = &self.buf[start..start + peek];
        Ok(Some(Scanned::Large {
            header,
            wire_len,
            head,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, MAX_FRAME_SIZE};

    /// `(id, first body byte, wire_len, whole)` of every frame found when
    /// `stream` arrives `piece` bytes at a time.
    fn scan(stream: &[u8], piece: usize) -> Vec<(u32, Option<u8>, usize, bool)> {
        let mut scanner = FrameScanner::new(3 * 4096, 4096);
        let mut found = Vec::new();
        for chunk in stream.chunks(piece) {
            let mut input = chunk;
            while !input.is_empty() {
                input = &input[scanner.seed(input)..];
                while let Some(item) = scanner.next_frame().unwrap() {
                    let whole = matches!(item, Scanned::Whole { .. });
                    found.push((
                        item.header().id,
                        item.first_body_byte(),
                        item.wire_len(),
                        whole,
                    ));
                }
            }
        }
        assert!(!scanner.is_mid_frame());
        found
    }

    #[test]
    fn frames_of_every_size_are_found_whatever_the_read_sizes() {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (i, body) in [1usize, 55, 4087, 4088, 65527, 0, 299_991, 55]
            .into_iter()
            .enumerate()
        {
            let id = i as u32 + 7;
            let frame = Frame::new(id, Flags::NONE, &vec![i as u8; body]).unwrap();
            stream.extend_from_slice(frame.as_wire());
            let first = (body > 0).then_some(i as u8);
            expected.push((id, first, frame.wire_len(), frame.wire_len() <= 4096));
        }
        for piece in [1, 3, 9, 10, 64, 1000, 4096, 70_000, stream.len()] {
            assert_eq!(scan(&stream, piece), expected, "read pieces of {piece}");
        }
    }

    #[test]
    fn a_length_outside_the_protocol_is_an_error_as_soon_as_the_header_arrives() {
        let mut scanner = FrameScanner::new(1 << 16, 4096);
        scanner.seed(&[0, 0, 0, 4, 0, 0, 0, 1, 0]);
        assert_eq!(
            scanner.next_frame(),
            Err(FrameError::FrameTooShort { len: 4 })
        );
        let mut scanner = FrameScanner::new(1 << 16, 4096);
        let len = (MAX_FRAME_SIZE as u32 + 1).to_be_bytes();
        scanner.seed(&[len[0], len[1], len[2], len[3], 0, 0, 0, 1, 0]);
        assert!(matches!(
            scanner.next_frame(),
            Err(FrameError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn the_header_parser_agrees_with_the_frame() {
        let frame = Frame::new(0x0102_0304, Flags::TERMINAL, b"xyz").unwrap();
        let bytes = frame.as_wire().first_chunk::<WIRE_HEADER_SIZE>().unwrap();
        assert_eq!(
            FrameHeader::parse(bytes),
            Ok((frame.header(), frame.wire_len()))
        );
    }
}
