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
    /// An IO error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
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
