//! Tuning of a client: per-session buffering, the connect deadline and the default request deadline.

use std::time::Duration;

/// Tuning of a [`Client`](crate::Client).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Frames buffered per session between the reader task and the
    /// session's handle (default 16, at least 1).
    ///
    /// When a session's buffer is full the reader task waits for its handle
    /// to take a frame, which stops reading the socket for *every* session
    /// of this client (see the crate documentation on backpressure).
    pub session_buffer: usize,
    /// How long connecting may take, from the call of
    /// [`Client::connect_with`](crate::Client::connect_with) (or
    /// [`Client::from_stream_with`](crate::Client::from_stream_with)) to a
    /// complete greeting: the socket connect, the id prefix and the cached
    /// `core.ready` frame together. Default
    /// [`ClientConfig::DEFAULT_CONNECT_TIMEOUT`] (30 s); `None` (or a
    /// timeout too long to represent as an instant, such as
    /// `Duration::MAX`) waits forever.
    ///
    /// A relay accepts clients only once its agent is ready, so a relay
    /// still waiting for its agent (or a wedged one) shows up here as
    /// [`ClientError::Timeout`](crate::ClientError::Timeout) waiting for the
    /// handshake.
    pub connect_timeout: Option<Duration>,
    /// The deadline of each request made through a [`Client`](crate::Client)
    /// (default `None`: no deadline). See the crate documentation on
    /// deadlines for what it covers and what happens when it passes;
    /// [`Client::with_request_timeout`](crate::Client::with_request_timeout)
    /// overrides it for one handle.
    pub request_timeout: Option<Duration>,
    /// Sessions in flight at once on this connection before opening one
    /// more fails with [`ClientError::SessionLimit`](crate::ClientError::SessionLimit).
    /// Default [`ClientConfig::DEFAULT_MAX_SESSIONS`], the relay's own
    /// per-client limit: past it the relay answers a request itself (exec:
    /// a stderr line and exit code 126; fs: an error). `None`: no limit here.
    pub max_sessions: Option<usize>,
}

impl ClientConfig {
    /// The default of [`ClientConfig::connect_timeout`]: 30 seconds.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

    /// The default of [`ClientConfig::max_sessions`]: 1024, the relay's
    /// default per-client session limit.
    pub const DEFAULT_MAX_SESSIONS: usize = 1024;

    /// The default configuration.
    pub const fn new() -> ClientConfig {
        ClientConfig {
            session_buffer: 16,
            connect_timeout: Some(ClientConfig::DEFAULT_CONNECT_TIMEOUT),
            request_timeout: None,
            max_sessions: Some(ClientConfig::DEFAULT_MAX_SESSIONS),
        }
    }

    /// Sets [`ClientConfig::max_sessions`] (`None`: no limit here).
    pub const fn with_max_sessions(mut self, max: Option<usize>) -> ClientConfig {
        self.max_sessions = max;
        self
    }

    /// Sets [`ClientConfig::session_buffer`].
    pub const fn with_session_buffer(mut self, frames: usize) -> ClientConfig {
        self.session_buffer = frames;
        self
    }

    /// Sets [`ClientConfig::connect_timeout`] (`None`: wait forever).
    pub const fn with_connect_timeout(mut self, timeout: Option<Duration>) -> ClientConfig {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`ClientConfig::request_timeout`] (`None`: no deadline).
    pub const fn with_request_timeout(mut self, timeout: Option<Duration>) -> ClientConfig {
        self.request_timeout = timeout;
        self
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig::new()
    }
}
