//! The bench agent's one output, shared by its reader (echoes and credit)
//! and its pump (streams), echoes first.
//!
//! Both write through one lock, as an agent with one console must. The
//! stream pump steps aside while an echo waits for the lock, so an echo
//! waits for at most the one stream frame being written (a plain mutex
//! would let the pump take it again and again).

use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::lock;

/// The console's writing half, echoes before stream frames.
pub(super) struct ConsoleWriter {
    writer: Mutex<Box<dyn Write + Send>>,
    /// Reply batches waiting for the writer; the pump waits while any do.
    replies_waiting: AtomicUsize,
}

impl std::fmt::Debug for ConsoleWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleWriter")
            .field("replies_waiting", &self.replies_waiting)
            .finish_non_exhaustive()
    }
}

impl ConsoleWriter {
    pub(super) fn new(writer: Box<dyn Write + Send>) -> ConsoleWriter {
        ConsoleWriter {
            writer: Mutex::new(writer),
            replies_waiting: AtomicUsize::new(0),
        }
    }

    /// Writes a batch of replies (echoes, credit), ahead of any stream
    /// frame not yet started.
    pub(super) fn write_replies(&self, bytes: &[u8]) -> io::Result<()> {
        self.replies_waiting.fetch_add(1, Ordering::SeqCst);
        let mut w = lock(&self.writer);
        self.replies_waiting.fetch_sub(1, Ordering::SeqCst);
        w.write_all(bytes)?;
        w.flush()
    }

    /// Writes a stream frame once no reply batch is waiting.
    pub(super) fn write_stream_frame(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = loop {
            while self.replies_waiting.load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
            let w = lock(&self.writer);
            if self.replies_waiting.load(Ordering::SeqCst) == 0 {
                break w;
            }
        };
        w.write_all(bytes)?;
        w.flush()
    }
}
