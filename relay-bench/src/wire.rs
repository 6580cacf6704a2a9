//! The benchmark's own little protocol inside ordinary relay frames, and a
//! scanner that finds frames in a byte stream without copying large bodies.
//!
//! The relay never looks at a body (except `core.ready`), so the bench
//! agent is told what to do by the first body byte, its *tag*:
//!
//! | tag | sent by | meaning |
//! |---|---|---|
//! | `e` | client | echo this frame back unchanged |
//! | `d` | client | data: discard it (a sink) |
//! | `s` | client | start a stream: `[s][total: u64 BE][frame: u32 BE]` |
//! | `q` | client | stop the stream of id `[q][target: u32 BE]` |
//! | `x` | agent | one frame of a stream (`frame` bytes on the wire) |
//! | `f` | agent | the stream of this id ended (after its last `x`) |
//!
//! A stream sends `total / frame` frames of `frame` wire bytes to the id of
//! the `s` frame, then `f`; `total = u64::MAX` streams until stopped.
//!
//! Frames on the connection id (0) are not tagged: they are our relay's
//! `core.flow.accept` and `core.flow.credit` messages to a bench agent that
//! offered flow control, and carry an ordinary CBOR body.

use std::io::{self, Read};

use relay_codec::{LEN_PREFIX_SIZE, WIRE_HEADER_SIZE};

/// Echo this frame back.
pub(crate) const ECHO: u8 = b'e';
/// Discard this frame.
pub(crate) const DATA: u8 = b'd';
/// Start a stream toward this frame's id.
pub(crate) const SOURCE: u8 = b's';
/// Stop the stream toward the id in the body.
pub(crate) const STOP: u8 = b'q';
/// A frame of a stream.
pub(crate) const STREAM: u8 = b'x';
/// A stream ended.
pub(crate) const FIN: u8 = b'f';

/// `total` that never runs out.
pub(crate) const ENDLESS: u64 = u64::MAX;

/// Wire bytes of the smallest frame that carries a tag.
pub(crate) const MIN_TAGGED: usize = WIRE_HEADER_SIZE + 1;

/// Frames up to this many wire bytes are handed out whole by [`Scanner`];
/// larger ones only by their header, their bodies skipped.
pub(crate) const WHOLE_MAX: usize = 4096;

/// A frame of `wire_len` bytes (at least [`MIN_TAGGED`]) for `id` whose body
/// starts with `tag`; the rest of the body is filler.
pub(crate) fn frame(id: u32, tag: u8, wire_len: usize) -> Vec<u8> {
    let wire_len = wire_len.max(MIN_TAGGED);
    let mut out = Vec::with_capacity(wire_len);
    let len = u32::try_from(wire_len - LEN_PREFIX_SIZE).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0); // flags: none
    out.push(tag);
    out.extend((out.len()..wire_len).map(|i| i.to_le_bytes()[0]));
    out
}

/// The `s` frame that asks for `total` bytes in frames of `frame_len` bytes.
pub(crate) fn source_request(id: u32, total: u64, frame_len: u32) -> Vec<u8> {
    let mut out = frame(id, SOURCE, MIN_TAGGED + 12);
    let args = &mut out[MIN_TAGGED..];
    args[..8].copy_from_slice(&total.to_be_bytes());
    args[8..12].copy_from_slice(&frame_len.to_be_bytes());
    out
}

/// `frame` with the `SESSION_START` flag: a stream request that opens a
/// session, as flow control needs (the relay credits sessions only).
pub(crate) fn opening_session(mut frame: Vec<u8>) -> Vec<u8> {
    if let Some(flags) = frame.get_mut(WIRE_HEADER_SIZE - 1) {
        *flags = relay_codec::Flags::SESSION_START.bits();
    }
    frame
}

/// The `q` frame (sent on `id`) that stops the stream toward `target`.
pub(crate) fn stop_request(id: u32, target: u32) -> Vec<u8> {
    let mut out = frame(id, STOP, MIN_TAGGED + 4);
    out[MIN_TAGGED..].copy_from_slice(&target.to_be_bytes());
    out
}

/// What a whole frame says, read from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// The correlation id.
    pub(crate) id: u32,
    /// The flags byte (the bench's own frames carry none unless they open
    /// a session).
    pub(crate) flags: u8,
    /// The first body byte (0 for a frame without a body).
    pub(crate) tag: u8,
    /// Bytes on the wire, length prefix included.
    pub(crate) wire_len: usize,
}

impl Header {
    /// Reads the header from at least [`MIN_TAGGED`] bytes (or a whole
    /// shorter frame).
    fn parse(bytes: &[u8]) -> Header {
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_be_bytes)
        };
        Header {
            wire_len: word(0) as usize + LEN_PREFIX_SIZE,
            id: word(LEN_PREFIX_SIZE),
            flags: bytes.get(WIRE_HEADER_SIZE - 1).copied().unwrap_or(0),
            tag: bytes.get(WIRE_HEADER_SIZE).copied().unwrap_or(0),
        }
    }
}

/// Arguments of an `s` frame: `(total, frame_len)`.
pub(crate) fn source_args(frame: &[u8]) -> Option<(u64, usize)> {
    let args = frame.get(MIN_TAGGED..MIN_TAGGED + 12)?;
    let total = u64::from_be_bytes(args[..8].try_into().ok()?);
    let frame_len = u32::from_be_bytes(args[8..].try_into().ok()?) as usize;
    Some((total, frame_len))
}

/// The target id of a `q` frame.
pub(crate) fn stop_target(frame: &[u8]) -> Option<u32> {
    let args = frame.get(MIN_TAGGED..MIN_TAGGED + 4)?;
    Some(u32::from_be_bytes(args.try_into().ok()?))
}

/// One frame found by the [`Scanner`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// A frame of at most [`WHOLE_MAX`] bytes, all of it.
    Whole(Header, &'a [u8]),
    /// A larger frame: its header only; the body is skipped as it arrives.
    Large(Header),
}

/// Finds frames in a byte stream read into one fixed buffer. Small frames
/// come out whole; large ones are reported by header and their bodies never
/// copied, so a sink or a bulk reader costs little more than its reads.
#[derive(Debug)]
pub(crate) struct Scanner {
    buf: Box<[u8]>,
    head: usize,
    tail: usize,
    /// Body bytes of a large frame still to skip.
    skip: usize,
}

impl Scanner {
    /// A scanner reading up to `capacity` bytes at a time (at least twice
    /// [`WHOLE_MAX`]).
    pub(crate) fn new(capacity: usize) -> Scanner {
        Scanner {
            buf: vec![0; capacity.max(2 * WHOLE_MAX)].into_boxed_slice(),
            head: 0,
            tail: 0,
            skip: 0,
        }
    }

    /// Adds bytes that were read elsewhere (a handshake's leftovers).
    pub(crate) fn seed(&mut self, bytes: &[u8]) {
        self.make_room();
        let n = bytes.len().min(self.buf.len() - self.tail);
        self.buf[self.tail..self.tail + n].copy_from_slice(&bytes[..n]);
        self.tail += n;
    }

    /// Reads once from `reader` into the free space; `Ok(0)` at end of file.
    pub(crate) fn fill(&mut self, reader: &mut impl Read) -> io::Result<usize> {
        self.make_room();
        let n = reader.read(&mut self.buf[self.tail..])?;
        self.tail += n;
        Ok(n)
    }

    #[cfg(test)]
    /// The free space to read into (call [`filled`](Self::filled) after).
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        self.make_room();
        &mut self.buf[self.tail..]
    }

    #[cfg(test)]
    /// Records `n` bytes read into [`spare`](Self::spare).
    pub(crate) fn filled(&mut self, n: usize) {
        self.tail = (self.tail + n).min(self.buf.len());
    }

    #[cfg(test)]
    /// Whether some bytes of a frame have been read but not the whole frame.
    pub(crate) fn is_mid_frame(&self) -> bool {
        self.skip > 0 || self.head < self.tail
    }

    fn make_room(&mut self) {
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        } else if self.buf.len() - self.tail < WHOLE_MAX {
            self.buf.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
    }

    /// The next frame in what was read, or `None` until more is read.
    pub(crate) fn next_item(&mut self) -> Option<Item<'_>> {
        if self.skip > 0 {
            let n = self.skip.min(self.tail - self.head);
            self.head += n;
            self.skip -= n;
            if self.skip > 0 {
                return None;
            }
        }
        let avail = self.tail - self.head;
        if avail < LEN_PREFIX_SIZE {
            return None;
        }
        let start = self.head;
        let wire_len = Header::parse(&self.buf[start..self.tail]).wire_len;
        if wire_len <= WHOLE_MAX {
            if avail < wire_len {
                return None;
            }
            self.head += wire_len;
            let bytes = &self.buf[start..start + wire_len];
            return Some(Item::Whole(Header::parse(bytes), bytes));
        }
        if avail < MIN_TAGGED {
            return None;
        }
        let header = Header::parse(&self.buf[start..self.tail]);
        let now = wire_len.min(avail);
        self.head += now;
        self.skip = wire_len - now;
        Some(Item::Large(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` to a scanner `piece` bytes at a time and lists
    /// `(id, tag, wire_len, whole)` of every frame found.
    fn scan(stream: &[u8], piece: usize) -> Vec<(u32, u8, usize, bool)> {
        let mut scanner = Scanner::new(3 * WHOLE_MAX);
        let mut found = Vec::new();
        for chunk in stream.chunks(piece) {
            let mut input = chunk;
            while !input.is_empty() {
                let spare = scanner.spare();
                let n = spare.len().min(input.len());
                spare[..n].copy_from_slice(&input[..n]);
                scanner.filled(n);
                input = &input[n..];
                while let Some(item) = scanner.next_item() {
                    found.push(match item {
                        Item::Whole(h, bytes) => {
                            assert_eq!(bytes.len(), h.wire_len);
                            (h.id, h.tag, h.wire_len, true)
                        }
                        Item::Large(h) => (h.id, h.tag, h.wire_len, false),
                    });
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
        for (i, len) in [10usize, 64, 4096, 4097, 65536, 10, 300_000, 64]
            .into_iter()
            .enumerate()
        {
            let id = i as u32 + 7;
            let tag = if len > WHOLE_MAX { DATA } else { ECHO };
            stream.extend(frame(id, tag, len));
            expected.push((id, tag, len, len <= WHOLE_MAX));
        }
        for piece in [1, 3, 9, 10, 64, 1000, 4096, 70_000, stream.len()] {
            assert_eq!(scan(&stream, piece), expected, "read pieces of {piece}");
        }
    }

    #[test]
    fn credit_frames_are_known_by_the_connection_id() {
        use relay_codec::{CONNECTION_ID, Message, payload::FlowCredit};
        let credit = Message::FlowCredit(FlowCredit {
            id: 42,
            bytes: 65_536,
        })
        .to_frame(CONNECTION_ID)
        .unwrap();
        let header = Header::parse(credit.as_wire());
        assert_eq!(header.id, CONNECTION_ID);
        assert_eq!(header.flags, 0);
        assert_eq!(header.wire_len, credit.as_wire().len());
    }

    #[test]
    fn commands_carry_their_arguments() {
        let request = source_request(5, ENDLESS, 65536);
        assert_eq!(Header::parse(&request).tag, SOURCE);
        assert_eq!(source_args(&request), Some((ENDLESS, 65536)));
        let opening = opening_session(request.clone());
        assert_eq!(
            relay_codec::Frame::from_wire(opening.clone().into())
                .unwrap()
                .flags(),
            relay_codec::Flags::SESSION_START
        );
        assert_eq!(source_args(&opening), source_args(&request));
        let stop = stop_request(5, 99);
        assert_eq!(Header::parse(&stop).wire_len, stop.len());
        assert_eq!(stop_target(&stop), Some(99));
    }

    #[test]
    fn a_frame_has_the_wire_layout_of_the_relay_protocol() {
        let bytes = frame(0x0102_0304, ECHO, 64);
        assert_eq!(bytes.len(), 64);
        assert_eq!(&bytes[..9], &[0, 0, 0, 60, 1, 2, 3, 4, 0]);
        assert_eq!(Header::parse(&bytes).flags, 0);
        let parsed = relay_codec::Frame::from_wire(bytes.into()).unwrap();
        assert_eq!(parsed.id(), 0x0102_0304);
        assert_eq!(parsed.body()[0], ECHO);
    }
}
