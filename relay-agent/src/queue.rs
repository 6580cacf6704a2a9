//! A session's input queue: client bytes (stdin, fs upload data) on their
//! way to a process or a file, bounded in bytes.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::flow::CreditTicket;

/// Fewest chunks a queue holds whatever their size.
const MIN_QUEUED_CHUNKS: usize = 1024;

/// Smallest wire size of an input frame: a queue of `capacity` bytes holds
/// at most `capacity / MIN_CHUNK_COST` frames, so bytes are the real bound.
const MIN_CHUNK_COST: usize = 32;

/// Creates a queue that holds at most `capacity` bytes (a single chunk
/// larger than that takes the whole capacity).
pub(crate) fn input_queue(capacity: usize) -> (InputSender, InputReceiver) {
    let capacity = u32::try_from(capacity.max(1)).unwrap_or(u32::MAX);
    let budget = Arc::new(Semaphore::new(capacity as usize));
    let (tx, rx) = mpsc::channel((capacity as usize / MIN_CHUNK_COST).max(MIN_QUEUED_CHUNKS));
    (
        InputSender {
            tx,
            budget: Arc::clone(&budget),
            capacity,
        },
        InputReceiver { rx, budget },
    )
}

/// The console reader's end.
///
/// In generation 1, [`InputSender::push`] waits while the queue is full: the
/// legacy behaviour, where the console reader stalls behind one session.
/// With per-session credit the relay never has much more than the window in
/// flight for a session, so the reader uses [`InputSender::try_push`] on a
/// queue of at least that size and never waits; credit goes back to the
/// relay as chunks are delivered (when an [`InputChunk`] is dropped).
#[derive(Debug)]
pub(crate) struct InputSender {
    tx: mpsc::Sender<InputChunk>,
    budget: Arc<Semaphore>,
    capacity: u32,
}

/// The receiving end is gone (the process closed its stdin or exited, or
/// the upload ended): the bytes have nowhere to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueClosed;

impl InputSender {
    /// Queues `data`, waiting for room. An empty chunk is queued too: it is
    /// the end-of-input marker. `credit` is returned when the chunk is
    /// delivered.
    pub(crate) async fn push(
        &self,
        data: Bytes,
        credit: Option<CreditTicket>,
    ) -> Result<(), QueueClosed> {
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(self.cost(&data))
            .await
            .map_err(|_| QueueClosed)?;
        self.tx
            .send(InputChunk {
                data,
                _budget: permit,
                _credit: credit,
            })
            .await
            .map_err(|_| QueueClosed)
    }

    /// Queues `data` if there is room now; never waits. When it cannot,
    /// the credit comes back (with the bytes, when there was no room), so
    /// the caller can queue them another way.
    pub(crate) fn try_push(
        &self,
        data: Bytes,
        credit: Option<CreditTicket>,
    ) -> Result<(), (Rejected, Option<CreditTicket>)> {
        let permit = match Arc::clone(&self.budget).try_acquire_many_owned(self.cost(&data)) {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return Err((Rejected::Closed, credit)),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                return Err((Rejected::Full(data), credit));
            }
        };
        let chunk = InputChunk {
            data,
            _budget: permit,
            _credit: credit,
        };
        self.tx.try_send(chunk).map_err(|err| match err {
            mpsc::error::TrySendError::Full(chunk) => (Rejected::Full(chunk.data), chunk._credit),
            mpsc::error::TrySendError::Closed(chunk) => (Rejected::Closed, chunk._credit),
        })
    }

    fn cost(&self, data: &Bytes) -> u32 {
        u32::try_from(data.len())
            .unwrap_or(u32::MAX)
            .min(self.capacity)
    }
}

/// Why [`InputSender::try_push`] did not queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Nothing will read the queue any more.
    Closed,
    /// No room now: the bytes, to queue another way.
    Full(Bytes),
}

/// One queued chunk; its bytes count against the queue until it is dropped,
/// and its credit goes back to the relay then.
#[derive(Debug)]
pub(crate) struct InputChunk {
    data: Bytes,
    _budget: OwnedSemaphorePermit,
    _credit: Option<CreditTicket>,
}

impl InputChunk {
    /// The bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    /// Whether this is the end-of-input marker.
    pub(crate) fn is_end(&self) -> bool {
        self.data.is_empty()
    }
}

/// The delivering end (a task writing to a process's stdin or a file).
#[derive(Debug)]
pub(crate) struct InputReceiver {
    rx: mpsc::Receiver<InputChunk>,
    budget: Arc<Semaphore>,
}

impl InputReceiver {
    /// The next chunk; `None` once the sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<InputChunk> {
        self.rx.recv().await
    }

    /// [`InputReceiver::recv`] for a dedicated thread.
    pub(crate) fn blocking_recv(&mut self) -> Option<InputChunk> {
        self.rx.blocking_recv()
    }
}

impl Drop for InputReceiver {
    /// Wakes a sender waiting for room: nothing will ever drain the queue.
    fn drop(&mut self) {
        self.budget.close();
        self.rx.close();
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_full_queue_makes_push_wait_until_a_chunk_is_delivered() {
        let (tx, mut rx) = input_queue(4);
        tx.push(Bytes::from_static(b"abcd"), None).await.unwrap();
        let mut second = Box::pin(tx.push(Bytes::from_static(b"e"), None));
        assert!(second.as_mut().now_or_never().is_none());
        let first = rx.recv().await.unwrap();
        assert_eq!(first.data(), b"abcd");
        assert!(second.as_mut().now_or_never().is_none());
        drop(first);
        second.await.unwrap();
        assert_eq!(rx.recv().await.unwrap().data(), b"e");
    }

    #[tokio::test]
    async fn a_chunk_larger_than_the_queue_takes_all_of_it() {
        let (tx, mut rx) = input_queue(4);
        tx.push(Bytes::from(vec![1; 100]), None).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().data().len(), 100);
    }

    #[tokio::test]
    async fn dropping_the_receiver_wakes_a_waiting_push() {
        let (tx, rx) = input_queue(1);
        tx.push(Bytes::from_static(b"x"), None).await.unwrap();
        let waiting = tokio::spawn(async move { tx.push(Bytes::from_static(b"y"), None).await });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(waiting.await.unwrap(), Err(QueueClosed));
    }
}
