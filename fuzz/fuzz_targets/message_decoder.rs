//! Fuzz target `message_decoder`: see `relay_fuzz::messages` for the property it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = relay_fuzz::messages::check(data) {
        panic!("message_decoder: {violation}");
    }
});
