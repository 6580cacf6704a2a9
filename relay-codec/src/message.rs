//! The typed layer: the `{v, t, p}` envelope, message types and messages.
//! The CBOR itself is `cbor`'s.

use std::borrow::Cow;

use crate::cbor::{self, PayloadParts, from_cbor, raw_frame, to_cbor};
use crate::error::MessageError;
use crate::frame::Frame;
use crate::payload::{
    Data, ExecExited, ExecRequest, ExecResize, ExecSignal, ExecStarted, FlowAccept, FlowCredit,
    FsRequest, FsResponse, Ready,
};
use crate::wire::{Flags, PROTOCOL_VERSION};

/// The message types of generation 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `core.ready`, agent to host.
    Ready,
    /// `core.shutdown`, client to agent.
    Shutdown,
    /// `core.exec.request`, client to agent.
    ExecRequest,
    /// `core.exec.started`, agent to client.
    ExecStarted,
    /// `core.exec.stdin`, client to agent.
    ExecStdin,
    /// `core.exec.stdout`, agent to client.
    ExecStdout,
    /// `core.exec.stderr`, agent to client.
    ExecStderr,
    /// `core.exec.exited`, agent to client.
    ExecExited,
    /// `core.exec.resize`, client to agent.
    ExecResize,
    /// `core.exec.signal`, client to agent.
    ExecSignal,
    /// `core.fs.request`, client to agent.
    FsRequest,
    /// `core.fs.data`, both ways.
    FsData,
    /// `core.fs.response`, agent to client.
    FsResponse,
    /// `core.flow.accept`, relay to agent (an extension: the answer to the
    /// offer in `core.ready`, see [`FlowWindow`](crate::payload::FlowWindow)).
    FlowAccept,
    /// `core.flow.credit`, between relay and agent only, once accepted.
    FlowCredit,
}

impl MessageType {
    /// Every type, in table order.
    pub const ALL: [MessageType; 13] = [
        MessageType::Ready,
        MessageType::Shutdown,
        MessageType::ExecRequest,
        MessageType::ExecStarted,
        MessageType::ExecStdin,
        MessageType::ExecStdout,
        MessageType::ExecStderr,
        MessageType::ExecExited,
        MessageType::ExecResize,
        MessageType::ExecSignal,
        MessageType::FsRequest,
        MessageType::FsData,
        MessageType::FsResponse,
    ];

    /// Types this project adds to generation 1, used only when negotiated.
    pub const EXTENSIONS: [MessageType; 2] = [MessageType::FlowAccept, MessageType::FlowCredit];

    /// The name carried in `"t"`.
    pub const fn wire_name(self) -> &'static str {
        match self {
            MessageType::Ready => "core.ready",
            MessageType::Shutdown => "core.shutdown",
            MessageType::ExecRequest => "core.exec.request",
            MessageType::ExecStarted => "core.exec.started",
            MessageType::ExecStdin => "core.exec.stdin",
            MessageType::ExecStdout => "core.exec.stdout",
            MessageType::ExecStderr => "core.exec.stderr",
            MessageType::ExecExited => "core.exec.exited",
            MessageType::ExecResize => "core.exec.resize",
            MessageType::ExecSignal => "core.exec.signal",
            MessageType::FsRequest => "core.fs.request",
            MessageType::FsData => "core.fs.data",
            MessageType::FsResponse => "core.fs.response",
            MessageType::FlowAccept => "core.flow.accept",
            MessageType::FlowCredit => "core.flow.credit",
        }
    }

    /// The type with this wire name, if it is one of generation 1.
    pub fn from_wire_name(name: &str) -> Option<MessageType> {
        MessageType::ALL
            .into_iter()
            .chain(MessageType::EXTENSIONS)
            .find(|t| t.wire_name() == name)
    }

    /// The flags a sender sets on this type.
    pub const fn default_flags(self) -> Flags {
        match self {
            MessageType::ExecExited | MessageType::FsResponse => Flags::TERMINAL,
            MessageType::ExecRequest | MessageType::FsRequest => Flags::SESSION_START,
            MessageType::Shutdown => Flags::SHUTDOWN,
            _ => Flags::NONE,
        }
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wire_name())
    }
}

/// A decoded envelope: the generation, the type name and the raw payload.
///
/// Unknown type names are not an error at this level, so tools can look at
/// (and relays pass through) messages of later generations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Protocol generation (`"v"`).
    pub version: u8,
    /// Wire name of the message type (`"t"`).
    pub message_type: Cow<'a, str>,
    /// The CBOR-encoded payload (content of the `"p"` byte string).
    pub payload: Cow<'a, [u8]>,
}

impl<'a> Envelope<'a> {
    /// Parses a frame body.
    pub fn parse(body: &'a [u8]) -> Result<Envelope<'a>, MessageError> {
        cbor::parse_envelope(body)
    }

    /// The generation-1 type, or [`MessageError::UnknownType`].
    pub fn known_type(&self) -> Result<MessageType, MessageError> {
        MessageType::from_wire_name(&self.message_type).ok_or_else(|| MessageError::UnknownType {
            name: self.message_type.clone().into_owned(),
        })
    }
}

/// A typed generation-1 message (without its id and flags, which live in
/// the frame header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `core.ready`.
    Ready(Ready),
    /// `core.shutdown` (its payload is empty).
    Shutdown,
    /// `core.exec.request`.
    ExecRequest(ExecRequest),
    /// `core.exec.started`.
    ExecStarted(ExecStarted),
    /// `core.exec.stdin`.
    ExecStdin(Data),
    /// `core.exec.stdout`.
    ExecStdout(Data),
    /// `core.exec.stderr`.
    ExecStderr(Data),
    /// `core.exec.exited`.
    ExecExited(ExecExited),
    /// `core.exec.resize`.
    ExecResize(ExecResize),
    /// `core.exec.signal`.
    ExecSignal(ExecSignal),
    /// `core.fs.request`.
    FsRequest(FsRequest),
    /// `core.fs.data`.
    FsData(Data),
    /// `core.fs.response`.
    FsResponse(FsResponse),
    /// `core.flow.accept` (extension).
    FlowAccept(FlowAccept),
    /// `core.flow.credit` (extension).
    FlowCredit(FlowCredit),
}

impl Message {
    /// The type of this message.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Ready(_) => MessageType::Ready,
            Message::Shutdown => MessageType::Shutdown,
            Message::ExecRequest(_) => MessageType::ExecRequest,
            Message::ExecStarted(_) => MessageType::ExecStarted,
            Message::ExecStdin(_) => MessageType::ExecStdin,
            Message::ExecStdout(_) => MessageType::ExecStdout,
            Message::ExecStderr(_) => MessageType::ExecStderr,
            Message::ExecExited(_) => MessageType::ExecExited,
            Message::ExecResize(_) => MessageType::ExecResize,
            Message::ExecSignal(_) => MessageType::ExecSignal,
            Message::FsRequest(_) => MessageType::FsRequest,
            Message::FsData(_) => MessageType::FsData,
            Message::FsResponse(_) => MessageType::FsResponse,
            Message::FlowAccept(_) => MessageType::FlowAccept,
            Message::FlowCredit(_) => MessageType::FlowCredit,
        }
    }

    /// Encodes the message as a frame with id `id` and its type's default flags.
    pub fn to_frame(&self, id: u32) -> Result<Frame, MessageError> {
        self.to_frame_with_flags(id, self.message_type().default_flags())
    }

    /// Encodes the message as a frame with explicit flags.
    pub fn to_frame_with_flags(&self, id: u32, flags: Flags) -> Result<Frame, MessageError> {
        let t = self.message_type();
        let payload = match self {
            Message::ExecStdin(d)
            | Message::ExecStdout(d)
            | Message::ExecStderr(d)
            | Message::FsData(d) => return data_frame_with_flags(t, id, flags, &d.data),
            Message::Shutdown => Vec::new(),
            Message::Ready(p) => to_cbor(t, p)?,
            Message::ExecRequest(p) => to_cbor(t, p)?,
            Message::ExecStarted(p) => to_cbor(t, p)?,
            Message::ExecExited(p) => to_cbor(t, p)?,
            Message::ExecResize(p) => to_cbor(t, p)?,
            Message::ExecSignal(p) => to_cbor(t, p)?,
            Message::FsRequest(p) => to_cbor(t, p)?,
            Message::FsResponse(p) => to_cbor(t, p)?,
            Message::FlowAccept(p) => to_cbor(t, p)?,
            Message::FlowCredit(p) => to_cbor(t, p)?,
        };
        raw_frame(t.wire_name(), id, flags, PayloadParts::Whole(&payload))
    }

    /// Decodes a frame's body.
    pub fn from_frame(frame: &Frame) -> Result<Message, MessageError> {
        Message::from_body(frame.body())
    }

    /// Decodes a frame body (the bytes after id and flags).
    ///
    /// A later generation's envelope of a known type decodes too: upstream
    /// never redefines a message type and only adds optional fields, and
    /// its clients stamp their own generation on every message (0.7 sends
    /// 10) whatever the agent's is. Generation 0 never existed.
    pub fn from_body(body: &[u8]) -> Result<Message, MessageError> {
        let envelope = Envelope::parse(body)?;
        if envelope.version < PROTOCOL_VERSION {
            return Err(MessageError::UnsupportedVersion {
                found: envelope.version,
                supported: PROTOCOL_VERSION,
            });
        }
        let t = envelope.known_type()?;
        let p = &envelope.payload[..];
        Ok(match t {
            MessageType::Ready => Message::Ready(from_cbor(t, p)?),
            MessageType::Shutdown => Message::Shutdown,
            MessageType::ExecRequest => Message::ExecRequest(from_cbor(t, p)?),
            MessageType::ExecStarted => Message::ExecStarted(from_cbor(t, p)?),
            MessageType::ExecStdin => Message::ExecStdin(from_cbor(t, p)?),
            MessageType::ExecStdout => Message::ExecStdout(from_cbor(t, p)?),
            MessageType::ExecStderr => Message::ExecStderr(from_cbor(t, p)?),
            MessageType::ExecExited => Message::ExecExited(from_cbor(t, p)?),
            MessageType::ExecResize => Message::ExecResize(from_cbor(t, p)?),
            MessageType::ExecSignal => Message::ExecSignal(from_cbor(t, p)?),
            MessageType::FsRequest => Message::FsRequest(from_cbor(t, p)?),
            MessageType::FsData => Message::FsData(from_cbor(t, p)?),
            MessageType::FsResponse => Message::FsResponse(from_cbor(t, p)?),
            MessageType::FlowAccept => Message::FlowAccept(from_cbor(t, p)?),
            MessageType::FlowCredit => Message::FlowCredit(from_cbor(t, p)?),
        })
    }
}

/// Encodes a data-carrying message (`stdin`, `stdout`, `stderr`, `fs.data`)
/// with its type's default flags straight from a borrowed slice, copying it once.
pub fn data_frame(t: MessageType, id: u32, data: &[u8]) -> Result<Frame, MessageError> {
    data_frame_with_flags(t, id, t.default_flags(), data)
}

fn data_frame_with_flags(
    t: MessageType,
    id: u32,
    flags: Flags,
    data: &[u8],
) -> Result<Frame, MessageError> {
    cbor::data_frame(t.wire_name(), id, flags, data)
}

/// Encodes an envelope with any type name and a ready-made CBOR payload
/// (for tools and tests that speak other message types).
pub fn envelope_frame(
    wire_name: &str,
    id: u32,
    flags: Flags,
    payload: &[u8],
) -> Result<Frame, MessageError> {
    raw_frame(wire_name, id, flags, PayloadParts::Whole(payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{CborFault, FrameError};
    use crate::wire::{MAX_BODY_SIZE, WIRE_HEADER_SIZE};

    #[test]
    fn every_wire_name_maps_back_to_its_type() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_wire_name(t.wire_name()), Some(t));
        }
        assert_eq!(MessageType::from_wire_name("core.unknown"), None);
    }

    #[test]
    fn flow_messages_are_extensions_that_claim_no_flag_bit() {
        for (t, name) in [
            (MessageType::FlowAccept, "core.flow.accept"),
            (MessageType::FlowCredit, "core.flow.credit"),
        ] {
            assert!(!MessageType::ALL.contains(&t));
            assert_eq!(MessageType::from_wire_name(name), Some(t));
            assert_eq!(t.default_flags(), Flags::NONE);
        }
        for message in [
            Message::FlowAccept(crate::payload::FlowAccept { window: 1 << 20 }),
            Message::FlowCredit(crate::payload::FlowCredit {
                id: 9,
                bytes: 65_536,
            }),
        ] {
            let frame = message.to_frame(crate::CONNECTION_ID).unwrap();
            assert_eq!(frame.flags(), Flags::NONE);
            assert_eq!(Message::from_frame(&frame).unwrap(), message);
        }
    }

    #[test]
    fn session_types_carry_their_flags() {
        assert_eq!(
            MessageType::ExecRequest.default_flags(),
            Flags::SESSION_START
        );
        assert_eq!(MessageType::FsRequest.default_flags(), Flags::SESSION_START);
        assert_eq!(MessageType::ExecExited.default_flags(), Flags::TERMINAL);
        assert_eq!(MessageType::FsResponse.default_flags(), Flags::TERMINAL);
        assert_eq!(MessageType::Shutdown.default_flags(), Flags::SHUTDOWN);
        assert_eq!(MessageType::ExecStdout.default_flags(), Flags::NONE);
    }

    #[test]
    fn unknown_type_is_a_typed_error_but_a_valid_envelope() {
        let frame = envelope_frame("core.later.thing", 4, Flags::NONE, &[0xf6]).unwrap();
        let envelope = Envelope::parse(frame.body()).unwrap();
        assert_eq!(envelope.message_type, "core.later.thing");
        assert_eq!(
            Message::from_frame(&frame),
            Err(MessageError::UnknownType {
                name: "core.later.thing".into()
            })
        );
    }

    #[test]
    fn known_types_of_later_generations_decode_and_generation_zero_is_refused() {
        let with_version = |v: u8| {
            let mut frame = envelope_frame("core.shutdown", 0, Flags::SHUTDOWN, &[])
                .unwrap()
                .as_wire()
                .to_vec();
            // The version byte follows map(3) and the "v" key.
            frame[WIRE_HEADER_SIZE + 3] = v;
            Message::from_frame(&Frame::from_wire(frame.into()).unwrap())
        };
        assert_eq!(with_version(2), Ok(Message::Shutdown));
        assert_eq!(with_version(10), Ok(Message::Shutdown));
        assert_eq!(
            with_version(0),
            Err(MessageError::UnsupportedVersion {
                found: 0,
                supported: 1
            })
        );
    }

    #[test]
    fn a_payload_of_the_wrong_shape_names_its_type() {
        let frame = envelope_frame("core.exec.exited", 4, Flags::TERMINAL, &[0x01]).unwrap();
        assert!(matches!(
            Message::from_frame(&frame),
            Err(MessageError::BadPayload {
                message_type: "core.exec.exited",
                ..
            })
        ));
    }

    #[test]
    fn a_payload_error_says_what_the_decoder_found_and_where() {
        let frame = envelope_frame("core.exec.exited", 4, Flags::TERMINAL, &[0xa0]).unwrap();
        let Err(MessageError::BadPayload { fault, .. }) = Message::from_frame(&frame) else {
            panic!("a map without `code` is a bad payload");
        };
        assert!(matches!(fault, CborFault::Shape { .. }), "{fault:?}");
        let truncated = envelope_frame("core.exec.exited", 4, Flags::TERMINAL, &[0xa1]).unwrap();
        let Err(MessageError::BadPayload { fault, .. }) = Message::from_frame(&truncated) else {
            panic!("a cut map is a bad payload");
        };
        assert_eq!(fault, CborFault::Truncated);
    }

    #[test]
    fn garbage_bodies_are_errors() {
        for body in [&[][..], &[0xff], &[0xa3, 0x61], &[0x01, 0x02]] {
            assert!(matches!(
                Message::from_body(body),
                Err(MessageError::BadEnvelope { .. })
            ));
        }
    }

    #[test]
    fn an_oversized_payload_cannot_be_encoded() {
        let data = vec![0u8; MAX_BODY_SIZE];
        assert!(matches!(
            data_frame(MessageType::ExecStdout, 1, &data),
            Err(MessageError::Frame(FrameError::FrameTooLarge { .. }))
        ));
    }
}
