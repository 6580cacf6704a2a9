//! Input builders and invariant checkers behind the fuzz targets in
//! `fuzz_targets/`, plus their seeds.
//!
//! Each fuzz target is one call into this library, so every property a
//! target checks is also exercised by this crate's unit tests, and a crash
//! input replays as a plain test. Every checker returns `Ok` with a summary
//! of what it saw, or a [`Violation`] describing the broken property; the
//! targets turn a violation into a panic, which libFuzzer reports.
//!
//! | target | input | property |
//! |---|---|---|
//! | `frame_decoder` | [`framing::ChunkedStream`] | `FrameCodec` and `FrameAssembler` agree with a plain reading over any chunking |
//! | `message_decoder` | a frame body; a [`relay_codec::Message`] | envelopes read like a general CBOR decoder; decode/encode round trips |
//! | `handshake_decoder` | greeting bytes; an issued greeting | re-encoding, prefixes, both forms, ids within the slot |
//! | `router_events` | [`router::Scenario`] | the router agrees with the reference model in `relay_router::model` after every event |
//!
//! Inputs are read with [`input::Input`], which never fails: every byte
//! string is some stream, body, greeting or scenario.
#![forbid(unsafe_code)]

pub mod framing;
pub mod handshakes;
pub mod input;
pub mod messages;
pub mod router;
pub mod seeds;

/// A broken property: what was expected and what happened instead.
pub type Violation = String;
