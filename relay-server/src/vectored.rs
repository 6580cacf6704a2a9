//! Writing a list of buffers with `writev`, across partial writes.

use std::io::{self, IoSlice};

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Most buffers handed to one `writev`.
pub(crate) const MAX_SLICES: usize = 64;

/// Writes every buffer completely, in order.
pub(crate) async fn write_all_vectored<W, T>(writer: &mut W, buffers: &[T]) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: AsRef<[u8]>,
{
    let mut cursor = Cursor::default();
    while !cursor.is_done(buffers) {
        let written = writer.write_vectored(&cursor.slices(buffers)).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        cursor.advance(buffers, written);
    }
    Ok(())
}

/// A position in a list of buffers: which buffer, and how far into it.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    index: usize,
    offset: usize,
}

impl Cursor {
    /// Whether every buffer has been written.
    pub(crate) fn is_done<T>(&self, buffers: &[T]) -> bool {
        self.index >= buffers.len()
    }

    /// The unwritten rest, as at most [`MAX_SLICES`] slices.
    pub(crate) fn slices<'b, T: AsRef<[u8]>>(&self, buffers: &'b [T]) -> Vec<IoSlice<'b>> {
        std::iter::once(&buffers[self.index].as_ref()[self.offset..])
            .chain(
                buffers[self.index + 1..]
                    .iter()
                    .take(MAX_SLICES - 1)
                    .map(AsRef::as_ref),
            )
            .map(IoSlice::new)
            .collect()
    }

    /// Moves forward by `n` bytes.
    pub(crate) fn advance<T: AsRef<[u8]>>(&mut self, buffers: &[T], mut n: usize) {
        while n > 0 && self.index < buffers.len() {
            let left = buffers[self.index].as_ref().len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.index += 1;
            self.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_walks_across_buffers_and_partial_writes() {
        let buffers = [&b"abc"[..], b"", b"defg", b"h"];
        let mut cursor = Cursor::default();
        cursor.advance(&buffers, 2);
        assert_eq!(cursor.slices(&buffers)[0].as_ref(), b"c");
        cursor.advance(&buffers, 3);
        assert_eq!((cursor.index, cursor.offset), (2, 2));
        assert_eq!(cursor.slices(&buffers).len(), 2);
        cursor.advance(&buffers, 3);
        assert!(cursor.is_done(&buffers));
    }
}
