//! The Rust-built user-analytics example gives the same results as the YAML config it mirrors.

#[allow(dead_code)]
#[path = "../examples/user_analytics.rs"]
mod example;

mod common;

use std::path::Path;

use dataflow_pipeline::spec::SinkSpec;

#[test]
fn example_matches_the_configs_golden_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("temp dir");
    let results = dir.path().join("results.jsonl");
    let pipeline = example::build(
        &root.join("data/clicks.jsonl"),
        SinkSpec::file(&results),
        SinkSpec::file(dir.path().join("dead.jsonl")),
    )
    .expect("valid pipeline");
    let summary = common::run(pipeline);
    let golden =
        std::fs::read_to_string(root.join("cmd/processor/tests/golden/user_analytics.jsonl"))
            .expect("golden");
    assert_eq!(std::fs::read_to_string(&results).expect("results"), golden);
    // The example has no separate late-events sink: late events join the dead letters.
    assert_eq!(
        (
            summary.events_read,
            summary.dead_letters,
            summary.late_events
        ),
        (306, 3, 2)
    );
}
