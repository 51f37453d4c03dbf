//! The alert operator against a naive model written plainly here, on random streams disordered
//! within the watermark bound, in batches, with a checkpoint and restore in the middle:
//!
//! - `for D`: the runs of consecutive events of a key meeting the condition; a run that lasts
//!   at least `D` (by the time of one of its events) starts the alert at its first such event,
//!   and the event ending the run stops it;
//! - `count N within W`: the number of events meeting the condition in `(t - W, t]`, computed
//!   at every instant where it can change; the alert starts when it reaches `N` and stops when
//!   it falls below.
//!
//! Each stream runs with the state in memory and in a state store (a small key cache), the
//! checkpoint taken with one restored with the other; a smaller run goes through sled. All give
//! the model's results and the same checkpoint bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflow_event::{Event, FieldType, Layout, Payload, Schema, Value};
use dataflow_expr::Expr;
use dataflow_operators::alert::AlertRule;
use dataflow_operators::{Alert, Output};
use proptest::prelude::*;

mod harness;
use harness::{drive, Backend};

/// key, started, since, at, duration, events.
type Row = (String, bool, i64, i64, Option<i64>, i64);

fn build(rule: AlertRule) -> Alert {
    let layout = Layout::Row(Arc::new(Schema::new([("v", FieldType::Int)]).unwrap()));
    let condition = Expr::compile("v > 2", &layout).unwrap();
    Alert::new(
        Arc::from("steps[1].alert"),
        condition,
        rule,
        Some(FieldType::String),
        layout,
    )
    .unwrap()
    .0
}

fn naive_for(key: &str, events: &[(i64, i64)], duration: i64) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut run: Option<(i64, i64)> = None; // (start, events)
    let mut started = false;
    for &(time, v) in events {
        if v > 2 {
            let (start, count) = run.get_or_insert((time, 0));
            *count += 1;
            if !started && time - *start >= duration {
                started = true;
                rows.push((key.to_string(), true, *start, time, None, *count));
            }
        } else {
            if let (true, Some((start, count))) = (started, run) {
                rows.push((
                    key.to_string(),
                    false,
                    start,
                    time,
                    Some(time - start),
                    count,
                ));
            }
            run = None;
            started = false;
        }
    }
    rows
}

fn naive_count(key: &str, events: &[(i64, i64)], count: i64, within: i64) -> Vec<Row> {
    let hits: Vec<i64> = events
        .iter()
        .filter(|(_, v)| *v > 2)
        .map(|(t, _)| *t)
        .collect();
    // The count changes only at a hit (up) or at a hit's time plus `within` (down).
    let mut instants: Vec<i64> = hits.iter().flat_map(|t| [*t, t + within]).collect();
    instants.sort();
    instants.dedup();
    let in_window = |at: i64| {
        hits.iter()
            .filter(|t| at - within < **t && **t <= at)
            .count() as i64
    };
    let mut rows = Vec::new();
    let mut since: Option<i64> = None;
    let mut held = 0;
    for at in instants {
        let now = in_window(at);
        match since {
            None if now >= count => {
                since = Some(at);
                held = now;
                rows.push((key.to_string(), true, at, at, None, now));
            }
            Some(start) if now < count => {
                rows.push((key.to_string(), false, start, at, Some(at - start), held));
                since = None;
            }
            Some(_) => held += hits.iter().filter(|t| **t == at).count() as i64,
            None => {}
        }
    }
    rows
}

fn collect(out: Output, rows: &mut Vec<Row>) {
    assert!(out.side.is_empty(), "{:?}", out.side);
    for event in out.events {
        let Payload::Row(row) = event.payload else {
            panic!("a row")
        };
        rows.push((
            row[0].as_str().unwrap().to_string(),
            row[1].as_str() == Some("started"),
            row[2].as_i64().unwrap(),
            row[3].as_i64().unwrap(),
            row[4].as_i64(),
            row[5].as_i64().unwrap(),
        ));
    }
}

fn build_in(rule: AlertRule, backend: &Backend) -> Alert {
    let mut operator = build(rule);
    if let Some((store, cache_keys)) = backend.store() {
        operator.keep_state_in_store(store, cache_keys);
    }
    operator
}

/// Arrivals: (arrival order, key, time, v).
type Arrivals = Vec<(i64, String, i64, i64)>;

/// Runs the operator on `arrivals` in batches of `batch`, the watermark `bound` behind the
/// newest event, with a checkpoint after batch `restore_at` restored into a new operator: in
/// `before` up to it, in `after` from it on. Returns the sorted results and the checkpoint.
fn run(
    rule: AlertRule,
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
                    let mut event = Event::row(*time, vec![Value::Int(*v)]);
                    event.key = Some(Value::str(key));
                    event
                })
                .collect()
        })
        .collect();
    let checkpoint = drive(
        |backend| build_in(rule, backend),
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

fn rule() -> impl Strategy<Value = AlertRule> {
    prop_oneof![
        (0i64..15).prop_map(AlertRule::For),
        (1u32..4, 1i64..15).prop_map(|(count, within)| AlertRule::Count { count, within }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(800))]

    #[test]
    fn alert_matches_the_naive_model(
        rule in rule(),
        keys in prop::collection::vec(
            prop::collection::btree_map(0i64..60, (0i64..5, 0i64..6), 0..12), 1..4),
        bound in 0i64..6,
        batch in 1usize..6,
        restore_at in 0usize..12,
        cache_keys in 0usize..3,
        sled in prop::bool::weighted(0.05),
    ) {
        let mut arrivals = Vec::new();
        let mut by_key: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        for (index, events) in keys.iter().enumerate() {
            let key = format!("k{index}");
            for (&time, &(v, jitter)) in events {
                arrivals.push((time + jitter.min(bound), key.clone(), time, v));
                by_key.entry(key.clone()).or_default().push((time, v));
            }
        }
        arrivals.sort();
        let mut expected = Vec::new();
        for (key, events) in &by_key {
            expected.extend(match rule {
                AlertRule::For(duration) => naive_for(key, events, duration),
                AlertRule::Count { count, within } => naive_count(key, events, count as i64, within),
            });
        }
        expected.sort();

        let store = Backend::Store(cache_keys);
        let (rows, memory) = run(rule, &arrivals, bound, batch, restore_at, &Backend::Memory, &store);
        prop_assert_eq!(&rows, &expected, "{:?}", rule);
        let (rows, stored) = run(rule, &arrivals, bound, batch, restore_at, &store, &Backend::Memory);
        prop_assert_eq!(&rows, &expected, "in a store: {:?}", rule);
        prop_assert!(memory == stored, "the checkpoints differ");
        if sled {
            let dir = tempfile::tempdir().unwrap();
            let sled = Backend::Sled(dir.path().join("state"), 1);
            let (rows, in_sled) = run(rule, &arrivals, bound, batch, restore_at, &sled, &sled);
            prop_assert_eq!(&rows, &expected, "in sled: {:?}", rule);
            prop_assert!(memory == in_sled, "the checkpoints differ");
        }
    }
}
