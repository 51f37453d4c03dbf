//! Window state kept in a state store ([`StoreStates`] over the memory and sled stores) behaves
//! exactly like the in-memory default: the same admissions, results and snapshots for any
//! stream, across restarts from snapshots.

use dataflow_event::Value;
use dataflow_operators::window::StoreStates;
use dataflow_state::{MemoryStore, SledStore, StateSnapshot};
use dataflow_window::{
    AggregateKind, KeyStates, KeyedWindows, WindowConfig, WindowKind, WindowResult, WindowSnapshot,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// An event of key `key` at `time` with value `value`.
    Add { key: u8, time: i64, value: i64 },
    /// The watermark moves up by this much.
    Advance(i64),
    /// Snapshot, then restore into a new store.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, 0i64..400, -5i64..50).prop_map(|(key, time, value)| Op::Add { key, time, value }),
        2 => (0i64..40).prop_map(Op::Advance),
        1 => Just(Op::Restart),
    ]
}

fn kind() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        (1i64..50).prop_map(|size| WindowKind::Tumbling { size }),
        (1i64..6, 1i64..20).prop_map(|(panes, slide)| WindowKind::Sliding {
            size: panes * slide,
            slide
        }),
        (1i64..40).prop_map(|gap| WindowKind::Session { gap }),
    ]
}

fn config(kind: WindowKind, lateness: i64) -> WindowConfig {
    WindowConfig {
        kind,
        allowed_lateness: lateness,
        aggregates: vec![
            AggregateKind::Count,
            AggregateKind::Sum,
            AggregateKind::Min,
            AggregateKind::First,
            AggregateKind::Last,
            AggregateKind::CountDistinct,
        ],
    }
}

/// What a run of `ops` produced: every admission and result, and the final snapshot.
#[derive(Debug, PartialEq)]
struct Run {
    admissions: Vec<String>,
    results: Vec<WindowResult>,
    snapshots: Vec<WindowSnapshot>,
}

/// Runs `ops`; with a `limit`, advances and finishes in bounded batches of that many results
/// (`advance_watermark_bounded`, `finish_bounded`), called until done.
fn run<S: KeyStates>(
    config: &WindowConfig,
    ops: &[Op],
    limit: Option<usize>,
    mut fresh: impl FnMut() -> S,
) -> Run {
    let mut windows = KeyedWindows::with_states(config.clone(), fresh()).expect("valid config");
    let mut watermark = 0;
    let mut run = Run {
        admissions: Vec::new(),
        results: Vec::new(),
        snapshots: Vec::new(),
    };
    for op in ops {
        match op {
            Op::Add { key, time, value } => {
                let inputs = vec![
                    Value::Null,
                    Value::Int(*value),
                    Value::Int(*value),
                    Value::Int(*value),
                    Value::Int(*value),
                    Value::Int(*value % 3),
                ];
                let admission = windows.add(
                    &Value::str(&format!("k{key}")),
                    *time,
                    &inputs,
                    &mut run.results,
                );
                run.admissions.push(format!("{admission:?}"));
            }
            Op::Advance(by) => {
                watermark += by;
                match limit {
                    None => windows
                        .advance_watermark(watermark, &mut run.results)
                        .expect("advance"),
                    Some(limit) => {
                        while !windows
                            .advance_watermark_bounded(watermark, limit, &mut run.results)
                            .expect("advance")
                        {}
                    }
                }
            }
            Op::Restart => {
                let snapshot = windows.snapshot().expect("snapshot");
                run.snapshots.push(snapshot.clone());
                // The old store goes first: a sled directory has one owner at a time.
                drop(windows.into_states());
                windows = KeyedWindows::restore_with(config.clone(), fresh(), snapshot)
                    .expect("restorable");
            }
        }
    }
    run.snapshots.push(windows.snapshot().expect("snapshot"));
    match limit {
        None => windows.finish(&mut run.results).expect("finish"),
        Some(limit) => {
            while !windows
                .finish_bounded(limit, &mut run.results)
                .expect("finish")
            {}
        }
    }
    assert_eq!(windows.key_count(), 0);
    run
}

fn memory_store(cache_keys: usize) -> impl FnMut() -> StoreStates {
    move || {
        StoreStates::new(Box::new(MemoryStore::new()), "steps[1].window")
            .with_cache_capacity(cache_keys)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn windows_in_a_memory_store_match_the_heap(
        kind in kind(),
        lateness in 0i64..30,
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let config = config(kind, lateness);
        let heap = run(&config, &ops, None, dataflow_window::HeapStates::default);
        // No cache (every update reads and writes the store), a cache smaller than the keys
        // (spills), and the default one; each advancing at once and in batches of one result.
        for cache_keys in [0, 3, dataflow_operators::window::DEFAULT_CACHE_KEYS] {
            for limit in [None, Some(1)] {
                let stored = run(&config, &ops, limit, memory_store(cache_keys));
                prop_assert_eq!(&heap, &stored, "cache of {} keys, limit {:?}", cache_keys, limit);
            }
        }
    }
}

/// The same through sled, with every restart rebuilding the sled directory from the snapshot,
/// as a processor start does.
#[test]
fn windows_in_sled_match_the_heap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(12));
    let strategy = (kind(), 0i64..30, prop::collection::vec(op(), 1..150));
    runner
        .run(&strategy, |(kind, lateness, ops)| {
            let config = config(kind, lateness);
            let heap = run(&config, &ops, None, dataflow_window::HeapStates::default);
            let sled = run(&config, &ops, Some(1), || {
                let store =
                    SledStore::rebuild(&path, &StateSnapshot::default()).expect("sled store");
                // A small cache: the states go through sled.
                StoreStates::new(Box::new(store), "steps[1].window").with_cache_capacity(2)
            });
            prop_assert_eq!(heap, sled);
            Ok(())
        })
        .expect("sled matches the heap");
}
