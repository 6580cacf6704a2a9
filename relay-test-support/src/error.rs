//! What can go wrong on a raw client's stream, for tests that assert on it.

use std::time::Duration;

use relay_codec::{FrameError, HandshakeError};

/// A raw client's greeting or frame that did not arrive whole.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed, or ended inside a frame.
    #[error("i/o on the stream: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are no frame.
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer's greeting is malformed.
    #[error("bad greeting: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer closed the stream before a whole greeting.
    #[error("closed before a greeting ({received} bytes of it received)")]
    ClosedBeforeGreeting {
        /// How much of a greeting had arrived.
        received: usize,
    },
    /// Nothing arrived in time.
    #[error("nothing arrived within {waited:?}")]
    Timeout {
        /// How long the client waited.
        waited: Duration,
    },
}
