//! Fuzz target `handshake_decoder`: see `relay_fuzz::handshakes` for the property it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = relay_fuzz::handshakes::check(data) {
        panic!("handshake_decoder: {violation}");
    }
});
