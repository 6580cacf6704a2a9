//! Deterministic bytes: the one pseudo-random generator of the tests, for
//! data that no step of a transfer could compress, shift or mistake for
//! another's without a checksum noticing.

/// `len` pseudo-random bytes from `seed`; the same seed always gives the
/// same bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fill_pseudo_random(&mut bytes, seed);
    bytes
}

/// Fills `buf` with the bytes [`pseudo_random`] gives for `seed`.
pub fn fill_pseudo_random(buf: &mut [u8], seed: u64) {
    // xorshift64: its state must never be zero.
    let mut state = seed | 1;
    for chunk in buf.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_others() {
        assert_eq!(pseudo_random(1001, 7), pseudo_random(1001, 7));
        assert_ne!(pseudo_random(64, 7), pseudo_random(64, 8));
        // A shorter run is a prefix of a longer one.
        assert_eq!(pseudo_random(13, 7)[..], pseudo_random(1001, 7)[..13]);
    }

    #[test]
    fn a_zero_seed_still_gives_bytes_that_vary() {
        let bytes = pseudo_random(4096, 0);
        let distinct = bytes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        assert!(distinct > 200, "{distinct} distinct byte values");
    }
}
