//! A client's writer task: drains its outbox to its socket with `writev`,
//! and cuts the client off if no byte moves for the stall timeout.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use relay_router::{ClientId, CutReason};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Credited, Outbox, Take};
use crate::state::RelayState;
use crate::stats::Counters;
use crate::vectored::{Cursor, MAX_SLICES};

/// What a client's writer needs.
pub(crate) struct WriterParts {
    pub(crate) client: ClientId,
    pub(crate) outbox: Arc<Outbox>,
    /// The relay abandons this client's writes.
    pub(crate) abort: CancellationToken,
    /// Cancelled when the writer ends: the reader has no reason to go on.
    pub(crate) stop_reading: CancellationToken,
}

pub(crate) async fn run_client_writer(
    shared: Arc<RelayState>,
    mut wr: OwnedWriteHalf,
    parts: WriterParts,
) {
    let WriterParts {
        client,
        outbox,
        abort,
        stop_reading,
    } = parts;
    let stall = shared.config.stall_timeout;
    let mut batch: Vec<Bytes> = Vec::with_capacity(MAX_SLICES);
    let mut credits: Credited = Vec::new();
    let mut prefix_queued = true;
    loop {
        let charged = match outbox.take(MAX_SLICES, &mut batch, &mut credits) {
            Take::Write(charged) => charged,
            Take::Idle => {
                tokio::select! {
                    () = outbox.notified() => {}
                    () = abort.cancelled() => break,
                    () = shared.hard_stop.cancelled() => break,
                }
                continue;
            }
            Take::Done => break,
        };
        // The first item ever queued is the greeting's id prefix, not a frame.
        let frames = batch.len() - usize::from(std::mem::take(&mut prefix_queued));
        let wire_bytes: usize = batch.iter().map(Bytes::len).sum();
        let result = tokio::select! {
            result = write_batch(&mut wr, &batch, stall) => result,
            () = abort.cancelled() => Err(WriteEnd::Aborted),
            // The shutdown's flush deadline passed.
            () = shared.hard_stop.cancelled() => Err(WriteEnd::Aborted),
        };
        batch.clear();
        let written = result.is_ok();
        {
            // Written or abandoned, these frames have left the relay; only
            // written ones earn the agent credit.
            let mut board = shared.board();
            let credited = if written { &credits[..] } else { &[] };
            board.router.frames_left(client, charged, credited);
            if let Err(WriteEnd::Stalled) = result {
                board.router.cut_off(client, CutReason::Stalled);
            }
            shared.carry_out(&mut board);
        }
        credits.clear();
        match result {
            Ok(()) => {
                Counters::add(&shared.counters.delivered_frames, frames as u64);
                Counters::add(&shared.counters.delivered_bytes, wire_bytes as u64);
            }
            Err(WriteEnd::Io(error)) => {
                tracing::debug!(%error, "client write failed");
                break;
            }
            Err(WriteEnd::Stalled | WriteEnd::Aborted) => break,
        }
    }
    stop_reading.cancel();
    let _ = wr.shutdown().await;
}

enum WriteEnd {
    Stalled,
    Io(io::Error),
    Aborted,
}

/// Writes a batch with `writev`, failing if no byte moves for `stall`.
async fn write_batch(
    wr: &mut OwnedWriteHalf,
    batch: &[Bytes],
    stall: Duration,
) -> Result<(), WriteEnd> {
    let mut cursor = Cursor::default();
    while !cursor.is_done(batch) {
        let slices = cursor.slices(batch);
        let written = match tokio::time::timeout(stall, wr.write_vectored(&slices)).await {
            Err(_) => return Err(WriteEnd::Stalled),
            Ok(Err(error)) => return Err(WriteEnd::Io(error)),
            Ok(Ok(0)) => return Err(WriteEnd::Io(io::ErrorKind::WriteZero.into())),
            Ok(Ok(n)) => n,
        };
        cursor.advance(batch, written);
    }
    Ok(())
}
