//! `dataflow_operator_errors_total` counts the events an operator failed to evaluate: each is
//! also one of the operator's dead letters (docs/metrics.md, *Operators*).

mod common;

use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::spec::SinkSpec;

/// The value of the sample `name{labels}` in an OpenMetrics text exposition.
fn sample(text: &str, name: &str, labels: &str) -> Option<u64> {
    let series = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.parse::<f64>().ok())
        .map(|value| value as u64)
}

/// A filter over records whose `x` is a number in some and a string in others: comparing a
/// string with a number fails to evaluate, once per such record.
fn run_filter(parallelism: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut lines = Vec::new();
    let mut strings = 0;
    for i in 0..60i64 {
        let x = if i % 7 == 3 {
            strings += 1;
            format!("\"s{i}\"")
        } else {
            (i % 4).to_string()
        };
        lines.push(format!(
            r#"{{"timestamp":{},"user":"u{}","x":{x}}}"#,
            1_704_067_200_000i64 + i * 1000,
            i % 3
        ));
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let input = common::write_lines(dir.path(), "input.jsonl", &lines);
    let pipeline = PipelineBuilder::new("errors")
        .file_source("records", &input)
        .filter("payload.x > 1")
        .key_by("payload.user")
        .tumbling_ms(10_000)
        .aggregate("count", "count")
        .parallelism(parallelism)
        .sink(SinkSpec::file(dir.path().join("results.jsonl")))
        .dead_letters(SinkSpec::file(dir.path().join("dead.jsonl")))
        .build()
        .expect("valid pipeline");
    let metrics = pipeline.metrics();
    let summary = common::run(pipeline);
    assert_eq!(summary.events_read, 60);
    assert_eq!(summary.dead_letters, strings, "{summary}");

    let text = metrics.encode();
    let filter = "pipeline=\"errors\",operator=\"steps[0].filter\",kind=\"filter\"";
    assert_eq!(
        sample(&text, "dataflow_operator_errors_total", filter),
        Some(strings),
        "{text}"
    );
    assert_eq!(
        sample(&text, "dataflow_operator_dead_letters_total", filter),
        Some(strings),
        "{text}"
    );
    // The operators that failed on nothing count no errors.
    for (operator, kind) in [("steps[1].key_by", "key_by"), ("steps[2].window", "window")] {
        let labels = format!("pipeline=\"errors\",operator=\"{operator}\",kind=\"{kind}\"");
        assert_eq!(
            sample(&text, "dataflow_operator_errors_total", &labels),
            Some(0),
            "{text}"
        );
    }
}

#[test]
fn operator_errors_count_each_failed_evaluation() {
    run_filter(1);
}

#[test]
fn operator_errors_count_each_failed_evaluation_with_workers() {
    run_filter(2);
}
