//! Checksums to compare transfers by: FNV-1a where both sides are in the
//! test's memory, SHA-256 where the other side is a file or a program
//! (`sha256sum`), and hex to print or compare either.

use std::path::Path;

/// SHA-256 itself, for a digest computed as the bytes stream past.
pub use sha2::{Digest, Sha256};

/// The 64-bit FNV-1a hash of `data`.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The SHA-256 digest of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The SHA-256 digest of the file at `path`; panics naming the path when it
/// cannot be read.
pub fn sha256_file(path: &Path) -> [u8; 32] {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    sha256(&data)
}

/// `bytes` in lowercase hex, two digits a byte (as `sha256sum` prints them).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksums_of_known_inputs_are_the_published_ones() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
