//! The hand-written CBOR of the `{v, t, p}` envelope, and serde + ciborium
//! for payloads.
//!
//! The envelope's shape is fixed (a three-entry map), so it is written by
//! hand: encoding a message copies its payload once, straight into the
//! frame, and the bytes equal what serde + ciborium produce (tested below
//! and against microsandbox-protocol). Decoding takes a fast path for that
//! canonical shape; anything else valid goes to ciborium.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{CborFault, FrameError, MessageError};
use crate::frame::Frame;
use crate::message::{Envelope, MessageType};
use crate::wire::{Flags, LEN_PREFIX_SIZE, MAX_BODY_SIZE, PROTOCOL_VERSION, WIRE_HEADER_SIZE};

pub(crate) enum PayloadParts<'a> {
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

pub(crate) const MAJOR_UNSIGNED: u8 = 0;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
pub(crate) const MAJOR_MAP: u8 = 5;

pub(crate) fn raw_frame(
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

pub(crate) fn head_len(n: u64) -> usize {
    match n {
        0..24 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Writes a CBOR head in its shortest form, as every canonical encoder does.
pub(crate) fn put_head(buf: &mut impl BufMut, major: u8, n: u64) {
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

pub(crate) fn put_text(buf: &mut impl BufMut, text: &str) {
    put_head(buf, MAJOR_TEXT, text.len() as u64);
    buf.put_slice(text.as_bytes());
}

/// Reads one definite-length CBOR head; `None` on anything else.
pub(crate) fn take_head(input: &mut &[u8]) -> Option<(u8, u64)> {
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

pub(crate) fn take_string<'a>(input: &mut &'a [u8], major: u8) -> Option<&'a [u8]> {
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
pub(crate) fn parse_canonical(body: &[u8]) -> Option<Envelope<'_>> {
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

pub(crate) fn to_cbor<T: Serialize>(t: MessageType, payload: &T) -> Result<Vec<u8>, MessageError> {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail for I/O reasons; serde errors are reported.
    ciborium::into_writer(payload, &mut out).map_err(|e| MessageError::BadPayload {
        message_type: t.wire_name(),
        fault: CborFault::of_encode(e),
    })?;
    Ok(out)
}

pub(crate) fn from_cbor<T: DeserializeOwned>(
    t: MessageType,
    payload: &[u8],
) -> Result<T, MessageError> {
    ciborium::from_reader(payload).map_err(|e| MessageError::BadPayload {
        message_type: t.wire_name(),
        fault: CborFault::of_decode(e),
    })
}

/// A frame of a data-carrying message: the payload `{ "data": bytes }` is
/// written around the borrowed slice, which is copied once.
pub(crate) fn data_frame(
    wire_name: &str,
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
        wire_name,
        id,
        flags,
        PayloadParts::Split(&head[..used], data),
    )
}

/// Reads an envelope: the canonical fast path, else any valid encoding.
pub(crate) fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, MessageError> {
    if let Some(envelope) = parse_canonical(body) {
        return Ok(envelope);
    }
    let owned: OwnedEnvelope =
        ciborium::from_reader(body).map_err(|e| MessageError::BadEnvelope {
            fault: CborFault::of_decode(e),
        })?;
    Ok(Envelope {
        version: owned.v,
        message_type: Cow::Owned(owned.t),
        payload: Cow::Owned(owned.p),
    })
}

#[derive(serde::Deserialize)]
struct OwnedEnvelope {
    v: u8,
    t: String,
    #[serde(with = "serde_bytes")]
    p: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::message::{Message, envelope_frame};
    use crate::payload::{Data, ExecExited};

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
            let fast = crate::data_frame(MessageType::FsData, 11, &data).unwrap();
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
}
