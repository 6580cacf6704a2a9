//! Target `frame_decoder`: one byte stream cut into chunks at fuzzer-chosen
//! points, read by [`FrameCodec`] (`decode`, then `decode_eof` at the end)
//! and by [`FrameAssembler`] (`push`, then `finish`).
//!
//! Both must agree with [`reference`], a plain reading of the whole stream
//! at once: the same frames, byte for byte, then the same ending (a clean
//! end or the same [`FrameError`]). Neither may panic, and each has its own
//! contract checked on the way: the codec reserves room for the frame it
//! waits for as its bytes arrive (at least doubling them, up to the frame),
//! the assembler always makes progress on a non-empty slice.

use bytes::BytesMut;
use relay_codec::{
    CodecError, FRAME_HEADER_SIZE, Frame, FrameAssembler, FrameCodec, FrameError, LEN_PREFIX_SIZE,
    MAX_FRAME_SIZE, WIRE_HEADER_SIZE, split_frames,
};
use tokio_util::codec::Decoder;

use crate::Violation;
use crate::input::{Input, Output};

/// Most cut points one input may ask for.
pub const MAX_CUTS: usize = 15;

/// A byte stream, how to cut it, and the decoders' frame limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedStream {
    /// The largest `len` the decoders accept (the protocol's 4 MiB, or lower).
    pub max_frame_len: usize,
    /// Where the chunks end.
    pub cuts: Cuts,
    /// The stream.
    pub data: Vec<u8>,
}

/// How a stream is cut into chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cuts {
    /// At these offsets (any order, repeats allowed: a repeat is an empty chunk).
    At(Vec<usize>),
    /// Every `n` bytes (1 to 128).
    Every(usize),
}

/// What a decoder made of a stream: frames, then how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Every frame, in order.
    pub frames: Vec<Frame>,
    /// `Ok` for a clean end between frames, or the error that ended it.
    pub end: Result<(), FrameError>,
}

impl ChunkedStream {
    /// Decodes fuzzer bytes: a limit byte (odd: a lower limit read as `u16`
    /// follows), a cut byte (high bit: a fixed stride; else a count of `u16`
    /// offsets that follow), then the stream itself.
    pub fn from_fuzz(bytes: &[u8]) -> ChunkedStream {
        let mut input = Input::new(bytes);
        let max_frame_len = if input.bool() {
            FrameCodec::with_max_frame_len(usize::from(input.u16())).max_frame_len()
        } else {
            MAX_FRAME_SIZE
        };
        let spec = input.u8();
        let cuts = if spec & 0x80 != 0 {
            Cuts::Every(usize::from(spec & 0x7f) + 1)
        } else {
            let n = usize::from(spec) % (MAX_CUTS + 1);
            Cuts::At((0..n).map(|_| usize::from(input.u16())).collect())
        };
        let data = input.rest().to_vec();
        let cuts = match cuts {
            Cuts::At(at) => Cuts::At(at.into_iter().map(|c| c % (data.len() + 1)).collect()),
            every => every,
        };
        ChunkedStream {
            max_frame_len,
            cuts,
            data,
        }
    }

    /// The fuzzer bytes that [`from_fuzz`](ChunkedStream::from_fuzz) reads
    /// back as `self` (offsets must fit in `u16`, strides in `1..=128`).
    pub fn to_fuzz(&self) -> Vec<u8> {
        let mut out = Output::new();
        if self.max_frame_len == MAX_FRAME_SIZE {
            out.bool(false);
        } else {
            out.bool(true)
                .u16(u16::try_from(self.max_frame_len).unwrap_or(u16::MAX));
        }
        match &self.cuts {
            Cuts::Every(n) => {
                out.u8(0x80 | (n.clamp(&1, &128) - 1) as u8);
            }
            Cuts::At(at) => {
                let at = &at[..at.len().min(MAX_CUTS)];
                out.u8(at.len() as u8);
                for &cut in at {
                    out.u16(u16::try_from(cut).unwrap_or(u16::MAX));
                }
            }
        }
        out.bytes(&self.data);
        out.into_bytes()
    }

    /// The chunks, in stream order; they concatenate to the stream.
    pub fn chunks(&self) -> Vec<&[u8]> {
        match &self.cuts {
            Cuts::Every(n) => self.data.chunks(*n).collect(),
            Cuts::At(at) => {
                let mut at = at.clone();
                at.sort_unstable();
                let mut chunks = Vec::with_capacity(at.len() + 1);
                let mut start = 0;
                for cut in at {
                    chunks.push(&self.data[start..cut]);
                    start = cut;
                }
                chunks.push(&self.data[start..]);
                chunks
            }
        }
    }

    fn codec(&self) -> FrameCodec {
        if self.max_frame_len == MAX_FRAME_SIZE {
            FrameCodec::new()
        } else {
            FrameCodec::with_max_frame_len(self.max_frame_len)
        }
    }
}

/// Reads a whole stream the plain way: prefix, bounds check, body, repeat.
/// This is the specification the decoders are held to.
pub fn reference(data: &[u8], max_frame_len: usize) -> Outcome {
    let mut frames = Vec::new();
    let mut rest = data;
    let end = loop {
        if rest.is_empty() {
            break Ok(());
        }
        let Some(prefix) = rest.first_chunk::<LEN_PREFIX_SIZE>() else {
            break Err(FrameError::Truncated {
                have: rest.len(),
                need: WIRE_HEADER_SIZE,
            });
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len < FRAME_HEADER_SIZE {
            break Err(FrameError::FrameTooShort { len });
        }
        if len > MAX_FRAME_SIZE || len > max_frame_len {
            let max = if len > MAX_FRAME_SIZE {
                MAX_FRAME_SIZE
            } else {
                max_frame_len
            };
            break Err(FrameError::FrameTooLarge { len, max });
        }
        let need = LEN_PREFIX_SIZE + len;
        if rest.len() < need {
            break Err(FrameError::Truncated {
                have: rest.len(),
                need,
            });
        }
        let (wire, tail) = rest.split_at(need);
        match Frame::from_wire(bytes::Bytes::copy_from_slice(wire)) {
            Ok(frame) => frames.push(frame),
            Err(error) => break Err(error),
        }
        rest = tail;
    };
    Outcome { frames, end }
}

/// Feeds the chunks to a [`FrameCodec`] as a framed reader would.
pub fn with_codec(stream: &ChunkedStream) -> Result<Outcome, Violation> {
    let mut codec = stream.codec();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let frame_error = |error: CodecError| match error {
        CodecError::Frame(error) => Ok(error),
        CodecError::Io(error) => Err(format!("the codec reported i/o on a buffer: {error}")),
    };
    for chunk in stream.chunks() {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    if let Some(prefix) = buf.first_chunk::<LEN_PREFIX_SIZE>() {
                        // Room for the rest grows with what arrived: at
                        // least up to doubling it (from GROWTH_STEP), and
                        // never the whole announced length at once.
                        let need = LEN_PREFIX_SIZE + u32::from_be_bytes(*prefix) as usize;
                        let have = buf.len();
                        let want = need.min(have + have.max(relay_codec::GROWTH_STEP));
                        if buf.capacity() < want {
                            return Err(format!(
                                "decode waits for a {need}-byte frame with {have} bytes but \
                                 reserved only {} of the {want} it should",
                                buf.capacity()
                            ));
                        }
                    }
                    break;
                }
                Err(error) => {
                    return Ok(Outcome {
                        frames,
                        end: Err(frame_error(error)?),
                    });
                }
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) if buf.is_empty() => {
                return Ok(Outcome {
                    frames,
                    end: Ok(()),
                });
            }
            Ok(None) => {
                return Err(format!(
                    "decode_eof ended cleanly with {} bytes left over",
                    buf.len()
                ));
            }
            Err(error) => {
                return Ok(Outcome {
                    frames,
                    end: Err(frame_error(error)?),
                });
            }
        }
    }
}

/// Pushes the chunks into a [`FrameAssembler`] as the relay's agent reader does.
pub fn with_assembler(stream: &ChunkedStream) -> Result<Outcome, Violation> {
    let mut assembler = FrameAssembler::new(stream.codec());
    let mut frames = Vec::new();
    for chunk in stream.chunks() {
        if chunk.is_empty() {
            let pushed = assembler.push(chunk);
            if pushed != Ok((0, None)) {
                return Err(format!("an empty push returned {pushed:?}"));
            }
            continue;
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            match assembler.push(rest) {
                Ok((used, frame)) => {
                    if used == 0 || used > rest.len() {
                        return Err(format!("push of {} bytes reported {used} used", rest.len()));
                    }
                    rest = &rest[used..];
                    frames.extend(frame);
                }
                Err(error) => {
                    return Ok(Outcome {
                        frames,
                        end: Err(error),
                    });
                }
            }
        }
    }
    let end = assembler.finish();
    if assembler.is_mid_frame() != end.is_err() {
        return Err(format!(
            "is_mid_frame() is {} but finish() is {end:?}",
            assembler.is_mid_frame()
        ));
    }
    Ok(Outcome { frames, end })
}

/// What [`check`] found: the reference outcome all decoders agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// Frames decoded.
    pub frames: usize,
    /// How the stream ended.
    pub end: Result<(), FrameError>,
}

/// The `frame_decoder` property on one fuzzer input.
pub fn check(bytes: &[u8]) -> Result<Agreed, Violation> {
    check_stream(&ChunkedStream::from_fuzz(bytes))
}

/// The `frame_decoder` property on one stream.
pub fn check_stream(stream: &ChunkedStream) -> Result<Agreed, Violation> {
    let expected = reference(&stream.data, stream.max_frame_len);
    for frame in &expected.frames {
        check_frame(frame)?;
    }
    let codec = with_codec(stream)?;
    if codec != expected {
        return Err(format!(
            "FrameCodec disagrees with the reference\n  codec:     {codec:?}\n  reference: {expected:?}"
        ));
    }
    let assembled = with_assembler(stream)?;
    if assembled != expected {
        return Err(format!(
            "FrameAssembler disagrees with the reference\n  assembler: {assembled:?}\n  reference: {expected:?}"
        ));
    }
    if stream.max_frame_len == MAX_FRAME_SIZE {
        let split = split_frames(&stream.data);
        let agrees = match (&split, &expected.end) {
            (Ok(frames), Ok(())) => *frames == expected.frames,
            (Err(error), Err(end)) => error == end,
            _ => false,
        };
        if !agrees {
            return Err(format!(
                "split_frames disagrees with the reference: {split:?} vs {expected:?}"
            ));
        }
    }
    Ok(Agreed {
        frames: expected.frames.len(),
        end: expected.end,
    })
}

/// A decoded frame's accessors agree with its wire bytes.
fn check_frame(frame: &Frame) -> Result<(), Violation> {
    let wire = frame.as_wire();
    let len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
    let consistent = wire.len() == LEN_PREFIX_SIZE + len
        && frame.id() == u32::from_be_bytes([wire[4], wire[5], wire[6], wire[7]])
        && frame.flags().bits() == wire[8]
        && frame.body() == &wire[WIRE_HEADER_SIZE..]
        && frame.wire_len() == wire.len()
        && Frame::from_wire(frame.clone().into_wire()).as_ref() == Ok(frame);
    if consistent {
        Ok(())
    } else {
        Err(format!(
            "frame accessors disagree with its bytes: {frame:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_codec::Flags;

    fn wire(frames: &[Frame]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.as_wire().to_vec()).collect()
    }

    fn frames() -> Vec<Frame> {
        vec![
            Frame::new(1, Flags::SESSION_START, b"").unwrap(),
            Frame::new(0xdead_beef, Flags::from_bits(0xff), &[7; 300]).unwrap(),
            Frame::new(3, Flags::TERMINAL, b"end").unwrap(),
        ]
    }

    #[test]
    fn the_reference_reads_whole_frames_and_names_each_ending() {
        let data = wire(&frames());
        assert_eq!(reference(&data, MAX_FRAME_SIZE).frames, frames());
        assert_eq!(reference(&data, MAX_FRAME_SIZE).end, Ok(()));
        assert_eq!(
            reference(&data[..2], MAX_FRAME_SIZE).end,
            Err(FrameError::Truncated { have: 2, need: 9 })
        );
        assert_eq!(
            reference(&data[..20], MAX_FRAME_SIZE).end,
            Err(FrameError::Truncated {
                have: 11,
                need: 309
            })
        );
        assert_eq!(
            reference(&[0, 0, 0, 4], MAX_FRAME_SIZE).end,
            Err(FrameError::FrameTooShort { len: 4 })
        );
        assert_eq!(
            reference(&[0, 0x40, 0, 1], MAX_FRAME_SIZE).end,
            Err(FrameError::FrameTooLarge {
                len: MAX_FRAME_SIZE + 1,
                max: MAX_FRAME_SIZE
            })
        );
        assert_eq!(
            reference(&data, 100).end,
            Err(FrameError::FrameTooLarge { len: 305, max: 100 })
        );
        assert_eq!(reference(&data, 100).frames.len(), 1);
    }

    #[test]
    fn every_cut_of_a_valid_stream_passes() {
        let data = wire(&frames());
        for cut in 0..=data.len() {
            let stream = ChunkedStream {
                max_frame_len: MAX_FRAME_SIZE,
                cuts: Cuts::At(vec![cut, cut, data.len() - cut]),
                data: data.clone(),
            };
            let agreed = check_stream(&stream).unwrap();
            assert_eq!(agreed.frames, 3);
            assert_eq!(agreed.end, Ok(()));
        }
        for n in 1..=128 {
            let stream = ChunkedStream {
                max_frame_len: MAX_FRAME_SIZE,
                cuts: Cuts::Every(n),
                data: data.clone(),
            };
            assert_eq!(check_stream(&stream).unwrap().frames, 3);
        }
    }

    #[test]
    fn malformed_and_truncated_streams_pass_with_their_error() {
        let mut data = wire(&frames());
        data.extend_from_slice(&[0, 0, 0, 2]);
        let stream = ChunkedStream {
            max_frame_len: MAX_FRAME_SIZE,
            cuts: Cuts::Every(3),
            data,
        };
        let agreed = check_stream(&stream).unwrap();
        assert_eq!(agreed.end, Err(FrameError::FrameTooShort { len: 2 }));
        let data = wire(&frames());
        let stream = ChunkedStream {
            max_frame_len: 64,
            cuts: Cuts::At(vec![5]),
            data: data[..data.len() - 1].to_vec(),
        };
        assert_eq!(check_stream(&stream).unwrap().frames, 1);
    }

    #[test]
    fn chunks_concatenate_to_the_stream() {
        let stream = ChunkedStream {
            max_frame_len: MAX_FRAME_SIZE,
            cuts: Cuts::At(vec![4, 1, 4, 9]),
            data: (0..10).collect(),
        };
        let chunks = stream.chunks();
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks.concat(), stream.data);
        assert!(chunks[2].is_empty(), "a repeated cut is an empty chunk");
    }

    #[test]
    fn fuzz_bytes_round_trip_through_the_stream_description() {
        let streams = [
            ChunkedStream {
                max_frame_len: MAX_FRAME_SIZE,
                cuts: Cuts::At(vec![3, 0, 7]),
                data: wire(&frames()),
            },
            ChunkedStream {
                max_frame_len: 300,
                cuts: Cuts::Every(128),
                data: vec![0, 0, 0, 5, 1, 2, 3, 4, 5],
            },
            ChunkedStream {
                max_frame_len: MAX_FRAME_SIZE,
                cuts: Cuts::At(vec![]),
                data: Vec::new(),
            },
        ];
        for stream in streams {
            assert_eq!(ChunkedStream::from_fuzz(&stream.to_fuzz()), stream);
        }
        // Any bytes at all describe some stream.
        for bytes in [&[][..], &[1], &[0xff, 0xff], &[0, 3, 0xff]] {
            check(bytes).unwrap();
        }
    }
}
