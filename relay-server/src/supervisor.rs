//! The supervisor: waits for `core.ready`, serves until a shutdown or a
//! failure, then stops the tasks in order (readers, then client writers
//! within the flush deadline, then the agent writer, which ends the
//! agent's stream).

use std::sync::Arc;

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::accept::accept_loop;
use crate::error::RelayError;
use crate::handle::RelayExit;
use crate::outbox::Close;
use crate::socket::SocketFile;
use crate::state::RelayState;
use crate::stats::Counters;

/// What the supervisor runs and stops.
pub(crate) struct Tasks {
    pub(crate) shared: Arc<RelayState>,
    pub(crate) listener: tokio::net::UnixListener,
    pub(crate) socket_file: SocketFile,
    pub(crate) agent: JoinHandle<Result<(), RelayError>>,
    pub(crate) writer: JoinHandle<()>,
    /// Tells the agent writer to write what is due and end.
    pub(crate) finish: CancellationToken,
    pub(crate) control: Option<(JoinHandle<()>, SocketFile)>,
}

pub(crate) async fn supervise(tasks: Tasks) -> Result<RelayExit, RelayError> {
    let Tasks {
        shared,
        listener,
        socket_file,
        mut agent,
        mut writer,
        finish,
        control,
    } = tasks;
    let mut clients = JoinSet::new();
    let mut ready = shared.ready_tx.subscribe();
    let timeout = shared.config.ready_timeout;
    let ready = tokio::select! {
        biased;
        () = shared.stop.cancelled() => Err(None),
        result = &mut agent => Err(Some(agent_outcome(result))),
        () = tokio::time::sleep(timeout) => Err(Some(RelayError::ReadyTimeout { timeout })),
        ready = ready.wait_for(|ready| *ready) => Ok(ready.is_ok()),
    };
    let outcome = match ready {
        Ok(_) => {
            tracing::info!("agent ready; serving clients");
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => Ok(RelayExit::Shutdown),
                result = &mut agent => Err(agent_outcome(result)),
                () = accept_loop(&shared, &listener, &mut clients) => Ok(RelayExit::Shutdown),
            }
        }
        Err(None) => Ok(RelayExit::Shutdown),
        Err(Some(error)) => Err(error),
    };
    let outcome = match shared.take_failure() {
        Some(error) => Err(error),
        None => outcome,
    };
    shared.stop.cancel();
    drop(listener);
    drop(socket_file);
    if let Some((task, file)) = control {
        task.abort();
        drop(file);
    }

    // Readers stop; writers flush what is queued, then close their sockets.
    {
        let board = shared.board();
        for attached in board.clients.iter().flatten() {
            let _ = attached.outbox.close(Close::Flush);
        }
    }
    let deadline = shared.config.shutdown_flush_deadline;
    let deadline_at = tokio::time::Instant::now() + deadline;
    if tokio::time::timeout_at(deadline_at, drain(&mut clients))
        .await
        .is_err()
    {
        tracing::warn!(
            ?deadline,
            "flush deadline passed; dropping what is still queued"
        );
        shared.hard_stop.cancel();
        {
            let board = shared.board();
            for attached in board.clients.iter().flatten() {
                let dropped = attached.outbox.close(Close::Abort);
                Counters::add(&shared.counters.dropped_client_gone, dropped as u64);
                attached.abort_writing.cancel();
            }
        }
        drain(&mut clients).await;
    }
    // The departed clients' kills are queued: the agent writer writes them
    // and ends the agent's stream. Past the deadline it is abandoned.
    finish.cancel();
    if tokio::time::timeout_at(deadline_at, &mut writer)
        .await
        .is_err()
    {
        shared.hard_stop.cancel();
        let _ = writer.await;
    }
    shared.hard_stop.cancel();
    agent.abort();
    tracing::info!(?outcome, "relay stopped");
    outcome
}

fn agent_outcome(joined: Result<Result<(), RelayError>, tokio::task::JoinError>) -> RelayError {
    match joined {
        Ok(Ok(())) => RelayError::AgentClosed,
        Ok(Err(error)) => error,
        Err(source) => RelayError::Task {
            task: "agent reader",
            source,
        },
    }
}

async fn drain(clients: &mut JoinSet<()>) {
    while clients.join_next().await.is_some() {}
}
