//! Bad `pattern:` and `alert:` steps are refused by the check, each problem with its place
//! (line, column, path); the shipped CEP examples check.

mod common;

use std::path::Path;

use dataflow_pipeline::config;

/// The problems of `steps` over a keyed stream of transactions (`card`, `amount`).
fn problems(steps: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("tx.jsonl"), "").expect("write input");
    let yaml = format!(
        "sources:
  - name: tx
    type: file
    path: tx.jsonl
    format:
      schema: {{ card: string, amount: float }}
steps:
{steps}
sinks:
  - type: stdout
"
    );
    common::config_problems(&yaml, dir.path())
}

/// Asserts there is exactly one problem, and that it contains every one of `parts`.
fn refused(steps: &str, parts: &[&str]) {
    common::assert_one_problem(&problems(steps), parts);
}

#[test]
fn a_condition_naming_an_unknown_stage_is_refused_at_the_condition() {
    refused(
        "  - key_by: card
  - pattern:
      within: 10m
      stages:
        - name: small
          where: amount < 2.0
        - name: large
          where: amount > 100.0 * tiny.amount
",
        &["line 15:18", "steps[1].pattern.stages[1].where", "tiny"],
    );
}

#[test]
fn a_condition_naming_a_later_stage_is_refused() {
    refused(
        "  - key_by: card
  - pattern:
      within: 10m
      stages:
        - name: small
          where: amount < large.amount
        - name: large
          where: amount > 500.0
",
        &[
            "line 13:18",
            "steps[1].pattern.stages[0].where",
            "refers to stage `large`, which does not come before it",
        ],
    );
}

#[test]
fn an_unbounded_stage_without_within_is_refused() {
    refused(
        "  - key_by: card
  - pattern:
      stages:
        - name: small
          where: amount < 2.0
          min: 2
        - name: large
          where: amount > 500.0
          contiguity: strict
",
        &[
            "line 11:11",
            "steps[1].pattern.stages[0]",
            "a stage without `max` needs `within`",
        ],
    );
}

#[test]
fn a_relaxed_stage_without_within_is_refused() {
    refused(
        "  - key_by: card
  - pattern:
      stages:
        - name: small
          where: amount < 2.0
        - name: large
          where: amount > 500.0
",
        &["steps[1].pattern.stages[1]", "needs `within`"],
    );
}

#[test]
fn min_above_max_is_refused_at_the_stage() {
    refused(
        "  - key_by: card
  - pattern:
      within: 1m
      stages:
        - name: small
          where: amount < 2.0
          min: 3
          max: 2
",
        &[
            "line 12:11",
            "steps[1].pattern.stages[0]",
            "`min` (3) is larger than `max` (2)",
        ],
    );
}

#[test]
fn exactly_zero_times_is_refused() {
    refused(
        "  - key_by: card
  - pattern:
      within: 1m
      stages:
        - name: small
          where: amount < 2.0
        - name: large
          where: amount > 500.0
          times: 0
",
        &["steps[1].pattern.stages[1]", "cannot be 0"],
    );
}

#[test]
fn negative_and_unreadable_quantifiers_are_refused_at_their_key() {
    refused(
        "  - key_by: card
  - pattern:
      within: 1m
      stages:
        - name: small
          where: amount < 2.0
          times: -1
",
        &["line 14:18", "steps[1].pattern.stages[0].times"],
    );
}

#[test]
fn a_pattern_ending_in_a_negative_stage_is_refused() {
    refused(
        "  - key_by: card
  - pattern:
      within: 1m
      stages:
        - name: small
          where: amount < 2.0
        - name: refund
          where: amount < 0.0
          negative: true
",
        &[
            "steps[1].pattern.stages[1]",
            "cannot end with a negative stage",
        ],
    );
}

#[test]
fn a_pattern_needs_a_key_by_before_it() {
    refused(
        "  - pattern:
      within: 1m
      stages:
        - name: small
          where: amount < 2.0
",
        &["line 9:7", "steps[0].pattern", "needs a `key_by`"],
    );
}

#[test]
fn a_selected_field_of_an_unknown_stage_is_refused() {
    refused(
        "  - key_by: card
  - pattern:
      within: 1m
      stages:
        - name: small
          where: amount < 2.0
      select:
        big: first(large.amount)
",
        &["steps[1].pattern.select.big", "`large`"],
    );
}

#[test]
fn every_problem_of_a_pattern_is_listed() {
    let problems = problems(
        "  - key_by: card
  - pattern:
      after_match: skip_everything
      stages:
        - name: small
          where: amount < 2.0
          min: 4
          max: 1
          contiguity: loose
        - name: small
          where: amount
",
    );
    assert!(problems.len() >= 4, "{problems:#?}");
    let all = problems.join("\n");
    for part in [
        "unknown after_match `skip_everything`",
        "unknown contiguity `loose`",
        "is used twice",
        "needs a bool expression",
    ] {
        assert!(all.contains(part), "{all}");
    }
}

#[test]
fn an_alert_needs_one_rule() {
    refused(
        "  - key_by: card
  - alert:
      condition: amount > 100.0
      for: 30s
      count: 3
",
        &["steps[1].alert", "either `for`"],
    );
    refused(
        "  - key_by: card
  - alert:
      condition: amount > 100.0
      count: 0
      within: 1m
",
        &["steps[1].alert.count", "from 1 up"],
    );
}

#[test]
fn the_shipped_cep_examples_check() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/examples/cep");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            config::load_plan(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
}
