//! Property tests: `KeyedWindows` against a naive recomputation over buffered events, and
//! snapshot/restore against an uninterrupted run.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dataflow_event::Value;
use dataflow_window::{
    key_hash, key_partition, Admission, AggregateKind, BoundedOutOfOrderness, KeyedWindows,
    WindowConfig, WindowKind, WindowResult, WindowSnapshot,
};
use proptest::prelude::*;

const AGGREGATES: [AggregateKind; 12] = AggregateKind::ALL;

/// The `k` of `top_k` in [`AggregateKind::ALL`].
const TOP_K: usize = 3;

#[derive(Clone, Debug)]
struct Event {
    key: i64,
    timestamp: i64,
    /// The input of `sum` and `avg`.
    number: Value,
    /// The input of the other aggregates.
    any: Value,
}

impl Event {
    fn inputs(&self) -> Vec<Value> {
        let (number, any) = (&self.number, &self.any);
        vec![
            Value::Null,
            number.clone(),
            any.clone(),
            any.clone(),
            number.clone(),
            any.clone(),
            any.clone(),
            any.clone(),
            any.clone(),
            // arg_max and arg_min: the number is the value, `any` the argument.
            Value::List(Arc::new(vec![number.clone(), any.clone()])),
            Value::List(Arc::new(vec![number.clone(), any.clone()])),
            any.clone(),
        ]
    }
}

/// Numbers whose sums are exact in any order: small ints and halves.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (-5i64..5).prop_map(Value::Int),
        (-10i64..10).prop_map(|halves| Value::Float(halves as f64 * 0.5)),
    ]
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        number(),
        prop::sample::select(vec!["a", "b", "1"]).prop_map(Value::str),
        any::<bool>().prop_map(Value::Bool),
    ]
}

fn window_kind() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        (1i64..=6).prop_map(|size| WindowKind::Tumbling { size }),
        (1i64..=8)
            .prop_flat_map(|size| (Just(size), 1..=size))
            .prop_map(|(size, slide)| WindowKind::Sliding { size, slide }),
        (1i64..=6).prop_map(|gap| WindowKind::Session { gap }),
    ]
}

/// Events over a few keys whose timestamps grow by small steps and are then moved back by up to
/// `disorder`: with `disorder <= bound`, no event is late for a bounded-out-of-orderness
/// watermark with that bound.
fn events(disorder: i64) -> impl Strategy<Value = Vec<Event>> {
    let event = (0i64..3, 0i64..=4, 0..=disorder, number(), any_value());
    (-30i64..30, prop::collection::vec(event, 0..60)).prop_map(|(origin, raw)| {
        let mut base = origin;
        raw.into_iter()
            .map(|(key, step, back, number, any)| {
                base += step;
                Event {
                    key,
                    timestamp: base - back,
                    number,
                    any,
                }
            })
            .collect()
    })
}

/// What a run emitted: the results, and each event's admission with the watermark it met.
#[derive(Debug, Default, PartialEq)]
struct Run {
    results: Vec<WindowResult>,
    admissions: Vec<(Admission, i64)>,
}

/// Feeds `events` through a bounded-out-of-orderness watermark into windows, then finishes. With
/// `snapshot_at`, the windows are snapshotted, encoded as JSON, decoded and restored before the
/// event at that index.
fn run(config: &WindowConfig, bound: i64, events: &[Event], snapshot_at: Option<usize>) -> Run {
    let mut windows = KeyedWindows::new(config.clone()).expect("valid config");
    let mut generator = BoundedOutOfOrderness::new(bound);
    let mut run = Run::default();
    let round_trip = |windows: &KeyedWindows| {
        let json =
            serde_json::to_string(&windows.snapshot().expect("snapshot")).expect("encodable");
        let snapshot: WindowSnapshot = serde_json::from_str(&json).expect("decodable");
        KeyedWindows::restore(config.clone(), snapshot).expect("restorable")
    };
    for (index, event) in events.iter().enumerate() {
        if snapshot_at == Some(index) {
            windows = round_trip(&windows);
        }
        let before = run.results.len();
        let watermark = windows.watermark();
        let admission = windows
            .add(
                &Value::Int(event.key),
                event.timestamp,
                &event.inputs(),
                &mut run.results,
            )
            .expect("valid event");
        let emitted = &run.results[before..];
        match admission {
            Admission::LateUpdated => {
                assert!(!emitted.is_empty() && emitted.iter().all(|result| result.is_update));
            }
            Admission::OnTime | Admission::TooLate => assert!(emitted.is_empty()),
        }
        run.admissions.push((admission, watermark));
        generator.observe(event.timestamp);
        windows
            .advance_watermark(generator.current(), &mut run.results)
            .expect("advance");
    }
    if snapshot_at == Some(events.len()) {
        windows = round_trip(&windows);
    }
    windows.finish(&mut run.results).expect("finish");
    assert_eq!((windows.key_count(), windows.open_windows()), (0, 0));
    run
}

/// Like [`run`], but with the keys spread over parallel instances by [`key_partition`], every
/// instance seeing every watermark, as the runtime's workers do. At each `(index, workers)` of
/// `rescales`, the instances' snapshots are merged into one, encoded, decoded and split again
/// over `workers` instances. Returns the results and admissions sorted, since instances
/// interleave.
fn run_parallel(
    config: &WindowConfig,
    bound: i64,
    events: &[Event],
    first: usize,
    rescales: &[(usize, usize)],
) -> (Vec<String>, Vec<(Admission, i64)>) {
    let mut instances: Vec<KeyedWindows> = (0..first)
        .map(|_| KeyedWindows::new(config.clone()).expect("valid config"))
        .collect();
    let mut generator = BoundedOutOfOrderness::new(bound);
    let mut results = Vec::new();
    let mut admissions = Vec::new();
    let rescale = |instances: &mut Vec<KeyedWindows>, workers: usize| {
        let parts: Vec<WindowSnapshot> = instances
            .iter()
            .map(|instance| instance.snapshot().expect("snapshot"))
            .collect();
        let merged = WindowSnapshot::merge(parts.clone()).expect("mergeable");
        let json = serde_json::to_string(&merged).expect("encodable");
        let merged: WindowSnapshot = serde_json::from_str(&json).expect("decodable");
        // Splitting again over as many instances gives every part its keys back.
        let again = merged.clone().split(parts.len());
        for (part, again) in parts.iter().zip(&again) {
            assert_eq!(part.key_count(), again.key_count());
        }
        assert_eq!(WindowSnapshot::merge(again).expect("mergeable"), merged);
        *instances = merged
            .split(workers)
            .into_iter()
            .map(|part| KeyedWindows::restore(config.clone(), part).expect("restorable"))
            .collect();
    };
    for (index, event) in events.iter().enumerate() {
        for (_, workers) in rescales.iter().filter(|(at, _)| *at == index) {
            rescale(&mut instances, *workers);
        }
        let key = Value::Int(event.key);
        let owner = key_partition(&key, instances.len());
        let instance = &mut instances[owner];
        let watermark = instance.watermark();
        let admission = instance
            .add(&key, event.timestamp, &event.inputs(), &mut results)
            .expect("valid event");
        admissions.push((admission, watermark));
        generator.observe(event.timestamp);
        for instance in &mut instances {
            instance
                .advance_watermark(generator.current(), &mut results)
                .expect("advance");
        }
    }
    for (_, workers) in rescales.iter().filter(|(at, _)| *at >= events.len()) {
        rescale(&mut instances, *workers);
    }
    for instance in &mut instances {
        instance.finish(&mut results).expect("finish");
    }
    let mut results: Vec<String> = results.iter().map(|r| format!("{r:?}")).collect();
    results.sort();
    (results, admissions)
}

type WindowId = (i64, i64, i64);

/// The order of `min` and `max`, written independently: numbers by value (ints before equal
/// floats), everything else by `Value`'s order.
fn extreme_order(a: &Value, b: &Value) -> Ordering {
    let number = |value: &Value| match value {
        Value::Int(int) => Some((*int as f64, 0)),
        Value::Float(float) => Some((*float, 1)),
        _ => None,
    };
    match (number(a), number(b)) {
        (Some((x, x_float)), Some((y, y_float))) => x
            .partial_cmp(&y)
            .expect("no NaN generated")
            .then(x_float.cmp(&y_float)),
        _ => a.cmp(b),
    }
}

/// The aggregates over `members` (indexes into `events`), computed from scratch.
fn aggregate(events: &[Event], members: &[usize]) -> Vec<Value> {
    let numbers: Vec<&Value> = members
        .iter()
        .map(|&index| &events[index].number)
        .filter(|value| !value.is_null())
        .collect();
    let anys: Vec<(usize, &Value)> = members
        .iter()
        .map(|&index| (index, &events[index].any))
        .filter(|(_, value)| !value.is_null())
        .collect();
    let float_sum: f64 = numbers.iter().filter_map(|value| value.as_f64()).sum();
    let sum = if numbers.is_empty() {
        Value::Null
    } else if numbers.iter().all(|value| matches!(value, Value::Int(_))) {
        Value::Int(numbers.iter().filter_map(|value| value.as_i64()).sum())
    } else {
        Value::Float(float_sum)
    };
    let avg = if numbers.is_empty() {
        Value::Null
    } else {
        Value::Float(float_sum / numbers.len() as f64)
    };
    let values = || anys.iter().map(|(_, value)| *value);
    let min = values().min_by(|a, b| extreme_order(a, b)).cloned();
    let max = values().max_by(|a, b| extreme_order(a, b)).cloned();
    let distinct: BTreeSet<&Value> = values().collect();
    let stamp = |(index, _): &&(usize, &Value)| (events[*index].timestamp, *index);
    let first = anys
        .iter()
        .min_by_key(stamp)
        .map(|(_, value)| (*value).clone());
    let last = anys
        .iter()
        .max_by_key(stamp)
        .map(|(_, value)| (*value).clone());
    let numbered = || {
        members
            .iter()
            .map(|&index| &events[index])
            .filter(|event| !event.number.is_null())
    };
    // Every argument whose number is the extreme one, written as plainly as possible.
    let arg_extreme = |wanted: Ordering| {
        let extreme = numbered()
            .map(|event| &event.number)
            .reduce(|best, number| {
                if extreme_order(number, best) == wanted {
                    number
                } else {
                    best
                }
            });
        let arguments: BTreeSet<Value> = numbered()
            .filter(|event| Some(&event.number) == extreme)
            .map(|event| event.any.clone())
            .collect();
        Value::List(Arc::new(arguments.into_iter().collect()))
    };
    let mut descending: Vec<Value> = values().cloned().collect();
    descending.sort_by(|a, b| extreme_order(b, a));
    descending.truncate(TOP_K);
    let mut counts: BTreeMap<String, Value> = BTreeMap::new();
    for value in values() {
        let count = counts.entry(value.to_key_string()).or_insert(Value::Int(0));
        *count = Value::Int(count.as_i64().unwrap_or(0) + 1);
    }
    vec![
        Value::Int(members.len() as i64),
        sum,
        min.unwrap_or(Value::Null),
        max.unwrap_or(Value::Null),
        avg,
        Value::Int(distinct.len() as i64),
        first.unwrap_or(Value::Null),
        last.unwrap_or(Value::Null),
        Value::Map(Arc::new(counts)),
        arg_extreme(Ordering::Greater),
        arg_extreme(Ordering::Less),
        Value::List(Arc::new(descending)),
    ]
}

/// The windows `(key, start, end)` of every event kept by `keep`, with the indexes of their
/// events.
fn naive_windows(
    kind: WindowKind,
    events: &[Event],
    keep: impl Fn(usize, i64) -> bool,
) -> BTreeMap<WindowId, Vec<usize>> {
    let mut windows: BTreeMap<WindowId, Vec<usize>> = BTreeMap::new();
    match kind {
        WindowKind::Tumbling { size } => {
            for (index, event) in events.iter().enumerate() {
                let start = event.timestamp.div_euclid(size) * size;
                if keep(index, start + size) {
                    windows
                        .entry((event.key, start, start + size))
                        .or_default()
                        .push(index);
                }
            }
        }
        WindowKind::Sliding { size, slide } => {
            for (index, event) in events.iter().enumerate() {
                let mut start = event.timestamp.div_euclid(slide) * slide;
                while start + size > event.timestamp {
                    if keep(index, start + size) {
                        windows
                            .entry((event.key, start, start + size))
                            .or_default()
                            .push(index);
                    }
                    start -= slide;
                }
            }
        }
        WindowKind::Session { gap } => {
            let mut by_key: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
            for (index, event) in events.iter().enumerate() {
                by_key.entry(event.key).or_default().push(index);
            }
            for (key, mut indexes) in by_key {
                indexes.sort_by_key(|&index| events[index].timestamp);
                // Sessions [t, t + gap) merge when they intersect: an event joins the current
                // session when it starts before the session's end.
                let mut current: Option<(i64, i64, Vec<usize>)> = None;
                for index in indexes {
                    let timestamp = events[index].timestamp;
                    match &mut current {
                        Some((_, end, members)) if timestamp < *end => {
                            *end = (*end).max(timestamp + gap);
                            members.push(index);
                        }
                        _ => {
                            if let Some((start, end, members)) = current.take() {
                                windows.insert((key, start, end), members);
                            }
                            current = Some((timestamp, timestamp + gap, vec![index]));
                        }
                    }
                }
                if let Some((start, end, members)) = current {
                    windows.insert((key, start, end), members);
                }
            }
        }
    }
    windows
}

fn id(result: &WindowResult) -> WindowId {
    let key = result.key.as_i64().expect("int keys");
    (key, result.start, result.end)
}

fn config(kind: WindowKind, allowed_lateness: i64) -> WindowConfig {
    WindowConfig {
        kind,
        allowed_lateness,
        aggregates: AGGREGATES.to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Without late events, every window is emitted exactly once, in order of (end, start, key),
    /// with the values of a recomputation over its events.
    #[test]
    fn matches_naive_model(
        kind in window_kind(),
        (bound, events) in (0i64..=5).prop_flat_map(|bound| (Just(bound), events(bound))),
    ) {
        let run = run(&config(kind, 0), bound, &events, None);
        prop_assert!(run.admissions.iter().all(|(admission, _)| *admission == Admission::OnTime));
        prop_assert!(run.results.iter().all(|result| !result.is_update));
        for pair in run.results.windows(2) {
            let order = |result: &WindowResult| (result.end, result.start, result.key.clone());
            prop_assert!(order(&pair[0]) < order(&pair[1]), "out of order: {:?}", pair);
        }
        let emitted: BTreeMap<WindowId, Vec<Value>> = run
            .results
            .iter()
            .map(|result| (id(result), result.values.clone()))
            .collect();
        prop_assert_eq!(emitted.len(), run.results.len(), "a window was emitted twice");
        let expected: BTreeMap<WindowId, Vec<Value>> = naive_windows(kind, &events, |_, _| true)
            .into_iter()
            .map(|(window, members)| (window, aggregate(&events, &members)))
            .collect();
        prop_assert_eq!(emitted, expected);
    }

    /// With late events and allowed lateness, the last result emitted for each tumbling or
    /// sliding window covers exactly the events that arrived before the window was purged.
    #[test]
    fn late_events_update_their_windows(
        kind in window_kind().prop_filter("panes", |kind| !matches!(kind, WindowKind::Session { .. })),
        lateness in 0i64..=6,
        (bound, events) in (0i64..=3).prop_flat_map(|bound| (Just(bound), events(bound + 6))),
    ) {
        let run = run(&config(kind, lateness), bound, &events, None);
        let mut last: BTreeMap<WindowId, Vec<Value>> = BTreeMap::new();
        for result in &run.results {
            last.insert(id(result), result.values.clone());
        }
        let admitted = |index: usize, end: i64| {
            let (_, watermark) = run.admissions[index];
            end.saturating_add(lateness) > watermark
        };
        let expected: BTreeMap<WindowId, Vec<Value>> = naive_windows(kind, &events, admitted)
            .into_iter()
            .map(|(window, members)| (window, aggregate(&events, &members)))
            .collect();
        prop_assert_eq!(last, expected);
        for (index, event) in events.iter().enumerate() {
            let (admission, watermark) = run.admissions[index];
            let ends: Vec<i64> = naive_windows(kind, std::slice::from_ref(event), |_, _| true)
                .keys()
                .map(|(_, _, end)| *end)
                .collect();
            let expected = if ends.iter().all(|end| end + lateness <= watermark) {
                Admission::TooLate
            } else if ends.iter().any(|end| *end <= watermark && watermark < end + lateness) {
                Admission::LateUpdated
            } else {
                Admission::OnTime
            };
            prop_assert_eq!(admission, expected, "event {}: {:?}", index, event);
        }
    }

    /// Snapshotting, encoding, decoding and restoring in the middle of a stream (with late
    /// events and lateness) changes nothing.
    #[test]
    fn snapshot_restore_is_transparent(
        kind in window_kind(),
        lateness in 0i64..=6,
        (bound, events) in (0i64..=3).prop_flat_map(|bound| (Just(bound), events(bound + 6))),
        split in any::<prop::sample::Index>(),
    ) {
        let config = config(kind, lateness);
        let straight = run(&config, bound, &events, None);
        let at = split.index(events.len() + 1);
        let restored = run(&config, bound, &events, Some(at));
        prop_assert_eq!(straight, restored);
    }

    /// Keys spread over parallel instances, rescaled 1 -> 3 -> 2 through merged and split
    /// snapshots, give the results and admissions of one uninterrupted instance.
    #[test]
    fn parallel_instances_and_rescaling_are_transparent(
        kind in window_kind(),
        lateness in 0i64..=6,
        (bound, events) in (0i64..=3).prop_flat_map(|bound| (Just(bound), events(bound + 6))),
        first in any::<prop::sample::Index>(),
        second in any::<prop::sample::Index>(),
    ) {
        let config = config(kind, lateness);
        let straight = run(&config, bound, &events, None);
        let mut expected: Vec<String> = straight.results.iter().map(|r| format!("{r:?}")).collect();
        expected.sort();
        let a = first.index(events.len() + 1);
        let b = second.index(events.len() + 1).max(a);
        let (results, admissions) = run_parallel(&config, bound, &events, 1, &[(a, 3), (b, 2)]);
        prop_assert_eq!(&results, &expected);
        prop_assert_eq!(&admissions, &straight.admissions);
        let (results, admissions) = run_parallel(&config, bound, &events, 4, &[]);
        prop_assert_eq!(&results, &expected);
        prop_assert_eq!(&admissions, &straight.admissions);
    }
}

/// The key hash routes keys to workers and splits checkpoints: it must give the same value on
/// every machine and version, or a restored checkpoint's keys would land on the wrong worker.
#[test]
fn key_hash_is_stable() {
    let mut map = BTreeMap::new();
    map.insert("a".to_string(), Value::Int(1));
    let cases = [
        (Value::Null, 0xaf63bd4c8601b7df_u64),
        (Value::Bool(true), 0x82f2307b4e88e77),
        (Value::Int(42), 0x21fdd47119083f4f),
        (Value::Float(1.5), 0x7953ca97b9144203),
        (Value::str("auction-17"), 0xb03ea7a5596affdd),
        (
            Value::List(Arc::new(vec![Value::Int(1), Value::str("x")])),
            0x4a9d2122d7e8edf2,
        ),
        (Value::Map(Arc::new(map)), 0xa443f85c1181a8ff),
    ];
    let got: Vec<u64> = cases.iter().map(|(value, _)| key_hash(value)).collect();
    let want: Vec<u64> = cases.iter().map(|(_, hash)| *hash).collect();
    assert_eq!(got, want, "{got:#x?}");
    assert_eq!(key_partition(&Value::Int(42), 1), 0);
}

#[test]
fn merge_refuses_shared_keys_and_other_configs() {
    let config = config(WindowKind::Tumbling { size: 5 }, 0);
    let mut windows = KeyedWindows::new(config.clone()).expect("valid config");
    let mut out = Vec::new();
    let inputs = vec![Value::Int(1); AGGREGATES.len()];
    windows
        .add(&Value::Int(1), 3, &inputs, &mut out)
        .expect("added");
    let snapshot = windows.snapshot().expect("snapshot");
    assert!(WindowSnapshot::merge(vec![snapshot.clone(), snapshot.clone()]).is_err());
    assert!(WindowSnapshot::merge(Vec::new()).is_err());
    let other = KeyedWindows::new(WindowConfig {
        kind: WindowKind::Session { gap: 5 },
        ..config
    })
    .expect("valid config")
    .snapshot()
    .expect("snapshot");
    assert!(WindowSnapshot::merge(vec![snapshot, other]).is_err());
}

/// Sliding window shapes in milliseconds: 60 s by 1 s, and random pairs, some whose slide does
/// not divide their size (panes of their gcd).
fn long_sliding_kind() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        Just(WindowKind::Sliding {
            size: 60_000,
            slide: 1_000
        }),
        (1i64..=40)
            .prop_flat_map(|size| (Just(size), 1..=size))
            .prop_map(|(size, slide)| WindowKind::Sliding {
                size: size * 500,
                slide: slide * 500
            }),
        (1i64..=12)
            .prop_flat_map(|size| (Just(size), 1..=size))
            .prop_map(|(size, slide)| WindowKind::Sliding {
                size: size * 1_000,
                slide: slide * 300
            }),
    ]
}

/// Like [`events`], with up to 300 events whose timestamps are `scale` times larger (steps of
/// up to `4 * scale`), so that windows of many panes slide over several keys.
fn scaled_events(disorder: i64, scale: i64) -> impl Strategy<Value = Vec<Event>> {
    let event = (0i64..3, 0i64..=4, 0..=disorder, number(), any_value());
    (-30i64..30, prop::collection::vec(event, 0..300)).prop_map(move |(origin, raw)| {
        let mut base = origin * scale;
        raw.into_iter()
            .map(|(key, step, back, number, any)| {
                base += step * scale;
                Event {
                    key,
                    timestamp: base - back * scale,
                    number,
                    any,
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Sliding windows of many panes, combined incrementally as they slide, give the values of a
    /// recomputation over each window's events for every aggregate, exactly (the generated
    /// numbers are small ints and halves, whose sums are exact in any grouping): without late
    /// events, each window once; with late events and lateness, the last result of each window;
    /// and snapshot/restore mid-stream changes nothing.
    #[test]
    fn long_sliding_windows_match_naive_model(
        kind in long_sliding_kind(),
        lateness in prop_oneof![Just(0i64), 0i64..=6_000],
        (bound, events) in (0i64..=3).prop_flat_map(|bound| (Just(bound), scaled_events(bound + 6, 700))),
        split in any::<prop::sample::Index>(),
    ) {
        let scaled_bound = bound * 700;
        // In order (disorder within the bound): every window once, as the model computes it.
        let in_order: Vec<Event> = {
            let mut sorted = events.clone();
            sorted.sort_by_key(|event| event.timestamp);
            sorted
        };
        let straight = run(&config(kind, 0), 0, &in_order, None);
        prop_assert!(straight.results.iter().all(|result| !result.is_update));
        let emitted: BTreeMap<WindowId, Vec<Value>> = straight
            .results
            .iter()
            .map(|result| (id(result), result.values.clone()))
            .collect();
        prop_assert_eq!(emitted.len(), straight.results.len(), "a window was emitted twice");
        let expected: BTreeMap<WindowId, Vec<Value>> = naive_windows(kind, &in_order, |_, _| true)
            .into_iter()
            .map(|(window, members)| (window, aggregate(&in_order, &members)))
            .collect();
        prop_assert_eq!(emitted, expected);

        // Out of order, with late events and lateness: the last result of each window covers
        // the events admitted before it was purged.
        let config = config(kind, lateness);
        let late = run(&config, scaled_bound, &events, None);
        let mut last: BTreeMap<WindowId, Vec<Value>> = BTreeMap::new();
        for result in &late.results {
            last.insert(id(result), result.values.clone());
        }
        let admitted = |index: usize, end: i64| {
            let (_, watermark) = late.admissions[index];
            end.saturating_add(lateness) > watermark
        };
        let expected: BTreeMap<WindowId, Vec<Value>> = naive_windows(kind, &events, admitted)
            .into_iter()
            .map(|(window, members)| (window, aggregate(&events, &members)))
            .collect();
        prop_assert_eq!(last, expected);

        // Restored mid-stream from a snapshot: the same results and admissions.
        let at = split.index(events.len() + 1);
        let restored = run(&config, scaled_bound, &events, Some(at));
        prop_assert_eq!(late, restored);
    }
}

/// Feeds `events` like [`run`] without snapshots, advancing the watermark in batches of at most
/// `limit` results plus one timer time's; returns the results and the largest number of results
/// one call emitted.
fn run_bounded(
    config: &WindowConfig,
    bound: i64,
    events: &[Event],
    limit: usize,
) -> (Vec<WindowResult>, usize) {
    let mut windows = KeyedWindows::new(config.clone()).expect("valid config");
    let mut generator = BoundedOutOfOrderness::new(bound);
    let mut results = Vec::new();
    let mut largest = 0;
    let mut advance = |windows: &mut KeyedWindows, watermark: i64, results: &mut Vec<_>| loop {
        let before = results.len();
        let done = windows
            .advance_watermark_bounded(watermark, limit, results)
            .expect("advance");
        largest = largest.max(results.len() - before);
        if done {
            assert_eq!(windows.watermark(), watermark.max(windows.watermark()));
            break;
        }
        assert!(windows.watermark() < watermark);
    };
    for event in events {
        windows
            .add(
                &Value::Int(event.key),
                event.timestamp,
                &event.inputs(),
                &mut results,
            )
            .expect("valid event");
        generator.observe(event.timestamp);
        advance(&mut windows, generator.current(), &mut results);
    }
    loop {
        let before = results.len();
        let done = windows.finish_bounded(limit, &mut results).expect("finish");
        largest = largest.max(results.len() - before);
        if done {
            break;
        }
    }
    assert_eq!(windows.key_count(), 0, "finish dropped every key");
    (results, largest)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Advancing the watermark in bounded batches emits what advancing it at once does, in the
    /// same order, and no call emits more than `limit - 1` results plus one key's (tumbling
    /// and sliding windows) or one timer time's (sessions).
    #[test]
    fn bounded_advances_match_whole_advances(
        kind in prop_oneof![window_kind(), long_sliding_kind()],
        lateness in 0i64..=6,
        (bound, events) in (0i64..=3).prop_flat_map(|bound| (Just(bound), events(bound + 6))),
        limit in 0usize..=4,
    ) {
        let config = config(kind, lateness);
        let straight = run(&config, bound, &events, None);
        let (results, largest) = run_bounded(&config, bound, &events, limit);
        prop_assert_eq!(results, straight.results);
        // Three keys: one timer time fires at most one window of each.
        let most = match kind {
            WindowKind::Session { .. } => limit.max(1) - 1 + 3,
            _ => limit.max(1),
        };
        prop_assert!(largest <= most, "{} results in one call", largest);
    }
}
