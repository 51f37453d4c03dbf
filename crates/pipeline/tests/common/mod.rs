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

/// Runs `pipeline` on another thread until it has read `records` records (at most 30 s), then
/// stops it cleanly (with checkpoints, the stop takes a final one) and waits for its end.
pub fn run_until_read(pipeline: Pipeline, records: u64) {
    let counters = pipeline.counters();
    let stop = pipeline.stop_handle();
    let runner = std::thread::spawn(move || run(pipeline));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while counters.summary(std::time::Duration::ZERO).events_read < records {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {records} records to be read"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.stop();
    runner.join().expect("run thread");
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

/// The problems `processor check` finds in `yaml` (paths relative to `dir`), each as printed;
/// panics if the config is accepted.
pub fn config_problems(yaml: &str, dir: &Path) -> Vec<String> {
    match dataflow_pipeline::config::parse_and_plan(yaml, dir) {
        Err(dataflow_pipeline::PipelineError::InvalidConfig(problems)) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(other) => panic!("expected config problems, got {other}"),
        Ok(_) => panic!("expected config problems, the config was accepted:\n{yaml}"),
    }
}

/// Asserts there is exactly one problem, and that it contains every one of `parts`.
pub fn assert_one_problem(problems: &[String], parts: &[&str]) {
    assert_eq!(problems.len(), 1, "{problems:#?}");
    for part in parts {
        assert!(
            problems[0].contains(part),
            "{:?} lacks {part:?}",
            problems[0]
        );
    }
}

/// A source of `count` generated bids at `rate` events per second, with 2 s of disorder: what
/// the checkpoint tests run, slow enough for checkpoints to land mid-run.
pub fn generated_bids(count: u64, rate: u64) -> dataflow_pipeline::spec::SourceSpec {
    use dataflow_connectors::generator::{GeneratorConfig, Profile};
    use dataflow_pipeline::spec::{Place, SourceKind, SourceSpec, WatermarkSpec};
    SourceSpec {
        name: "bids".into(),
        kind: SourceKind::Generator {
            config: GeneratorConfig {
                profile: Profile::Bids,
                count: Some(count),
                ..GeneratorConfig::default()
            },
            rate: Some(rate),
        },
        decoder: dataflow_event::json::DecoderConfig::default(),
        watermark: WatermarkSpec {
            out_of_orderness: 2_000,
            ..WatermarkSpec::default()
        },
        rate_limit: None,
        place: Place::path("sources[0]"),
    }
}
