//! The accept loop: checks each peer, asks the router for a slot, queues
//! the greeting and starts the client's tasks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use relay_router::ClientId;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::client_reader::serve_client;
use crate::outbox::{Outbox, charge};
use crate::state::{ClientEntry, Note, RelayState};

/// Accepts clients until the relay stops. Never returns otherwise.
pub(crate) async fn accept_loop(
    shared: &Arc<RelayState>,
    listener: &tokio::net::UnixListener,
    clients: &mut JoinSet<()>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept:
                    // not fatal. Pause briefly so a persistent error cannot spin.
                    crate::ratelog::limited!(warn, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            Some(_) = clients.join_next() => continue,
        };
        if !shared.peer_allowed(&stream) {
            continue;
        }
        let Some((client, span)) = admit(shared) else {
            continue;
        };
        clients.spawn(serve_client(shared.clone(), stream, client).instrument(span));
    }
}

/// Lets a client in: takes a slot and queues its greeting.
fn admit(shared: &RelayState) -> Option<(ClientId, tracing::Span)> {
    let mut board = shared.board();
    let admission = match board.router.connect(Instant::now()) {
        Ok(admission) => admission,
        Err(refusal) => {
            board.note(Note::Refused(refusal));
            return None;
        }
    };
    let client = admission.client;
    let Some(ready) = board.ready.clone() else {
        unreachable!("clients are accepted only after core.ready");
    };
    let mut prefix = BytesMut::new();
    admission.handshake.encode_prefix(&mut prefix);
    let outbox = Arc::new(Outbox::default());
    // The cached ready frame is shared, not copied, by every greeting.
    let greeting = [prefix.freeze(), ready.into_wire()];
    let charged = greeting
        .iter()
        .all(|part| board.router.queue_own(client, charge(part.len())));
    if !charged {
        tracing::error!("client queue budget is smaller than the greeting; refusing");
        board.router.disconnect(client);
        shared.carry_out(&mut board);
        return None;
    }
    for part in greeting {
        outbox.push(part, None);
    }
    let slot = client.slot();
    let span = tracing::info_span!(
        "client",
        slot,
        first_id = admission.ids.first(),
        last_id = admission.ids.last(),
    );
    tracing::debug!(parent: &span, "client admitted");
    board.clients[slot as usize] = Some(ClientEntry {
        id: client,
        outbox,
        stop_reading: shared.stop.child_token(),
        abort_writing: CancellationToken::new(),
        credit: Arc::new(Notify::new()),
        fault: None,
    });
    Some((client, span))
}
