//! The control socket: each connection gets one JSON line of stats.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use crate::state::RelayState;

/// Answers each connection on the control socket with one JSON line of stats.
pub(crate) async fn control_loop(shared: Arc<RelayState>, listener: tokio::net::UnixListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        if !shared.peer_allowed(&stream) {
            continue;
        }
        let mut line = serde_json::to_vec(&shared.stats()).unwrap_or_default();
        line.push(b'\n');
        // A reader that does not take one small line is not waited for.
        let write =
            tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(&line));
        let _ = write.await;
    }
}
