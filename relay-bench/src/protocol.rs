//! The benchmark's own little protocol inside ordinary relay frames.
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
//!
//! Every reader of the bench (clients and agent) finds frames with the
//! codec's [`FrameScanner`], which hands out frames of up to
//! [`WHOLE_MAX`] bytes whole and larger ones by their header and first
//! body bytes, so the tag of every frame is known without copying bulk.

use std::io;

use relay_codec::{Flags, FrameError, FrameScanner, LEN_PREFIX_SIZE, WIRE_HEADER_SIZE};

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

/// Frames up to this many wire bytes are handed out whole by the bench's
/// scanners (every command fits); larger ones only by their first bytes.
pub(crate) const WHOLE_MAX: usize = 4096;

/// A scanner reading up to `capacity` bytes at a time, with the bench's
/// whole-frame size.
pub(crate) fn scanner(capacity: usize) -> FrameScanner {
    FrameScanner::new(capacity, WHOLE_MAX)
}

/// A malformed stream as an I/O error, for readers that return those.
pub(crate) fn malformed(error: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// A frame of `wire_len` bytes (at least [`MIN_TAGGED`]) for `id` whose body
/// starts with `tag`; the rest of the body is filler.
pub(crate) fn frame(id: u32, tag: u8, wire_len: usize) -> Vec<u8> {
    let wire_len = wire_len.max(MIN_TAGGED);
    let mut out = Vec::with_capacity(wire_len);
    let len = u32::try_from(wire_len - LEN_PREFIX_SIZE).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(Flags::NONE.bits());
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
        *flags = Flags::SESSION_START.bits();
    }
    frame
}

/// The `q` frame (sent on `id`) that stops the stream toward `target`.
pub(crate) fn stop_request(id: u32, target: u32) -> Vec<u8> {
    let mut out = frame(id, STOP, MIN_TAGGED + 4);
    out[MIN_TAGGED..].copy_from_slice(&target.to_be_bytes());
    out
}

/// Arguments of a whole `s` frame: `(total, frame_len)`.
pub(crate) fn source_args(frame: &[u8]) -> Option<(u64, usize)> {
    let args = frame.get(MIN_TAGGED..MIN_TAGGED + 12)?;
    let total = u64::from_be_bytes(args[..8].try_into().ok()?);
    let frame_len = u32::from_be_bytes(args[8..].try_into().ok()?) as usize;
    Some((total, frame_len))
}

/// The target id of a whole `q` frame.
pub(crate) fn stop_target(frame: &[u8]) -> Option<u32> {
    let args = frame.get(MIN_TAGGED..MIN_TAGGED + 4)?;
    Some(u32::from_be_bytes(args.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use relay_codec::{Frame, FrameHeader};

    use super::*;

    fn header(frame: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::parse(frame.first_chunk().unwrap()).unwrap()
    }

    #[test]
    fn commands_carry_their_arguments() {
        let request = source_request(5, ENDLESS, 65536);
        assert_eq!(request[WIRE_HEADER_SIZE], SOURCE);
        assert_eq!(source_args(&request), Some((ENDLESS, 65536)));
        let opening = opening_session(request.clone());
        assert_eq!(header(&opening).0.flags, Flags::SESSION_START);
        assert_eq!(source_args(&opening), source_args(&request));
        let stop = stop_request(5, 99);
        assert_eq!(header(&stop).1, stop.len());
        assert_eq!(stop_target(&stop), Some(99));
    }

    #[test]
    fn a_frame_has_the_wire_layout_of_the_relay_protocol() {
        let bytes = frame(0x0102_0304, ECHO, 64);
        assert_eq!(bytes.len(), 64);
        assert_eq!(&bytes[..9], &[0, 0, 0, 60, 1, 2, 3, 4, 0]);
        let parsed = Frame::from_wire(bytes.into()).unwrap();
        assert_eq!(parsed.id(), 0x0102_0304);
        assert_eq!(parsed.flags(), Flags::NONE);
        assert_eq!(parsed.body()[0], ECHO);
    }

    #[test]
    fn the_scanner_sees_the_tag_of_a_frame_too_large_to_hand_out_whole() {
        let mut scanner = scanner(1 << 16);
        let bulk = frame(3, DATA, 100_000);
        scanner.seed(&bulk[..WHOLE_MAX]);
        let found = scanner.next_frame().unwrap().unwrap();
        assert_eq!(found.header().id, 3);
        assert_eq!(found.wire_len(), bulk.len());
        assert_eq!(found.first_body_byte(), Some(DATA));
    }
}
