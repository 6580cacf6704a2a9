//! Byte streams to raw frames: every split of a valid stream yields the same
//! frames (tokio-util decoder, push assembler, `FramedRead` over a scripted
//! reader), bad lengths give typed errors, and no input makes a reader panic.

mod support;

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use futures_util::Stream;
use proptest::collection::vec;
use proptest::prelude::*;
use relay_codec::{
    CodecError, FRAME_HEADER_SIZE, Flags, Frame, FrameAssembler, FrameCodec, FrameError,
    MAX_FRAME_SIZE,
};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Decoder, FramedRead};

use support::{Split, concat, frame, split};

/// Feeds `chunks` to a fresh `FrameCodec` the way `FramedRead` does: decode
/// after every chunk until it needs more bytes, then `decode_eof` at the end.
fn decode_chunks(codec: &mut FrameCodec, chunks: &[&[u8]]) -> Result<Vec<Frame>, CodecError> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

/// Pushes `chunks` through a fresh assembler, then checks the stream may end.
fn assemble_chunks(chunks: &[&[u8]]) -> Result<Vec<Frame>, FrameError> {
    let mut assembler = FrameAssembler::new(FrameCodec::new());
    let mut frames = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        loop {
            let (used, frame) = assembler.push(rest)?;
            assert!(
                used <= rest.len(),
                "the assembler took more than it was given"
            );
            rest = &rest[used..];
            frames.extend(frame);
            if rest.is_empty() {
                break;
            }
            assert!(
                used > 0,
                "the assembler made no progress on non-empty input"
            );
        }
    }
    assembler.finish()?;
    Ok(frames)
}

/// One step of a scripted reader.
#[derive(Debug, Clone)]
enum Step {
    /// Hand out these bytes (as many as fit the caller's buffer).
    Data(Vec<u8>),
    /// Return `Pending` once (waking the task, as a real source would later).
    Pending,
    /// Fail with this error kind.
    Fail(io::ErrorKind),
}

/// An `AsyncRead` that plays a script, then reports end of stream.
#[derive(Debug)]
struct ScriptedReader {
    steps: VecDeque<Step>,
}

impl ScriptedReader {
    fn new(steps: impl IntoIterator<Item = Step>) -> ScriptedReader {
        ScriptedReader {
            steps: steps.into_iter().collect(),
        }
    }
}

impl AsyncRead for ScriptedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.steps.pop_front() {
            None => Poll::Ready(Ok(())),
            Some(Step::Pending) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Fail(kind)) => Poll::Ready(Err(kind.into())),
            Some(Step::Data(mut bytes)) => {
                let n = bytes.len().min(buf.remaining());
                buf.put_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.steps.push_front(Step::Data(bytes.split_off(n)));
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// Polls a `FramedRead` over `reader` to its end with a no-op waker, so every
/// `Pending` the script returns is seen here; returns the items and how many
/// times the stream was pending.
fn drive(reader: ScriptedReader) -> (Vec<Result<Frame, CodecError>>, usize) {
    let mut framed = FramedRead::new(reader, FrameCodec::new());
    let mut cx = Context::from_waker(Waker::noop());
    let mut items = Vec::new();
    let mut pending = 0;
    loop {
        match Pin::new(&mut framed).poll_next(&mut cx) {
            Poll::Pending => pending += 1,
            Poll::Ready(Some(item)) => items.push(item),
            Poll::Ready(None) => return (items, pending),
        }
    }
}

/// The script that hands out `chunks` with a `Pending` before each one.
/// Empty chunks are left out: a read of zero bytes means end of stream.
fn script(chunks: &[&[u8]]) -> Vec<Step> {
    chunks
        .iter()
        .filter(|chunk| !chunk.is_empty())
        .flat_map(|chunk| [Step::Pending, Step::Data(chunk.to_vec())])
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_split_of_a_valid_stream_decodes_to_the_same_frames(
        frames in vec(frame(), 0..8),
        split in split(),
    ) {
        let bytes = concat(&frames);
        let chunks = split.apply(&bytes);
        let decoded = decode_chunks(&mut FrameCodec::new(), &chunks).unwrap();
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn any_split_of_a_valid_stream_assembles_to_the_same_frames(
        frames in vec(frame(), 0..8),
        split in split(),
    ) {
        let bytes = concat(&frames);
        let chunks = split.apply(&bytes);
        prop_assert_eq!(assemble_chunks(&chunks).unwrap(), frames);
    }

    #[test]
    fn framed_read_yields_the_frames_across_pending_reads(
        frames in vec(frame(), 0..6),
        split in split(),
    ) {
        let bytes = concat(&frames);
        let chunks = split.apply(&bytes);
        let steps = script(&chunks);
        let (items, pending) = drive(ScriptedReader::new(steps));
        prop_assert_eq!(pending, chunks.iter().filter(|c| !c.is_empty()).count());
        let decoded: Vec<Frame> = items.into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn a_stream_cut_inside_a_frame_yields_the_whole_frames_then_truncated(
        frames in vec(frame(), 1..5),
        keep in any::<prop::sample::Index>(),
        split in split(),
    ) {
        let bytes = concat(&frames);
        let last_start = bytes.len() - frames[frames.len() - 1].wire_len();
        // Keep every frame but the last, plus a strict, non-empty part of it.
        let cut = last_start + 1 + keep.index(frames[frames.len() - 1].wire_len() - 1);
        let chunks = split.apply(&bytes[..cut]);
        let whole = &frames[..frames.len() - 1];

        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for chunk in &chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert_eq!(&decoded[..], whole);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        prop_assert!(matches!(
            err,
            CodecError::Frame(FrameError::Truncated { have, .. }) if have == cut - last_start
        ), "{err:?}");

        let err = assemble_chunks(&chunks).unwrap_err();
        prop_assert!(
            matches!(err, FrameError::Truncated { have, .. } if have == cut - last_start),
            "{err:?}"
        );

        let (items, _) = drive(ScriptedReader::new(script(&chunks)));
        let (last, first) = items.split_last().unwrap();
        prop_assert_eq!(first.len(), whole.len());
        for (item, frame) in first.iter().zip(whole) {
            prop_assert_eq!(item.as_ref().unwrap(), frame);
        }
        prop_assert!(
            matches!(last, Err(CodecError::Frame(FrameError::Truncated { .. }))),
            "{last:?}"
        );
    }
}

/// Byte streams that look like frames often enough to reach every state of a
/// reader: small length prefixes (some below 5), random ones, random bodies
/// that may be shorter or longer than announced.
fn noisy_stream() -> impl Strategy<Value = Vec<u8>> {
    vec(
        (
            prop_oneof![4 => 0u32..48, 1 => any::<u32>()],
            vec(any::<u8>(), 0..48),
        ),
        0..6,
    )
    .prop_map(|segments| {
        segments
            .into_iter()
            .flat_map(|(len, bytes)| len.to_be_bytes().into_iter().chain(bytes))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_decoder_and_the_assembler_agree_on_any_input(
        bytes in prop_oneof![noisy_stream(), vec(any::<u8>(), 0..256)],
        split in split(),
    ) {
        let chunks = split.apply(&bytes);
        let decoded = decode_chunks(&mut FrameCodec::new(), &chunks).map_err(|e| match e {
            CodecError::Frame(e) => e,
            CodecError::Io(e) => panic!("no i/o here: {e}"),
        });
        prop_assert_eq!(decoded, assemble_chunks(&chunks));
        // A whole buffer is either exactly the frames the readers found, or
        // an error for both.
        prop_assert_eq!(
            relay_codec::split_frames(&bytes),
            assemble_chunks(&[&bytes[..]])
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder_or_the_assembler(
        bytes in prop_oneof![noisy_stream(), vec(any::<u8>(), 0..512)],
        split in split(),
    ) {
        let chunks = split.apply(&bytes);
        let _ = decode_chunks(&mut FrameCodec::new(), &chunks);
        let _ = decode_chunks(&mut FrameCodec::with_max_frame_len(64), &chunks);
        let _ = assemble_chunks(&chunks);
        let _ = drive(ScriptedReader::new(script(&chunks)));
        let _ = Frame::from_wire(bytes.into());
    }

    #[test]
    fn a_length_below_the_header_is_frame_too_short(len in 0u32..5, tail in vec(any::<u8>(), 0..16)) {
        let mut wire = len.to_be_bytes().to_vec();
        wire.extend_from_slice(&tail);
        let want = FrameError::FrameTooShort { len: len as usize };

        let err = FrameCodec::new().decode(&mut BytesMut::from(&wire[..])).unwrap_err();
        prop_assert!(matches!(err, CodecError::Frame(ref e) if *e == want), "{err:?}");
        prop_assert_eq!(FrameAssembler::new(FrameCodec::new()).push(&wire), Err(want.clone()));
        prop_assert_eq!(assemble_chunks(&[&wire[..2], &wire[2..]]), Err(want.clone()));
        prop_assert_eq!(Frame::from_wire(wire.into()), Err(want));
    }

    #[test]
    fn a_length_above_four_mebibytes_is_frame_too_large(
        len in (MAX_FRAME_SIZE as u32 + 1)..=u32::MAX,
        tail in vec(any::<u8>(), 0..16),
    ) {
        let mut wire = len.to_be_bytes().to_vec();
        wire.extend_from_slice(&tail);
        let want = FrameError::FrameTooLarge { len: len as usize, max: MAX_FRAME_SIZE };

        // The error comes from the prefix alone: no waiting for the body.
        let err = FrameCodec::new().decode(&mut BytesMut::from(&wire[..])).unwrap_err();
        prop_assert!(matches!(err, CodecError::Frame(ref e) if *e == want), "{err:?}");
        prop_assert_eq!(FrameAssembler::new(FrameCodec::new()).push(&wire), Err(want.clone()));
        prop_assert_eq!(assemble_chunks(&[&wire[..3], &wire[3..]]), Err(want.clone()));
        prop_assert_eq!(Frame::from_wire(wire.into()), Err(want));
    }

    #[test]
    fn a_length_above_a_lower_codec_maximum_is_frame_too_large_with_that_maximum(
        max in FRAME_HEADER_SIZE..4096,
        excess in 1usize..4096,
    ) {
        let len = max + excess;
        let wire = u32::try_from(len).unwrap().to_be_bytes();
        let want = FrameError::FrameTooLarge { len, max };
        let mut codec = FrameCodec::with_max_frame_len(max);
        let err = codec.decode(&mut BytesMut::from(&wire[..])).unwrap_err();
        prop_assert!(matches!(err, CodecError::Frame(ref e) if *e == want), "{err:?}");
        prop_assert_eq!(FrameAssembler::new(codec).push(&wire), Err(want));
    }
}

#[test]
fn the_largest_legal_frame_decodes_and_one_byte_more_does_not() {
    let body = vec![0x5a; MAX_FRAME_SIZE - FRAME_HEADER_SIZE];
    let frame = Frame::new(7, Flags::TERMINAL, &body).unwrap();
    let mut buf = BytesMut::from(frame.as_wire());
    assert_eq!(FrameCodec::new().decode(&mut buf).unwrap(), Some(frame));

    let mut too_big = (MAX_FRAME_SIZE as u32 + 1).to_be_bytes().to_vec();
    too_big.extend_from_slice(&body[..64]);
    assert!(matches!(
        FrameCodec::new().decode(&mut BytesMut::from(&too_big[..])),
        Err(CodecError::Frame(FrameError::FrameTooLarge {
            len,
            max: MAX_FRAME_SIZE
        })) if len == MAX_FRAME_SIZE + 1
    ));
}

#[test]
fn framed_read_reports_a_read_error_after_the_frames_before_it() {
    let first = Frame::new(1, Flags::NONE, b"one").unwrap();
    let second = Frame::new(2, Flags::from_bits(0xf0), b"two").unwrap();
    let bytes = concat(&[first.clone(), second.clone()]);
    let (items, pending) = drive(ScriptedReader::new([
        Step::Data(bytes[..5].to_vec()),
        Step::Pending,
        Step::Data(bytes[5..20].to_vec()),
        Step::Pending,
        Step::Pending,
        Step::Data(bytes[20..].to_vec()),
        Step::Fail(io::ErrorKind::ConnectionReset),
    ]));
    assert_eq!(pending, 3);
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].as_ref().unwrap(), &first);
    assert_eq!(items[1].as_ref().unwrap(), &second);
    assert!(matches!(
        &items[2],
        Err(CodecError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset
    ));
}

#[test]
fn framed_read_stops_at_a_bad_length_without_reading_the_rest() {
    let good = Frame::new(3, Flags::SESSION_START, b"ok").unwrap();
    let mut bytes = good.as_wire().to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 2, 0xde, 0xad]);
    let (items, _) = drive(ScriptedReader::new(script(
        &Split::Sizes(vec![3]).apply(&bytes),
    )));
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap(), &good);
    assert!(matches!(
        &items[1],
        Err(CodecError::Frame(FrameError::FrameTooShort { len: 2 }))
    ));
}

#[test]
fn reserved_flag_bits_pass_through_the_decoder_unchanged() {
    for bits in [0x08u8, 0x10, 0x80, 0xff] {
        let frame = Frame::new(42, Flags::from_bits(bits), b"x").unwrap();
        let mut buf = BytesMut::from(frame.as_wire());
        let decoded = FrameCodec::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(decoded.flags().bits(), bits);
        assert_eq!(decoded.as_wire(), frame.as_wire());
    }
}
