//! The typed layer: the `{v, t, p}` envelope, message types and messages.
//!
//! The envelope is written by hand (its shape is fixed: a three-entry map)
//! so that encoding a message copies its payload once, straight into the
//! frame. The bytes equal what serde + ciborium produce, which the
//! compatibility tests check against microsandbox-protocol. Decoding takes a
//! fast path for that canonical shape and falls back to a general CBOR
//! decoder for any other valid encoding.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{FrameError, MessageError};
use crate::frame::Frame;
use crate::payload::{
    Data, ExecExited, ExecRequest, ExecResize, ExecSignal, ExecStarted, FlowAccept, FlowCredit,
    FsRequest, FsResponse, Ready,
};
use crate::wire::{Flags, LEN_PREFIX_SIZE, MAX_BODY_SIZE, PROTOCOL_VERSION, WIRE_HEADER_SIZE};

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
        if let Some(envelope) = parse_canonical(body) {
            return Ok(envelope);
        }
        let owned: OwnedEnvelope =
            ciborium::from_reader(body).map_err(|e| MessageError::BadEnvelope {
                reason: e.to_string(),
            })?;
        Ok(Envelope {
            version: owned.v,
            message_type: Cow::Owned(owned.t),
            payload: Cow::Owned(owned.p),
        })
    }

    /// The generation-1 type, or [`MessageError::UnknownType`].
    pub fn known_type(&self) -> Result<MessageType, MessageError> {
        MessageType::from_wire_name(&self.message_type).ok_or_else(|| MessageError::UnknownType {
            name: self.message_type.clone().into_owned(),
        })
    }
}

#[derive(Deserialize)]
struct OwnedEnvelope {
    v: u8,
    t: String,
    #[serde(with = "serde_bytes")]
    p: Vec<u8>,
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
    // map(1) { "data": bytes }: at most 1 + 5 + 9 bytes before the data.
    let mut head = [0u8; 16];
    let mut cursor = &mut head[..];
    cursor.put_u8(0xa1);
    put_text(&mut cursor, "data");
    put_head(&mut cursor, MAJOR_BYTES, data.len() as u64);
    let used = 16 - cursor.len();
    raw_frame(
        t.wire_name(),
        id,
        flags,
        PayloadParts::Split(&head[..used], data),
    )
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

enum PayloadParts<'a> {
    Whole(&'a [u8]),
    Split(&'a [u8], &'a [u8]),
}

impl PayloadParts<'_> {
    fn len(&self) -> usize {
        match self {
            PayloadParts::Whole(p) => p.len(),
            PayloadParts::Split(a, b) => a.len() + b.len(),
        }
    }
}

const MAJOR_UNSIGNED: u8 = 0;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_MAP: u8 = 5;

fn raw_frame(
    wire_name: &str,
    id: u32,
    flags: Flags,
    payload: PayloadParts<'_>,
) -> Result<Frame, MessageError> {
    let payload_len = payload.len();
    // map(3), "v" 1, "t" name, "p" bytes: 1 + 3 + (2 + head + name) + (2 + head).
    let body_len = 1
        + 3
        + 2
        + head_len(wire_name.len() as u64)
        + wire_name.len()
        + 2
        + head_len(payload_len as u64)
        + payload_len;
    if body_len > MAX_BODY_SIZE {
        return Err(MessageError::Frame(FrameError::FrameTooLarge {
            len: body_len + crate::FRAME_HEADER_SIZE,
            max: crate::MAX_FRAME_SIZE,
        }));
    }
    let mut buf = BytesMut::with_capacity(WIRE_HEADER_SIZE + body_len);
    // body_len <= MAX_BODY_SIZE, so the length fits in u32.
    buf.put_u32((crate::FRAME_HEADER_SIZE + body_len) as u32);
    buf.put_u32(id);
    buf.put_u8(flags.bits());
    buf.put_u8(0xa3);
    put_text(&mut buf, "v");
    put_head(&mut buf, MAJOR_UNSIGNED, u64::from(PROTOCOL_VERSION));
    put_text(&mut buf, "t");
    put_text(&mut buf, wire_name);
    put_text(&mut buf, "p");
    put_head(&mut buf, MAJOR_BYTES, payload_len as u64);
    match payload {
        PayloadParts::Whole(p) => buf.put_slice(p),
        PayloadParts::Split(a, b) => {
            buf.put_slice(a);
            buf.put_slice(b);
        }
    }
    debug_assert_eq!(
        buf.len(),
        LEN_PREFIX_SIZE + crate::FRAME_HEADER_SIZE + body_len
    );
    Ok(Frame::from_checked(buf.freeze()))
}

fn head_len(n: u64) -> usize {
    match n {
        0..24 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Writes a CBOR head in its shortest form, as every canonical encoder does.
fn put_head(buf: &mut impl BufMut, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..24 => buf.put_u8(m | n as u8),
        24..=0xff => {
            buf.put_u8(m | 24);
            buf.put_u8(n as u8);
        }
        0x100..=0xffff => {
            buf.put_u8(m | 25);
            buf.put_u16(n as u16);
        }
        0x1_0000..=0xffff_ffff => {
            buf.put_u8(m | 26);
            buf.put_u32(n as u32);
        }
        _ => {
            buf.put_u8(m | 27);
            buf.put_u64(n);
        }
    }
}

fn put_text(buf: &mut impl BufMut, text: &str) {
    put_head(buf, MAJOR_TEXT, text.len() as u64);
    buf.put_slice(text.as_bytes());
}

/// Reads one definite-length CBOR head; `None` on anything else.
fn take_head(input: &mut &[u8]) -> Option<(u8, u64)> {
    let (&first, rest) = input.split_first()?;
    let major = first >> 5;
    let info = first & 0x1f;
    let width = match info {
        0..24 => {
            *input = rest;
            return Some((major, u64::from(info)));
        }
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return None,
    };
    let bytes = rest.get(..width)?;
    let n = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    *input = &rest[width..];
    Some((major, n))
}

fn take_string<'a>(input: &mut &'a [u8], major: u8) -> Option<&'a [u8]> {
    let (m, len) = take_head(input)?;
    if m != major {
        return None;
    }
    let len = usize::try_from(len).ok()?;
    let (bytes, rest) = input.split_at_checked(len)?;
    *input = rest;
    Some(bytes)
}

/// The fast path: a definite map of exactly `v`, `t`, `p` in any order.
fn parse_canonical(body: &[u8]) -> Option<Envelope<'_>> {
    let mut input = body;
    if take_head(&mut input)? != (MAJOR_MAP, 3) {
        return None;
    }
    let (mut v, mut t, mut p) = (None, None, None);
    for _ in 0..3 {
        match take_string(&mut input, MAJOR_TEXT)? {
            b"v" => {
                let (major, n) = take_head(&mut input)?;
                if major != MAJOR_UNSIGNED || v.is_some() {
                    return None;
                }
                v = Some(u8::try_from(n).ok()?);
            }
            b"t" if t.is_none() => {
                t = Some(std::str::from_utf8(take_string(&mut input, MAJOR_TEXT)?).ok()?);
            }
            b"p" if p.is_none() => p = Some(take_string(&mut input, MAJOR_BYTES)?),
            _ => return None,
        }
    }
    if !input.is_empty() {
        return None;
    }
    Some(Envelope {
        version: v?,
        message_type: Cow::Borrowed(t?),
        payload: Cow::Borrowed(p?),
    })
}

fn to_cbor<T: Serialize>(t: MessageType, payload: &T) -> Result<Vec<u8>, MessageError> {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail for I/O reasons; serde errors are reported.
    ciborium::into_writer(payload, &mut out).map_err(|e| MessageError::BadPayload {
        message_type: t.wire_name(),
        reason: e.to_string(),
    })?;
    Ok(out)
}

fn from_cbor<T: DeserializeOwned>(t: MessageType, payload: &[u8]) -> Result<T, MessageError> {
    ciborium::from_reader(payload).map_err(|e| MessageError::BadPayload {
        message_type: t.wire_name(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn hand_written_envelope_equals_the_serde_encoding() {
        #[derive(Serialize)]
        struct Env<'a> {
            v: u8,
            t: &'a str,
            #[serde(with = "serde_bytes")]
            p: &'a [u8],
        }
        for len in [0usize, 1, 23, 24, 255, 256, 65_535, 65_536, 100_000] {
            let payload = vec![0xab; len];
            let frame = envelope_frame("core.exec.stdout", 3, Flags::NONE, &payload).unwrap();
            let mut expected = Vec::new();
            ciborium::into_writer(
                &Env {
                    v: 1,
                    t: "core.exec.stdout",
                    p: &payload,
                },
                &mut expected,
            )
            .unwrap();
            assert_eq!(frame.body(), &expected[..], "payload length {len}");
        }
    }

    #[test]
    fn data_frames_equal_the_serde_encoding_of_their_payload() {
        for len in [0usize, 23, 24, 300, 70_000] {
            let data = vec![7u8; len];
            let fast = data_frame(MessageType::FsData, 11, &data).unwrap();
            let slow = Message::FsData(Data { data: data.clone() });
            let mut payload = Vec::new();
            ciborium::into_writer(&slow_payload(&data), &mut payload).unwrap();
            let via_serde = envelope_frame("core.fs.data", 11, Flags::NONE, &payload).unwrap();
            assert_eq!(fast, via_serde);
            assert_eq!(Message::from_frame(&fast).unwrap(), slow);
        }
    }

    fn slow_payload(data: &[u8]) -> Data {
        Data {
            data: data.to_vec(),
        }
    }

    #[test]
    fn envelope_keys_in_another_order_still_decode() {
        let mut body = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(vec![
                (
                    "p".into(),
                    ciborium::Value::Bytes(vec![0xa1, 0x64, b'c', b'o', b'd', b'e', 0x07]),
                ),
                ("t".into(), "core.exec.exited".into()),
                ("v".into(), 1.into()),
            ]),
            &mut body,
        )
        .unwrap();
        assert_eq!(
            Message::from_body(&body).unwrap(),
            Message::ExecExited(ExecExited { code: 7 })
        );
    }

    #[test]
    fn extra_envelope_keys_take_the_general_decoder() {
        let mut body = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(vec![
                ("v".into(), 1.into()),
                ("t".into(), "core.shutdown".into()),
                ("p".into(), ciborium::Value::Bytes(vec![])),
                ("x".into(), 5.into()),
            ]),
            &mut body,
        )
        .unwrap();
        assert_eq!(Message::from_body(&body).unwrap(), Message::Shutdown);
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
