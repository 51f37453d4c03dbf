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
