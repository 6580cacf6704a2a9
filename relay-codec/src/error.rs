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
    #[error("frame body is not a message envelope: {reason}")]
    BadEnvelope {
        /// What the CBOR decoder reported.
        reason: String,
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
    #[error("payload of {message_type} is malformed: {reason}")]
    BadPayload {
        /// Wire name of the message type.
        message_type: &'static str,
        /// What the CBOR decoder reported.
        reason: String,
    },
    /// The encoded message does not fit in one frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
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
