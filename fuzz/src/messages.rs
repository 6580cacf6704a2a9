//! Target `message_decoder`: frame bodies through the typed layer.
//!
//! Two properties run on every input:
//!
//! 1. **Decoding any body** ([`check_body`]): [`Envelope::parse`] accepts
//!    exactly what a general CBOR decoder accepts (its canonical fast path
//!    is an optimisation, never a different language) and returns the same
//!    fields; a version-1 envelope re-encoded with [`envelope_frame`]
//!    parses back to itself; and a body that [`Message::from_body`] accepts
//!    re-encodes to a frame that decodes to the same message.
//! 2. **Encoding any message** ([`check_round_trip`]): a message built from
//!    the input ([`message_from_fuzz`]) encodes to a frame that decodes to
//!    the same message, with the id and flags it was given, and with a body
//!    equal to the serde encoding of its envelope.

use relay_codec::payload::{
    Data, ExecExited, ExecRequest, ExecResize, ExecRlimit, ExecSignal, ExecStarted, FsEntry, FsOp,
    FsRequest, FsResponse, FsResponseData, Ready,
};
use relay_codec::{Envelope, Flags, Message, MessageError, PROTOCOL_VERSION, envelope_frame};
use serde::{Deserialize, Serialize};

use crate::Violation;
use crate::input::Input;

/// The envelope as a general serde/CBOR reading sees it.
#[derive(Debug, Serialize, Deserialize)]
struct GeneralEnvelope {
    v: u8,
    t: String,
    #[serde(with = "serde_bytes")]
    p: Vec<u8>,
}

/// What [`check_body`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyVerdict {
    /// Not an envelope.
    NotAnEnvelope,
    /// An envelope, but not a generation-1 message.
    EnvelopeOnly,
    /// A generation-1 message.
    Message(Message),
}

/// Property 1 on one body.
pub fn check_body(body: &[u8]) -> Result<BodyVerdict, Violation> {
    let parsed = Envelope::parse(body);
    let general: Result<GeneralEnvelope, _> = ciborium::from_reader(body);
    let envelope = match (parsed, general) {
        (Err(_), Err(_)) => return Ok(BodyVerdict::NotAnEnvelope),
        (Ok(envelope), Ok(general)) => {
            let same = envelope.version == general.v
                && envelope.message_type == general.t
                && envelope.payload[..] == general.p[..];
            if !same {
                return Err(format!(
                    "Envelope::parse read {envelope:?}, a general decoder {general:?}"
                ));
            }
            envelope
        }
        (Ok(envelope), Err(error)) => {
            return Err(format!(
                "Envelope::parse accepted {envelope:?} that a general decoder refuses: {error}"
            ));
        }
        (Err(error), Ok(general)) => {
            return Err(format!(
                "Envelope::parse refused ({error}) what a general decoder reads as {general:?}"
            ));
        }
    };
    if envelope.version == PROTOCOL_VERSION {
        let frame = envelope_frame(&envelope.message_type, 9, Flags::NONE, &envelope.payload)
            .map_err(|e| format!("a parsed envelope does not re-encode: {e}"))?;
        let again = Envelope::parse(frame.body())
            .map_err(|e| format!("a re-encoded envelope does not parse: {e}"))?;
        if again != envelope {
            return Err(format!(
                "envelope round trip: {envelope:?} became {again:?}"
            ));
        }
    }
    match Message::from_body(body) {
        Ok(message) => {
            check_decoded_again(&message)?;
            Ok(BodyVerdict::Message(message))
        }
        Err(MessageError::BadEnvelope { fault }) => Err(format!(
            "Message::from_body calls a parsed envelope bad: {fault}"
        )),
        Err(_) => Ok(BodyVerdict::EnvelopeOnly),
    }
}

/// A decoded message encodes and decodes to itself.
fn check_decoded_again(message: &Message) -> Result<(), Violation> {
    let frame = message
        .to_frame(77)
        .map_err(|e| format!("a decoded {message:?} does not encode: {e}"))?;
    match Message::from_frame(&frame) {
        Ok(again) if again == *message => Ok(()),
        other => Err(format!(
            "decode, encode, decode: {message:?} became {other:?}"
        )),
    }
}

/// Property 2: `message` with `id` and `flags` survives the round trip.
pub fn check_round_trip(message: &Message, id: u32, flags: Flags) -> Result<(), Violation> {
    let frame = match message.to_frame_with_flags(id, flags) {
        Ok(frame) => frame,
        // Only a message too large for one frame may fail to encode.
        Err(MessageError::Frame(_)) => return Ok(()),
        Err(error) => return Err(format!("{message:?} does not encode: {error}")),
    };
    if frame.id() != id || frame.flags() != flags {
        return Err(format!("header changed: {frame:?}, wanted {id} {flags:?}"));
    }
    let decoded = Message::from_frame(&frame);
    if decoded.as_ref() != Ok(message) {
        return Err(format!("round trip: {message:?} became {decoded:?}"));
    }
    let envelope = Envelope::parse(frame.body())
        .map_err(|e| format!("an encoded frame has no envelope: {e}"))?;
    let wire_name = message.message_type().wire_name();
    if envelope.version != PROTOCOL_VERSION || envelope.message_type != wire_name {
        return Err(format!("envelope of {wire_name} reads {envelope:?}"));
    }
    let mut serde_body = Vec::new();
    ciborium::into_writer(
        &GeneralEnvelope {
            v: PROTOCOL_VERSION,
            t: wire_name.to_owned(),
            p: envelope.payload.to_vec(),
        },
        &mut serde_body,
    )
    .map_err(|e| format!("serde cannot encode the envelope: {e}"))?;
    if serde_body != frame.body() {
        return Err(format!(
            "the envelope of {wire_name} differs from its serde encoding"
        ));
    }
    Ok(())
}

/// Builds any generation-1 message from fuzzer bytes.
pub fn message_from_fuzz(input: &mut Input<'_>) -> Message {
    match input.below(13) {
        0 => Message::Ready(ready(input.u64(), input.u64(), input.u64())),
        1 => Message::Shutdown,
        2 => Message::ExecRequest(exec_request(input)),
        3 => Message::ExecStarted(ExecStarted { pid: input.u32() }),
        4 => Message::ExecStdin(data(input)),
        5 => Message::ExecStdout(data(input)),
        6 => Message::ExecStderr(data(input)),
        7 => Message::ExecExited(ExecExited {
            code: input.u32() as i32,
        }),
        8 => Message::ExecResize(ExecResize {
            rows: input.u16(),
            cols: input.u16(),
        }),
        9 => Message::ExecSignal(ExecSignal {
            signal: input.u32() as i32,
        }),
        10 => Message::FsRequest(FsRequest { op: fs_op(input) }),
        11 => Message::FsData(data(input)),
        _ => Message::FsResponse(fs_response(input)),
    }
}

/// A `core.ready` payload with these times and every optional field absent.
///
/// Built through serde rather than a struct literal, so this crate keeps
/// compiling whichever optional extensions `Ready` carries (they decode to
/// their defaults when absent).
pub fn ready(boot_time_ns: u64, init_time_ns: u64, ready_time_ns: u64) -> Ready {
    #[derive(Serialize)]
    struct Times {
        boot_time_ns: u64,
        init_time_ns: u64,
        ready_time_ns: u64,
    }
    let mut bytes = Vec::new();
    let times = Times {
        boot_time_ns,
        init_time_ns,
        ready_time_ns,
    };
    ciborium::into_writer(&times, &mut bytes)
        .ok()
        .and_then(|()| ciborium::from_reader(&bytes[..]).ok())
        .unwrap_or_else(|| unreachable!("three integers always make a core.ready payload"))
}

fn data(input: &mut Input<'_>) -> Data {
    Data {
        data: input.short_bytes().to_vec(),
    }
}

fn strings(input: &mut Input<'_>) -> Vec<String> {
    (0..input.below(4)).map(|_| input.string()).collect()
}

fn optional_string(input: &mut Input<'_>) -> Option<String> {
    input.bool().then(|| input.string())
}

fn exec_request(input: &mut Input<'_>) -> ExecRequest {
    ExecRequest {
        cmd: input.string(),
        args: strings(input),
        env: strings(input),
        cwd: optional_string(input),
        user: optional_string(input),
        tty: input.bool(),
        rows: input.u16(),
        cols: input.u16(),
        rlimits: (0..input.below(3))
            .map(|_| ExecRlimit {
                resource: input.string(),
                soft: input.u64(),
                hard: input.u64(),
            })
            .collect(),
    }
}

fn fs_op(input: &mut Input<'_>) -> FsOp {
    match input.below(9) {
        0 => FsOp::Stat {
            path: input.string(),
        },
        1 => FsOp::List {
            path: input.string(),
        },
        2 => FsOp::Read {
            path: input.string(),
        },
        3 => FsOp::Write {
            path: input.string(),
            mode: input.bool().then(|| input.u32()),
        },
        4 => FsOp::Mkdir {
            path: input.string(),
        },
        5 => FsOp::Remove {
            path: input.string(),
        },
        6 => FsOp::RemoveDir {
            path: input.string(),
        },
        7 => FsOp::Copy {
            src: input.string(),
            dst: input.string(),
        },
        _ => FsOp::Rename {
            src: input.string(),
            dst: input.string(),
        },
    }
}

fn fs_entry(input: &mut Input<'_>) -> FsEntry {
    FsEntry {
        path: input.string(),
        kind: input.string(),
        size: input.u64(),
        mode: input.u32(),
        modified: input.bool().then(|| input.u64() as i64),
    }
}

fn fs_response(input: &mut Input<'_>) -> FsResponse {
    FsResponse {
        ok: input.bool(),
        error: optional_string(input),
        data: match input.below(3) {
            0 => None,
            1 => Some(FsResponseData::Stat(fs_entry(input))),
            _ => Some(FsResponseData::List(
                (0..input.below(4)).map(|_| fs_entry(input)).collect(),
            )),
        },
    }
}

/// Both properties on one fuzzer input: the bytes as a body, and the
/// message, id and flags built from them.
pub fn check(bytes: &[u8]) -> Result<BodyVerdict, Violation> {
    let verdict = check_body(bytes)?;
    let mut input = Input::new(bytes);
    let id = input.u32();
    let flags = Flags::from_bits(input.u8());
    let message = message_from_fuzz(&mut input);
    check_round_trip(&message, id, flags)?;
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_codec::MessageType;

    #[test]
    fn every_message_type_can_be_built_and_round_trips() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0u32..2000 {
            let bytes: Vec<u8> = (0..64u32)
                .map(|i| (seed.wrapping_mul(2_654_435_761).rotate_left(i) ^ i) as u8)
                .collect();
            let mut input = Input::new(&bytes);
            let message = message_from_fuzz(&mut input);
            seen.insert(message.message_type().wire_name());
            check_round_trip(&message, seed, Flags::from_bits(seed as u8)).unwrap();
        }
        assert_eq!(seen.len(), MessageType::ALL.len(), "{seen:?}");
    }

    #[test]
    fn encoded_bodies_decode_to_their_message() {
        let message = Message::ExecRequest(ExecRequest::new("ls", ["-l", "/"]));
        let frame = message.to_frame(5).unwrap();
        assert_eq!(check_body(frame.body()), Ok(BodyVerdict::Message(message)));
    }

    #[test]
    fn unknown_types_and_garbage_are_sorted_not_failed() {
        let later = envelope_frame("core.later", 1, Flags::NONE, &[0xf6]).unwrap();
        assert_eq!(check_body(later.body()), Ok(BodyVerdict::EnvelopeOnly));
        for garbage in [&[][..], &[0xff], &[0xa3, 0x61, 0x76], &[0x9f; 40]] {
            assert_eq!(check_body(garbage), Ok(BodyVerdict::NotAnEnvelope));
        }
    }

    #[test]
    fn a_non_canonical_envelope_is_read_like_the_general_decoder_does() {
        // Keys in another order, a one-byte head for v: the fast path steps aside.
        let body = [
            0xa3, 0x61, b'p', 0x40, 0x61, b'v', 0x18, 0x01, 0x61, b't', 0x6d, b'c', b'o', b'r',
            b'e', b'.', b's', b'h', b'u', b't', b'd', b'o', b'w', b'n',
        ];
        assert_eq!(
            check_body(&body),
            Ok(BodyVerdict::Message(Message::Shutdown))
        );
    }
}
