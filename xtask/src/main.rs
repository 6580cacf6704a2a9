//! `cargo xtask`: the project's single entry point for checks.
fn main() {}
