//! Golden tests: scripted streams driven through the watermark helpers into `KeyedWindows`, with
//! the exact list of results (and too-late events) they must produce.
//!
//! Every script runs twice: once straight, and once with the windows snapshotted, encoded as
//! JSON, decoded and restored after every step; both runs must give the expected list.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflow_event::Value;
use dataflow_window::{
    Admission, AggregateKind, BoundedOutOfOrderness, KeyedWindows, WatermarkCombiner, WindowConfig,
    WindowKind, WindowResult, WindowSnapshot,
};

/// A stream: events on one or more inputs, each with a bounded-out-of-orderness watermark,
/// combined by a `WatermarkCombiner`.
struct Script {
    /// The out-of-orderness bound of every input.
    bound: i64,
    inputs: usize,
    idle_timeout: Option<i64>,
    steps: Vec<Step>,
}

enum Step {
    /// An event on `input`, arriving at processing time `now`. After it is added, its input's
    /// watermark is updated and the combined watermark given to the windows.
    Event {
        input: usize,
        now: i64,
        key: &'static str,
        timestamp: i64,
        inputs: Vec<Value>,
    },
    /// Idle detection at processing time `now`.
    CheckIdle { now: i64 },
    /// An input ends.
    EndInput(usize),
    /// The whole stream ends: `KeyedWindows::finish`.
    Finish,
    /// Asserts the combined watermark.
    Watermark(i64),
}

#[derive(Debug, PartialEq)]
enum Out {
    Result {
        key: String,
        start: i64,
        end: i64,
        values: Vec<Value>,
        is_update: bool,
    },
    TooLate {
        key: String,
        timestamp: i64,
    },
}

impl From<WindowResult> for Out {
    fn from(result: WindowResult) -> Out {
        Out::Result {
            key: result.key.to_string(),
            start: result.start,
            end: result.end,
            values: result.values,
            is_update: result.is_update,
        }
    }
}

fn run(config: &WindowConfig, script: &Script, snapshot_every_step: bool) -> Vec<Out> {
    let mut windows = KeyedWindows::new(config.clone()).expect("valid config");
    let mut generators = vec![BoundedOutOfOrderness::new(script.bound); script.inputs];
    let mut combiner = WatermarkCombiner::new(script.inputs, script.idle_timeout);
    let mut trace = Vec::new();
    let mut out = Vec::new();
    for step in &script.steps {
        match step {
            Step::Event {
                input,
                now,
                key,
                timestamp,
                inputs,
            } => {
                let admission = windows
                    .add(&Value::str(key), *timestamp, inputs, &mut out)
                    .expect("valid event");
                match admission {
                    Admission::TooLate => {
                        assert!(out.is_empty());
                        trace.push(Out::TooLate {
                            key: key.to_string(),
                            timestamp: *timestamp,
                        });
                    }
                    Admission::LateUpdated => {
                        assert!(!out.is_empty() && out.iter().all(|result| result.is_update));
                    }
                    Admission::OnTime => assert!(out.is_empty()),
                }
                generators[*input].observe(*timestamp);
                combiner.update(*input, generators[*input].current(), *now);
                windows
                    .advance_watermark(combiner.current(), &mut out)
                    .expect("advance");
            }
            Step::CheckIdle { now } => {
                combiner.check_idle(*now);
                windows
                    .advance_watermark(combiner.current(), &mut out)
                    .expect("advance");
            }
            Step::EndInput(input) => {
                combiner.finish(*input);
                windows
                    .advance_watermark(combiner.current(), &mut out)
                    .expect("advance");
            }
            Step::Finish => windows.finish(&mut out).expect("finish"),
            Step::Watermark(expected) => assert_eq!(combiner.current(), *expected),
        }
        trace.extend(out.drain(..).map(Out::from));
        if snapshot_every_step {
            let snapshot = windows.snapshot().expect("snapshot");
            let json = serde_json::to_string(&snapshot).expect("encodable snapshot");
            let decoded: WindowSnapshot = serde_json::from_str(&json).expect("decodable");
            assert_eq!(decoded, snapshot);
            windows = KeyedWindows::restore(config.clone(), decoded).expect("restorable");
            assert_eq!(windows.snapshot().expect("snapshot"), snapshot);
        }
    }
    trace
}

/// Runs `script` through windows of `config` and asserts the results.
fn check(config: WindowConfig, script: Script, expected: Vec<Out>) {
    assert_eq!(run(&config, &script, false), expected, "straight run");
    assert_eq!(run(&config, &script, true), expected, "run with snapshots");
}

/// A config computing `[count, sum]`.
fn count_sum(kind: WindowKind, allowed_lateness: i64) -> WindowConfig {
    WindowConfig {
        kind,
        allowed_lateness,
        aggregates: vec![AggregateKind::Count, AggregateKind::Sum],
    }
}

/// An event on input 0 at processing time 0 for a `count_sum` config.
fn ev(key: &'static str, timestamp: i64, amount: i64) -> Step {
    on(0, 0, key, timestamp, amount)
}

/// An event on `input` at processing time `now` for a `count_sum` config.
fn on(input: usize, now: i64, key: &'static str, timestamp: i64, amount: i64) -> Step {
    Step::Event {
        input,
        now,
        key,
        timestamp,
        inputs: vec![Value::Null, Value::Int(amount)],
    }
}

fn script(bound: i64, steps: Vec<Step>) -> Script {
    Script {
        bound,
        inputs: 1,
        idle_timeout: None,
        steps,
    }
}

/// Two inputs with an idle timeout of 100.
fn two_inputs(bound: i64, steps: Vec<Step>) -> Script {
    Script {
        bound,
        inputs: 2,
        idle_timeout: Some(100),
        steps,
    }
}

fn result(key: &str, start: i64, end: i64, values: Vec<Value>, is_update: bool) -> Out {
    Out::Result {
        key: key.to_string(),
        start,
        end,
        values,
        is_update,
    }
}

/// A fired `[count, sum]` result.
fn fire(key: &str, start: i64, end: i64, count: i64, sum: i64) -> Out {
    result(
        key,
        start,
        end,
        vec![Value::Int(count), Value::Int(sum)],
        false,
    )
}

/// An updated `[count, sum]` result.
fn update(key: &str, start: i64, end: i64, count: i64, sum: i64) -> Out {
    result(
        key,
        start,
        end,
        vec![Value::Int(count), Value::Int(sum)],
        true,
    )
}

fn too_late(key: &str, timestamp: i64) -> Out {
    Out::TooLate {
        key: key.to_string(),
        timestamp,
    }
}

const TUMBLING: WindowKind = WindowKind::Tumbling { size: 10 };
const SLIDING: WindowKind = WindowKind::Sliding { size: 10, slide: 5 };
const SESSION: WindowKind = WindowKind::Session { gap: 10 };

// Tumbling windows of 10.

#[test]
fn tumbling_out_of_order_within_bound() {
    check(
        count_sum(TUMBLING, 0),
        script(
            5,
            vec![
                ev("a", 1, 1),
                ev("b", 3, 10),
                ev("a", 12, 2),
                Step::Watermark(7),
                ev("a", 8, 4),
                ev("a", 16, 8),
                Step::Watermark(11),
                ev("b", 11, 1),
                ev("a", 25, 1),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", 0, 10, 2, 5),
            fire("b", 0, 10, 1, 10),
            fire("a", 10, 20, 2, 10),
            fire("b", 10, 20, 1, 1),
            fire("a", 20, 30, 1, 1),
        ],
    );
}

#[test]
fn tumbling_late_within_lateness() {
    check(
        count_sum(TUMBLING, 5),
        script(
            0,
            vec![
                ev("a", 2, 1),
                ev("a", 11, 1),
                ev("a", 5, 10),
                ev("a", 14, 1),
                ev("a", 9, 100),
                ev("a", 15, 1),
                ev("a", 3, 7),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", 0, 10, 1, 1),
            update("a", 0, 10, 2, 11),
            update("a", 0, 10, 3, 111),
            too_late("a", 3),
            fire("a", 10, 20, 3, 3),
        ],
    );
}

#[test]
fn tumbling_late_beyond_lateness() {
    check(
        count_sum(TUMBLING, 0),
        script(
            0,
            vec![
                ev("a", 5, 1),
                ev("a", 12, 2),
                ev("a", 9, 4),
                ev("a", 10, 8),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", 0, 10, 1, 1),
            too_late("a", 9),
            fire("a", 10, 20, 2, 10),
        ],
    );
}

#[test]
fn tumbling_idle_input() {
    check(
        count_sum(TUMBLING, 0),
        two_inputs(
            0,
            vec![
                on(0, 0, "a", 1, 1),
                on(1, 0, "b", 2, 2),
                on(0, 50, "a", 15, 4),
                on(0, 100, "a", 25, 8),
                Step::Watermark(2),
                Step::CheckIdle { now: 150 },
                Step::Watermark(25),
                // Input 1 resumes behind: the watermark stays, and input 1 holds it back.
                on(1, 160, "b", 22, 16),
                on(0, 170, "a", 40, 32),
                Step::Watermark(25),
                on(1, 180, "b", 33, 64),
                Step::Watermark(33),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", 0, 10, 1, 1),
            fire("b", 0, 10, 1, 2),
            fire("a", 10, 20, 1, 4),
            fire("a", 20, 30, 1, 8),
            fire("b", 20, 30, 1, 16),
            fire("b", 30, 40, 1, 64),
            fire("a", 40, 50, 1, 32),
        ],
    );
}

#[test]
fn tumbling_end_of_input() {
    check(
        count_sum(TUMBLING, 0),
        script(
            100,
            vec![
                ev("c", 5, 1),
                ev("a", 15, 2),
                ev("b", 5, 4),
                ev("a", 3, 8),
                Step::Finish,
                Step::Finish,
            ],
        ),
        vec![
            fire("a", 0, 10, 1, 8),
            fire("b", 0, 10, 1, 4),
            fire("c", 0, 10, 1, 1),
            fire("a", 10, 20, 1, 2),
        ],
    );
}

// Sliding windows of 10 every 5.

#[test]
fn sliding_out_of_order_within_bound() {
    check(
        count_sum(SLIDING, 0),
        script(
            3,
            vec![
                ev("b", 2, 100),
                ev("a", 1, 1),
                ev("a", 6, 2),
                ev("a", 4, 4),
                ev("a", 9, 8),
                Step::Watermark(6),
                ev("a", 13, 16),
                Step::Watermark(10),
                // Late for [0, 10), purged, but on time for [5, 15).
                ev("a", 8, 32),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", -5, 5, 2, 5),
            fire("b", -5, 5, 1, 100),
            fire("a", 0, 10, 4, 15),
            fire("b", 0, 10, 1, 100),
            fire("a", 5, 15, 4, 58),
            fire("a", 10, 20, 1, 16),
        ],
    );
}

#[test]
fn sliding_late_within_lateness() {
    check(
        count_sum(SLIDING, 5),
        script(
            0,
            vec![
                ev("a", 1, 1),
                ev("a", 11, 2),
                ev("a", 3, 4),
                ev("a", 7, 8),
                ev("a", 16, 16),
                ev("a", 2, 32),
                ev("a", 9, 64),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", -5, 5, 1, 1),
            fire("a", 0, 10, 1, 1),
            update("a", 0, 10, 2, 5),
            update("a", 0, 10, 3, 13),
            fire("a", 5, 15, 2, 10),
            too_late("a", 2),
            update("a", 5, 15, 3, 74),
            fire("a", 10, 20, 2, 18),
            fire("a", 15, 25, 1, 16),
        ],
    );
}

#[test]
fn sliding_late_beyond_lateness() {
    check(
        count_sum(SLIDING, 0),
        script(
            0,
            vec![
                ev("a", 3, 1),
                ev("a", 12, 2),
                ev("a", 4, 4),
                ev("a", 7, 8),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", -5, 5, 1, 1),
            fire("a", 0, 10, 1, 1),
            too_late("a", 4),
            fire("a", 5, 15, 2, 10),
            fire("a", 10, 20, 1, 2),
        ],
    );
}

#[test]
fn sliding_idle_input() {
    check(
        count_sum(SLIDING, 0),
        two_inputs(
            0,
            vec![
                on(0, 0, "a", 1, 1),
                on(1, 0, "b", 2, 2),
                on(0, 50, "a", 12, 4),
                Step::Watermark(2),
                Step::CheckIdle { now: 150 },
                Step::Watermark(12),
                on(1, 160, "b", 13, 8),
                on(0, 170, "a", 30, 16),
                Step::Watermark(13),
                on(1, 180, "b", 40, 32),
                Step::Watermark(30),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", -5, 5, 1, 1),
            fire("b", -5, 5, 1, 2),
            fire("a", 0, 10, 1, 1),
            fire("b", 0, 10, 1, 2),
            fire("a", 5, 15, 1, 4),
            fire("b", 5, 15, 1, 8),
            fire("a", 10, 20, 1, 4),
            fire("b", 10, 20, 1, 8),
            fire("a", 25, 35, 1, 16),
            fire("a", 30, 40, 1, 16),
            fire("b", 35, 45, 1, 32),
            fire("b", 40, 50, 1, 32),
        ],
    );
}

#[test]
fn sliding_end_of_input() {
    check(
        count_sum(SLIDING, 0),
        script(
            100,
            vec![
                ev("c", 5, 1),
                ev("a", 15, 2),
                ev("b", 5, 4),
                ev("a", 3, 8),
                Step::EndInput(0),
                Step::Watermark(i64::MAX),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", -5, 5, 1, 8),
            fire("a", 0, 10, 1, 8),
            fire("b", 0, 10, 1, 4),
            fire("c", 0, 10, 1, 1),
            fire("b", 5, 15, 1, 4),
            fire("c", 5, 15, 1, 1),
            fire("a", 10, 20, 1, 2),
            fire("a", 15, 25, 1, 2),
        ],
    );
}

#[test]
fn sliding_with_a_slide_that_does_not_divide_the_size() {
    check(
        count_sum(WindowKind::Sliding { size: 10, slide: 4 }, 0),
        script(0, vec![ev("a", 1, 1), ev("a", 5, 2), Step::Finish]),
        vec![
            fire("a", -8, 2, 1, 1),
            fire("a", -4, 6, 2, 3),
            fire("a", 0, 10, 2, 3),
            fire("a", 4, 14, 1, 2),
        ],
    );
}

// Session windows with a gap of 10.

#[test]
fn session_out_of_order_within_bound() {
    check(
        count_sum(SESSION, 0),
        script(
            5,
            vec![
                ev("a", 0, 1),
                ev("b", 3, 10),
                ev("a", 8, 2),
                ev("a", 5, 4),
                // Touches b's [3, 13) without intersecting it: a separate session.
                ev("b", 13, 5),
                ev("a", 30, 8),
                Step::Watermark(25),
                ev("a", 27, 16),
                ev("a", 42, 32),
                // Bridges [27, 40) and [42, 52).
                ev("a", 38, 64),
                Step::Finish,
            ],
        ),
        vec![
            fire("b", 3, 13, 1, 10),
            fire("a", 0, 18, 3, 7),
            fire("b", 13, 23, 1, 5),
            fire("a", 27, 52, 4, 120),
        ],
    );
}

#[test]
fn session_late_within_lateness() {
    check(
        count_sum(SESSION, 10),
        script(
            0,
            vec![
                ev("a", 0, 1),
                ev("a", 15, 2),
                // Extends the fired [0, 10).
                ev("a", 5, 4),
                // Merges the fired [0, 15) with [15, 25), which has not fired.
                ev("a", 12, 8),
                ev("a", 26, 16),
                ev("a", 3, 32),
                ev("a", 40, 1),
                ev("a", 20, 64),
                ev("a", 1, 128),
                // A new session that ended before the watermark: emitted at once.
                ev("b", 28, 256),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", 0, 10, 1, 1),
            update("a", 0, 15, 2, 5),
            update("a", 0, 25, 4, 15),
            update("a", 0, 25, 5, 47),
            fire("a", 26, 36, 1, 16),
            update("a", 20, 36, 2, 80),
            too_late("a", 1),
            update("b", 28, 38, 1, 256),
            fire("a", 40, 50, 1, 1),
        ],
    );
}

#[test]
fn session_late_beyond_lateness() {
    check(
        count_sum(SESSION, 0),
        script(
            0,
            vec![
                ev("a", 0, 1),
                ev("a", 25, 2),
                ev("a", 5, 4),
                // Late, but merges with [25, 35), which has not fired.
                ev("a", 18, 8),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", 0, 10, 1, 1),
            too_late("a", 5),
            fire("a", 18, 35, 2, 10),
        ],
    );
}

#[test]
fn session_idle_input() {
    check(
        count_sum(SESSION, 0),
        two_inputs(
            0,
            vec![
                on(0, 0, "a", 0, 1),
                on(1, 0, "b", 1, 2),
                on(0, 50, "a", 20, 4),
                Step::Watermark(1),
                Step::CheckIdle { now: 150 },
                Step::Watermark(20),
                on(1, 160, "b", 21, 8),
                on(0, 170, "a", 50, 16),
                Step::Watermark(21),
                on(1, 180, "b", 45, 32),
                Step::Watermark(45),
                Step::Finish,
            ],
        ),
        vec![
            fire("a", 0, 10, 1, 1),
            fire("b", 1, 11, 1, 2),
            fire("a", 20, 30, 1, 4),
            fire("b", 21, 31, 1, 8),
            fire("b", 45, 55, 1, 32),
            fire("a", 50, 60, 1, 16),
        ],
    );
}

#[test]
fn session_end_of_input() {
    check(
        count_sum(SESSION, 0),
        two_inputs(
            100,
            vec![
                on(0, 0, "c", 5, 1),
                on(1, 0, "a", 15, 2),
                on(0, 0, "b", 5, 4),
                on(1, 0, "a", 3, 8),
                Step::EndInput(0),
                Step::EndInput(1),
                Step::Watermark(i64::MAX),
            ],
        ),
        vec![
            fire("a", 3, 13, 1, 8),
            fire("b", 5, 15, 1, 4),
            fire("c", 5, 15, 1, 1),
            fire("a", 15, 25, 1, 2),
        ],
    );
}

// Every aggregate at once.

#[test]
fn all_aggregates() {
    let config = WindowConfig {
        kind: TUMBLING,
        allowed_lateness: 0,
        aggregates: AggregateKind::ALL.to_vec(),
    };
    let event = |timestamp: i64, value: Value| Step::Event {
        input: 0,
        now: 0,
        key: "k",
        timestamp,
        inputs: vec![value; 12],
    };
    let counts: BTreeMap<String, Value> = [("-1", 1), ("1.5", 1), ("3", 2)]
        .into_iter()
        .map(|(text, count)| (text.to_string(), Value::Int(count)))
        .collect();
    check(
        config,
        script(
            5,
            vec![
                event(1, Value::Int(3)),
                event(2, Value::Float(1.5)),
                event(2, Value::Null),
                event(4, Value::Int(3)),
                event(0, Value::Int(-1)),
                event(12, Value::Null),
                Step::Finish,
            ],
        ),
        vec![
            result(
                "k",
                0,
                10,
                vec![
                    Value::Int(5),
                    Value::Float(6.5),
                    Value::Int(-1),
                    Value::Int(3),
                    Value::Float(1.625),
                    Value::Int(3),
                    Value::Int(-1),
                    Value::Int(3),
                    Value::Map(Arc::new(counts)),
                    Value::List(Arc::new(vec![Value::Int(3)])),
                    Value::List(Arc::new(vec![Value::Int(-1)])),
                    Value::List(Arc::new(vec![
                        Value::Int(3),
                        Value::Int(3),
                        Value::Float(1.5),
                    ])),
                ],
                false,
            ),
            result(
                "k",
                10,
                20,
                vec![
                    Value::Int(1),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Int(0),
                    Value::Null,
                    Value::Null,
                    Value::Map(Arc::new(BTreeMap::new())),
                    Value::List(Arc::new(Vec::new())),
                    Value::List(Arc::new(Vec::new())),
                    Value::List(Arc::new(Vec::new())),
                ],
                false,
            ),
        ],
    );
}
