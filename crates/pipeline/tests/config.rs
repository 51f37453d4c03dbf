//! Configs: the shipped ones check, and bad ones are refused with every problem and its place.

use std::path::Path;

use dataflow_pipeline::{config, plan, PipelineError};

fn problems(yaml: &str) -> Vec<String> {
    let result = config::parse_and_plan(yaml, Path::new("."));
    match result {
        Err(PipelineError::InvalidConfig(problems)) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(other) => panic!("expected config problems, got {other}"),
        Ok(_) => panic!("expected config problems, the config was accepted"),
    }
}

const GOOD_SOURCE: &str = "
sources:
  - name: clicks
    type: file
    path: clicks.jsonl
    format:
      schema: { user_id: string, n: int }
";

fn with_steps(steps: &str) -> String {
    format!("{GOOD_SOURCE}steps:\n{steps}sinks:\n  - type: stdout\n")
}

#[test]
fn shipped_configs_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root)
        .expect("configs directory")
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let spec = config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            plan::plan(spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    let found = problems(&format!(
        "{GOOD_SOURCE}    colour: blue\nsinks:\n  - type: stdout\n"
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("line 8:5: config: unknown field `colour`"),
        "{found:?}"
    );
}

#[test]
fn bad_cel_is_refused_with_its_place() {
    let found = problems(&with_steps("  - filter: n >>> 3\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("line 9:13: steps[0].filter: expression `n >>> 3`"),
        "{found:?}"
    );
}

#[test]
fn unknown_field_is_refused_listing_the_schema() {
    let found = problems(&with_steps("  - key_by: payload.user\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("line 9:13: steps[0].key_by: expression `payload.user`"),
        "{found:?}"
    );
    assert!(found[0].contains("user_id"), "{found:?}");
}

#[test]
fn missing_required_settings_are_named() {
    let found = problems("sources:\n  - name: a\n    type: file\nsinks:\n  - type: file\n");
    assert_eq!(
        found,
        vec![
            "line 2:5: sources[0]: a file source needs `path` or `paths`".to_string(),
            "line 5:5: sinks[0]: a file sink needs `path`".to_string(),
        ]
    );
    let found = problems("sinks:\n  - type: stdout\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("missing field `sources`"), "{found:?}");
}

#[test]
fn negative_duration_is_refused_with_its_place() {
    let found = problems(&with_steps(
        "  - window:\n      type: tumbling\n      size: -5s\n      aggregates: { n: count }\n",
    ));
    assert_eq!(
        found,
        vec!["line 11:13: steps[0].window.size: invalid duration `-5s`: durations cannot be negative".to_string()]
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let found = problems(&with_steps(
        "  - filter: nope(\n  - window:\n      type: sliding\n      size: 1m\n      slide: 5m\n      aggregates: { s: sum(missing), m: median(n) }\n",
    ));
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found.iter().any(|p| p.contains("steps[1].window: `slide`")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("unknown aggregate `median`")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|p| p.contains("steps[0].filter")),
        "{found:?}"
    );
}

const LIMITED_SOURCE: &str = "
sources:
  - name: bids
    type: generator
    count: 10
    rate_limit:
";

fn limited(rate_limit: &str) -> String {
    format!("{LIMITED_SOURCE}{rate_limit}sinks:\n  - type: stdout\n")
}

#[test]
fn rate_limit_is_read_with_its_defaults() {
    use dataflow_pipeline::spec::{AdaptiveSpec, RateLimitSpec};
    let spec = config::parse(&limited("      events_per_second: 5000\n"), Path::new("."))
        .expect("valid config");
    assert_eq!(spec.sources[0].rate_limit, Some(RateLimitSpec::new(5_000)));
    assert_eq!(
        spec.sources[0].rate_limit.as_ref().map(|r| r.burst),
        Some(500)
    );
    let spec = config::parse(
        &limited(
            "      events_per_second: 5\n      burst: 20\n      adaptive: { min: 1, max: 10 }\n",
        ),
        Path::new("."),
    )
    .expect("valid config");
    let expected = RateLimitSpec::new(5)
        .with_burst(20)
        .with_adaptive(AdaptiveSpec {
            target_latency: 100,
            min: 1,
            max: 10,
        });
    assert_eq!(spec.sources[0].rate_limit, Some(expected));
    assert_eq!(
        config::parse(&limited("      events_per_second: 5\n"), Path::new("."))
            .expect("valid config")
            .sources[0]
            .rate_limit
            .as_ref()
            .map(|r| r.burst),
        Some(1),
        "the default burst is at least 1"
    );
}

#[test]
fn bad_rate_limits_are_refused_with_every_place() {
    let found = problems(&limited(
        "      events_per_second: 0\n      burst: -3\n      adaptive:\n        target_latency: -5ms\n        min: 0\n        max: 10\n",
    ));
    assert_eq!(
        found,
        vec![
            "line 7:26: sources[0].rate_limit.events_per_second: `events_per_second` must be at least 1, not 0",
            "line 8:14: sources[0].rate_limit.burst: `burst` must be at least 1, not -3",
            "line 10:25: sources[0].rate_limit.adaptive.target_latency: invalid duration `-5ms`: durations cannot be negative",
            "line 11:14: sources[0].rate_limit.adaptive.min: `min` must be at least 1, not 0",
        ],
    );
    let found = problems(&limited(
        "      events_per_second: 50\n      adaptive: { target_latency: 0s, min: 100, max: 10 }\n",
    ));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains("adaptive.target_latency: `target_latency` must be greater than zero"),
        "{found:?}"
    );
    assert!(
        found[1].contains("adaptive.min: `min` (100) is larger than `max` (10)"),
        "{found:?}"
    );
    let found = problems(&limited(
        "      events_per_second: 50\n      adaptive: { min: 100, max: 1000 }\n",
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("line 7:26: sources[0].rate_limit.events_per_second: `events_per_second` (50) must lie between"),
        "{found:?}"
    );
    let found = problems(&limited("      burst: 10\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("events_per_second"), "{found:?}");
    let found = problems(&limited("      events_per_second: 10\n      speed: 3\n"));
    assert!(found[0].contains("unknown field `speed`"), "{found:?}");
}

#[test]
fn a_builder_rate_limit_is_checked_too() {
    use dataflow_connectors::generator::GeneratorConfig;
    use dataflow_pipeline::builder::PipelineBuilder;
    use dataflow_pipeline::spec::{RateLimitSpec, SinkSpec};
    let result = PipelineBuilder::new("limited")
        .generator_source("bids", GeneratorConfig::default())
        .rate_limit(RateLimitSpec::new(0))
        .sink(SinkSpec::stdout())
        .build();
    match result {
        Err(PipelineError::InvalidConfig(problems)) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].place.path, "sources[0].rate_limit");
        }
        Err(other) => panic!("expected config problems, got {other}"),
        Ok(_) => panic!("a rate of 0 was accepted"),
    }
}

#[test]
fn an_api_without_a_token_only_listens_on_loopback() {
    let found = problems(&format!(
        "{GOOD_SOURCE}sinks:\n  - type: stdout\napi:\n  listen: 0.0.0.0:8080\n"
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("without a token"), "{found:?}");
    let found = problems(&format!(
        "{GOOD_SOURCE}sinks:\n  - type: stdout\napi:\n  listen: 0.0.0.0:8080\n  token_env: DATAFLOW_SURELY_UNSET_TOKEN\n"
    ));
    assert!(
        found[0].contains("`DATAFLOW_SURELY_UNSET_TOKEN` is not set"),
        "{found:?}"
    );
    let found = problems(&format!(
        "{GOOD_SOURCE}sinks:\n  - type: stdout\napi:\n  listen: nowhere\n"
    ));
    assert!(
        found[0].contains("api.listen: invalid address `nowhere`"),
        "{found:?}"
    );
    let plan = config::parse_and_plan(
        &format!("{GOOD_SOURCE}sinks:\n  - type: stdout\napi:\n  listen: 127.0.0.1:0\n"),
        Path::new("."),
    )
    .expect("loopback without a token is allowed");
    assert!(plan.api.is_some_and(|api| api.token.is_none()));
}

#[test]
fn state_backends_are_checked() {
    let config = |state: &str| format!("{}{state}", with_steps("  - key_by: user_id\n"));
    let spec = |state: &str| {
        config::parse(&config(state), Path::new("base"))
            .expect("valid config")
            .state
    };
    assert_eq!(spec(""), dataflow_pipeline::spec::StateSpec::Memory);
    assert_eq!(
        spec("state: { backend: memory }\n"),
        dataflow_pipeline::spec::StateSpec::Memory
    );
    assert_eq!(
        spec("state: { backend: sled, dir: state }\n"),
        dataflow_pipeline::spec::StateSpec::Sled {
            dir: Path::new("base").join("state")
        }
    );
    let found = problems(&config("state: { backend: sled }\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("state") && found[0].contains("needs `dir`"),
        "{found:?}"
    );
    let found = problems(&config("state: { backend: rocksdb, dir: x }\n"));
    assert!(
        found[0].contains("state.backend") && found[0].contains("unknown state backend `rocksdb`"),
        "{found:?}"
    );
    let found = problems(&config("state: { dir: x }\n"));
    assert!(found[0].contains("state.dir"), "{found:?}");
}

#[test]
fn the_api_connection_limits_are_read_and_checked() {
    let config = |api: &str| format!("{GOOD_SOURCE}sinks:\n  - type: stdout\napi:\n{api}");
    let limits = |api: &str| {
        config::parse(&config(api), Path::new("."))
            .expect("valid config")
            .api
            .expect("an api section")
            .limits
    };
    assert_eq!(
        limits("  listen: 127.0.0.1:0\n"),
        dataflow_api::ServeLimits::DEFAULT
    );
    assert_eq!(
        limits(
            "  max_connections: 16\n  header_timeout: 2s\n  idle_timeout: 1m\n  max_header_bytes: 8192\n  max_requests_per_connection: 10\n"
        ),
        dataflow_api::ServeLimits {
            max_connections: 16,
            header_timeout: std::time::Duration::from_secs(2),
            idle_timeout: std::time::Duration::from_secs(60),
            max_header_bytes: 8192,
            max_requests_per_connection: 10,
        }
    );
    let found = problems(&config(
        "  listen: nowhere\n  max_connections: 0\n  header_timeout: 0s\n  idle_timeout: soon\n  max_header_bytes: 100\n  max_requests_per_connection: -1\n",
    ));
    assert_eq!(found.len(), 6, "{found:?}");
    for part in [
        "api.max_connections: `max_connections` must be at least 1, not 0",
        "api.header_timeout: `header_timeout` must be greater than zero",
        "api.idle_timeout: invalid duration `soon`",
        "api.max_header_bytes: `max_header_bytes` must be at least 1024, not 100",
        "api.max_requests_per_connection: `max_requests_per_connection` must be at least 1, not -1",
        "api.listen: invalid address `nowhere`",
    ] {
        assert!(found.iter().any(|p| p.contains(part)), "{part}: {found:?}");
    }
}
