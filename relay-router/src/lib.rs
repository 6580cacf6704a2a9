//! The relay's routing and session state machine: pure logic, no I/O.
