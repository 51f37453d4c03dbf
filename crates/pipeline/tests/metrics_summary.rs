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

#[test]
fn metrics_counters_agree_with_the_run_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut lines = Vec::new();
    for second in 0..200 {
        lines.push(format!(
            r#"{{"timestamp":{},"user":"u{}","n":{}}}"#,
            1_704_067_200_000i64 + second * 1000,
            second % 7,
            second % 5
        ));
        if second % 40 == 39 {
            // Far behind the watermark: beyond the allowed lateness.
            lines.push(format!(
                r#"{{"timestamp":{},"user":"late","n":1}}"#,
                1_704_067_200_000i64 + (second - 35) * 1000
            ));
            lines.push("{\"timestamp\": broken".to_string());
        }
    }
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
    assert_eq!(summary.events_read, lines.len() as u64);
    assert!(summary.late_events >= 5, "{summary}");
    assert!(summary.dead_letters >= 5 + 40, "{summary}");
    assert!(summary.events_emitted > 0, "{summary}");

    let text = metrics.encode();
    let samples = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    let pipeline = "pipeline=\"metrics\"";
    assert_eq!(
        total(&samples, "dataflow_source_events_read_total", pipeline),
        summary.events_read
    );
    assert_eq!(
        total(&samples, "dataflow_source_dead_letters_total", pipeline)
            + total(&samples, "dataflow_operator_dead_letters_total", pipeline),
        summary.dead_letters
    );
    assert_eq!(
        total(&samples, "dataflow_operator_late_events_total", pipeline),
        summary.late_events
    );
    // What the last operator sends is what reaches the sinks.
    assert_eq!(
        total(
            &samples,
            "dataflow_operator_events_sent_total",
            "kind=\"window\""
        ),
        summary.events_emitted
    );
    // Each operator receives what the one before it sent.
    assert_eq!(
        total(
            &samples,
            "dataflow_operator_events_received_total",
            "kind=\"filter\""
        ),
        summary.events_read - total(&samples, "dataflow_source_dead_letters_total", pipeline)
    );
}
