use thiserror::Error;

/// Everything that can go wrong while building or running a pipeline.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// A CEL expression that does not compile, or that failed on one event.
    #[error(transparent)]
    Expr(#[from] dataflow_expr::ExprError),
    /// An operator that failed to open, snapshot or restore its state.
    #[error(transparent)]
    Operator(#[from] dataflow_operators::OperatorError),
    /// A source or sink that failed.
    #[error(transparent)]
    Connector(#[from] dataflow_connectors::ConnectorError),
    /// A config or pipeline that failed its checks; every problem is listed with its place.
    #[error("invalid pipeline: {}", format_problems(.0))]
    InvalidConfig(Vec<crate::spec::Problem>),
    /// A checkpoint that cannot be taken, written or restored.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A source or sink that cannot be opened or used.
    #[error("{0}")]
    Runtime(String),
    /// A record that could not be decoded.
    #[error(transparent)]
    Decode(#[from] dataflow_event::EventError),
    /// A result sink that failed while the run wrote to it: which sink (`sinks[<index>]
    /// (<type>)`) and its own error, said once (the cause is part of the message, not a
    /// separate source, so that printing the chain does not repeat it).
    #[error("sink {sink} failed: {cause}")]
    Sink {
        /// `sinks[<index>] (<type>)`.
        sink: String,
        /// What the sink reported.
        cause: dataflow_connectors::ConnectorError,
    },
    /// A checkpoint refused because another run claimed the checkpoint directory after this
    /// one (a scale-out task whose partition moved to another process while this one was
    /// paused): the run stops without saving or committing.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A task of the run (a sink, a worker, the dead-letter writer) ended early because another
    /// failed; the run ends with that other task's error.
    #[error("{0} stopped")]
    Stopped(String),
    /// An IO error, with what was being done.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        /// Part of the message, not a separate `source()`: printing the chain says it once.
        cause: std::io::Error,
    },
}

/// The result of pipeline operations.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

fn format_problems(problems: &[crate::spec::Problem]) -> String {
    let noun = if problems.len() == 1 {
        "problem"
    } else {
        "problems"
    };
    let mut text = format!("{} {noun}", problems.len());
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(&problem.to_string());
    }
    text
}
