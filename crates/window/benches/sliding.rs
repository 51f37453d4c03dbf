//! Times `KeyedWindows` on sliding windows of 60 s by 1 s and 10 s by 2 s, with a tumbling 10 s
//! window as a reference, for each of count, sum, avg, min, max and count_by:
//! `cargo bench -p dataflow-window --bench sliding -- --warm-up-time 1 --measurement-time 3`.
//!
//! Every iteration feeds `EVENTS` events over `KEYS` keys, 10 ms apart in event time, advances
//! the watermark (bounded out of orderness of 1 s) every 100 events, then finishes. Criterion
//! reports time per event; the number of output rows of each case is printed once, so that time
//! per row is the iteration time divided by it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataflow_event::Value;
use dataflow_window::{AggregateKind, KeyedWindows, WindowConfig, WindowKind, WindowResult};

const EVENTS: u64 = 20_000;
const KEYS: i64 = 100;

/// `(key, timestamp, input)` of every event, as a bid stream: keys spread, prices varied.
fn events() -> Vec<(Value, i64, Value)> {
    (0..EVENTS as i64)
        .map(|i| {
            let key = Value::Int(i * 7919 % KEYS);
            let input = Value::Int(100 + i * 31 % 10_000);
            (key, i * 10, input)
        })
        .collect()
}

/// Feeds every event, advancing the watermark as it goes, then finishes; returns the number of
/// rows emitted.
fn run(config: &WindowConfig, events: &[(Value, i64, Value)]) -> usize {
    let mut windows = KeyedWindows::new(config.clone()).expect("valid config");
    let mut out: Vec<WindowResult> = Vec::new();
    let mut rows = 0;
    for (index, (key, timestamp, input)) in events.iter().enumerate() {
        windows
            .add(key, *timestamp, std::slice::from_ref(input), &mut out)
            .expect("valid event");
        if index % 100 == 99 {
            windows
                .advance_watermark(timestamp - 1000, &mut out)
                .expect("advance");
            rows += out.len();
            black_box(&out);
            out.clear();
        }
    }
    windows.finish(&mut out).expect("finish");
    rows + out.len()
}

fn sliding(c: &mut Criterion) {
    let events = events();
    let kinds = [
        (
            "sliding_60s_1s",
            WindowKind::Sliding {
                size: 60_000,
                slide: 1_000,
            },
        ),
        (
            "sliding_10s_2s",
            WindowKind::Sliding {
                size: 10_000,
                slide: 2_000,
            },
        ),
        ("tumbling_10s", WindowKind::Tumbling { size: 10_000 }),
    ];
    let aggregates = [
        AggregateKind::Count,
        AggregateKind::Sum,
        AggregateKind::Avg,
        AggregateKind::Min,
        AggregateKind::Max,
        AggregateKind::CountBy,
    ];
    let mut group = c.benchmark_group("windows");
    group.throughput(Throughput::Elements(EVENTS));
    for (name, kind) in kinds {
        for aggregate in aggregates {
            let config = WindowConfig {
                kind,
                allowed_lateness: 0,
                aggregates: vec![aggregate],
            };
            let rows = run(&config, &events);
            println!(
                "{name}/{}: {rows} rows per iteration of {EVENTS} events",
                aggregate.name()
            );
            group.bench_with_input(
                BenchmarkId::new(name, aggregate.name()),
                &config,
                |b, config| b.iter(|| run(config, &events)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, sliding);
criterion_main!(benches);
