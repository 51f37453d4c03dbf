//! Rate-limited sources in whole pipelines. Nothing here depends on wall time: a limited source
//! delivers every event, and a limit below the generator's natural speed (millions of events a
//! second) makes it wait. How long the run takes is not asserted.

mod common;

use std::path::Path;

use dataflow_connectors::generator::{GeneratorConfig, Profile};
use dataflow_event::json::TimeFormat;
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::config;
use dataflow_pipeline::runtime::Pipeline;
use dataflow_pipeline::spec::{AdaptiveSpec, RateLimitSpec, SinkSpec};

const EVENTS: u64 = 3_000;

fn limited(dir: &Path, rate_limit: RateLimitSpec) -> Pipeline {
    let config = GeneratorConfig {
        profile: Profile::Bids,
        count: Some(EVENTS),
        ..GeneratorConfig::default()
    };
    PipelineBuilder::new("limited")
        .generator_source("bids", config)
        .out_of_orderness_ms(2_000)
        .rate_limit(rate_limit)
        .sink(SinkSpec {
            time_format: TimeFormat::Millis,
            ..SinkSpec::file(dir.join("results.jsonl"))
        })
        .dead_letters(SinkSpec::file(dir.join("dead.jsonl")))
        .build()
        .expect("valid pipeline")
}

/// Runs `pipeline`, checks that every generated event came out once, and returns the waits.
fn assert_all_arrive(dir: &Path, pipeline: Pipeline) -> (u64, u64) {
    let counters = pipeline.counters();
    let summary = common::run(pipeline);
    assert_eq!(summary.events_read, EVENTS);
    assert_eq!(summary.events_emitted, EVENTS);
    assert_eq!((summary.late_events, summary.dead_letters), (0, 0));
    let results = common::read_json_lines(&dir.join("results.jsonl"));
    assert_eq!(results.len() as u64, EVENTS);
    (
        counters.rate_limit_waits(),
        counters.rate_limit_wait_nanos(),
    )
}

#[test]
fn a_limited_source_delivers_every_event_and_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 10,000 events a second in batches of at most 100: 30 batches, of which only the first
    // fits the initial burst; the generator is far faster, so the others wait.
    let pipeline = limited(dir.path(), RateLimitSpec::new(10_000));
    let (waits, nanos) = assert_all_arrive(dir.path(), pipeline);
    assert!(waits > 0, "no wait counted");
    assert!(nanos > 0, "no wait time counted");
}

#[test]
fn a_large_burst_still_delivers_every_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = limited(dir.path(), RateLimitSpec::new(20_000).with_burst(1_000));
    let (waits, _) = assert_all_arrive(dir.path(), pipeline);
    assert!(waits > 0, "no wait counted");
}

#[test]
fn an_adaptive_source_delivers_every_event_and_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rate_limit = RateLimitSpec::new(10_000).with_adaptive(AdaptiveSpec {
        target_latency: 100,
        min: 5_000,
        max: 20_000,
    });
    let (waits, nanos) = assert_all_arrive(dir.path(), limited(dir.path(), rate_limit));
    assert!(waits > 0 && nanos > 0, "no wait counted");
}

#[test]
fn a_rate_limit_from_the_config_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "
sources:
  - name: bids
    type: generator
    count: {EVENTS}
    rate_limit:
      events_per_second: 10000
      adaptive: {{ target_latency: 50ms, min: 1000, max: 10000 }}
sinks:
  - type: file
    path: results.jsonl
dead_letters:
  type: file
  path: dead.jsonl
"
    );
    let plan = config::parse_and_plan(&yaml, dir.path()).expect("valid config");
    let (waits, _) = assert_all_arrive(dir.path(), Pipeline::new(plan));
    assert!(waits > 0, "no wait counted");
}
