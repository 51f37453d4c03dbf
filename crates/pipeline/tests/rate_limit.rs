//! Rate-limited sources in whole pipelines: a limited source delivers every event, and no
//! faster than its limit allows.
//!
//! The limiter reads the wall clock through the runtime (time since its source thread
//! started), so the run is measured, but only in ways a loaded machine cannot break: a token
//! bucket of `burst` tokens refilled at `rate` a second hands out at most `burst + rate × t`
//! tokens by time `t`, so `EVENTS` events cannot all have been sent before
//! `(EVENTS − burst) / rate` seconds. That lower bound on the run's duration fails only if the
//! limiter does not limit (the generator alone produces millions of events a second); a slow
//! machine only makes the run longer. No upper bound on time is asserted. The number of waits
//! is bounded by the number of batches: the first batch fits the initial burst.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use dataflow_connectors::generator::{GeneratorConfig, Profile};
use dataflow_connectors::ratelimit::RateLimiter;
use dataflow_event::json::TimeFormat;
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::config;
use dataflow_pipeline::runtime::Pipeline;
use dataflow_pipeline::spec::{AdaptiveSpec, RateLimitSpec, RuntimeSpec, SinkSpec};

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

/// The most batches a source limited by `spec` reads `EVENTS` in: its batches hold
/// `RateLimiter::max_batch` events (the burst, and at most a tenth of a second's events at the
/// current rate, never more than the runtime's batch size), smallest at the lowest rate.
fn most_batches(spec: &RateLimitSpec) -> u64 {
    let lowest = match &spec.adaptive {
        Some(adaptive) => RateLimitSpec::new(adaptive.min).with_burst(spec.burst),
        None => spec.clone(),
    };
    let batch = RateLimiter::new(&lowest)
        .max_batch()
        .min(RuntimeSpec::default().batch_size) as u64;
    EVENTS.div_ceil(batch)
}

/// Runs `pipeline` (limited by `spec`), checks that every generated event came out once and
/// that the run lasted at least as long as the limit requires, and returns the waits counted.
fn assert_limited(dir: &Path, pipeline: Pipeline, spec: &RateLimitSpec) -> u64 {
    let counters = pipeline.counters();
    let started = Instant::now();
    let summary = common::run(pipeline);
    let elapsed = started.elapsed();
    assert_eq!(summary.events_read, EVENTS);
    assert_eq!(summary.events_emitted, EVENTS);
    assert_eq!((summary.late_events, summary.dead_letters), (0, 0));
    let results = common::read_json_lines(&dir.join("results.jsonl"));
    assert_eq!(results.len() as u64, EVENTS);

    // The fastest the bucket allows: all but the burst at the highest rate it can reach.
    let fastest_rate = spec
        .adaptive
        .as_ref()
        .map_or(spec.events_per_second, |a| a.max);
    let least =
        Duration::from_secs_f64((EVENTS - spec.burst.min(EVENTS)) as f64 / fastest_rate as f64);
    assert!(
        least >= Duration::from_millis(100),
        "the test's limit is too loose to tell a limited run from an unlimited one"
    );
    assert!(
        elapsed >= least,
        "{EVENTS} events at {fastest_rate}/s with a burst of {} took {elapsed:?}, less than {least:?}: the limit was not held",
        spec.burst
    );

    let waits = counters.rate_limit_waits();
    let nanos = counters.rate_limit_wait_nanos();
    let batches = most_batches(spec);
    assert!(
        (1..batches).contains(&waits),
        "{waits} waits for at most {batches} batches (the first fits the burst)"
    );
    assert!(nanos > 0, "{waits} waits of no time");
    waits
}

#[test]
fn a_limited_source_holds_its_rate() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 10,000 events a second in batches of 100 (the burst): 30 batches, of which only the first
    // fits the initial burst; the other 2,900 events take at least 0.29 s.
    let spec = RateLimitSpec::new(10_000).with_burst(100);
    assert_eq!(most_batches(&spec), 30);
    assert_limited(dir.path(), limited(dir.path(), spec.clone()), &spec);
}

#[test]
fn a_limited_source_with_the_default_burst_holds_its_rate() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The default burst is a tenth of a second's events: 1,000, so batches of 1,000 and at
    // least 0.2 s for the other 2,000.
    let spec = RateLimitSpec::new(10_000);
    assert_eq!((spec.burst, most_batches(&spec)), (1_000, 3));
    assert_limited(dir.path(), limited(dir.path(), spec.clone()), &spec);
}

#[test]
fn a_large_burst_goes_at_once_and_the_rest_is_paced() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 1,000 at once, then 2,000 at 20,000 a second: at least 0.1 s.
    let spec = RateLimitSpec::new(20_000).with_burst(1_000);
    assert_limited(dir.path(), limited(dir.path(), spec.clone()), &spec);
}

#[test]
fn an_adaptive_source_stays_under_its_highest_rate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = RateLimitSpec::new(10_000).with_adaptive(AdaptiveSpec {
        target_latency: 100,
        min: 5_000,
        max: 20_000,
    });
    // Whatever the adaptation does, the bucket never refills faster than `max`: the 2,000
    // events after the burst take at least 0.1 s.
    assert_limited(dir.path(), limited(dir.path(), spec.clone()), &spec);
}

#[test]
fn a_rate_limit_from_the_config_holds_its_rate() {
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
    let spec = plan.sources[0]
        .spec
        .rate_limit
        .clone()
        .expect("the source is limited");
    // What the config says, with the default burst of a tenth of a second's events.
    assert_eq!(
        spec,
        RateLimitSpec::new(10_000).with_adaptive(AdaptiveSpec {
            target_latency: 50,
            min: 1_000,
            max: 10_000,
        })
    );
    assert_limited(dir.path(), Pipeline::new(plan), &spec);
}
