//! The over operator against a naive model written plainly here: for each event, sort its key's
//! events by time (equal times in arrival order), take the last `rows` up to and including it,
//! and aggregate them. Random streams disordered within the watermark bound, in batches, with a
//! checkpoint and restore in the middle; each runs with the state in memory and in a state
//! store (a small key cache), the checkpoint taken with one restored with the other, and now
//! and then through sled. All give the model's results and the same checkpoint bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflow_event::{Event, FieldType, Layout, Payload, Schema, Value};
use dataflow_expr::Expr;
use dataflow_operators::{Output, Over};
use dataflow_window::AggregateKind;
use proptest::prelude::*;

mod harness;
use harness::{drive, Backend};

/// key, time, the result's fields (`v` and the aggregates) as text.
type Row = (String, i64, String);

fn build(rows: usize) -> Over {
    let schema = Schema::from_fields([dataflow_event::Field {
        name: "v".into(),
        ty: FieldType::Int,
        nullable: true,
    }])
    .unwrap();
    let layout = Layout::Row(Arc::new(schema));
    let v = || Some(Expr::compile("v", &layout).unwrap());
    let (operator, output) = Over::new(
        Arc::from("steps[1].over"),
        rows,
        vec![
            ("n".into(), AggregateKind::Count, None),
            ("total".into(), AggregateKind::Sum, v()),
            ("mean".into(), AggregateKind::Avg, v()),
            ("low".into(), AggregateKind::Min, v()),
            ("high".into(), AggregateKind::Max, v()),
        ],
        layout.clone(),
    )
    .unwrap();
    let names: Vec<&str> = output
        .schema()
        .unwrap()
        .fields()
        .iter()
        .map(|field| &*field.name)
        .collect();
    assert_eq!(names, ["v", "n", "total", "mean", "low", "high"]);
    operator
}

fn text(values: &[Value]) -> String {
    format!("{values:?}")
}

/// The model: `events` are one key's (time, v) in arrival order.
fn naive(key: &str, events: &[(i64, Option<i64>)], rows: usize) -> Vec<Row> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|(time, _)| *time); // stable: equal times stay in arrival order
    let mut results = Vec::new();
    for (index, &(time, v)) in sorted.iter().enumerate() {
        let frame = &sorted[(index + 1).saturating_sub(rows)..=index];
        let present: Vec<i64> = frame.iter().filter_map(|(_, v)| *v).collect();
        let sum: i64 = present.iter().sum();
        let some = |value: Option<i64>| value.map_or(Value::Null, Value::Int);
        let values = [
            some(v),
            Value::Int(frame.len() as i64),
            if present.is_empty() {
                Value::Null
            } else {
                Value::Int(sum)
            },
            if present.is_empty() {
                Value::Null
            } else {
                Value::Float(sum as f64 / present.len() as f64)
            },
            some(present.iter().copied().min()),
            some(present.iter().copied().max()),
        ];
        results.push((key.to_string(), time, text(&values)));
    }
    results
}

fn collect(out: Output, rows: &mut Vec<Row>) {
    assert!(out.side.is_empty(), "{:?}", out.side);
    for event in out.events {
        let key = event
            .key
            .as_ref()
            .and_then(Value::as_str)
            .unwrap()
            .to_string();
        let Payload::Row(row) = event.payload else {
            panic!("a row")
        };
        rows.push((key, event.event_time, text(&row)));
    }
}

fn build_in(rows: usize, backend: &Backend) -> Over {
    let mut operator = build(rows);
    if let Some((store, cache_keys)) = backend.store() {
        operator.keep_state_in_store(store, cache_keys);
    }
    operator
}

/// Arrivals: (arrival order, key, time, v).
type Arrivals = Vec<(i64, String, i64, Option<i64>)>;

/// Runs the operator on `arrivals` in batches of `batch`, the watermark `bound` behind the
/// newest event, with a checkpoint after batch `restore_at` restored into a new operator: in
/// `before` up to it, in `after` from it on. Returns the sorted results and the checkpoint.
fn run(
    rows_kept: usize,
    arrivals: &Arrivals,
    bound: i64,
    batch: usize,
    restore_at: usize,
    before: &Backend,
    after: &Backend,
) -> (Vec<Row>, Vec<u8>) {
    let mut rows = Vec::new();
    let batches: Vec<Vec<Event>> = arrivals
        .chunks(batch)
        .map(|chunk| {
            chunk
                .iter()
                .map(|(_, key, time, v)| {
                    let v = v.map_or(Value::Null, Value::Int);
                    let mut event = Event::row(*time, vec![v]);
                    event.key = Some(Value::str(key));
                    event
                })
                .collect()
        })
        .collect();
    let checkpoint = drive(
        |backend| build_in(rows_kept, backend),
        batches,
        bound,
        restore_at,
        before,
        after,
        |out| collect(out, &mut rows),
    );
    rows.sort();
    (rows, checkpoint)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn over_matches_the_naive_model(
        rows_kept in 1usize..5,
        keys in prop::collection::vec(
            prop::collection::vec((0i64..40, prop::option::weighted(0.9, -3i64..6), 0i64..6), 0..14),
            1..4),
        bound in 0i64..6,
        batch in 1usize..6,
        restore_at in 0usize..12,
        cache_keys in 0usize..3,
        sled in prop::bool::weighted(0.05),
    ) {
        let mut arrivals = Vec::new();
        for (index, events) in keys.iter().enumerate() {
            let key = format!("k{index}");
            for &(time, v, jitter) in events {
                arrivals.push((time + jitter.min(bound), key.clone(), time, v));
            }
        }
        arrivals.sort();
        let mut by_key: BTreeMap<String, Vec<(i64, Option<i64>)>> = BTreeMap::new();
        for (_, key, time, v) in &arrivals {
            by_key.entry(key.clone()).or_default().push((*time, *v));
        }
        let mut expected = Vec::new();
        for (key, events) in &by_key {
            expected.extend(naive(key, events, rows_kept));
        }
        expected.sort();

        let store = Backend::Store(cache_keys);
        let (rows, memory) = run(rows_kept, &arrivals, bound, batch, restore_at, &Backend::Memory, &store);
        prop_assert_eq!(&rows, &expected);
        let (rows, stored) = run(rows_kept, &arrivals, bound, batch, restore_at, &store, &Backend::Memory);
        prop_assert_eq!(&rows, &expected, "in a store");
        prop_assert!(memory == stored, "the checkpoints differ");
        if sled {
            let dir = tempfile::tempdir().unwrap();
            let sled = Backend::Sled(dir.path().join("state"), 1);
            let (rows, in_sled) = run(rows_kept, &arrivals, bound, batch, restore_at, &sled, &sled);
            prop_assert_eq!(&rows, &expected, "in sled");
            prop_assert!(memory == in_sled, "the checkpoints differ");
        }
    }
}

#[test]
fn refuses_no_rows_and_aggregates_it_does_not_compute() {
    let layout = Layout::Row(Arc::new(Schema::new([("v", FieldType::Int)]).unwrap()));
    let error = Over::new(Arc::from("over"), 0, vec![], layout.clone()).unwrap_err();
    assert!(error.contains("rows"), "{error}");
    let error = Over::new(
        Arc::from("over"),
        3,
        vec![("d".into(), AggregateKind::CountDistinct, None)],
        layout,
    )
    .unwrap_err();
    assert!(error.contains("count_distinct"), "{error}");
}
