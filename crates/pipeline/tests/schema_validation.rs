//! With a schema, a record is still checked as JSON as a whole (issue 10, item 9): invalid UTF-8
//! or nesting beyond the limit in a field the schema does not read, and an epoch time with a
//! fraction, send the line to the dead letters with its reason, counted, with one decode thread
//! or several.

mod common;

use dataflow_event::json::DecoderConfig;
use dataflow_event::{FieldType, Schema};
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::spec::SinkSpec;
use serde_json::json;

/// The dead letters' `dataflow_source_dead_letters_total` in a Prometheus exposition.
fn source_dead_letters(text: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with("dataflow_source_dead_letters_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn invalid_json_in_skipped_fields_and_fractional_times_are_dead_letters() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let lines: Vec<Vec<u8>> = vec![
        br#"{"event_time":1704067200000,"user":"a","n":1,"extra":{"k":[1,"x"]}}"#.to_vec(),
        [
            &br#"{"event_time":1704067201000,"user":"b","n":2,"extra":""#[..],
            b"\xff\xfe",
            br#""}"#,
        ]
        .concat(),
        format!(r#"{{"event_time":1704067202000,"user":"c","n":3,"extra":{deep}}}"#).into_bytes(),
        br#"{"event_time":0.0125,"user":"d","n":4}"#.to_vec(),
        br#"{"event_time":1.7040672e12,"user":"e","n":5}"#.to_vec(),
        br#"{"event_time":1704067203000,"user":"f","n":6,"extra":"\ud800"}"#.to_vec(),
    ];
    for parallelism in [1, 2] {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("input.jsonl");
        let mut text = lines.join(&b'\n');
        text.push(b'\n');
        std::fs::write(&input, text).expect("write input");
        let schema =
            Schema::new([("user", FieldType::String), ("n", FieldType::Int)]).expect("schema");
        let results = dir.path().join("results.jsonl");
        let dead = dir.path().join("dead.jsonl");
        let pipeline = PipelineBuilder::new("validation")
            .file_source("input", &input)
            .decoder(DecoderConfig {
                time_field: Some("event_time".into()),
                schema: Some(schema),
                ..DecoderConfig::default()
            })
            .parallelism(parallelism)
            .sink(SinkSpec::file(&results))
            .dead_letters(SinkSpec::file(&dead))
            .build()
            .expect("valid pipeline");
        let metrics = pipeline.metrics();
        let summary = common::run(pipeline);

        let mut emitted = common::read_json_lines(&results);
        emitted.sort_by_key(|record| record["n"].as_i64());
        assert_eq!(
            emitted,
            vec![
                json!({"event_time":"2024-01-01T00:00:00.000Z","user":"a","n":1}),
                json!({"event_time":"2024-01-01T00:00:00.000Z","user":"e","n":5}),
            ],
            "parallelism {parallelism}"
        );
        let mut found: Vec<(u64, String)> = common::read_json_lines(&dead)
            .iter()
            .map(|record| {
                assert_eq!(record["stage"], json!("source input"));
                (
                    record["line"].as_u64().expect("a line"),
                    record["reason"].as_str().expect("a reason").to_string(),
                )
            })
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                (
                    2,
                    "line 2: invalid JSON: invalid unicode code point at line 1 column 55".into()
                ),
                (
                    3,
                    "line 3: invalid JSON: lists and objects nested deeper than 127 levels at line 1 column 180".into()
                ),
                (
                    4,
                    "line 4: field `event_time`: invalid timestamp 0.0125: expected RFC 3339 text or epoch milliseconds".into()
                ),
                (
                    6,
                    "line 6: invalid JSON: unexpected end of hex escape at line 1 column 61".into()
                ),
            ],
            "parallelism {parallelism}"
        );
        assert_eq!(summary.events_read, 6, "{summary}");
        assert_eq!(summary.events_emitted, 2, "{summary}");
        assert_eq!(summary.dead_letters, 4, "{summary}");
        assert_eq!(source_dead_letters(&metrics.encode()), 4);
    }
}
