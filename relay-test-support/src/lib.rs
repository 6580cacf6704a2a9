//! The test doubles and helpers the workspace's tests share, so that no
//! test carries its own copy: a scripted agent ([`ScriptedAgent`]), raw
//! clients of a relay ([`RawClient`], [`BlockingClient`]), the relay's side
//! of a greeting ([`greeting`], [`FakeRelay`]), and the small things every
//! test wants the same way: [`READY`] and [`ready_frame`], one byte pattern
//! ([`pseudo_random`]), checksums ([`fnv1a`], [`sha256`]), temporary
//! directories ([`temp_dir`]), an exec session's output gathered from its
//! messages ([`ExecOutcome`]) and the hang guard ([`HANG_GUARD`],
//! [`eventually`]).
//!
//! For tests only: every crate takes it as a dev-dependency, and it is never
//! published. It depends on `relay-codec` and `relay-ring` alone, so the
//! relay, the router, the client, the agent and the CLI can all use it
//! without a cycle; doubles that need one of those crates (a relay harness,
//! a host for the real agent) stay in that crate's tests.
//!
//! Its helpers panic with a message saying what failed rather than return
//! errors a test could only unwrap; only what a test may assert on (a raw
//! client's greeting or frame that went wrong) is a typed [`WireError`].
//! Frames are read from raw bytes with `relay-codec`'s own parser
//! ([`relay_codec::FrameHeader::parse`], [`relay_codec::FrameAssembler`]),
//! never by hand.
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )
)]

mod agent;
mod checksum;
mod client;
mod error;
mod exec;
mod frames;
mod greeter;
mod pattern;
mod process;
mod temp;
mod wait;

pub use agent::{AgentSender, Behaviour, Reply, Script, ScriptedAgent, echo, sink};
pub use checksum::{Digest, Sha256, fnv1a, hex, sha256, sha256_file};
pub use client::{BlockingClient, RawClient};
pub use error::WireError;
pub use exec::ExecOutcome;
pub use frames::{
    READY, frames, message_type, partial_frame, read_frame, ready_frame, ready_frame_offering,
};
pub use greeter::{FakeRelay, greeting};
pub use pattern::{fill_pseudo_random, pseudo_random};
pub use process::{process_is_gone, wait_until_gone};
pub use temp::{TempDir, temp_dir};
pub use wait::{HANG_GUARD, eventually, eventually_blocking, guard};
