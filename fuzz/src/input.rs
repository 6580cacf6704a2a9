//! A cursor over the fuzzer's bytes that never fails, and its inverse for
//! writing seeds.
//!
//! Past the end of the input every read yields zeros, so every byte string
//! decodes to some value and the fuzzer never wastes an input on a parse
//! error. [`Output`] writes the same encoding, so a seed built from a value
//! decodes back to that value.

/// Reads fixed-width big-endian integers and byte runs from fuzzer input.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// One byte, or 0 past the end.
    pub fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    /// Two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Eight bytes, big-endian.
    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// A value in `0..n` (0 when `n` is 0), read in the narrowest width that
    /// covers `n`: one byte up to 256, two up to 65,536, else four.
    pub fn below(&mut self, n: u32) -> u32 {
        let raw = match width(n) {
            1 => u32::from(self.u8()),
            2 => u32::from(self.u16()),
            _ => self.u32(),
        };
        if n == 0 { 0 } else { raw % n }
    }

    /// The low bit of one byte.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        taken
    }

    /// A byte run whose length is read first (one byte: 0 to 255).
    pub fn short_bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }

    /// A string: a short byte run, invalid UTF-8 replaced.
    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.short_bytes()).into_owned()
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

/// Writes what [`Input`] reads, for building seeds from values.
#[derive(Debug, Clone, Default)]
pub struct Output {
    bytes: Vec<u8>,
}

impl Output {
    /// An empty output.
    pub fn new() -> Output {
        Output::default()
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// See [`Input::u8`].
    pub fn u8(&mut self, value: u8) -> &mut Output {
        self.bytes.push(value);
        self
    }

    /// See [`Input::u16`].
    pub fn u16(&mut self, value: u16) -> &mut Output {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// See [`Input::u32`].
    pub fn u32(&mut self, value: u32) -> &mut Output {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// See [`Input::u64`].
    pub fn u64(&mut self, value: u64) -> &mut Output {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// See [`Input::below`]; `value` must be below `n`.
    pub fn below(&mut self, value: u32, n: u32) -> &mut Output {
        debug_assert!(n == 0 || value < n, "{value} is not below {n}");
        match width(n) {
            // The width rule guarantees the value fits.
            1 => self.u8(value as u8),
            2 => self.u16(value as u16),
            _ => self.u32(value),
        }
    }

    /// See [`Input::bool`].
    pub fn bool(&mut self, value: bool) -> &mut Output {
        self.u8(u8::from(value))
    }

    /// Raw bytes, read back with [`Input::bytes`] or [`Input::rest`].
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Output {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// See [`Input::short_bytes`]; at most 255 bytes.
    pub fn short_bytes(&mut self, bytes: &[u8]) -> &mut Output {
        let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
        self.u8(len).bytes(&bytes[..usize::from(len)])
    }

    /// See [`Input::string`].
    pub fn string(&mut self, text: &str) -> &mut Output {
        self.short_bytes(text.as_bytes())
    }
}

/// Bytes used to encode a value below `n`.
fn width(n: u32) -> usize {
    match n {
        0..=256 => 1,
        257..=65_536 => 2,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_yield_zeros() {
        let mut input = Input::new(&[0xab]);
        assert_eq!(input.u16(), 0xab00);
        assert_eq!(input.u32(), 0);
        assert!(input.bytes(4).is_empty());
        assert_eq!(input.below(7), 0);
    }

    #[test]
    fn output_writes_what_input_reads() {
        let mut out = Output::new();
        out.u8(1)
            .u16(0x0203)
            .u32(0x0405_0607)
            .u64(8)
            .below(200, 256)
            .below(300, 1000)
            .below(70_000, 100_000)
            .bool(true)
            .string("héllo")
            .bytes(b"tail");
        let bytes = out.into_bytes();
        let mut input = Input::new(&bytes);
        assert_eq!(input.u8(), 1);
        assert_eq!(input.u16(), 0x0203);
        assert_eq!(input.u32(), 0x0405_0607);
        assert_eq!(input.u64(), 8);
        assert_eq!(input.below(256), 200);
        assert_eq!(input.below(1000), 300);
        assert_eq!(input.below(100_000), 70_000);
        assert!(input.bool());
        assert_eq!(input.string(), "héllo");
        assert_eq!(input.rest(), b"tail");
        assert!(input.is_empty());
    }
}
