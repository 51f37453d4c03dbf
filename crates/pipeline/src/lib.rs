//! Operators, sources, sinks, configuration and the tokio runtime of dataflow.
mod error;
pub mod generator;
pub use error::{PipelineError, Result};
pub mod expr;
