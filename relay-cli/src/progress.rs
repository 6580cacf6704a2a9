//! Progress bars for long file transfers: bytes, rate and ETA on stderr,
//! only when stderr is a terminal, never with `--quiet`, and only for
//! transfers large enough for a bar to tell anything.
//!
//! A transfer of unknown size (`fs put -` from a pipe) starts with a hidden
//! bar that appears once [`BAR_THRESHOLD`] bytes have gone through, so a
//! small one leaves no trace on the terminal.

use std::io::IsTerminal;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Transfers smaller than this finish before a bar would tell anything.
pub(crate) const BAR_THRESHOLD: u64 = 4 << 20;

/// How often a visible bar redraws while no bytes move.
const TICK: Duration = Duration::from_millis(200);

/// Whether a bar may be drawn at all: a terminal on stderr and no `--quiet`.
pub(crate) fn allowed(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// When a transfer of `size` bytes (`None`: unknown) shows its bar, given
/// that bars are `allowed`: from the start, once that many bytes have
/// moved, or never.
pub(crate) fn reveal(size: Option<u64>, allowed: bool) -> Reveal {
    match size {
        _ if !allowed => Reveal::Never,
        Some(size) if size >= BAR_THRESHOLD => Reveal::Now,
        Some(_) => Reveal::Never,
        None => Reveal::After(BAR_THRESHOLD),
    }
}

/// When a bar becomes visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reveal {
    /// From the start.
    Now,
    /// Once this many bytes have moved.
    After(u64),
    /// Never: the bar only counts.
    Never,
}

/// The progress of one transfer; clones share the bar.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    bar: ProgressBar,
    reveal: Reveal,
}

impl Progress {
    /// A bar for `what`, a transfer of `size` bytes (`None`: unknown).
    pub(crate) fn new(size: Option<u64>, quiet: bool, what: &str) -> Progress {
        let reveal = reveal(size, allowed(quiet));
        let bar = ProgressBar::with_draw_target(size, ProgressDrawTarget::hidden());
        let template = match size {
            Some(_) => {
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
            }
            None => "{msg} {spinner} {binary_bytes} {binary_bytes_per_sec} {elapsed}",
        };
        // The templates are constants that parse; were one not to, the
        // bar would keep indicatif's default style.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        let mut progress = Progress { bar, reveal };
        progress.maybe_reveal();
        progress
    }

    /// A bar that never shows.
    pub(crate) fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
            reveal: Reveal::Never,
        }
    }

    /// Whether the bar is drawn, or will be once enough bytes have moved.
    pub(crate) fn may_show(&self) -> bool {
        self.reveal != Reveal::Never || !self.bar.is_hidden()
    }

    /// `bytes` more have moved.
    pub(crate) fn advance(&mut self, bytes: u64) {
        self.bar.inc(bytes);
        self.maybe_reveal();
    }

    /// The transfer has reached `position` bytes (for a copy whose bytes
    /// this process does not see).
    pub(crate) fn set_position(&mut self, position: u64) {
        self.bar.set_position(position);
        self.maybe_reveal();
    }

    /// The transfer ended: a finished bar stays on the terminal at its last
    /// state (a successful copy at its full length), a failed one stops
    /// where it was.
    pub(crate) fn finish<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        match &result {
            Ok(_) => {
                if let Some(total) = self.bar.length() {
                    self.bar.set_position(total);
                }
                self.bar.finish();
            }
            Err(_) => self.bar.abandon(),
        }
        result
    }

    /// `inner`, with every byte read or written counted on this bar.
    pub(crate) fn counting<T>(&self, inner: T) -> Counted<T> {
        Counted {
            inner,
            progress: self.clone(),
        }
    }

    fn maybe_reveal(&mut self) {
        let due = match self.reveal {
            Reveal::Now => true,
            Reveal::After(bytes) => self.bar.position() >= bytes,
            Reveal::Never => false,
        };
        if due {
            self.reveal = Reveal::Never;
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.enable_steady_tick(TICK);
        }
    }
}

/// A reader or writer whose bytes advance a [`Progress`].
#[derive(Debug)]
pub(crate) struct Counted<T> {
    inner: T,
    progress: Progress,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.progress.advance((buf.filled().len() - before) as u64);
        }
        poll
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            this.progress.advance(n as u64);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{BAR_THRESHOLD, Progress, Reveal, reveal};

    #[test]
    fn only_large_or_unknown_transfers_to_a_terminal_get_a_bar() {
        assert_eq!(reveal(Some(BAR_THRESHOLD), true), Reveal::Now);
        assert_eq!(reveal(Some(50 << 20), true), Reveal::Now);
        assert_eq!(reveal(None, true), Reveal::After(BAR_THRESHOLD));
        assert_eq!(reveal(Some(BAR_THRESHOLD - 1), true), Reveal::Never);
        assert_eq!(reveal(Some(50 << 20), false), Reveal::Never);
        assert_eq!(reveal(None, false), Reveal::Never);
    }

    #[tokio::test]
    async fn a_counted_reader_and_writer_advance_the_bar_by_what_moved() {
        let progress = Progress::hidden();
        let mut reader = progress.counting(&[7u8; 1000][..]);
        let mut data = Vec::new();
        reader.read_to_end(&mut data).await.unwrap();
        let mut writer = progress.counting(Vec::new());
        writer.write_all(&data[..300]).await.unwrap();
        writer.flush().await.unwrap();
        assert_eq!(writer.inner.len(), 300);
        assert_eq!(progress.bar.position(), 1300);
        assert!(!progress.may_show());
    }
}
