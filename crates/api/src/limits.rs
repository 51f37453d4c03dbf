//! The limits the API server puts on its connections, so that slow or hostile clients can take
//! neither the API nor (through the file descriptors their connections hold) the pipeline
//! down. Part of the contract without the `server` feature: the pipeline's config reads them.

use std::time::Duration;

/// Limits on the API server's connections (`api:` in the config).
///
/// Every open connection holds a file descriptor of the process, shared with the sinks, the
/// checkpoints and the sources: `max_connections` must leave room for them under the
/// process's limit (`ulimit -n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections served at once. A connection over the cap is answered `503` with the error
    /// code `unavailable` and closed, without reading its request.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, from the moment the server
    /// waits for them; the connection is closed after it. This also bounds how long an idle
    /// keep-alive connection stays open between requests.
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long, while no request is being
    /// handled, is closed (a client that stopped reading its response). A request being handled
    /// (its body included) is bounded by the router's request timeout instead.
    pub idle_timeout: Duration,
    /// The largest request head (request line and headers), in bytes; a larger one is
    /// answered `431` and the connection closed.
    pub max_header_bytes: usize,
    /// Requests served on one keep-alive connection; the last one's response says
    /// `connection: close`.
    pub max_requests_per_connection: u64,
}

impl ServeLimits {
    /// The defaults: 128 connections, 10 s for headers, 60 s idle, 16 KiB of headers, 1000
    /// requests per connection.
    pub const DEFAULT: ServeLimits = ServeLimits {
        max_connections: 128,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_header_bytes: 16 << 10,
        max_requests_per_connection: 1000,
    };

    /// The smallest `max_header_bytes` accepted.
    pub const MIN_HEADER_BYTES: usize = 1024;
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits::DEFAULT
    }
}
