use thiserror::Error;

/// Everything that can go wrong in windowing: invalid configs, invalid inputs and snapshots that
/// do not fit their config.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WindowError {
    /// A [`crate::WindowConfig`] that cannot be run.
    #[error("invalid window config: {0}")]
    InvalidConfig(String),
    /// An event carried a different number of aggregate inputs than the config has aggregates.
    #[error("expected {expected} aggregate inputs, found {found}")]
    InputCount {
        /// The number of aggregates of the config.
        expected: usize,
        /// The number of inputs given.
        found: usize,
    },
    /// A `sum` or `avg` aggregate was given a value that is neither a number nor null.
    #[error("aggregate {aggregate} needs a number, found {found}")]
    NotNumeric {
        /// The index of the aggregate in the config.
        aggregate: usize,
        /// The type name of the value found.
        found: &'static str,
    },
    /// An event time so close to the ends of `i64` that its windows cannot be represented.
    #[error("timestamp {timestamp} is out of range: its windows do not fit in i64 milliseconds")]
    TimestampOutOfRange {
        /// The event time.
        timestamp: i64,
    },
    /// A snapshot that does not fit the config it is restored with, or is inconsistent.
    #[error("invalid window snapshot: {0}")]
    InvalidSnapshot(String),
    /// The store holding the keys' states failed ([`crate::KeyStates`]); the windows must be
    /// restored from a snapshot before they are used again.
    #[error("window state store failed: {0}")]
    State(String),
}

/// The result of window operations.
pub type Result<T, E = WindowError> = std::result::Result<T, E>;
