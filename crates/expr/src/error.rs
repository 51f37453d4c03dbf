use thiserror::Error;

/// Why an expression could not be compiled, or failed on one event.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ExprError {
    /// A CEL expression that does not parse, or that names something the stream does not have.
    #[error("expression `{expression}`: {message}")]
    Compile { expression: String, message: String },
    /// A CEL expression that failed on one event (a missing field, a type mismatch).
    #[error("expression `{expression}` failed: {message}")]
    Eval { expression: String, message: String },
}

/// The result of compiling or evaluating an expression.
pub type Result<T, E = ExprError> = std::result::Result<T, E>;
