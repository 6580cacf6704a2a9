//! Fuzz target `frame_decoder`: see `relay_fuzz::framing` for the property it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = relay_fuzz::framing::check(data) {
        panic!("frame_decoder: {violation}");
    }
});
