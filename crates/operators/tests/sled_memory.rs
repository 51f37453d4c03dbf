//! A window keeping many keys in sled, all of them firing at once at the end of the input,
//! stays under memory bounds: 100,000 keys in one tumbling window grow the process's peak RSS
//! (`VmHWM` of `/proc/self/status`, which only grows) by less than one sled entry per key takes
//! while they are fed, and the end of the input, firing them all, grows it by hardly anything
//! more, where firing the keys of its one timer time in one call held every result at once.
//!
//! Measured in this debug build, with 1,024 keys cached as objects: feeding the keys grew the
//! peak by 13.4 MiB in 32,768 buckets, by 29.0 MiB with one sled entry per key; the end grew it
//! by 0.2 MiB more firing a batch of keys at a time, by 24.9 MiB more firing them all in one
//! call.
//!
//! Alone in its test binary, so that no other test's memory is counted. Linux only (`/proc`).

use std::sync::Arc;

use dataflow_event::{Event, FieldType, Layout, Payload, Value};
use dataflow_operators::{Operator, Output, TimeDomain, WindowAggregate};
use dataflow_window::{AggregateKind, WindowConfig, WindowKind};

const KEYS: i64 = 100_000;
/// What feeding the keys may add to the peak.
const FEED_BOUND_KIB: u64 = 20 * 1024;
/// What firing them all at the end may add to the peak reached feeding them.
const END_BOUND_KIB: u64 = 6 * 1024;

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
    window.keep_state_in(dir, dataflow_state::DEFAULT_CACHE_BYTES, 1_024);
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
    // Every key once, in batches of 1,024 events, all in the first hour: one window per key,
    // all due at the same time.
    let mut batch = Vec::with_capacity(1024);
    let mut emitted = 0;
    for key in 0..KEYS {
        batch.push(Event {
            event_time: key % 1_000,
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
    let mut out = Output::default();
    window.process(batch, &mut out);
    emitted += results(out);
    assert_eq!(emitted, 0, "nothing fires before the end");
    assert_eq!(window.key_count(), KEYS as usize);
    let fed = high_water_kib();
    let grown = fed.saturating_sub(before);
    assert!(
        grown < FEED_BOUND_KIB,
        "the peak RSS grew by {grown} KiB feeding {KEYS} keys (bound {FEED_BOUND_KIB} KiB)"
    );
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
    let grown = high_water_kib().saturating_sub(fed);
    assert!(
        grown < END_BOUND_KIB,
        "the peak RSS grew by {grown} KiB more firing {KEYS} keys (bound {END_BOUND_KIB} KiB)"
    );
}
