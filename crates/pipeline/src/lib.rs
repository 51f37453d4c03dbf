//! Operators, sources, sinks, configuration and the tokio runtime of dataflow.
mod error;
pub use error::{PipelineError, Result};
pub mod expr;
