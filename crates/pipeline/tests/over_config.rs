//! Bad `over:` steps are refused by the check, each problem with its place (line, column,
//! path), all of them at once; a good one plans, its aggregates appended to the event's fields.

mod common;

use dataflow_pipeline::config;

/// The config of `steps` over a stream of transactions (`card`, `amount`).
fn yaml(steps: &str) -> String {
    format!(
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
    )
}

/// The problems of `steps`.
fn problems(steps: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("tx.jsonl"), "").expect("write input");
    let yaml = yaml(steps);
    common::config_problems(&yaml, dir.path())
}

/// Asserts there is exactly one problem, and that it contains every one of `parts`.
fn refused(steps: &str, parts: &[&str]) {
    common::assert_one_problem(&problems(steps), parts);
}

#[test]
fn rows_below_one_are_refused_at_rows() {
    for rows in ["0", "-3"] {
        refused(
            &format!(
                "  - key_by: card
  - over:
      rows: {rows}
      aggregates:
        average: avg(amount)
"
            ),
            &["line 10:13", "steps[1].over.rows", "from 1 up"],
        );
    }
}

#[test]
fn an_over_step_needs_a_key() {
    refused(
        "  - over:
      rows: 10
      aggregates:
        average: avg(amount)
",
        &["line 9:7", "steps[0].over", "needs a `key_by` before it"],
    );
}

#[test]
fn unknown_and_unsupported_aggregates_are_refused_at_their_place() {
    refused(
        "  - key_by: card
  - over:
      rows: 10
      aggregates:
        middle: median(amount)
",
        &["line 12:17", "steps[1].over.aggregates.middle", "median"],
    );
    refused(
        "  - key_by: card
  - over:
      rows: 10
      aggregates:
        earliest: first(amount)
",
        &["steps[1].over.aggregates.earliest", "not `first`"],
    );
    refused(
        "  - key_by: card
  - over:
      rows: 10
      aggregates:
        total: sum(amout)
",
        &["steps[1].over.aggregates.total", "amout"],
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let problems = problems(
        "  - over:
      rows: 0
      aggregates:
        middle: median(amount)
        high: max(amount)
",
    );
    let all = problems.join("\n");
    assert_eq!(problems.len(), 2, "{all}");
    assert!(all.contains("steps[0].over.rows"), "{all}");
    assert!(all.contains("steps[0].over.aggregates.middle"), "{all}");
}

#[test]
fn a_good_over_step_plans_with_its_aggregates_after_the_fields() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("tx.jsonl"), "").expect("write input");
    let yaml = yaml(
        "  - key_by: card
  - over:
      rows: 3
      aggregates:
        n: count
        average: avg(amount)
        high: max(amount)
",
    );
    let plan = config::parse_and_plan(&yaml, dir.path()).expect("a good config");
    let kinds: Vec<&str> = plan
        .operators
        .iter()
        .map(|node| node.operator.kind().name)
        .collect();
    assert_eq!(kinds, ["key_by", "over"]);
    let schema = plan.output_layout.schema().expect("rows").clone();
    let names: Vec<&str> = schema.fields().iter().map(|field| &*field.name).collect();
    assert_eq!(names, ["card", "amount", "n", "average", "high"]);
}
