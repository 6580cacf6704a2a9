//! Integration tests of relay-client against a fake relay and scripted agent
//! (one test binary, so the workspace links it once).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod connection;
mod deadline;
mod exec;
mod fs;
mod handshake;
mod ids;
mod support;
