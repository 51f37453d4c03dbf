//! A file mixing valid and invalid records: every valid record gives its result, every invalid
//! one reaches the dead letters with its line and reason, and the counts add up.

mod common;

use dataflow_event::{Field, FieldType, Schema};
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::spec::SinkSpec;
use serde_json::json;

#[test]
fn invalid_records_are_dead_lettered_with_their_reason_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = common::write_lines(
        dir.path(),
        "mixed.jsonl",
        &[
            r#"{"timestamp":"2024-01-01T00:00:01Z","user":"a","n":5}"#,
            r#"{"timestamp":"2024-01-01T00:00:02Z","user":"b","n":"#,
            r#"{"timestamp":"2024-01-01T00:00:03Z","user":"c","n":2,"extra":[1,2,3]}"#,
            r#"{"timestamp":"yesterday","user":"d","n":1}"#,
            r#"{"timestamp":"2024-01-01T00:00:05Z","user":"e","n":"seven"}"#,
            r#"{"timestamp":"2024-01-01T00:00:06Z","n":3}"#,
            "",
            r#"{"timestamp":"2024-01-01T00:00:07Z","user":"g","n":0}"#,
            r#"{"timestamp":1704067208000,"user":"h","n":50}"#,
            r#"not json at all"#,
        ],
    );
    let schema = Schema::from_fields([
        Field {
            name: "user".into(),
            ty: FieldType::String,
            nullable: false,
        },
        Field {
            name: "n".into(),
            ty: FieldType::Int,
            nullable: false,
        },
    ])
    .expect("schema");
    let results = dir.path().join("results.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let pipeline = PipelineBuilder::new("mixed")
        .file_source("mixed", &input)
        .schema(schema)
        // Fails on n == 0 (division by zero): an evaluation error, not a decode error.
        .filter("100 / n >= 2")
        .map_field("double", "n * 2")
        .sink(SinkSpec::file(&results))
        .dead_letters(SinkSpec::file(&dead))
        .build()
        .expect("valid pipeline");
    let summary = common::run(pipeline);

    assert_eq!(
        common::read_json_lines(&results),
        vec![
            json!({"timestamp":"2024-01-01T00:00:01.000Z","user":"a","n":5,"double":10}),
            json!({"timestamp":"2024-01-01T00:00:03.000Z","user":"c","n":2,"double":4}),
            json!({"timestamp":"2024-01-01T00:00:08.000Z","user":"h","n":50,"double":100}),
        ]
    );
    let dead_letters = common::read_json_lines(&dead);
    let summary_of = |record: &serde_json::Value| {
        (
            record["stage"].as_str().unwrap_or_default().to_string(),
            record["line"].as_u64(),
            record["reason"].as_str().unwrap_or_default().to_string(),
        )
    };
    let mut found: Vec<_> = dead_letters.iter().map(summary_of).collect();
    found.sort_by_key(|(_, line, _)| line.unwrap_or(u64::MAX));
    let source = "source mixed".to_string();
    assert_eq!(found.len(), 6, "{found:#?}");
    assert_eq!(found[0].0, source);
    assert_eq!(found[0].1, Some(2));
    assert!(
        found[0]
            .2
            .starts_with("line 2: invalid JSON: EOF while parsing"),
        "{}",
        found[0].2
    );
    assert_eq!(
        found[1],
        (source.clone(), Some(4), "line 4: field `timestamp`: invalid timestamp \"yesterday\": expected RFC 3339 text or epoch milliseconds".into())
    );
    assert_eq!(
        found[2],
        (
            source.clone(),
            Some(5),
            "line 5: field `n`: expected int, found string \"seven\"".into()
        )
    );
    assert_eq!(
        found[3],
        (
            source.clone(),
            Some(6),
            "line 6: missing field `user` required by the schema".into()
        )
    );
    assert_eq!(found[4].1, Some(10));
    assert!(
        found[4].2.starts_with("line 10: invalid JSON"),
        "{}",
        found[4].2
    );
    // The evaluation failure carries the event itself, not a line.
    assert_eq!(found[5].0, "steps[0].filter");
    assert_eq!(found[5].1, None);
    assert!(found[5].2.contains("division by zero"), "{}", found[5].2);
    let raw = dead_letters
        .iter()
        .find(|r| r["line"] == 10)
        .expect("line 10");
    assert_eq!(raw["record"], json!("not json at all"));

    // 9 non-blank lines read = 3 results + 1 filtered out + 5 decode failures... plus the one
    // evaluation failure, which was read and decoded: 9 = 3 emitted + 5 + 1 dead letters.
    assert_eq!(summary.events_read, 9);
    assert_eq!(summary.events_emitted, 3);
    assert_eq!(summary.dead_letters, 6);
    assert_eq!(summary.late_events, 0);
}
