//! `/metrics` tells the same story as the run's summary: the exposition parses as Prometheus
//! text, and its counters add up to the summary's events read, emitted, late and dead-lettered.

mod common;

use std::collections::BTreeMap;

use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::spec::SinkSpec;

/// Sample name and labels to value, from an OpenMetrics text exposition; fails on any line that
/// is neither a comment nor `name{labels} value`, and without the closing `# EOF`.
fn parse(text: &str) -> Result<BTreeMap<(String, String), f64>, String> {
    let mut samples = BTreeMap::new();
    let mut closed = false;
    for line in text.lines() {
        if closed {
            return Err(format!("a line after # EOF: {line:?}"));
        }
        if line == "# EOF" {
            closed = true;
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.starts_with("# UNIT ")
        {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value: {line:?}"))?;
        let value: f64 = value
            .parse()
            .map_err(|error| format!("bad value in {line:?}: {error}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (
                name,
                labels
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels: {line:?}"))?,
            ),
            None => (series, ""),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("bad name: {line:?}"));
        }
        samples.insert((name.to_string(), labels.to_string()), value);
    }
    if !closed {
        return Err("no # EOF".into());
    }
    Ok(samples)
}

/// The sum of `name` over the series whose labels contain `filter`.
fn total(samples: &BTreeMap<(String, String), f64>, name: &str, filter: &str) -> u64 {
    samples
        .iter()
        .filter(|((sample, labels), _)| sample == name && labels.contains(filter))
        .map(|(_, value)| *value as u64)
        .sum()
}

/// Counts the input of [`metrics_counters_agree_with_the_run_summary`] implies, worked out from
/// the input alone.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    read: u64,
    /// Records that are not JSON.
    undecodable: u64,
    /// Events the filter fails on (`n == 0`: a division by zero).
    filter_failures: u64,
    /// Events the filter passes (every decoded event with `n != 0`).
    filtered: u64,
    /// Events beyond the allowed lateness, dropped by the window.
    late: u64,
    /// One result per user and 10 s window that received an on-time event.
    windows: u64,
}

#[test]
fn metrics_counters_agree_with_the_run_summary() {
    const START: i64 = 1_704_067_200_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut lines = Vec::new();
    let mut expected = Expected::default();
    let mut windows = std::collections::BTreeSet::new();
    for second in 0..200i64 {
        let (user, n) = (second % 7, second % 5);
        lines.push(format!(
            r#"{{"timestamp":{},"user":"u{user}","n":{n}}}"#,
            START + second * 1000,
        ));
        if n == 0 {
            expected.filter_failures += 1;
        } else {
            expected.filtered += 1;
            // Timestamps only grow, so every one of these is on time: tumbling 10 s windows.
            windows.insert((user, second / 10));
        }
        if second % 40 == 39 {
            // 35 s behind the newest event, so behind the watermark (1 s of out-of-orderness,
            // emitted after every event) by 34 s: its window, [second - 35 rounded down to
            // 10 s, +10 s), closed more than the 2 s of allowed lateness before.
            lines.push(format!(
                r#"{{"timestamp":{},"user":"late","n":1}}"#,
                START + (second - 35) * 1000
            ));
            expected.filtered += 1;
            expected.late += 1;
            lines.push("{\"timestamp\": broken".to_string());
            expected.undecodable += 1;
        }
    }
    expected.read = lines.len() as u64;
    expected.windows = windows.len() as u64;
    // The sums by hand: 200 events, 5 late ones and 5 broken lines; n == 0 in 40 of the 200;
    // each 10 s window has 8 seconds with n != 0 (all but its 0th and 5th), 9 consecutive
    // seconds but the 5th: all 7 users but the 5th's, whom no other second of it has, so 6
    // results in each of the 20 windows.
    assert_eq!(
        expected,
        Expected {
            read: 210,
            undecodable: 5,
            filter_failures: 40,
            filtered: 165,
            late: 5,
            windows: 120,
        }
    );

    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let input = common::write_lines(dir.path(), "input.jsonl", &lines);
    let pipeline = PipelineBuilder::new("metrics")
        .file_source("clicks", &input)
        .out_of_orderness_ms(1000)
        .watermark_every(1)
        // Fails on n == 0: dead letters from an operator, beside the decode failures.
        .filter("10 / n > 1")
        .key_by("user")
        .tumbling_ms(10_000)
        .allowed_lateness_ms(2_000)
        .aggregate("count", "count")
        .sink(SinkSpec::file(dir.path().join("results.jsonl")))
        .late_events(SinkSpec::file(dir.path().join("late.jsonl")))
        .dead_letters(SinkSpec::file(dir.path().join("dead.jsonl")))
        .build()
        .expect("valid pipeline");
    let metrics = pipeline.metrics();
    let summary = common::run(pipeline);
    assert_eq!(summary.events_read, expected.read, "{summary}");
    assert_eq!(summary.late_events, expected.late, "{summary}");
    assert_eq!(
        summary.dead_letters,
        expected.undecodable + expected.filter_failures,
        "{summary}"
    );
    assert_eq!(summary.events_emitted, expected.windows, "{summary}");
    // What reached the sinks is what the summary says.
    let results = common::read_json_lines(&dir.path().join("results.jsonl"));
    assert_eq!(results.len() as u64, expected.windows);
    let counted: u64 = results
        .iter()
        .map(|result| result["count"].as_u64().expect("a count"))
        .sum();
    assert_eq!(counted, expected.filtered - expected.late);
    let late = common::read_json_lines(&dir.path().join("late.jsonl"));
    assert_eq!(late.len() as u64, expected.late);
    let dead = common::read_json_lines(&dir.path().join("dead.jsonl"));
    assert_eq!(
        dead.len() as u64,
        expected.undecodable + expected.filter_failures
    );

    let text = metrics.encode();
    let samples = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    let pipeline = "pipeline=\"metrics\"";
    let decoded = expected.read - expected.undecodable;
    for (name, filter, value) in [
        ("dataflow_source_events_read_total", pipeline, expected.read),
        (
            "dataflow_source_dead_letters_total",
            pipeline,
            expected.undecodable,
        ),
        (
            "dataflow_operator_dead_letters_total",
            pipeline,
            expected.filter_failures,
        ),
        (
            "dataflow_operator_late_events_total",
            pipeline,
            expected.late,
        ),
        // Each operator receives what the one before it sent.
        (
            "dataflow_operator_events_received_total",
            "kind=\"filter\"",
            decoded,
        ),
        (
            "dataflow_operator_events_sent_total",
            "kind=\"filter\"",
            expected.filtered,
        ),
        (
            "dataflow_operator_events_received_total",
            "kind=\"key_by\"",
            expected.filtered,
        ),
        (
            "dataflow_operator_events_sent_total",
            "kind=\"key_by\"",
            expected.filtered,
        ),
        (
            "dataflow_operator_events_received_total",
            "kind=\"window\"",
            expected.filtered,
        ),
        // What the last operator sends is what reaches the sinks.
        (
            "dataflow_operator_events_sent_total",
            "kind=\"window\"",
            expected.windows,
        ),
    ] {
        assert_eq!(
            total(&samples, name, filter),
            value,
            "{name}{{{filter}}}\n{text}"
        );
    }
}
