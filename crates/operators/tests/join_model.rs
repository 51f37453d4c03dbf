//! The joins against a naive nested-loop join over the whole input: random streams of two
//! sides, disordered within the watermark bound, fed in random batches with watermarks, a
//! snapshot taken part way and restored (split by key among 1 or 3 instances, as parallel
//! workers hold it), then the end of input. The results must be the naive join's, as a
//! multiset, and none may lie behind a watermark the join forwarded before it. Each case runs
//! with the keys' states in memory and in a state store caching 0 to 2 keys as objects, the
//! checkpoint taken with one restored into the other, and now and then through sled: all give
//! the naive join's results and the same checkpoint bytes. A long stream checks that the rows
//! held never exceed what the bounds allow, in memory and in a store.

use std::sync::Arc;

use dataflow_event::{Event, Layout, Payload, Schema, Value};
use dataflow_operators::join::{
    tag, IntervalJoin, Join, JoinInputs, JoinType, Logic, LookupJoin, Side, WindowJoin,
};
use dataflow_operators::{Operator, Output};
use proptest::prelude::*;

// The harness's backends; the join has a driver of its own below (it splits a checkpoint among
// parallel instances and drains bounded emission), not the harness's `drive`.
#[allow(dead_code)]
mod harness;
use harness::Backend;

/// One input row: its side, key, event time and id (its place in the true input).
#[derive(Clone, Debug)]
struct Input {
    side: Side,
    key: i64,
    time: i64,
    id: i64,
}

impl Input {
    fn values(&self) -> Vec<Value> {
        vec![
            Value::Int(self.key),
            Value::Int(self.time),
            Value::Int(self.id),
        ]
    }

    fn event(&self) -> Event {
        let mut event = Event::row(self.time, self.values());
        event.key = Some(Value::Int(self.key));
        tag(self.side, event)
    }
}

/// A result as compared: key, event time, values.
type Result = (i64, i64, Vec<Value>);

fn inputs() -> JoinInputs {
    let schema = Schema::new([
        ("key", dataflow_event::FieldType::Int),
        ("time", dataflow_event::FieldType::Int),
        ("id", dataflow_event::FieldType::Int),
    ])
    .expect("a valid schema");
    let layout = Layout::Row(Arc::new(schema));
    JoinInputs {
        left: layout.clone(),
        right: layout,
    }
}

fn result(event: &Event) -> Result {
    let Some(Value::Int(key)) = event.key else {
        panic!("a join result without its key: {event:?}");
    };
    let Payload::Row(values) = &event.payload else {
        panic!("a join result without a row: {event:?}");
    };
    (key, event.event_time, values.clone())
}

fn nulls() -> Vec<Value> {
    vec![Value::Null; 3]
}

fn joined(left: Option<&Input>, right: Option<&Input>, extra: &[Value]) -> Result {
    let key = left.or(right).map_or(0, |row| row.key);
    let time = left
        .map(|row| row.time)
        .into_iter()
        .chain(right.map(|row| row.time))
        .max()
        .unwrap_or(0);
    let mut values = left.map_or_else(nulls, Input::values);
    values.extend(right.map_or_else(nulls, Input::values));
    values.extend_from_slice(extra);
    (key, time, values)
}

fn naive_interval(rows: &[Input], join: IntervalJoin) -> Vec<Result> {
    let (left, right) = sides(rows);
    let mut out = Vec::new();
    for a in &left {
        let mut matched = false;
        for b in &right {
            if a.key == b.key && b.time >= a.time + join.lower && b.time <= a.time + join.upper {
                matched = true;
                out.push(joined(Some(a), Some(b), &[]));
            }
        }
        if !matched && join.how.keeps_left() {
            out.push(joined(Some(a), None, &[]));
        }
    }
    for b in &right {
        let matched = left.iter().any(|a| {
            a.key == b.key && b.time >= a.time + join.lower && b.time <= a.time + join.upper
        });
        if !matched && join.how.keeps_right() {
            out.push(joined(None, Some(b), &[]));
        }
    }
    out
}

fn naive_window(rows: &[Input], join: WindowJoin) -> Vec<Result> {
    let mut starts: Vec<(i64, i64)> = Vec::new();
    for row in rows {
        let last = row.time - row.time.rem_euclid(join.slide);
        let mut start = last;
        while start + join.size > row.time {
            starts.push((row.key, start));
            start -= join.slide;
        }
    }
    starts.sort();
    starts.dedup();
    let mut out = Vec::new();
    for (key, start) in starts {
        let end = start + join.size;
        let extra = [Value::Int(start), Value::Int(end)];
        let inside = |row: &&Input| row.key == key && row.time >= start && row.time < end;
        let (left, right) = sides(rows);
        let left: Vec<&Input> = left.into_iter().filter(inside).collect();
        let right: Vec<&Input> = right.into_iter().filter(inside).collect();
        for a in &left {
            for b in &right {
                out.push(joined(Some(a), Some(b), &extra));
            }
        }
        if right.is_empty() && join.how.keeps_left() {
            out.extend(left.iter().map(|a| joined(Some(a), None, &extra)));
        }
        if left.is_empty() && join.how.keeps_right() {
            out.extend(right.iter().map(|b| joined(None, Some(b), &extra)));
        }
    }
    out
}

/// The lookup join over `arrived` (rows in arrival order): each left row meets the latest
/// version of its key at or before its time, of equal times the one that arrived last.
fn naive_lookup(arrived: &[Input], join: LookupJoin) -> Vec<Result> {
    let mut out = Vec::new();
    for a in arrived.iter().filter(|row| row.side == Side::Left) {
        let current = arrived
            .iter()
            .enumerate()
            .filter(|(_, row)| row.side != Side::Left && row.key == a.key && row.time <= a.time)
            .max_by_key(|(position, row)| (row.time, *position))
            .map(|(_, row)| row)
            .filter(|row| row.side == Side::Right);
        match current {
            Some(b) => {
                let mut result = joined(Some(a), Some(b), &[]);
                result.1 = a.time;
                out.push(result);
            }
            None if join.how.keeps_left() => out.push(joined(Some(a), None, &[])),
            None => {}
        }
    }
    out
}

fn sides(rows: &[Input]) -> (Vec<&Input>, Vec<&Input>) {
    rows.iter().partition(|row| row.side == Side::Left)
}

/// A stream: rows in true time order, and the order they arrive in (each at most `bound`
/// later than a row that arrives before it).
#[derive(Clone, Debug)]
struct Stream {
    arrived: Vec<Input>,
    bound: i64,
    batches: Vec<usize>,
    restore_at: usize,
    workers: usize,
    /// How many results a watermark or the end hands on per call.
    limit: usize,
}

fn stream(sides: Vec<Side>) -> impl Strategy<Value = Stream> {
    let count = sides.len();
    (
        proptest::collection::vec((0i64..4, 0i64..4, 0i64..6), count),
        0i64..8,
        proptest::collection::vec(1usize..6, 1..40),
        0usize..=count,
        prop_oneof![Just(1usize), Just(3usize)],
        prop_oneof![Just(usize::MAX), 1usize..4],
    )
        .prop_map(move |(rows, bound, batches, restore_at, workers, limit)| {
            let mut time = 0;
            let mut arrived: Vec<(i64, Input)> = rows
                .iter()
                .zip(&sides)
                .enumerate()
                .map(|(id, (&(key, step, jitter), &side))| {
                    time += step;
                    let arrival = time + jitter.min(bound);
                    (
                        arrival,
                        Input {
                            side,
                            key,
                            time,
                            id: id as i64,
                        },
                    )
                })
                .collect();
            arrived.sort_by_key(|(arrival, row)| (*arrival, row.id));
            Stream {
                arrived: arrived.into_iter().map(|(_, row)| row).collect(),
                bound,
                batches,
                restore_at,
                workers,
                limit,
            }
        })
}

fn side_strategy(lookup: bool) -> impl Strategy<Value = Vec<Side>> {
    let right = if lookup {
        prop_oneof![3 => Just(Side::Right), 1 => Just(Side::RightDelete)].boxed()
    } else {
        Just(Side::Right).boxed()
    };
    proptest::collection::vec(prop_oneof![Just(Side::Left), right], 0..60)
}

/// What a run gives: its results, the checkpoint taken part way, and each instance's
/// checkpoint just before the end of input.
struct Run {
    results: Vec<Result>,
    checkpoint: Vec<u8>,
    last: Vec<Vec<u8>>,
}

/// `backend` for the instance `instance` of the phase `phase` (before or after the restore):
/// a sled store gets a directory of its own.
fn instance_backend(backend: &Backend, phase: &str, instance: usize) -> Backend {
    match backend {
        Backend::Sled(dir, cache_keys) => {
            Backend::Sled(dir.join(format!("{phase}-{instance}")), *cache_keys)
        }
        other => other.clone(),
    }
}

/// Runs `stream` through the join `build` builds: one instance in `before` up to `restore_at`,
/// a snapshot split among `workers` instances (events routed by key) in `after` to the end.
/// Checks that no result lies behind the watermark forwarded before it.
fn run<L: Logic>(
    stream: &Stream,
    build: impl Fn() -> Join<L>,
    before: &Backend,
    after: &Backend,
) -> Run {
    let new = |backend: Backend| {
        let mut join = build();
        join.limit_emission(stream.limit);
        if let Some((store, cache_keys)) = backend.store() {
            join.keep_state_in_store(store, cache_keys);
        }
        join
    };
    let mut instances = vec![new(instance_backend(before, "before", 0))];
    let mut results = Vec::new();
    let mut checkpoint = Vec::new();
    // The watermark the join forwarded last: what a downstream operator has been told.
    let mut forwarded = i64::MIN;
    let mut max_time = i64::MIN;
    let mut position = 0;
    let mut batches = stream.batches.iter().cycle();
    let mut restored = false;
    let collect = |out: Output, forwarded: i64, results: &mut Vec<Result>| {
        assert!(out.failure.is_none(), "{:?}", out.failure);
        assert!(out.side.is_empty(), "no row is late: {:?}", out.side);
        for event in &out.events {
            assert!(
                event.event_time >= forwarded,
                "a result at {} behind the forwarded watermark {forwarded}",
                event.event_time
            );
            results.push(result(event));
        }
    };
    while position < stream.arrived.len() || !restored {
        if !restored && position >= stream.restore_at {
            let state = instances[0]
                .snapshot()
                .expect("snapshot")
                .expect("a join keeps state");
            let parts = instances[0]
                .split_snapshot(&state.state, stream.workers)
                .expect("split");
            // A sled directory has one owner at a time: the old store goes first.
            instances.clear();
            instances = parts
                .iter()
                .enumerate()
                .map(|(index, part)| {
                    let mut instance = new(instance_backend(after, "after", index));
                    instance.restore(part).expect("restore");
                    instance
                })
                .collect();
            checkpoint = state.state;
            restored = true;
            continue;
        }
        let size = (*batches.next().unwrap_or(&1)).min(stream.arrived.len() - position);
        let end = if restored {
            position + size
        } else {
            (position + size).min(stream.restore_at.max(position + 1))
        }
        .min(stream.arrived.len());
        let batch = &stream.arrived[position..end];
        position = end;
        let count = instances.len();
        let mut parts: Vec<Vec<Event>> = vec![Vec::new(); count];
        for row in batch {
            max_time = max_time.max(row.time);
            let worker = dataflow_window::key_partition(&Value::Int(row.key), count);
            parts[worker].push(row.event());
        }
        for (instance, part) in instances.iter_mut().zip(parts) {
            let mut out = Output::default();
            instance.process(part, &mut out);
            collect(out, forwarded, &mut results);
        }
        let watermark = max_time - stream.bound;
        let mut next = i64::MAX;
        for instance in &mut instances {
            loop {
                let mut out = Output::default();
                let forwards = instance.on_watermark(watermark, &mut out);
                // Bounded emission: past the limit, only the results of the key that
                // crossed it (a key's results are handed on whole).
                if let Some(tail) = out.events.get(stream.limit.saturating_sub(1)..) {
                    assert!(
                        tail.iter().all(|event| event.key == tail[0].key),
                        "a call went on to another key past its limit of {}",
                        stream.limit
                    );
                }
                collect(out, forwarded, &mut results);
                if !instance.pending() {
                    next = next.min(forwards);
                    break;
                }
            }
        }
        forwarded = forwarded.max(next);
    }
    let last = instances
        .iter()
        .map(|instance| {
            instance
                .snapshot()
                .expect("snapshot")
                .expect("a join keeps state")
                .state
        })
        .collect();
    for instance in &mut instances {
        loop {
            let mut out = Output::default();
            instance.finish(true, &mut out);
            collect(out, forwarded, &mut results);
            if !instance.pending() {
                break;
            }
        }
    }
    Run {
        results,
        checkpoint,
        last,
    }
}

/// Runs `stream` with the state in memory then in a store caching `cache_keys` keys, and the
/// reverse, and with `sled` through sled (caching one key) both before and after the restore:
/// each gives the naive join's results `want`, and all take the same checkpoints.
fn check_backends<L: Logic>(
    stream: &Stream,
    build: impl Fn() -> Join<L>,
    want: Vec<Result>,
    cache_keys: usize,
    sled: bool,
) {
    let store = Backend::Store(cache_keys);
    let memory_first = run(stream, &build, &Backend::Memory, &store);
    assert_same(memory_first.results, want.clone());
    let store_first = run(stream, &build, &store, &Backend::Memory);
    assert_same(store_first.results, want.clone());
    assert!(
        memory_first.checkpoint == store_first.checkpoint,
        "the checkpoints taken in memory and in a store differ"
    );
    assert!(
        memory_first.last == store_first.last,
        "the last checkpoints taken in a store and in memory differ"
    );
    if sled {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let sled = Backend::Sled(dir.path().join("state"), 1);
        let in_sled = run(stream, &build, &sled, &sled);
        assert_same(in_sled.results, want);
        assert!(
            in_sled.checkpoint == memory_first.checkpoint && in_sled.last == store_first.last,
            "the checkpoints taken in sled differ"
        );
    }
}

fn how() -> impl Strategy<Value = JoinType> {
    prop_oneof![
        Just(JoinType::Inner),
        Just(JoinType::Left),
        Just(JoinType::Right),
        Just(JoinType::Full),
    ]
}

fn assert_same(mut got: Vec<Result>, mut want: Vec<Result>) {
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

fn stage() -> Arc<str> {
    Arc::from("steps[0].join")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn interval_join_is_the_naive_join(
        stream in side_strategy(false).prop_flat_map(stream),
        lower in -6i64..4,
        width in 0i64..8,
        how in how(),
        cache_keys in 0usize..3,
        sled in prop::bool::weighted(0.05),
    ) {
        let join = IntervalJoin { lower, upper: lower + width, how };
        let want = naive_interval(&stream.arrived, join);
        check_backends(&stream, || Join::new(stage(), join, inputs()), want, cache_keys, sled);
    }

    #[test]
    fn window_join_is_the_naive_join(
        stream in side_strategy(false).prop_flat_map(stream),
        size in 1i64..10,
        slides in 1i64..4,
        how in how(),
        cache_keys in 0usize..3,
        sled in prop::bool::weighted(0.05),
    ) {
        let slide = (size / slides).max(1);
        let join = WindowJoin { size, slide, how };
        let want = naive_window(&stream.arrived, join);
        check_backends(&stream, || Join::new(stage(), join, inputs()), want, cache_keys, sled);
    }

    #[test]
    fn lookup_join_is_the_naive_join(
        stream in side_strategy(true).prop_flat_map(stream),
        outer in any::<bool>(),
        cache_keys in 0usize..3,
        sled in prop::bool::weighted(0.05),
    ) {
        let join = LookupJoin { how: if outer { JoinType::Left } else { JoinType::Inner } };
        let want = naive_lookup(&stream.arrived, join);
        check_backends(&stream, || Join::new(stage(), join, inputs()), want, cache_keys, sled);
    }
}

/// A long, slightly disordered stream over 50 keys, one row per millisecond alternating sides:
/// after every watermark, the rows a join holds are at most those its bounds can still need.
fn long_stream(lookup: bool) -> Vec<Input> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut rows: Vec<(i64, Input)> = (0..40_000)
        .map(|id| {
            let side = match (id % 2, lookup && next() % 5 == 0) {
                (0, _) => Side::Left,
                (_, true) => Side::RightDelete,
                _ => Side::Right,
            };
            let row = Input {
                side,
                key: (next() % 50) as i64,
                time: id,
                id,
            };
            ((id + (next() % 20) as i64), row)
        })
        .collect();
    rows.sort_by_key(|(arrival, row)| (*arrival, row.id));
    rows.into_iter().map(|(_, row)| row).collect()
}

/// Feeds `rows` in batches of 100 with a watermark 20 behind the latest time after each, and
/// checks after each that the join holds at most `allowed(watermark, rows fed)` rows; returns
/// the most it held.
fn held_at_most<L: Logic>(
    rows: &[Input],
    mut join: Join<L>,
    allowed: impl Fn(i64, &[Input]) -> usize,
) -> usize {
    let mut most = 0;
    let mut max_time = i64::MIN;
    for (index, batch) in rows.chunks(100).enumerate() {
        max_time = batch.iter().map(|row| row.time).fold(max_time, i64::max);
        let mut out = Output::default();
        join.process(batch.iter().map(Input::event).collect(), &mut out);
        let watermark = max_time - 20;
        join.on_watermark(watermark, &mut out);
        assert!(out.side.is_empty(), "no row is late");
        let fed = &rows[..(index + 1) * 100];
        let held = join.held_rows().expect("readable state");
        assert!(
            held <= allowed(watermark, fed),
            "{held} rows held at watermark {watermark}, more than the bounds allow ({})",
            allowed(watermark, fed)
        );
        assert!(join.key_count() <= 50);
        most = most.max(held);
    }
    most
}

/// `join` with its keys' states where `backend` keeps them.
fn in_backend<L: Logic>(mut join: Join<L>, backend: &Backend) -> Join<L> {
    if let Some((store, cache_keys)) = backend.store() {
        join.keep_state_in_store(store, cache_keys);
    }
    join
}

#[test]
fn join_state_is_bounded_by_the_bounds_not_the_stream() {
    // In memory, and in a store caching 2 of the 50 keys: the rows held are counted through
    // the store.
    for backend in [Backend::Memory, Backend::Store(2)] {
        state_is_bounded(&backend);
    }
}

fn state_is_bounded(backend: &Backend) {
    let rows = long_stream(false);
    let count = |fed: &[Input], side: Side, from: i64| {
        fed.iter()
            .filter(|row| row.side == side && row.time >= from)
            .count()
    };

    let (lower, upper) = (-30, 50);
    let interval = in_backend(
        Join::new(
            stage(),
            IntervalJoin {
                lower,
                upper,
                how: JoinType::Full,
            },
            inputs(),
        ),
        backend,
    );
    let most = held_at_most(&rows, interval, |watermark, fed| {
        count(fed, Side::Left, watermark - upper) + count(fed, Side::Right, watermark + lower)
    });
    // Rows of the last `upper` (left) and `-lower` (right) ms, with those the watermark has
    // not reached: a few hundred of 40 000.
    assert!(most < 400, "the interval join held {most} rows");

    let (size, slide) = (40, 10);
    let window = in_backend(
        Join::new(
            stage(),
            WindowJoin {
                size,
                slide,
                how: JoinType::Inner,
            },
            inputs(),
        ),
        backend,
    );
    let most = held_at_most(&rows, window, |watermark, fed| {
        let open = fed.iter().filter(|row| row.time > watermark - size).count();
        open * (size / slide) as usize
    });
    assert!(most < 1000, "the window join held {most} rows");

    let rows = long_stream(true);
    let lookup = in_backend(
        Join::new(
            stage(),
            LookupJoin {
                how: JoinType::Left,
            },
            inputs(),
        ),
        backend,
    );
    let most = held_at_most(&rows, lookup, |watermark, fed| {
        // One version before the watermark per key, and everything at or after it.
        50 + fed.iter().filter(|row| row.time >= watermark).count()
    });
    assert!(most < 400, "the lookup join held {most} rows");
}

#[test]
fn a_row_behind_the_watermark_is_a_late_record_and_joins_nothing() {
    let mut join = Join::new(
        stage(),
        IntervalJoin {
            lower: -10,
            upper: 10,
            how: JoinType::Full,
        },
        inputs(),
    );
    let row = |side, time, id| Input {
        side,
        key: 1,
        time,
        id,
    };
    let mut out = Output::default();
    join.process(vec![row(Side::Left, 100, 0).event()], &mut out);
    join.on_watermark(95, &mut out);
    // Within the bounds of the left row, but behind the watermark.
    join.process(vec![row(Side::Right, 90, 1).event()], &mut out);
    join.finish(true, &mut out);
    assert_eq!(out.side.len(), 1, "{:?}", out.side);
    assert_eq!(out.side[0].kind, dataflow_operators::SideKind::Late);
    assert!(out.side[0].reason.contains("behind the watermark"));
    // The left row met nothing: emitted alone at the end (full join), counted unmatched.
    let results: Vec<Result> = out.events.iter().map(result).collect();
    assert_eq!(
        results,
        vec![joined(Some(&row(Side::Left, 100, 0)), None, &[])]
    );
    assert_eq!(join.counters().unmatched_left, 1);
    assert_eq!(join.counters().matched, 0);
}
