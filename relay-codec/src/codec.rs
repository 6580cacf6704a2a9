//! Byte streams to frames: a tokio-util codec and a push-style assembler.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{CodecError, FrameError};
use crate::frame::{Frame, check_len, read_u32};
use crate::wire::{FRAME_HEADER_SIZE, LEN_PREFIX_SIZE, MAX_FRAME_SIZE, WIRE_HEADER_SIZE};

/// Room a partial frame's buffer grows by at first; after that it at most
/// doubles, up to the frame's size.
pub const GROWTH_STEP: usize = 64 * 1024;

/// A [`Decoder`] and [`Encoder`] of raw [`Frame`]s.
///
/// Decoding returns `Ok(None)` until a whole frame is buffered, reserving
/// room for the frame it waits for as its bytes arrive (at most doubling
/// what has arrived, from [`GROWTH_STEP`]): a peer that announces a
/// maximal frame and sends little makes it hold little. A `len` outside
/// `FRAME_HEADER_SIZE..=max_frame_len` is an error as soon as the prefix is
/// seen, and so is a stream that ends inside a frame: the stream is malformed
/// and must be closed, never resynchronised by dropping bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl FrameCodec {
    /// A codec with the protocol maximum, [`MAX_FRAME_SIZE`].
    pub const fn new() -> FrameCodec {
        FrameCodec {
            max_frame_len: MAX_FRAME_SIZE,
        }
    }

    /// A codec with a lower maximum `len` (clamped to the protocol maximum).
    pub fn with_max_frame_len(max: usize) -> FrameCodec {
        FrameCodec {
            max_frame_len: max.clamp(FRAME_HEADER_SIZE, MAX_FRAME_SIZE),
        }
    }

    /// The largest `len` this codec accepts.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    fn check(&self, len: usize) -> Result<usize, FrameError> {
        check_len(len)?;
        if len > self.max_frame_len {
            return Err(FrameError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        Ok(len)
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if src.len() < LEN_PREFIX_SIZE {
            return Ok(None);
        }
        let len = self.check(read_u32(src) as usize)?;
        let total = LEN_PREFIX_SIZE + len;
        if src.len() < total {
            src.reserve((total - src.len()).min(src.len().max(GROWTH_STEP)));
            return Ok(None);
        }
        Ok(Some(Frame::from_checked(src.split_to(total).freeze())))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let need = if src.len() >= LEN_PREFIX_SIZE {
                    LEN_PREFIX_SIZE + read_u32(src) as usize
                } else {
                    WIRE_HEADER_SIZE
                };
                Err(FrameError::Truncated {
                    have: src.len(),
                    need,
                }
                .into())
            }
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&frame, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.check(frame.wire_len() - LEN_PREFIX_SIZE)?;
        dst.extend_from_slice(frame.as_wire());
        Ok(())
    }
}

/// Assembles frames from byte slices pushed into it, giving each frame its own
/// allocation of exactly its size. A partial frame's allocation grows with
/// the bytes that arrived (as for [`FrameCodec`]), not to the size its
/// prefix announces.
///
/// This suits readers that see the stream as borrowed slices (a ring read in
/// place, a staging buffer) and that may keep frames queued for a long time:
/// a queued frame never pins a larger shared buffer, so counting frame bytes
/// counts memory.
#[derive(Debug)]
pub struct FrameAssembler {
    codec: FrameCodec,
    prefix: [u8; LEN_PREFIX_SIZE],
    prefix_len: usize,
    /// The frame being filled and the wire size it needs.
    partial: Option<(Vec<u8>, usize)>,
}

impl FrameAssembler {
    /// An assembler that accepts frames up to `codec`'s maximum.
    pub fn new(codec: FrameCodec) -> FrameAssembler {
        FrameAssembler {
            codec,
            prefix: [0; LEN_PREFIX_SIZE],
            prefix_len: 0,
            partial: None,
        }
    }

    /// Consumes bytes from the front of `input` and returns how many it took,
    /// with a frame if one was completed. Call again with the rest of the
    /// input until it is empty.
    ///
    /// After an error the stream is malformed and the assembler must not be
    /// used again.
    pub fn push(&mut self, input: &[u8]) -> Result<(usize, Option<Frame>), FrameError> {
        let mut used = 0;
        if self.partial.is_none() {
            let take = (LEN_PREFIX_SIZE - self.prefix_len).min(input.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&input[..take]);
            self.prefix_len += take;
            used += take;
            if self.prefix_len < LEN_PREFIX_SIZE {
                return Ok((used, None));
            }
            let len = self.codec.check(u32::from_be_bytes(self.prefix) as usize)?;
            let need = LEN_PREFIX_SIZE + len;
            let mut buf = Vec::with_capacity(need.min(GROWTH_STEP));
            buf.extend_from_slice(&self.prefix);
            self.partial = Some((buf, need));
            self.prefix_len = 0;
        }
        let Some((buf, need)) = self.partial.as_mut() else {
            return Ok((used, None));
        };
        let take = (*need - buf.len()).min(input.len() - used);
        if buf.capacity() - buf.len() < take {
            // Grow by what has arrived, but never past the frame's size, so
            // the finished frame owns exactly its bytes.
            let grow = (*need - buf.len()).min(buf.len().max(GROWTH_STEP));
            buf.reserve_exact(grow.max(take));
        }
        buf.extend_from_slice(&input[used..used + take]);
        used += take;
        if buf.len() < *need {
            return Ok((used, None));
        }
        let wire = self
            .partial
            .take()
            .map(|(buf, _)| bytes::Bytes::from(buf))
            .unwrap_or_default();
        Ok((used, Some(Frame::from_checked(wire))))
    }

    /// Whether the assembler holds part of a frame (the stream may not end here).
    pub fn is_mid_frame(&self) -> bool {
        self.prefix_len > 0 || self.partial.is_some()
    }

    /// Bytes of the current frame seen so far, and the size it needs.
    pub fn progress(&self) -> (usize, usize) {
        match &self.partial {
            Some((buf, need)) => (buf.len(), *need),
            None => (self.prefix_len, WIRE_HEADER_SIZE),
        }
    }

    /// Checks that the stream may end here: an end inside a frame is
    /// [`FrameError::Truncated`].
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.is_mid_frame() {
            let (have, need) = self.progress();
            return Err(FrameError::Truncated { have, need });
        }
        Ok(())
    }
}

/// Drains every frame from a buffer that holds whole frames only (a test and
/// tooling helper; partial input is a [`FrameError::Truncated`]).
pub fn split_frames(mut bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
    let mut assembler = FrameAssembler::new(FrameCodec::new());
    let mut frames = Vec::new();
    while bytes.has_remaining() {
        let (used, frame) = assembler.push(bytes)?;
        bytes.advance(used);
        frames.extend(frame);
    }
    assembler.finish()?;
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Flags;

    fn wire(frames: &[Frame]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.as_wire().to_vec()).collect()
    }

    #[test]
    fn a_maximal_frame_announced_but_not_sent_holds_only_what_arrived() {
        let mut prefix = (MAX_FRAME_SIZE as u32).to_be_bytes().to_vec();
        prefix.extend_from_slice(&[0, 0, 0, 1, 0, 1, 2, 3]);
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(&prefix[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 2 * GROWTH_STEP, "{}", buf.capacity());

        let mut assembler = FrameAssembler::new(FrameCodec::new());
        assert_eq!(assembler.push(&prefix).unwrap(), (prefix.len(), None));
        let (have, need) = assembler.progress();
        assert_eq!((have, need), (prefix.len(), MAX_FRAME_SIZE + 4));
        let Some((partial, _)) = &assembler.partial else {
            panic!("mid frame");
        };
        assert!(partial.capacity() <= GROWTH_STEP);
    }

    #[test]
    fn an_assembled_large_frame_owns_exactly_its_bytes_however_it_arrived() {
        let frame = Frame::new(3, Flags::NONE, &vec![5u8; 1_000_000]).unwrap();
        let bytes = frame.as_wire().to_vec();
        for chunk in [1000, 65_536, 300_000, bytes.len()] {
            let mut assembler = FrameAssembler::new(FrameCodec::new());
            let mut out = None;
            for part in bytes.chunks(chunk) {
                let (used, done) = assembler.push(part).unwrap();
                assert_eq!(used, part.len());
                out = out.or(done);
            }
            assert_eq!(out.as_ref(), Some(&frame), "chunks of {chunk}");
        }
        let mut assembler = FrameAssembler::new(FrameCodec::new());
        for part in bytes.chunks(4096) {
            assembler.push(part).unwrap();
            if let Some((buf, need)) = &assembler.partial {
                assert!(buf.capacity() <= *need, "never past the frame's size");
            }
        }
    }

    #[test]
    fn decoder_waits_for_the_whole_frame_and_reserves_room_for_it() {
        let frame = Frame::new(9, Flags::SESSION_START, &[7; 100]).unwrap();
        let bytes = wire(std::slice::from_ref(&frame));
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(&bytes[..10]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= bytes.len());
        buf.extend_from_slice(&bytes[10..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
        assert!(buf.is_empty());
    }

    #[test]
    fn short_len_is_an_error_as_soon_as_the_prefix_arrives() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 4][..]);
        let err = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Frame(FrameError::FrameTooShort { len: 4 })
        ));
    }

    #[test]
    fn oversized_len_is_an_error_without_waiting_for_the_body() {
        let mut buf = BytesMut::from(&0x0040_0001u32.to_be_bytes()[..]);
        let err = FrameCodec::new().decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Frame(FrameError::FrameTooLarge {
                len: 0x0040_0001,
                max: MAX_FRAME_SIZE
            })
        ));
    }

    #[test]
    fn a_lower_maximum_applies_to_decode_and_encode() {
        let mut codec = FrameCodec::with_max_frame_len(64);
        let big = Frame::new(1, Flags::NONE, &[0; 60]).unwrap();
        let mut buf = BytesMut::new();
        let err = codec.encode(&big, &mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Frame(FrameError::FrameTooLarge { len: 65, max: 64 })
        ));
        assert!(buf.is_empty());
        let mut buf = BytesMut::from(big.as_wire());
        assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn end_of_stream_inside_a_frame_is_truncated() {
        let frame = Frame::new(1, Flags::NONE, b"abc").unwrap();
        let mut buf = BytesMut::from(&frame.as_wire()[..6]);
        let err = FrameCodec::new().decode_eof(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Frame(FrameError::Truncated { have: 6, need: 12 })
        ));
        let mut empty = BytesMut::new();
        assert!(FrameCodec::new().decode_eof(&mut empty).unwrap().is_none());
    }

    #[test]
    fn assembler_builds_frames_from_single_bytes() {
        let frames = vec![
            Frame::new(1, Flags::NONE, b"").unwrap(),
            Frame::new(2, Flags::TERMINAL, &[5; 300]).unwrap(),
        ];
        let bytes = wire(&frames);
        let mut assembler = FrameAssembler::new(FrameCodec::new());
        let mut out = Vec::new();
        for byte in &bytes {
            let (used, frame) = assembler.push(std::slice::from_ref(byte)).unwrap();
            assert_eq!(used, 1);
            out.extend(frame);
        }
        assert_eq!(out, frames);
        assert!(!assembler.is_mid_frame());
    }

    #[test]
    fn assembled_frames_own_exactly_their_bytes() {
        let frames = [
            Frame::new(1, Flags::NONE, &[1; 10]).unwrap(),
            Frame::new(2, Flags::NONE, &[2; 20]).unwrap(),
        ];
        let bytes = wire(&frames);
        let mut assembler = FrameAssembler::new(FrameCodec::new());
        let (used, first) = assembler.push(&bytes).unwrap();
        let first = BytesMut::from(first.unwrap().as_wire());
        assert_eq!(used, 19);
        assert_eq!(first.len(), 19);
    }

    #[test]
    fn split_frames_reports_a_truncated_tail() {
        let frame = Frame::new(1, Flags::NONE, b"abc").unwrap();
        let mut bytes = frame.as_wire().to_vec();
        bytes.extend_from_slice(&[0, 0]);
        assert_eq!(
            split_frames(&bytes),
            Err(FrameError::Truncated { have: 2, need: 9 })
        );
    }
}
