//! The harness's error type.

use std::io;
use std::path::PathBuf;

/// Everything the harness can fail with; messages carry enough context to debug a failing test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An OS call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The backend binary does not exist.
    #[error("backend binary {0} not found (build it first: `cargo build -p vhost-user-gpu`, or set VHOST_USER_GPU_BIN)")]
    BinaryMissing(PathBuf),
    /// The backend process exited or never created its socket.
    #[error("backend did not come up: {0}")]
    BackendStart(String),
    /// A vhost-user request through the `vhost` crate failed.
    #[error("vhost-user {request} failed: {source}")]
    Vhost {
        /// The request.
        request: &'static str,
        /// The crate's error.
        #[source]
        source: vhost::Error,
    },
    /// Guest memory access out of range or failed.
    #[error("guest memory: {0}")]
    Memory(String),
    /// No room left in guest memory or in a virtqueue.
    #[error("out of {0}")]
    Exhausted(&'static str),
    /// Nothing arrived in time.
    #[error("timed out after {timeout_ms} ms waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        timeout_ms: u128,
    },
    /// The device answered with something else.
    #[error("unexpected response: expected {expected}, got {got}")]
    UnexpectedResponse {
        /// What was expected.
        expected: String,
        /// What came.
        got: String,
    },
    /// A message from the backend did not parse.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The peer closed a socket.
    #[error("disconnected: {0}")]
    Disconnected(String),
}

impl Error {
    /// Wrap an `io::Error` with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wrap a `vhost::Error` for `request`.
    pub fn vhost(request: &'static str) -> impl FnOnce(vhost::Error) -> Self {
        move |source| Error::Vhost { request, source }
    }
}

/// The harness's result type.
pub type Result<T> = std::result::Result<T, Error>;
