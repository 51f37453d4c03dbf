//! Sources in whole pipelines: files as partitions with watermarks of their own, and the
//! generator, on event time and on processing time.

mod common;

use dataflow_connectors::generator::{GeneratorConfig, Profile};
use dataflow_event::json::DecoderConfig;
use dataflow_event::json::TimeFormat;
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::spec::{
    Place, RuntimeSpec, SinkSpec, SourceKind, SourceSpec, WatermarkSpec,
};

fn millis(spec: SinkSpec) -> SinkSpec {
    SinkSpec {
        time_format: TimeFormat::Millis,
        ..spec
    }
}

fn counts(path: &std::path::Path) -> Vec<(i64, u64)> {
    common::read_json_lines(path)
        .iter()
        .map(|r| {
            (
                r["window_start"].as_i64().unwrap_or(-1),
                r["n"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn files_are_partitions_with_their_own_watermarks() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Two files over the same 100 s, read a batch of 10 from each in turn. One watermark for
    // both would run ahead of the file behind and make its events late; one per file does not.
    let lines: Vec<String> = (0..100)
        .map(|s| format!(r#"{{"timestamp":{}}}"#, s * 1000))
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let a = common::write_lines(dir.path(), "a.jsonl", &lines[..]);
    let b = common::write_lines(dir.path(), "b.jsonl", &lines[..]);
    let results = dir.path().join("results.jsonl");
    let pipeline = PipelineBuilder::new("partitions")
        .source(SourceSpec {
            name: "two".into(),
            kind: SourceKind::File {
                paths: vec![a, b],
                follow: false,
            },
            decoder: DecoderConfig::default(),
            watermark: WatermarkSpec {
                every: Some(1),
                ..WatermarkSpec::default()
            },
            rate_limit: None,
            place: Place::path("sources[0]"),
        })
        .tumbling_ms(10_000)
        .aggregate("n", "count")
        .sink(millis(SinkSpec::file(&results)))
        .dead_letters(SinkSpec::file(dir.path().join("dead.jsonl")))
        .runtime(RuntimeSpec {
            batch_size: 10,
            ..RuntimeSpec::default()
        })
        .build()
        .expect("valid pipeline");
    let summary = common::run(pipeline);
    assert_eq!(summary.late_events, 0);
    let expected: Vec<(i64, u64)> = (0..10).map(|w| (w * 10_000, 20)).collect();
    assert_eq!(counts(&results), expected);
}

#[test]
fn generator_feeds_event_time_and_processing_time_windows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = GeneratorConfig {
        profile: Profile::Bids,
        count: Some(5_000),
        ..GeneratorConfig::default()
    };
    let event_time = dir.path().join("event.jsonl");
    let processing_time = dir.path().join("processing.jsonl");
    for (results, processing) in [(&event_time, false), (&processing_time, true)] {
        let mut builder = PipelineBuilder::new("generated")
            .generator_source("bids", config.clone())
            .out_of_orderness_ms(2_000)
            .tumbling_ms(60_000);
        if processing {
            builder = builder.processing_time();
        }
        let pipeline = builder
            .aggregate("n", "count")
            .sink(millis(SinkSpec::file(results)))
            .dead_letters(SinkSpec::file(dir.path().join("dead.jsonl")))
            .build()
            .expect("valid pipeline");
        let summary = common::run(pipeline);
        assert_eq!((summary.events_read, summary.late_events), (5_000, 0));
    }
    // 1,000 bids a second of event time, with at most 2 s of disorder: minutes of 60,000 bids,
    // except the edges. Event 0 starts 2024-01-01T00:00:00Z.
    let windows = counts(&event_time);
    assert_eq!(windows.iter().map(|(_, n)| n).sum::<u64>(), 5_000);
    assert_eq!(
        windows.first().map(|(start, _)| *start),
        Some(1_704_067_140_000)
    );
    // On processing time every bid lands in the minute (or two) of the run itself.
    let windows = counts(&processing_time);
    assert_eq!(windows.iter().map(|(_, n)| n).sum::<u64>(), 5_000);
    assert!(windows.len() <= 2, "{windows:?}");
}
