//! A clean stop in the middle of a stream accounts for every record read, and a failing sink
//! ends the run with its own error, named.
//!
//! Every record a source has read before a stop is either in a result (its window fired,
//! `on_stop: fire`), late, a dead letter, or (with `on_stop: keep` and checkpoints) in the final
//! checkpoint's open windows, from which a restored run goes on.

mod common;

use std::path::{Path, PathBuf};

use dataflow_connectors::parts::read_committed;
use dataflow_metrics::RunSummary;
use dataflow_pipeline::config::parse_and_plan;
use dataflow_pipeline::runtime::{Pipeline, RestoreMode, RestoreOptions};

/// How many records the first run reads before it is stopped.
const STOP_AFTER: u64 = 120_000;

/// A keyed count over generated bids: every result says how many events its window counted.
fn config(dir: &Path, count: u64, parallelism: usize, on_stop: &str, checkpoints: bool) -> String {
    let checkpoint = if checkpoints {
        "checkpoint: { dir: checkpoints, interval: 1h }\n"
    } else {
        ""
    };
    format!(
        "name: stops\nsources:\n  - name: bids\n    type: generator\n    count: {count}\n    watermark: {{ out_of_orderness: 1s }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count }} }}\nsinks:\n  - {{ type: parts, path: {} }}\ndead_letters: {{ type: file, path: {} }}\nlate_events: {{ type: file, path: {} }}\nparallelism: {parallelism}\nruntime: {{ on_stop: {on_stop} }}\n{checkpoint}",
        dir.join("out").display(),
        dir.join("dead.jsonl").display(),
        dir.join("late.jsonl").display(),
    )
}

fn pipeline(dir: &Path, text: &str) -> Pipeline {
    Pipeline::new(parse_and_plan(text, dir).expect("valid config"))
}

/// Runs on another thread until `records` records are read, then stops cleanly; the summary.
fn run_and_stop(pipeline: Pipeline, records: u64) -> RunSummary {
    let counters = pipeline.counters();
    let stop = pipeline.stop_handle();
    let runner = std::thread::spawn(move || common::run(pipeline));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while counters.summary(std::time::Duration::ZERO).events_read < records {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {records} records to be read"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    stop.stop();
    runner.join().expect("run thread")
}

/// The events the committed window results in `dir/out` counted.
fn counted(dir: &Path) -> u64 {
    let output = read_committed(&dir.join("out")).expect("committed output");
    output
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).expect("a JSON result");
            row["n"].as_u64().expect("a count")
        })
        .sum()
}

/// Stops a run with `on_stop: fire` once it has read [`STOP_AFTER`] records: what it read is
/// what its results counted, plus late events and dead letters.
fn fire_on_stop_accounts_for_every_record(parallelism: usize, checkpoints: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config(dir.path(), 50_000_000, parallelism, "fire", checkpoints);
    let summary = run_and_stop(pipeline(dir.path(), &text), STOP_AFTER);
    assert!(summary.events_read >= STOP_AFTER, "{summary}");
    assert!(
        summary.events_read < 50_000_000,
        "the run was not stopped: {summary}"
    );
    assert_eq!(
        counted(dir.path()) + summary.late_events + summary.dead_letters,
        summary.events_read,
        "{summary}"
    );
}

#[test]
fn a_stop_without_checkpoints_fires_everything_read() {
    fire_on_stop_accounts_for_every_record(1, false);
}

#[test]
fn a_stop_without_checkpoints_fires_everything_read_with_two_workers() {
    fire_on_stop_accounts_for_every_record(2, false);
}

#[test]
fn a_stop_with_checkpoints_fires_everything_read() {
    fire_on_stop_accounts_for_every_record(1, true);
}

#[test]
fn a_stop_with_checkpoints_fires_everything_read_with_two_workers() {
    fire_on_stop_accounts_for_every_record(2, true);
}

/// With `on_stop: keep` and checkpoints, what the first run read but did not emit is in its
/// final checkpoint: the run restored from it counts exactly the input, once.
fn keep_on_stop_keeps_everything_read(parallelism: usize) {
    const COUNT: u64 = 400_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config(dir.path(), COUNT, parallelism, "keep", true);
    let first = run_and_stop(pipeline(dir.path(), &text), STOP_AFTER);
    assert!(first.events_read < COUNT, "not stopped: {first}");
    let second = common::run(pipeline(dir.path(), &text).with_restore(RestoreOptions {
        mode: RestoreMode::Latest,
        allow_non_restored_state: false,
    }));
    assert_eq!(
        first.events_read + second.events_read,
        COUNT,
        "{first} / {second}"
    );
    let late = first.late_events + second.late_events;
    let dead = first.dead_letters + second.dead_letters;
    assert_eq!(
        counted(dir.path()) + late + dead,
        COUNT,
        "{first} / {second}"
    );
}

#[test]
fn a_stop_with_keep_leaves_what_was_read_in_the_final_checkpoint() {
    keep_on_stop_keeps_everything_read(1);
}

#[test]
fn a_stop_with_keep_leaves_what_was_read_in_the_final_checkpoint_with_two_workers() {
    keep_on_stop_keeps_everything_read(2);
}

/// With `on_stop: keep` and no checkpoints there is nowhere to keep open windows: the stop
/// drops them (with a warning), and still ends cleanly with what was read counted as read.
#[test]
fn a_stop_with_keep_and_no_checkpoints_drops_the_open_windows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config(dir.path(), 50_000_000, 1, "keep", false);
    let summary = run_and_stop(pipeline(dir.path(), &text), STOP_AFTER);
    let accounted = counted(dir.path()) + summary.late_events + summary.dead_letters;
    assert!(summary.events_read >= STOP_AFTER, "{summary}");
    assert!(accounted < summary.events_read, "{summary}");
}

/// A config whose only sink is a `file` sink at `path`, over a bounded generator.
fn file_sink_config(path: &Path) -> String {
    format!(
        "name: full\nsources:\n  - name: bids\n    type: generator\n    count: 200000\nsteps:\n  - filter: \"true\"\nsinks:\n  - {{ type: file, path: {} }}\ndead_letters: {{ type: file, path: dead.jsonl }}\n",
        path.display()
    )
}

/// A sink on a full disk ends the run with an error naming the sink and the OS's cause, once.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_fails_the_run_naming_the_sink_and_the_cause_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    full_disk_fails_the_run(dir.path(), &file_sink_config(&PathBuf::from("/dev/full")));
}

/// The same with two workers writing the results: the error is the sink's, not a worker's.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_fails_the_run_naming_the_sink_with_two_workers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config(dir.path(), 200_000, 2, "fire", false).replace(
        &format!("type: parts, path: {}", dir.path().join("out").display()),
        "type: file, path: /dev/full",
    );
    assert!(text.contains("/dev/full"), "{text}");
    full_disk_fails_the_run(dir.path(), &text);
}

#[cfg(target_os = "linux")]
fn full_disk_fails_the_run(dir: &Path, text: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let error = runtime
        .block_on(pipeline(dir, text).run())
        .expect_err("a full disk fails the run");
    let message = error.to_string();
    assert!(
        message.starts_with("sink sinks[0] (file) failed: cannot "),
        "{message}"
    );
    assert!(message.contains("/dev/full"), "{message}");
    assert_eq!(
        message.matches("No space left on device").count(),
        1,
        "{message}"
    );
    // Printed as a chain (as the processor does), the cause still shows once.
    let chain = format!("{:#}", anyhow::Error::from(error));
    assert_eq!(
        chain.matches("No space left on device").count(),
        1,
        "{chain}"
    );
}
