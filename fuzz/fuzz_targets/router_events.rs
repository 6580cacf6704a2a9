//! Fuzz target `router_events`: see `relay_fuzz::router` for the property it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = relay_fuzz::router::check(data) {
        panic!("router_events: {violation}");
    }
});
