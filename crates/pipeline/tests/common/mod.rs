//! Helpers shared by the pipeline's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use dataflow_metrics::RunSummary;
use dataflow_pipeline::runtime::Pipeline;

/// Runs a pipeline to its end on a fresh multi-threaded runtime.
pub fn run(pipeline: Pipeline) -> RunSummary {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(pipeline.run()).expect("pipeline run")
}

/// Writes `lines` as a file in `dir`.
pub fn write_lines(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).expect("write input");
    path
}

/// Reads a JSON Lines file.
pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"))
        })
        .collect()
}
