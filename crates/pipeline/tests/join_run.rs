//! Joins from YAML through the whole runtime, on two sources of their own schemas: a lookup
//! join against a changelog with upserts and deletes (left outer), and a full outer interval
//! join, with disorder within the bound; golden results. (Which events are late across two
//! sources depends on how their reading interleaves: the operator model tests cover lateness.)

mod common;

use dataflow_pipeline::config;
use dataflow_pipeline::runtime::Pipeline;
use serde_json::{json, Value};

/// What a run gave: the results (each with its event time as `t`), the late records, and the
/// join's rows without a partner as `dataflow_operator_unmatched_total` counted them.
struct Ran {
    results: Vec<Value>,
    late: Vec<Value>,
    unmatched: u64,
}

/// Runs `steps` (with `branches`) over the `orders` and `rates` lines, one event per batch.
fn run(branches: &str, steps: &str, orders: &[&str], rates: &[&str]) -> Ran {
    let dir = tempfile::tempdir().expect("temp dir");
    common::write_lines(dir.path(), "orders.jsonl", orders);
    common::write_lines(dir.path(), "rates.jsonl", rates);
    let yaml = format!(
        "sources:
  - name: orders
    type: file
    path: orders.jsonl
    format: {{ time_field: t, schema: {{ id: int, currency: string, amount: int }} }}
    watermark: {{ out_of_orderness: 1s }}
  - name: rates
    type: file
    path: rates.jsonl
    format: {{ time_field: t, schema: {{ currency: string, rate: int, op: string }} }}
    watermark: {{ out_of_orderness: 1s }}
{branches}steps:
{steps}sinks:
  - {{ type: file, path: results.jsonl, time_format: millis }}
late_events: {{ type: file, path: late.jsonl, time_format: millis }}
dead_letters: {{ type: file, path: dead.jsonl }}
runtime: {{ batch_size: 1 }}
"
    );
    let plan = config::parse_and_plan(&yaml, dir.path()).expect("a valid config");
    let pipeline = Pipeline::new(plan);
    let metrics = pipeline.metrics();
    common::run(pipeline);
    let unmatched = metrics
        .encode()
        .lines()
        .filter(|line| line.starts_with("dataflow_operator_unmatched_total{"))
        .map(|line| {
            let value = line.rsplit(' ').next().expect("a value");
            value.parse::<u64>().expect("a count")
        })
        .sum();
    let dead = common::read_json_lines(&dir.path().join("dead.jsonl"));
    assert!(dead.is_empty(), "dead letters: {dead:?}");
    let mut results = common::read_json_lines(&dir.path().join("results.jsonl"));
    results.sort_by_key(|result| result.to_string());
    let late = common::read_json_lines(&dir.path().join("late.jsonl"))
        .into_iter()
        .map(|record| record["record"].clone())
        .collect();
    Ran {
        results,
        late,
        unmatched,
    }
}

#[test]
fn a_lookup_join_meets_the_version_as_of_each_event_and_deletes_end_a_key() {
    let ran = run(
        "",
        "  - join:
      type: lookup
      how: left
      left: { input: orders, key: currency, prefix: '' }
      right: { input: rates, key: currency, prefix: rate_, delete: op == \"delete\" }
  - map:
      keep: [id, currency, amount, rate_rate]
",
        &[
            r#"{"t": 1500, "id": 1, "currency": "EUR", "amount": 10}"#,
            r#"{"t": 2500, "id": 2, "currency": "EUR", "amount": 20}"#,
            r#"{"t": 4500, "id": 3, "currency": "EUR", "amount": 30}"#,
            r#"{"t": 4600, "id": 4, "currency": "USD", "amount": 40}"#,
            // Out of order, within the 1 s bound.
            r#"{"t": 9000, "id": 5, "currency": "EUR", "amount": 50}"#,
            r#"{"t": 8200, "id": 6, "currency": "EUR", "amount": 60}"#,
        ],
        &[
            r#"{"t": 1000, "currency": "EUR", "rate": 110, "op": "upsert"}"#,
            r#"{"t": 2000, "currency": "EUR", "rate": 120, "op": "upsert"}"#,
            r#"{"t": 4000, "currency": "EUR", "rate": 0, "op": "delete"}"#,
            r#"{"t": 4400, "currency": "USD", "rate": 100, "op": "upsert"}"#,
            r#"{"t": 8500, "currency": "EUR", "rate": 130, "op": "upsert"}"#,
        ],
    );
    let expected = vec![
        json!({"id": 1, "currency": "EUR", "amount": 10, "rate_rate": 110, "t": 1500}),
        json!({"id": 2, "currency": "EUR", "amount": 20, "rate_rate": 120, "t": 2500}),
        // EUR was deleted at 4 s: no rate (left outer keeps the order, with nulls).
        json!({"id": 3, "currency": "EUR", "amount": 30, "rate_rate": null, "t": 4500}),
        json!({"id": 4, "currency": "USD", "amount": 40, "rate_rate": 100, "t": 4600}),
        json!({"id": 5, "currency": "EUR", "amount": 50, "rate_rate": 130, "t": 9000}),
        // Before the rate of 8.5 s: the deletion still holds.
        json!({"id": 6, "currency": "EUR", "amount": 60, "rate_rate": null, "t": 8200}),
    ];
    let mut expected: Vec<Value> = expected;
    expected.sort_by_key(|result| result.to_string());
    assert_eq!(ran.results, expected);
    assert!(ran.late.is_empty(), "{:?}", ran.late);
    // Orders 3 and 6 met no rate.
    assert_eq!(ran.unmatched, 2);
}

#[test]
fn a_full_interval_join_emits_the_lonely_rows_of_both_sides_once() {
    let ran = run(
        "branches:
  big:
    from: orders
    steps:
      - filter: amount >= 20
",
        "  - join:
      type: interval
      how: full
      lower: -1s
      upper: 2s
      left: { input: big, key: currency, prefix: o_ }
      right: { input: rates, key: currency, prefix: r_ }
  - map:
      keep: [o_id, r_rate]
",
        &[
            r#"{"t": 1000, "id": 1, "currency": "EUR", "amount": 10}"#,
            r#"{"t": 2000, "id": 2, "currency": "EUR", "amount": 20}"#,
            r#"{"t": 3000, "id": 3, "currency": "USD", "amount": 30}"#,
            r#"{"t": 9000, "id": 4, "currency": "EUR", "amount": 40}"#,
        ],
        &[
            r#"{"t": 1500, "currency": "EUR", "rate": 1, "op": "upsert"}"#,
            r#"{"t": 3500, "currency": "EUR", "rate": 2, "op": "upsert"}"#,
            r#"{"t": 4500, "currency": "EUR", "rate": 3, "op": "upsert"}"#,
            r#"{"t": 9500, "currency": "GBP", "rate": 4, "op": "upsert"}"#,
        ],
    );
    let mut expected = vec![
        // Order 2 (EUR, 2 s) meets rates from 1 s to 4 s: those at 1.5 s and 3.5 s, each
        // pair at the later of its two times.
        json!({"o_id": 2, "r_rate": 1, "t": 2000}),
        json!({"o_id": 2, "r_rate": 2, "t": 3500}),
        // Order 1 is filtered out before the join; order 3 has no USD rate, order 4 none
        // within its bounds; the EUR rate at 4.5 s and the GBP rate meet no order.
        json!({"o_id": 3, "r_rate": null, "t": 3000}),
        json!({"o_id": 4, "r_rate": null, "t": 9000}),
        json!({"o_id": null, "r_rate": 3, "t": 4500}),
        json!({"o_id": null, "r_rate": 4, "t": 9500}),
    ];
    expected.sort_by_key(|result| result.to_string());
    assert_eq!(ran.results, expected);
    // Orders 3 and 4, the EUR rate at 4.5 s and the GBP rate.
    assert_eq!(ran.unmatched, 4);
}
