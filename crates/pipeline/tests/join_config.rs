//! Join steps that do not fit are refused by the check, each problem with its place (line,
//! column, path); a pipeline with a join plans into a branch operator and the join.

mod common;

use dataflow_pipeline::config;

/// The config of two sources, `persons` and `auctions` (schemas of their own), with `rest`
/// (branches and steps) after them.
fn config_with(rest: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("persons.jsonl"), "").expect("write input");
    std::fs::write(dir.path().join("auctions.jsonl"), "").expect("write input");
    let yaml = format!(
        "sources:
  - name: persons
    type: file
    path: persons.jsonl
    format: {{ time_field: time, schema: {{ id: int, name: string, state: string }} }}
  - name: auctions
    type: file
    path: auctions.jsonl
    format: {{ time_field: time, schema: {{ id: int, seller: int, category: int }} }}
{rest}
sinks:
  - type: stdout
"
    );
    (dir, yaml)
}

/// The problems of the config with `rest`.
fn problems(rest: &str) -> Vec<String> {
    let (dir, yaml) = config_with(rest);
    common::config_problems(&yaml, dir.path())
}

/// Asserts there is exactly one problem, and that it contains every one of `parts`.
fn refused(rest: &str, parts: &[&str]) {
    common::assert_one_problem(&problems(rest), parts);
}

const BRANCH: &str = "branches:
  local:
    from: persons
    steps:
      - filter: state == \"OR\"
";

#[test]
fn a_join_of_a_branch_and_a_source_plans_into_the_branch_operator_and_the_join() {
    let (dir, yaml) = config_with(&format!(
        "{BRANCH}steps:
  - join:
      type: interval
      how: full
      lower: -5s
      upper: 10s
      left: {{ input: local, key: id }}
      right: {{ input: auctions, key: seller }}
  - filter: local_name != \"x\" || auctions_category == 10
"
    ));
    let plan = config::parse_and_plan(&yaml, dir.path()).expect("a valid join");
    let kinds: Vec<&str> = plan
        .operators
        .iter()
        .map(|node| node.info.kind.name)
        .collect();
    assert_eq!(kinds, ["branch", "interval_join", "filter"]);
    let names: Vec<String> = plan
        .output_layout
        .schema()
        .expect("rows")
        .fields()
        .iter()
        .map(|field| field.name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "local_id",
            "local_name",
            "local_state",
            "auctions_id",
            "auctions_seller",
            "auctions_category"
        ]
    );
}

#[test]
fn an_unknown_input_is_refused_at_its_name_with_the_names_there_are() {
    refused(
        &format!(
            "{BRANCH}steps:
  - join:
      type: window
      size: 10s
      left: {{ input: local, key: id }}
      right:
        input: sellers
        key: seller
"
        ),
        &[
            "line 21:16",
            "steps[0].join.right.input",
            "`sellers` is neither a branch (local) nor a source (persons, auctions)",
        ],
    );
}

#[test]
fn a_branch_of_an_unknown_source_is_refused_at_its_from() {
    refused(
        "branches:
  local:
    from: people
steps:
  - join:
      type: window
      size: 10s
      left: { input: local, key: id }
      right: { input: auctions, key: seller }
",
        &["line 12:11", "branches.local.from", "source `people`"],
    );
}

#[test]
fn a_branch_no_join_takes_is_refused() {
    refused(
        &format!(
            "{BRANCH}steps:
  - filter: id > 0
"
        ),
        &["line 11:3", "branches.local", "not an input of any join"],
    );
}

#[test]
fn a_join_after_other_steps_is_refused() {
    refused(
        &format!(
            "{BRANCH}steps:
  - filter: id > 0
  - join:
      type: window
      size: 10s
      left: {{ input: local, key: id }}
      right: {{ input: auctions, key: seller }}
"
        ),
        &[
            "line 18:7",
            "steps[1].join",
            "a join must be the first step",
        ],
    );
}

#[test]
fn keys_of_different_types_are_refused() {
    refused(
        &format!(
            "{BRANCH}steps:
  - join:
      type: window
      size: 10s
      left: {{ input: local, key: name }}
      right: {{ input: auctions, key: seller }}
"
        ),
        &[
            "steps[0].join",
            "different types: `name` gives string, `seller` gives int",
        ],
    );
}

#[test]
fn a_key_naming_a_missing_field_is_refused_at_the_key() {
    refused(
        &format!(
            "{BRANCH}steps:
  - join:
      type: window
      size: 10s
      left: {{ input: local, key: id }}
      right: {{ input: auctions, key: owner }}
"
        ),
        &["line 20:38", "steps[0].join.right.key", "owner"],
    );
}

#[test]
fn bounds_that_cannot_join_are_refused() {
    refused(
        &format!(
            "{BRANCH}steps:
  - join:
      type: interval
      lower: 5s
      upper: -5s
      left: {{ input: local, key: id }}
      right: {{ input: auctions, key: seller }}
"
        ),
        &[
            "steps[0].join",
            "`lower` (5000 ms) is after `upper` (-5000 ms)",
        ],
    );
    refused(
        &format!(
            "{BRANCH}steps:
  - join:
      type: interval
      lower: 0s
      left: {{ input: local, key: id }}
      right: {{ input: auctions, key: seller }}
"
        ),
        &["steps[0].join", "an interval join needs `upper`"],
    );
    refused(
        &format!(
            "{BRANCH}steps:
  - join:
      type: window
      size: 10s
      slide: 20s
      left: {{ input: local, key: id }}
      right: {{ input: auctions, key: seller }}
"
        ),
        &["steps[0].join", "`slide` (20000 ms) is larger than `size`"],
    );
    refused(
        &format!(
            "{BRANCH}steps:
  - join:
      type: window
      size: 10s
      upper: 5s
      left: {{ input: local, key: id }}
      right: {{ input: auctions, key: seller }}
"
        ),
        &[
            "line 19:14",
            "steps[0].join.upper",
            "`upper` does not apply to a window join",
        ],
    );
}

#[test]
fn a_lookup_join_takes_inner_or_left_and_deletes_on_its_table_only() {
    refused(
        &format!(
            "{BRANCH}steps:
  - join:
      type: lookup
      how: full
      left: {{ input: local, key: id }}
      right: {{ input: auctions, key: seller }}
"
        ),
        &["line 18:12", "steps[0].join.how", "expected inner or left"],
    );
    refused(
        &format!(
            "{BRANCH}steps:
  - join:
      type: lookup
      left: {{ input: local, key: id, delete: id < 0 }}
      right: {{ input: auctions, key: seller }}
"
        ),
        &[
            "steps[0].join.left.delete",
            "`delete` applies only to the right input",
        ],
    );
}

#[test]
fn a_branch_with_a_keyed_step_is_refused_at_the_step() {
    refused(
        "branches:
  local:
    from: persons
    steps:
      - key_by: name
steps:
  - join:
      type: window
      size: 10s
      left: { input: local, key: id }
      right: { input: auctions, key: seller }
",
        &[
            "line 14:17",
            "branches.local.steps[0].key_by",
            "`filter` and `map` steps only",
        ],
    );
}

#[test]
fn inputs_whose_fields_would_collide_are_refused() {
    refused(
        &format!(
            "{BRANCH}steps:
  - join:
      type: window
      size: 10s
      left: {{ input: local, key: id, prefix: x_ }}
      right: {{ input: auctions, key: seller, prefix: x_ }}
"
        ),
        &["steps[0].join", "x_id", "different `prefix`es"],
    );
}

#[test]
fn every_problem_of_a_join_is_listed_at_once() {
    let problems = problems(
        "branches:
  local:
    from: people
  unused: {}
steps:
  - join:
      type: interval
      how: sideways
      lower: 1s
      size: 1s
      left: { input: local, key: id }
      right: { input: nobody, key: seller }
",
    );
    let expected = [
        "branches.local.from",
        "steps[0].join.right.input",
        "steps[0].join.how",
        "steps[0].join.size",
        "an interval join needs `upper`",
        "branches.unused",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for part in expected {
        assert!(
            problems.iter().any(|problem| problem.contains(part)),
            "no problem names {part:?}: {problems:#?}"
        );
    }
}

#[test]
fn an_input_of_every_source_is_refused_when_their_schemas_differ() {
    refused(
        "branches:
  everything:
    steps:
      - filter: true
steps:
  - join:
      type: window
      size: 10s
      left: { input: everything, key: id }
      right: { input: auctions, key: seller }
",
        &[
            "steps[0].join.left",
            "join input `everything` takes the events of every source, whose schemas differ",
        ],
    );
}
