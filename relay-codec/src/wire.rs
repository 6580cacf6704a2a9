//! Wire constants and the flags byte, defined once for every crate.

use std::fmt;

/// Bytes of the big-endian `len` prefix that opens every frame.
pub const LEN_PREFIX_SIZE: usize = 4;

/// Bytes of the routing header after the prefix: `id: u32 BE` then `flags: u8`.
pub const FRAME_HEADER_SIZE: usize = 5;

/// Bytes before the body: prefix plus routing header.
pub const WIRE_HEADER_SIZE: usize = LEN_PREFIX_SIZE + FRAME_HEADER_SIZE;

/// The largest legal value of `len` (it counts header and body, not itself).
pub const MAX_FRAME_SIZE: usize = 4 * 1024 * 1024;

/// The largest body a frame can carry.
pub const MAX_BODY_SIZE: usize = MAX_FRAME_SIZE - FRAME_HEADER_SIZE;

/// The protocol generation this crate speaks (`"v"` in the body).
pub const PROTOCOL_VERSION: u8 = 1;

/// The id of frames that concern the connection between relay and agent
/// rather than a session: `core.ready`, `core.shutdown`, and this
/// project's flow-control messages once negotiated. No client owns it.
pub const CONNECTION_ID: u32 = 0;

/// The id microsandbox 0.7's runtime keeps for itself (its agent sends
/// transport credit there). No client owns it, and a relay delivers a frame
/// on it to nobody.
pub const RUNTIME_RESERVED_ID: u32 = u32::MAX;

/// Largest data chunk of a `core.fs.data` message.
pub const FS_CHUNK_SIZE: usize = 3 * 1024 * 1024;

const _: () = assert!(WIRE_HEADER_SIZE == 9);
const _: () = assert!(
    MAX_FRAME_SIZE <= u32::MAX as usize,
    "len must fit its u32 prefix"
);
const _: () = assert!(
    FS_CHUNK_SIZE + 64 < MAX_BODY_SIZE,
    "an fs chunk and its envelope must fit one frame"
);

/// The flags byte of a frame header.
///
/// Unknown bits are kept as they are: a relay passes them through and never
/// fails on them. No extension of this project claims a bit: upstream's
/// later generations use them (see [`Flags::BULK`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flag set.
    pub const NONE: Flags = Flags(0);
    /// The last frame of a session (`core.exec.exited`, `core.fs.response`).
    pub const TERMINAL: Flags = Flags(0x01);
    /// The first frame of a session (`core.exec.request`, `core.fs.request`).
    pub const SESSION_START: Flags = Flags(0x02);
    /// Asks the sandbox to stop (`core.shutdown`).
    pub const SHUTDOWN: Flags = Flags(0x04);
    /// microsandbox 0.7's `FLAG_BULK` (raw bulk records of later
    /// generations). Named so logs read well; this project gives it no
    /// meaning, and a relay passes it through like any other bit.
    pub const BULK: Flags = Flags(0x08);

    /// Bits with a name here (generation 1's three, and upstream's `BULK`).
    const KNOWN: u8 = 0x0f;

    /// Wraps a raw flags byte, unknown bits included.
    pub const fn from_bits(bits: u8) -> Flags {
        Flags(bits)
    }

    /// The raw byte as it goes on the wire.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Bits without a name here.
    pub const fn reserved_bits(self) -> u8 {
        self.0 & !Self::KNOWN
    }

    /// The union of both sets of bits.
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;

    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        for (flag, name) in [
            (Flags::TERMINAL, "TERMINAL"),
            (Flags::SESSION_START, "SESSION_START"),
            (Flags::SHUTDOWN, "SHUTDOWN"),
            (Flags::BULK, "BULK"),
        ] {
            if self.contains(flag) {
                names.push(name);
            }
        }
        let reserved = self.reserved_bits();
        if names.is_empty() && reserved == 0 {
            return f.write_str("Flags(NONE)");
        }
        write!(f, "Flags({}", names.join(" | "))?;
        if reserved != 0 {
            if !names.is_empty() {
                f.write_str(" | ")?;
            }
            write!(f, "{reserved:#04x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_keep_reserved_bits() {
        let flags = Flags::from_bits(0x83);
        assert!(flags.contains(Flags::TERMINAL));
        assert!(flags.contains(Flags::SESSION_START));
        assert!(!flags.contains(Flags::SHUTDOWN));
        assert_eq!(flags.reserved_bits(), 0x80);
        assert_eq!(flags.bits(), 0x83);
    }

    #[test]
    fn flags_debug_names_each_bit() {
        assert_eq!(format!("{:?}", Flags::NONE), "Flags(NONE)");
        assert_eq!(
            format!("{:?}", Flags::TERMINAL | Flags::SHUTDOWN),
            "Flags(TERMINAL | SHUTDOWN)"
        );
        assert_eq!(format!("{:?}", Flags::from_bits(0x40)), "Flags(0x40)");
    }
}
