//! Configs: the shipped ones check, and bad ones are refused with every problem and its place.

use std::path::Path;

use dataflow_pipeline::{config, plan, PipelineError};

/// A directory holding the input `clicks.jsonl` of [`GOOD_SOURCE`], to take a config's paths from.
fn base() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("clicks.jsonl"), "").expect("write input");
    dir
}

/// The problems of a config whose paths are taken from a [`base`] directory.
fn problems(yaml: &str) -> Vec<String> {
    problems_in(yaml, base().path())
}

/// The problems of a config whose paths are taken from `dir`.
fn problems_in(yaml: &str, dir: &Path) -> Vec<String> {
    let result = config::parse_and_plan(yaml, dir);
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
        base().path(),
    )
    .expect("loopback without a token is allowed");
    assert!(plan.api.is_some_and(|api| api.token.is_none()));
}

#[test]
fn state_backends_are_checked() {
    let config = |state: &str| format!("{}{state}", with_steps("  - key_by: user_id\n"));
    let base = base();
    let spec = |state: &str| {
        config::parse(&config(state), base.path())
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
            dir: base.path().join("state"),
            cache_bytes: dataflow_state::DEFAULT_CACHE_BYTES,
            cache_keys: dataflow_operators::window::DEFAULT_CACHE_KEYS,
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
    assert_eq!(
        spec("state: { backend: sled, dir: state, cache_mb: 16 }\n"),
        dataflow_pipeline::spec::StateSpec::Sled {
            dir: base.path().join("state"),
            cache_bytes: 16 << 20,
            cache_keys: dataflow_operators::window::DEFAULT_CACHE_KEYS,
        }
    );
    assert_eq!(
        spec("state: { backend: sled, dir: state, cache_keys: 0 }\n"),
        dataflow_pipeline::spec::StateSpec::Sled {
            dir: base.path().join("state"),
            cache_bytes: dataflow_state::DEFAULT_CACHE_BYTES,
            cache_keys: 0,
        }
    );
    let found = problems(&config(
        "state: { backend: sled, dir: x, cache_keys: -1 }\n",
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("state.cache_keys") && found[0].contains("between 0 and"),
        "{found:?}"
    );
    let found = problems(&config("state: { cache_keys: 10 }\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("state.cache_keys") && found[0].contains("only used by the `sled`"),
        "{found:?}"
    );
    let found = problems(&config("state: { backend: sled, dir: x, cache_mb: 0 }\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("state.cache_mb") && found[0].contains("between 1 and"),
        "{found:?}"
    );
    let found = problems(&config("state: { cache_mb: 64 }\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("state.cache_mb") && found[0].contains("only used by the `sled`"),
        "{found:?}"
    );
}

/// Every path a run would open or create is checked before anything starts: each problem once,
/// at the place of its value, naming the path and the system's cause once.
#[test]
fn unusable_paths_are_refused_each_at_its_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().display();
    std::fs::write(dir.path().join("file.txt"), "not a directory").expect("write file");
    std::fs::create_dir(dir.path().join("adir")).expect("create dir");
    let yaml = "\
sources:
  - name: clicks
    type: file
    path: missing.jsonl
  - name: more
    type: file
    paths: [adir, file.txt]
sinks:
  - type: parts
    path: file.txt/parts
  - type: file
    path: adir
dead_letters:
  type: file
  path: file.txt/dead.jsonl
late_events:
  type: file
  path: new/late.jsonl
checkpoint:
  dir: file.txt
state:
  backend: sled
  dir: file.txt/state
";
    let found = problems_in(yaml, dir.path());
    assert_eq!(
        found,
        vec![
            format!("line 4:11: sources[0].path: cannot read {d}/missing.jsonl: No such file or directory (os error 2)"),
            format!("line 7:12: sources[1].paths: {d}/adir is a directory, not a file"),
            format!("line 10:11: sinks[0].path: cannot create {d}/file.txt/parts: {d}/file.txt is not a directory"),
            format!("line 12:11: sinks[1].path: {d}/adir is a directory, not a file"),
            format!("line 15:9: dead_letters.path: cannot create {d}/file.txt/dead.jsonl: {d}/file.txt is not a directory"),
            format!("line 20:8: checkpoint.dir: {d}/file.txt is not a directory"),
            format!("line 23:8: state.dir: cannot create {d}/file.txt/state: {d}/file.txt is not a directory"),
        ]
    );
    // Checking created nothing.
    assert_eq!(entries(dir.path()), ["adir", "file.txt"]);
    assert!(entries(&dir.path().join("adir")).is_empty());
}

/// A path named twice is one problem.
#[test]
fn a_path_named_twice_is_one_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let found = problems_in(
        "sources:\n  - name: s\n    type: file\n    paths: [gone.jsonl, gone.jsonl]\nsinks:\n  - type: stdout\n",
        dir.path(),
    );
    assert_eq!(
        found,
        vec![format!(
            "line 4:12: sources[0].paths: cannot read {}/gone.jsonl: No such file or directory (os error 2)",
            dir.path().display()
        )]
    );
}

/// Outputs that do not exist yet pass when their nearest existing ancestor is a writable
/// directory, and checking does not create them; an input may be a character device.
#[test]
fn outputs_to_create_pass_without_being_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("clicks.jsonl"), "").expect("write input");
    let yaml = "\
sources:
  - name: clicks
    type: file
    paths: [clicks.jsonl, /dev/null]
steps:
  - key_by: payload.user
  - window: { type: tumbling, size: 1s, aggregates: { n: count } }
sinks:
  - type: parts
    path: out/parts
  - type: file
    path: out/deeper/results.jsonl
late_events:
  type: file
  path: late.jsonl
checkpoint:
  dir: run/checkpoints
state:
  backend: sled
  dir: run/state
";
    let plan = config::parse_and_plan(yaml, dir.path()).expect("valid config");
    assert_eq!(plan.sinks.len(), 2);
    assert_eq!(entries(dir.path()), ["clicks.jsonl"]);
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_api_connection_limits_are_read_and_checked() {
    let config = |api: &str| format!("{GOOD_SOURCE}sinks:\n  - type: stdout\napi:\n{api}");
    let base = base();
    let limits = |api: &str| {
        config::parse(&config(api), base.path())
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

/// Side records are written as JSON Lines as they come: a side output on a sink that is not a
/// stream of lines (part files, Parquet, a store) is refused at its `type`, each at its place.
#[test]
fn side_outputs_take_only_stdout_or_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in.jsonl"), "").expect("write input");
    let yaml = "\
sources:
  - name: clicks
    type: file
    path: in.jsonl
sinks:
  - type: stdout
dead_letters:
  type: parts
  path: dead
late_events:
  type: parquet
  path: late
timed_out:
  type: stdout
";
    let found = problems_in(yaml, dir.path());
    assert_eq!(
        found,
        vec![
            "line 8:9: dead_letters.type: `parts` cannot take dead_letters: side records are written as JSON Lines, to `stdout` or a `file`".to_string(),
            "line 11:9: late_events.type: `parquet` cannot take late_events: side records are written as JSON Lines, to `stdout` or a `file`".to_string(),
        ]
    );
}

#[test]
fn arg_and_top_aggregates_are_checked_with_their_places() {
    let found = problems(&with_steps(
        "  - key_by: user_id\n  - window:\n      type: tumbling\n      size: 1m\n      aggregates:\n        a: arg_max()\n        b: arg_min(n, user_id, n)\n        c: top_k(0, n)\n        d: top_k(-2, n)\n        e: top_k(3)\n        f: top_k(n, 3)\n        g: arg_max(n)\n        h: sum(n, n)\n        ok1: arg_max(n, user_id)\n        ok2: top_k(2, [n, user_id])\n",
    ));
    let expected = [
        "line 14:12: steps[1].window.aggregates.a: `arg_max` takes a value and what to give for it",
        "line 15:12: steps[1].window.aggregates.b: `arg_min` takes a value and what to give for it",
        "line 16:12: steps[1].window.aggregates.c: `top_k` needs a whole number of at least 1 as its count, found `0`",
        "line 17:12: steps[1].window.aggregates.d: `top_k` needs a whole number of at least 1 as its count, found `-2`",
        "line 18:12: steps[1].window.aggregates.e: `top_k` takes a count and an expression",
        "line 19:12: steps[1].window.aggregates.f: `top_k` needs a whole number of at least 1 as its count, found `n`",
        // `arg_max(n)` gives the keys of an earlier window's results: this stream has no `key`.
        "line 20:12: steps[1].window.aggregates.g: expression `[n, key]`: unknown field `key`",
        "line 21:12: steps[1].window.aggregates.h: `sum` takes one argument, found 2",
    ];
    assert_eq!(found.len(), expected.len(), "{found:?}");
    for (problem, expected) in found.iter().zip(expected) {
        assert!(problem.starts_with(expected), "{problem} is not {expected}");
    }
    config::parse_and_plan(
        &with_steps(
            "  - window:\n      type: tumbling\n      size: 1m\n      aggregates:\n        ok1: arg_max(n, user_id)\n        ok2: top_k(2, [n, user_id])\n        ok3: arg_min(n, \"a,(b\")\n",
        ),
        base().path(),
    )
    .expect("valid aggregates");
}
