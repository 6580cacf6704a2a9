//! Typed errors of each layer: raw frames, the tokio codec, typed messages, handshakes.

use std::io;

/// A byte stream does not hold a well-formed frame. The stream cannot be
/// trusted after this: the caller ends it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `len` is below the 5-byte routing header.
    #[error("frame length {len} is below the {min}-byte header", min = crate::FRAME_HEADER_SIZE)]
    FrameTooShort {
        /// The announced length.
        len: usize,
    },
    /// `len` is above the allowed maximum.
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced (or attempted) length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {have} of {need} bytes received")]
    Truncated {
        /// Bytes of the frame received before the end.
        have: usize,
        /// Bytes the frame needed (as far as known).
        need: usize,
    },
    /// A buffer passed as one frame does not match its own `len`.
    #[error("frame length {len} does not match the {actual} bytes that follow it")]
    LengthMismatch {
        /// The announced length.
        len: usize,
        /// The bytes actually present after the prefix.
        actual: usize,
    },
}

/// Error of [`FrameCodec`](crate::FrameCodec): malformed framing or I/O.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes do not form a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// A frame's body is not a valid generation-1 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The body is not the `{v, t, p}` CBOR envelope.
    #[error("frame body is not a message envelope: {fault}")]
    BadEnvelope {
        /// What the CBOR decoder found.
        fault: CborFault,
    },
    /// The envelope names a message type this crate does not know.
    #[error("unknown message type {name:?}")]
    UnknownType {
        /// The wire name found.
        name: String,
    },
    /// The envelope is of a generation before the first.
    #[error(
        "protocol generation {found} is not supported (this codec speaks {supported} and later)"
    )]
    UnsupportedVersion {
        /// The `v` found.
        found: u8,
        /// The generation spoken here.
        supported: u8,
    },
    /// The payload does not match the schema of its message type.
    #[error("payload of {message_type} is malformed: {fault}")]
    BadPayload {
        /// Wire name of the message type.
        message_type: &'static str,
        /// What the CBOR decoder (or encoder) found.
        fault: CborFault,
    },
    /// The encoded message does not fit in one frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// What CBOR decoding (or encoding) found wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborFault {
    /// The bytes are not well-formed CBOR.
    #[error("not well-formed CBOR at byte {offset}")]
    Syntax {
        /// Byte offset of the fault.
        offset: usize,
    },
    /// Well-formed CBOR of the wrong shape: a missing field, a value of the
    /// wrong type.
    #[error("{expected}{}", offset.map(|at| format!(" (at byte {at})")).unwrap_or_default())]
    Shape {
        /// Byte offset, when the decoder knows it.
        offset: Option<usize>,
        /// What the schema expected, in serde's words.
        expected: String,
    },
    /// The input ends inside a value.
    #[error("the input ends inside a value")]
    Truncated,
    /// Nested deeper than the decoder allows.
    #[error("nested deeper than the decoder allows")]
    TooDeep,
    /// A value the encoder cannot represent.
    #[error("cannot be encoded: {what}")]
    Unencodable {
        /// serde's description of the value.
        what: String,
    },
}

impl CborFault {
    pub(crate) fn of_decode<E>(error: ciborium::de::Error<E>) -> CborFault {
        match error {
            ciborium::de::Error::Io(_) => CborFault::Truncated,
            ciborium::de::Error::Syntax(offset) => CborFault::Syntax { offset },
            ciborium::de::Error::Semantic(offset, expected) => {
                CborFault::Shape { offset, expected }
            }
            ciborium::de::Error::RecursionLimitExceeded => CborFault::TooDeep,
        }
    }

    pub(crate) fn of_encode<E: std::fmt::Debug>(error: ciborium::ser::Error<E>) -> CborFault {
        match error {
            ciborium::ser::Error::Value(what) => CborFault::Unencodable { what },
            ciborium::ser::Error::Io(error) => CborFault::Unencodable {
                what: format!("{error:?}"),
            },
        }
    }
}

/// The bytes a relay sends on accept are not a valid handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// An id range is empty or starts after it ends.
    #[error("id range [{start}, {end}) is empty")]
    EmptyRange {
        /// First id offered.
        start: u32,
        /// One past the last id offered.
        end: u32,
    },
    /// The ready frame that follows the prefix is malformed.
    #[error("handshake ready frame: {0}")]
    ReadyFrame(#[from] FrameError),
}
