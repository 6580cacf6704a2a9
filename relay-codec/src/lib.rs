//! Frames, headers and typed messages of the microsandbox agent protocol
//! (generation 1, byte-compatible with microsandbox-protocol 0.4.3).
//!
//! This is the bottom layer of the workspace: every other crate speaks
//! through it, and it depends on none of them. It has three levels, and a
//! relay only ever needs the first:
//!
//! 1. **Raw frames** ([`Frame`], [`FrameCodec`], [`FrameAssembler`]): the
//!    length prefix and the routing header, with the body left undecoded.
//! 2. **Typed messages** ([`Message`], [`MessageType`], [`payload`]): the CBOR
//!    envelope `{v, t, p}` and the generation-1 payloads.
//! 3. **The handshake** ([`Handshake`], [`IdRange`]): what a relay writes to a
//!    new client, and which ids each client owns.
//!
//! # Frame layout
//!
//! ```text
//! +-------------+-------------+-----------+---------------------------+
//! | len: u32 BE | id: u32 BE  | flags: u8 | body: CBOR, len - 5 bytes |
//! +-------------+-------------+-----------+---------------------------+
//!  `len` counts everything after itself: 5 <= len <= 4 MiB.
//!
//! body = { "v": 1, "t": "core.exec.stdout", "p": h'<CBOR payload>' }
//! ```
//!
//! A [`Frame`] keeps the bytes exactly as they are on the wire, so reading,
//! routing and writing a frame never re-encodes it. Decoding errors are
//! typed ([`FrameError`], [`MessageError`], [`HandshakeError`]) and a
//! malformed stream is reported, never resynchronised by dropping bytes.
//!
//! # Unknown message types
//!
//! [`Envelope::parse`] accepts any type name, and raw frames never look at
//! it, so a relay passes later generations' messages through unchanged.
//! [`Message::from_frame`] is strict and returns
//! [`MessageError::UnknownType`] for a name it does not know. Every flags
//! bit passes through too: [`Flags`] names upstream's `BULK` bit but this
//! project claims none of its own.
#![forbid(unsafe_code)]

mod cbor;
mod codec;
mod error;
pub mod flow;
mod frame;
mod handshake;
mod message;
pub mod payload;
mod scan;
mod wire;

pub use codec::{FrameAssembler, FrameCodec, GROWTH_STEP, split_frames};
pub use error::{CborFault, CodecError, FrameError, HandshakeError, MessageError};
pub use frame::{Frame, FrameHeader};
pub use handshake::{
    Handshake, IdRange, LEGACY_SLOTS, LEGACY_STEP, bounds_slot_of, bounds_slot_range,
    legacy_slot_of, legacy_slot_range,
};
pub use message::{Envelope, Message, MessageType, data_frame, envelope_frame};
pub use scan::{FrameScanner, LARGE_PEEK, Scanned};
pub use wire::{
    CONNECTION_ID, FRAME_HEADER_SIZE, FS_CHUNK_SIZE, Flags, LEN_PREFIX_SIZE, MAX_BODY_SIZE,
    MAX_FRAME_SIZE, PROTOCOL_VERSION, RUNTIME_RESERVED_ID, WIRE_HEADER_SIZE,
};
