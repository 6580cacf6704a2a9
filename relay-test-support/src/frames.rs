//! Frames the tests keep building or reading: the agent's `core.ready`, a
//! frame cut off in the middle, and frames read from raw bytes with
//! relay-codec's header parser.

use std::io::Read;

use relay_codec::payload::{FlowWindow, Ready};
use relay_codec::{
    CONNECTION_ID, Flags, Frame, FrameHeader, Message, MessageType, WIRE_HEADER_SIZE, split_frames,
};

use crate::WireError;

/// The `core.ready` payload every double greets with (no flow-control offer).
pub const READY: Ready = Ready {
    boot_time_ns: 1,
    init_time_ns: 2,
    ready_time_ns: 3,
    flow: None,
};

/// [`READY`] as a frame, with its boot time set to `boot_time_ns` (a later
/// boot stands for a restarted agent).
pub fn ready_frame(boot_time_ns: u64) -> Frame {
    ready_to_frame(Ready {
        boot_time_ns,
        ..READY
    })
}

/// [`READY`] as a frame offering flow control with `window`.
pub fn ready_frame_offering(window: u32) -> Frame {
    ready_to_frame(Ready {
        flow: Some(FlowWindow { window }),
        ..READY
    })
}

fn ready_to_frame(ready: Ready) -> Frame {
    Message::Ready(ready)
        .to_frame(CONNECTION_ID)
        .expect("a ready message fits a frame")
}

/// The frames of a concatenation of whole frames.
pub fn frames(bytes: &[u8]) -> Vec<Frame> {
    split_frames(bytes).expect("whole, well-formed frames")
}

/// The first bytes of a frame on `id` that announces `len` and carries
/// `body_sent` body bytes: a frame cut off in the middle.
pub fn partial_frame(id: u32, len: usize, body_sent: usize) -> Vec<u8> {
    let len = u32::try_from(len).expect("a length the prefix can hold");
    let mut bytes = Vec::with_capacity(WIRE_HEADER_SIZE + body_sent);
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push(Flags::NONE.bits());
    bytes.resize(WIRE_HEADER_SIZE + body_sent, 0x5c);
    bytes
}

/// The message type of a frame that must hold a known message.
pub fn message_type(frame: &Frame) -> MessageType {
    Message::from_frame(frame)
        .expect("a frame holding a known message")
        .message_type()
}

/// Reads exactly one frame from a blocking stream (a pipe, a terminal, a
/// socket), its length checked before its body is read.
pub fn read_frame(reader: &mut impl Read) -> Result<Frame, WireError> {
    let mut header = [0u8; WIRE_HEADER_SIZE];
    reader.read_exact(&mut header)?;
    let (_, wire_len) = FrameHeader::parse(&header)?;
    let mut wire = Vec::with_capacity(wire_len);
    wire.extend_from_slice(&header);
    wire.resize(wire_len, 0);
    reader.read_exact(&mut wire[WIRE_HEADER_SIZE..])?;
    Ok(Frame::from_wire(wire.into())?)
}

#[cfg(test)]
mod tests {
    use relay_codec::FrameError;

    use super::*;

    #[test]
    fn a_frame_is_read_whole_and_the_next_one_after_it() {
        let first = Frame::new(7, Flags::TERMINAL, b"first").unwrap();
        let second = ready_frame(9);
        let mut stream = [first.as_wire(), second.as_wire()].concat();
        stream.extend_from_slice(&partial_frame(8, 100, 10));
        let mut reader = &stream[..];
        assert_eq!(read_frame(&mut reader).unwrap(), first);
        assert_eq!(read_frame(&mut reader).unwrap(), second);
        assert!(matches!(read_frame(&mut reader), Err(WireError::Io(_))));
    }

    #[test]
    fn a_length_below_the_header_is_refused_before_any_body_is_read() {
        let mut reader = &[0u8, 0, 0, 1, 0, 0, 0, 0, 0, 0xff][..];
        assert!(matches!(
            read_frame(&mut reader),
            Err(WireError::Frame(FrameError::FrameTooShort { len: 1 }))
        ));
        assert_eq!(reader, [0xff], "nothing past the header was read");
    }

    #[test]
    fn the_ready_frames_differ_only_where_asked() {
        let Message::Ready(offer) = Message::from_frame(&ready_frame_offering(4096)).unwrap()
        else {
            panic!("not a ready frame");
        };
        assert_eq!(offer.flow, Some(FlowWindow { window: 4096 }));
        assert_eq!(Message::Ready(READY).to_frame(0).unwrap(), ready_frame(1));
        assert_eq!(message_type(&ready_frame(5)), MessageType::Ready);
    }
}
