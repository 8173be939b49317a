//! Errors of this crate that are not [`BackendError`](idns_core::BackendError)s: a server or
//! backend that cannot be set up.

use std::io;
use std::net::SocketAddr;

use idns_core::ConfigError;

/// A server or backend could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; every problem is named by its field path.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening socket could not be opened.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// Another I/O operation failed while setting up (reading the state file, spawning a
    /// thread, building an HTTP client).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The embedded server's state file could not be read or is not valid.
    #[error("{0}")]
    State(String),
    /// The embedded server was started outside a tokio runtime.
    #[error("the embedded server must be started inside a tokio runtime")]
    NoRuntime,
}
