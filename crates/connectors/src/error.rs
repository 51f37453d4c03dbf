use thiserror::Error;

/// Everything that can go wrong while opening or running a connector.
#[derive(Debug, Error)]
pub enum ConnectorError {
    /// A source or sink that cannot be opened or used.
    #[error("{0}")]
    Runtime(String),
    /// A position that cannot be restored (a partition that does not exist, a source that
    /// cannot seek).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A record that could not be decoded.
    #[error(transparent)]
    Decode(#[from] dataflow_event::EventError),
    /// A generator configuration that cannot produce events (a zero rate, a negative disorder).
    #[error("invalid generator: {0}")]
    InvalidGenerator(String),
    /// An IO error, with what was being done.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        /// Part of the message, not a separate `source()`: printing the chain says it once.
        cause: std::io::Error,
    },
}

/// The result of connector operations.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;
