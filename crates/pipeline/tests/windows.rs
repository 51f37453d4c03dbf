//! Golden tests of the window step through the whole runtime: one batch per event, so the
//! watermark follows the events one by one, as the window crate's golden tests drive it.

mod common;

use dataflow_event::json::TimeFormat;
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::spec::{RuntimeSpec, SinkSpec};
use serde_json::{json, Value};

fn millis(spec: SinkSpec) -> SinkSpec {
    SinkSpec {
        time_format: TimeFormat::Millis,
        ..spec
    }
}

/// Runs `builder` (sources and steps set) over `lines`, returning results, late events and the
/// summary's (late, dead letters).
fn check(
    lines: &[&str],
    builder: impl FnOnce(PipelineBuilder) -> PipelineBuilder,
) -> (Vec<Value>, Vec<Value>, (u64, u64)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = common::write_lines(dir.path(), "in.jsonl", lines);
    let results = dir.path().join("results.jsonl");
    let late = dir.path().join("late.jsonl");
    let pipeline = builder(PipelineBuilder::new("test").file_source("events", &input))
        .sink(millis(SinkSpec::file(&results)))
        .late_events(millis(SinkSpec::file(&late)))
        .dead_letters(millis(SinkSpec::file(dir.path().join("dead.jsonl"))))
        .runtime(RuntimeSpec {
            batch_size: 1,
            ..RuntimeSpec::default()
        })
        .build()
        .expect("valid pipeline");
    let summary = common::run(pipeline);
    let late_records = common::read_json_lines(&late)
        .into_iter()
        .map(|record| record["record"].clone())
        .collect();
    (
        common::read_json_lines(&results),
        late_records,
        (summary.late_events, summary.dead_letters),
    )
}

fn event(time: i64, user: &str, value: i64) -> String {
    format!(r#"{{"timestamp":{time},"user":"{user}","v":{value}}}"#)
}

#[test]
fn tumbling_with_disorder_lateness_and_end_of_input() {
    let lines = [
        event(1000, "a", 1),
        event(3000, "b", 2),
        event(2000, "a", 3),  // out of order, within the 2 s bound
        event(12000, "a", 4), // watermark 10 s: [0, 10 s) fires
        event(6000, "b", 5),  // late, within the 5 s lateness: update for b
        event(17000, "a", 6), // watermark 15 s: [0, 10 s) is purged
        event(4000, "a", 7),  // beyond the lateness: late output
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (results, late, counts) = check(&lines, |b| {
        b.out_of_orderness_ms(2000)
            .key_by("user")
            .tumbling_ms(10_000)
            .allowed_lateness_ms(5000)
            .aggregate("n", "count")
            .aggregate("total", "sum(v)")
    });
    assert_eq!(
        results,
        vec![
            json!({"key":"a","window_start":0,"window_end":10000,"n":2,"total":4,"is_update":false}),
            json!({"key":"b","window_start":0,"window_end":10000,"n":1,"total":2,"is_update":false}),
            json!({"key":"b","window_start":0,"window_end":10000,"n":2,"total":7,"is_update":true}),
            json!({"key":"a","window_start":10000,"window_end":20000,"n":2,"total":10,"is_update":false}),
        ]
    );
    assert_eq!(late, vec![json!({"timestamp":4000,"user":"a","v":7})]);
    assert_eq!(counts, (1, 0));
}

#[test]
fn sliding_counts_each_event_in_every_window_it_belongs_to() {
    let lines = [
        event(1000, "a", 1),
        event(6000, "a", 1),
        event(12000, "a", 1),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (results, late, counts) = check(&lines, |b| {
        b.sliding_ms(10_000, 5000)
            .aggregate("n", "count")
            .aggregate("last_v", "last(v)")
    });
    assert_eq!(
        results,
        vec![
            json!({"window_start":-5000,"window_end":5000,"n":1,"last_v":1,"is_update":false}),
            json!({"window_start":0,"window_end":10000,"n":2,"last_v":1,"is_update":false}),
            json!({"window_start":5000,"window_end":15000,"n":2,"last_v":1,"is_update":false}),
            json!({"window_start":10000,"window_end":20000,"n":1,"last_v":1,"is_update":false}),
        ]
    );
    assert!(late.is_empty());
    assert_eq!(counts, (0, 0));
}

#[test]
fn sessions_merge_fire_update_and_route_late_events() {
    let lines = [
        event(1000, "a", 1),
        event(4000, "a", 1),  // merges: a [1 s, 9 s)
        event(2000, "b", 1),  // b [2 s, 7 s)
        event(10000, "a", 1), // watermark 9 s: b, then a, fire
        event(3000, "b", 1),  // late within 5 s: b grows to [2 s, 8 s), update
        event(30000, "a", 1), // watermark 29 s: a [10 s, 15 s) fires
        event(1000, "b", 1),  // beyond the lateness: late output
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (results, late, counts) = check(&lines, |b| {
        b.out_of_orderness_ms(1000)
            .key_by("user")
            .session_ms(5000)
            .allowed_lateness_ms(5000)
            .aggregate("n", "count")
    });
    assert_eq!(
        results,
        vec![
            json!({"key":"b","window_start":2000,"window_end":7000,"n":1,"is_update":false}),
            json!({"key":"a","window_start":1000,"window_end":9000,"n":2,"is_update":false}),
            json!({"key":"b","window_start":2000,"window_end":8000,"n":2,"is_update":true}),
            json!({"key":"a","window_start":10000,"window_end":15000,"n":1,"is_update":false}),
            json!({"key":"a","window_start":30000,"window_end":35000,"n":1,"is_update":false}),
        ]
    );
    assert_eq!(late, vec![json!({"timestamp":1000,"user":"b","v":1})]);
    assert_eq!(counts, (1, 0));
}
