use thiserror::Error;

/// Why an operator could not open, snapshot or restore its state, or failed as a whole.
#[derive(Debug, Error)]
pub enum OperatorError {
    /// A state that cannot be snapshotted, merged, split or restored.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The operator's state store failed; the message names the operator.
    #[error("{0}")]
    State(String),
}

/// The result of operator operations.
pub type Result<T, E = OperatorError> = std::result::Result<T, E>;
