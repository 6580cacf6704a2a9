//! Helpers shared by the integration tests: a deterministic RNG, a patterned byte source and an fd readiness probe.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::os::fd::{AsRawFd, BorrowedFd};

/// xorshift64*: small, fast, deterministic, good enough for chunk sizes.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `1..=max`.
    pub(crate) fn size(&mut self, max: usize) -> usize {
        1 + usize::try_from(self.next_u64() % max as u64).expect("fits")
    }
}

/// A byte stream whose byte at offset `i` is `PATTERN[i % PERIOD]`: a prime
/// period, so a lost, repeated or reordered chunk shows up as a mismatch.
pub(crate) struct Pattern {
    bytes: Vec<u8>,
}

pub(crate) const PERIOD: usize = 65_521;

impl Pattern {
    pub(crate) fn new() -> Self {
        let mut rng = Rng::new(0x5eed);
        let period: Vec<u8> = (0..PERIOD)
            .map(|_| rng.next_u64().to_le_bytes()[7])
            .collect();
        // Two periods back to back, so that any window of up to one period is one slice.
        Self {
            bytes: [&period[..], &period[..]].concat(),
        }
    }

    /// The `len` bytes of the stream from `offset` on (`len <= PERIOD`).
    pub(crate) fn at(&self, offset: u64, len: usize) -> &[u8] {
        assert!(len <= PERIOD);
        let start = usize::try_from(offset % PERIOD as u64).expect("fits");
        &self.bytes[start..start + len]
    }
}

/// Whether `fd` polls readable right now (poll(2) with a zero timeout).
pub(crate) fn fd_is_readable(fd: BorrowedFd<'_>) -> bool {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pollfd` is a valid one-element array for the duration of the
    // call, and `fd` is open while borrowed.
    let rc = unsafe { libc::poll(&raw mut pollfd, 1, 0) };
    assert!(rc >= 0, "poll failed: {}", std::io::Error::last_os_error());
    rc == 1
}

/// Bytes each stress test moves: `RELAY_RING_STRESS_BYTES` if set, else
/// 1 GiB in release builds and 64 MiB in debug builds.
pub(crate) fn stress_bytes() -> u64 {
    match std::env::var("RELAY_RING_STRESS_BYTES") {
        Ok(value) => value
            .parse()
            .expect("RELAY_RING_STRESS_BYTES must be a byte count"),
        Err(_) if cfg!(debug_assertions) => 64 << 20,
        Err(_) => 1 << 30,
    }
}
