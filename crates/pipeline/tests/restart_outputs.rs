//! A run resumed from a checkpoint keeps what earlier runs wrote to its file outputs (results,
//! dead letters, late events); a run from the start (`--fresh`, or no checkpoint yet) writes them
//! anew.

mod common;

use std::io::Write;
use std::path::Path;

use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::plan;
use dataflow_pipeline::runtime::{Pipeline, RestoreMode, RestoreOptions};
use dataflow_pipeline::spec::{CheckpointSpec, SinkSpec, SourceKind};

/// The pipeline over `dir/input.jsonl`, following the file (until stopped) or reading it to its
/// end.
fn pipeline(dir: &Path, mode: RestoreMode, follow: bool) -> Pipeline {
    let mut spec = PipelineBuilder::new("restart")
        .file_source("input", dir.join("input.jsonl"))
        .filter("n > 0")
        .sink(SinkSpec::file(dir.join("results.jsonl")))
        .dead_letters(SinkSpec::file(dir.join("dead.jsonl")))
        .checkpoint(CheckpointSpec {
            dir: dir.join("checkpoints"),
            interval: 60_000,
            retain: 2,
        })
        .spec()
        .expect("valid spec");
    for source in &mut spec.sources {
        if let SourceKind::File { follow: f, .. } = &mut source.kind {
            *f = follow;
        }
    }
    Pipeline::new(plan::plan(spec).expect("valid pipeline")).with_restore(RestoreOptions {
        mode,
        allow_non_restored_state: false,
    })
}

fn append(path: &Path, lines: &[&str]) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open input");
    for line in lines {
        writeln!(file, "{line}").expect("append");
    }
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .expect("output")
        .lines()
        .count()
}

#[test]
fn a_resumed_run_appends_to_its_outputs_and_a_fresh_one_starts_them_anew() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input.jsonl");
    append(
        &input,
        &[
            r#"{"timestamp":1,"n":1}"#,
            r#"{"timestamp":2,"n":2}"#,
            "broken",
        ],
    );
    // The first run follows the file; its stop takes a checkpoint after the three records.
    common::run_until_read(pipeline(dir.path(), RestoreMode::Latest, true), 3);
    assert_eq!(count_lines(&dir.path().join("results.jsonl")), 2);
    assert_eq!(count_lines(&dir.path().join("dead.jsonl")), 1);

    // The second resumes from that checkpoint: its records add to the same files.
    append(&input, &[r#"{"timestamp":3,"n":3}"#, "also broken"]);
    let summary = common::run(pipeline(dir.path(), RestoreMode::Latest, false));
    assert_eq!(summary.events_read, 2);
    assert_eq!(count_lines(&dir.path().join("results.jsonl")), 3);
    assert_eq!(count_lines(&dir.path().join("dead.jsonl")), 2);

    // A fresh run reads everything again into outputs it starts anew.
    let summary = common::run(pipeline(dir.path(), RestoreMode::Fresh, false));
    assert_eq!(summary.events_read, 5);
    assert_eq!(count_lines(&dir.path().join("results.jsonl")), 3);
    assert_eq!(count_lines(&dir.path().join("dead.jsonl")), 2);
}
