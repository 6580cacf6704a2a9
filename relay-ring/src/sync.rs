//! The concurrency primitives the crate is built on, swapped for loom's models under `cfg(loom)`.
//!
//! Everything that two threads share goes through this module, so that a loom
//! build sees every atomic access and every access to the ring's bytes. The ring
//! memory itself is always real memory (zero-copy slices need it to be
//! contiguous); under loom each byte also has a shadow `loom::cell::UnsafeCell`
//! that is touched with `with`/`with_mut` whenever a slice over that byte is
//! handed out, which lets loom report any read or write that is not ordered
//! after the other side's release of that byte.

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};

use std::cell::UnsafeCell;
use std::collections::TryReserveError;

/// Fixed-size byte storage shared by one producer and one consumer.
///
/// The storage does no synchronisation of its own: the ring's head and tail
/// decide which thread may touch which bytes, and the accessors are `unsafe`
/// with that as their contract.
pub(crate) struct ByteCells {
    /// The bytes. `UnsafeCell<u8>` has the layout of `u8`, so the slice is one
    /// contiguous run of bytes that may be written through a shared reference.
    bytes: Box<[UnsafeCell<u8>]>,
    /// One model cell per byte, for loom's data-race detector.
    #[cfg(loom)]
    shadow: Box<[loom::cell::UnsafeCell<()>]>,
}

impl ByteCells {
    /// Allocates `len` zeroed bytes, reporting allocation failure instead of aborting.
    pub(crate) fn try_new(len: usize) -> Result<Self, TryReserveError> {
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(len)?;
        bytes.resize_with(len, || UnsafeCell::new(0));
        Ok(Self {
            bytes: bytes.into_boxed_slice(),
            #[cfg(loom)]
            shadow: (0..len).map(|_| loom::cell::UnsafeCell::new(())).collect(),
        })
    }

    /// Number of bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Shared view of `len` bytes starting at `start`.
    ///
    /// # Safety
    ///
    /// `start + len` must not exceed [`len`](Self::len), and no thread may write
    /// these bytes while the returned slice is alive.
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &[u8] {
        debug_assert!(start + len <= self.bytes.len());
        #[cfg(loom)]
        for cell in &self.shadow[start..start + len] {
            cell.with(|_| ());
        }
        // SAFETY: `UnsafeCell<u8>` has the in-memory representation of `u8`, the
        // pointer comes from the whole boxed slice (so it may address every byte),
        // the range is in bounds (caller contract) and nobody writes it while
        // the slice lives (caller contract). Every byte was initialised at
        // construction.
        unsafe { std::slice::from_raw_parts(self.base().add(start), len) }
    }

    /// Exclusive view of `len` bytes starting at `start`.
    ///
    /// # Safety
    ///
    /// `start + len` must not exceed [`len`](Self::len), and no other reference
    /// to these bytes may exist while the returned slice is alive.
    #[allow(
        clippy::mut_from_ref,
        reason = "the ring protocol hands each byte range to one side at a time"
    )]
    pub(crate) unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [u8] {
        debug_assert!(start + len <= self.bytes.len());
        #[cfg(loom)]
        for cell in &self.shadow[start..start + len] {
            cell.with_mut(|_| ());
        }
        // SAFETY: as in `slice`; in addition the caller guarantees exclusivity,
        // and writing through a pointer derived from `&[UnsafeCell<u8>]` is the
        // interior mutability `UnsafeCell` permits.
        unsafe { std::slice::from_raw_parts_mut(self.base().add(start), len) }
    }

    /// Pointer to the first byte, valid for the whole storage.
    fn base(&self) -> *mut u8 {
        // A pointer to the whole slice, cast to its first element: it keeps the
        // provenance of the entire allocation, unlike `self.bytes[0].get()`.
        UnsafeCell::raw_get(self.bytes.as_ptr())
    }
}

impl std::fmt::Debug for ByteCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteCells")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Aligns (and so pads) a value to 128 bytes, two 64-byte cache lines.
///
/// The producer's and the consumer's hot indices live in separate
/// `CachePadded` fields so that a store to one never invalidates the cache line
/// holding the other (false sharing). 128 rather than 64 because Intel's
/// adjacent-line prefetcher pulls cache lines in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use super::*;

    #[test]
    fn cache_padded_values_sit_on_separate_128_byte_lines() {
        let pair = [
            CachePadded(AtomicUsize::new(0)),
            CachePadded(AtomicUsize::new(0)),
        ];
        assert_eq!(std::mem::align_of::<CachePadded<AtomicUsize>>(), 128);
        let a = std::ptr::from_ref(&pair[0]).addr();
        let b = std::ptr::from_ref(&pair[1]).addr();
        assert_eq!(b - a, 128);
    }

    #[test]
    fn byte_cells_start_zeroed_and_keep_what_is_written() {
        let cells = ByteCells::try_new(8).unwrap();
        // SAFETY: single-threaded test, ranges in bounds, no overlapping borrows.
        unsafe {
            assert_eq!(cells.slice(0, 8), &[0; 8]);
            cells.slice_mut(2, 3).copy_from_slice(b"abc");
            assert_eq!(cells.slice(0, 8), b"\0\0abc\0\0\0");
        }
    }
}
