//! A window that fires much at once (a watermark jump, the end of input) emits it in bounded
//! batches, pending between them, and the batches together are exactly what one unbounded
//! call emits.

use std::sync::Arc;

use dataflow_event::{Event, FieldType, Layout, Payload, Value};
use dataflow_operators::{Operator, Output, TimeDomain, WindowAggregate};
use dataflow_window::{AggregateKind, WindowConfig, WindowKind};

const KEYS: i64 = 200;

fn window(limit: usize) -> WindowAggregate {
    let config = WindowConfig {
        kind: WindowKind::Sliding {
            size: 60_000,
            slide: 1_000,
        },
        allowed_lateness: 0,
        aggregates: vec![AggregateKind::Count],
    };
    let (mut window, _) = WindowAggregate::new(
        Arc::from("steps[0].window"),
        config,
        vec![("count".to_string(), AggregateKind::Count, None)],
        TimeDomain::Event,
        true,
        Some(FieldType::Int),
        Layout::Object,
    )
    .expect("valid window");
    window.limit_emission(limit);
    window
}

/// One event per key per second for the first minute.
fn input() -> Vec<Event> {
    (0..60_000)
        .step_by(1_000)
        .flat_map(|time| {
            (0..KEYS).map(move |key| Event {
                event_time: time,
                key: Some(Value::Int(key)),
                payload: Payload::Object(Default::default()),
                ..Event::default()
            })
        })
        .collect()
}

/// The rows of the results, without their processing time.
fn rows(out: &Output) -> Vec<Payload> {
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert!(out.side.is_empty(), "{:?}", out.side);
    out.events
        .iter()
        .map(|event| event.payload.clone())
        .collect()
}

/// Calls `control` until the window is no longer pending; returns every row, the most one
/// call emitted, and the number of calls.
fn drain(
    window: &mut WindowAggregate,
    mut control: impl FnMut(&mut WindowAggregate, &mut Output),
) -> (Vec<Payload>, usize, usize) {
    let mut all = Vec::new();
    let mut largest = 0;
    let mut calls = 0;
    loop {
        let mut out = Output::default();
        control(window, &mut out);
        calls += 1;
        let batch = rows(&out);
        largest = largest.max(batch.len());
        all.extend(batch);
        if !window.pending() {
            return (all, largest, calls);
        }
        assert!(calls < 100_000, "the window never finished emitting");
    }
}

#[test]
fn a_watermark_jump_and_the_end_emit_in_bounded_batches() {
    let run = |limit: usize| {
        let mut window = window(limit);
        let mut out = Output::default();
        window.process(input(), &mut out);
        assert!(rows(&out).is_empty(), "nothing fires before a watermark");
        // Past the first 90 windows, then to the end.
        let (jump, jump_largest, jump_calls) = drain(&mut window, |window, out| {
            assert_eq!(window.on_watermark(90_000, out), 89_999);
        });
        let (end, end_largest, end_calls) = drain(&mut window, |window, out| {
            window.finish(true, out);
        });
        assert_eq!(window.key_count(), 0);
        (
            jump,
            end,
            jump_largest.max(end_largest),
            jump_calls + end_calls,
        )
    };

    let (jump, end, largest, calls) = run(usize::MAX);
    assert_eq!(calls, 2, "unbounded, each control is one call");
    // Windows ending at 1 s .. 90 s, then 91 s .. 119 s (the last one holding data), per key.
    assert_eq!(jump.len() as i64, 90 * KEYS);
    assert_eq!(end.len() as i64, 29 * KEYS);
    assert_eq!(largest as i64, 90 * KEYS);

    for limit in [1, 64, 1000] {
        let (bounded_jump, bounded_end, largest, calls) = run(limit);
        assert_eq!(bounded_jump, jump, "limit {limit}");
        assert_eq!(bounded_end, end, "limit {limit}");
        // At most `limit - 1` results, plus one key's: the keys of one timer time (200 here)
        // are split across calls.
        assert!(
            largest <= limit,
            "limit {limit}: {largest} results in one call"
        );
        assert!(calls > 2, "limit {limit}: emitted at once");
    }
}

#[test]
fn a_pending_window_goes_on_whatever_watermark_it_is_given() {
    let mut window = window(10);
    let mut out = Output::default();
    window.process(input(), &mut out);
    window.on_watermark(90_000, &mut out);
    assert!(window.pending());
    let first = rows(&out).len();
    // Called again, even with an older watermark, it goes on towards 90 s and no further.
    let mut out = Output::default();
    window.on_watermark(10, &mut out);
    let second = rows(&out).len();
    assert!(second > 0, "a pending window goes on");
    let (rest, _, _) = drain(&mut window, |window, out| {
        window.on_watermark(10, out);
    });
    assert_eq!(first + second + rest.len(), 90 * KEYS as usize);
}
