//! Two owners of one checkpoint directory, as when a scale-out task's partition moves while its
//! previous owner is paused: the new owner's run claims the directory and restores the
//! newest checkpoint; the previous owner's next save is refused and its run fails (with
//! `PipelineError::Fenced`, not a panic of the process), so every checkpoint after the one
//! restored is the new owner's.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use dataflow_checkpoint::{CheckpointStorage, LocalStorage, EPOCH_FILE};
use dataflow_metrics::RunSummary;
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::runtime::Pipeline;
use dataflow_pipeline::spec::{CheckpointSpec, SinkKind, SinkSpec};
use dataflow_pipeline::PipelineError;

const EVENTS: u64 = 30_000;

/// A keyed window over generated bids at 10,000 events/s, checkpointed every 50 ms into
/// `checkpoints`, writing parts under `out`.
fn pipeline(checkpoints: &Path, out: &Path) -> Pipeline {
    let source = common::generated_bids(EVENTS, 10_000);
    PipelineBuilder::new("fencing")
        .source(source)
        .key_by("auction")
        .tumbling_ms(2_000)
        .aggregate("n", "count")
        .sink(SinkSpec {
            kind: SinkKind::Parts {
                dir: out.to_path_buf(),
            },
            ..SinkSpec::stdout()
        })
        .dead_letters(SinkSpec::file(out.with_extension("dead.jsonl")))
        .checkpoint(CheckpointSpec {
            dir: checkpoints.to_path_buf(),
            interval: 50,
            retain: 1_000,
        })
        .build()
        .expect("valid pipeline")
        .claiming_checkpoints()
}

/// Runs `pipeline` on a thread of its own: its result.
fn spawn(pipeline: Pipeline) -> std::thread::JoinHandle<Result<RunSummary, PipelineError>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(pipeline.run())
    })
}

fn saved(dir: &Path) -> Vec<u64> {
    LocalStorage::open_for_reading(dir)
        .and_then(|storage| storage.list())
        .map(|entries| entries.iter().map(|e| e.id.0).collect())
        .unwrap_or_default()
}

#[test]
fn a_new_owner_fences_the_previous_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let checkpoints = dir.path().join("checkpoints");
    let first = pipeline(&checkpoints, &dir.path().join("first"));
    let first_run = spawn(first);
    // The first owner has saved two checkpoints.
    let deadline = Instant::now() + Duration::from_secs(30);
    while saved(&checkpoints).len() < 2 {
        assert!(Instant::now() < deadline, "no checkpoints saved");
        assert!(!first_run.is_finished(), "the first run ended early");
        std::thread::sleep(Duration::from_millis(5));
    }

    // The second owner claims the directory and restores the newest checkpoint there.
    let second = pipeline(&checkpoints, &dir.path().join("second"));
    let second_metrics = second.metrics();
    let second_run = spawn(second);
    let first_result = first_run.join().expect("first run");
    let second_result = second_run.join().expect("second run");

    match first_result {
        Err(PipelineError::Fenced(message)) => assert!(
            message.contains("taken over by a newer owner (epoch 2; this writer's is 1)"),
            "{message}"
        ),
        other => panic!("the first owner's run must be fenced, not {other:?}"),
    }
    let summary = second_result.expect("the second owner's run");
    assert!(summary.events_read > 0 && summary.events_read < EVENTS);
    assert_eq!(
        std::fs::read_to_string(checkpoints.join(EPOCH_FILE)).expect("epoch file"),
        "2\n"
    );
    // None of the second owner's saves collided with a checkpoint of the first one.
    let metrics = second_metrics.encode();
    let failed: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("dataflow_checkpoints_failed_total"))
        .collect();
    assert!(failed.iter().all(|line| line.ends_with(" 0")), "{failed:?}");
    let ids = saved(&checkpoints);
    assert!(ids.windows(2).all(|pair| pair[1] == pair[0] + 1), "{ids:?}");
}
