//! Requests in microsandbox's own protocol crates, which the compatibility
//! tests speak: 0.4.3 and 0.7.13 name the same exec request fields.

use serde::de::DeserializeOwned;

/// An exec request for `cmd ARGS` as either generation's type `T`, every
/// other field at that crate's own default (rows 24, cols 80, no tty).
pub fn exec_request<T: DeserializeOwned>(cmd: &str, args: &[&str]) -> T {
    serde_json::from_value(serde_json::json!({ "cmd": cmd, "args": args }))
        .expect("an exec request from its command and arguments")
}
