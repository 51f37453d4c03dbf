//! A stateful operator of its own kind, keyed and without a window: a running count per key.
//! Its kind says it takes its input by key, so after a `key_by` the runtime may run it in
//! parallel workers, each event of a key on the same one; a kind that took its input any way
//! could not be split and runs as one.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use dataflow_event::{Event, Value};
use dataflow_operators::kind::parallel_part;
use dataflow_operators::{
    key_by, KeyEffect, Operator, OperatorError, OperatorKind, OperatorNode, OperatorSnapshot,
    Output, Partitioning,
};
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::plan::{plan, Plan};
use dataflow_pipeline::runtime::Pipeline;
use dataflow_pipeline::spec::SinkSpec;

/// The kind of [`RunningCount`]: keeps state per key, so needs its input by key.
static RUNNING_COUNT: OperatorKind = OperatorKind {
    name: "running_count",
    stateful: true,
    input: Partitioning::ByKey,
    key: KeyEffect::Preserves,
    inspect: None,
};

/// The same operator declared as taking its input any way.
static RUNNING_COUNT_ANY: OperatorKind = OperatorKind {
    name: "running_count",
    stateful: true,
    input: Partitioning::Any,
    key: KeyEffect::Preserves,
    inspect: None,
};

/// Counts the events of each key and emits, for each, `{key, count, seq}`: its key, how many
/// events of the key it has seen with it, and its `seq` field. Records the instance it was
/// opened as.
struct RunningCount {
    kind: &'static OperatorKind,
    counts: BTreeMap<String, i64>,
    opened: Arc<Mutex<Vec<usize>>>,
}

fn key_text(key: &Option<Value>) -> String {
    match key {
        Some(Value::Str(text)) => text.to_string(),
        other => panic!("a string key expected, got {other:?}"),
    }
}

impl Operator for RunningCount {
    fn kind(&self) -> &'static OperatorKind {
        self.kind
    }

    fn open(&mut self, instance: usize) -> dataflow_operators::Result<()> {
        self.opened.lock().expect("lock").push(instance);
        Ok(())
    }

    fn process(&mut self, batch: Vec<Event>, out: &mut Output) {
        for event in batch {
            let key = key_text(&event.key);
            let count = self.counts.entry(key.clone()).or_insert(0);
            *count += 1;
            let seq = event
                .payload
                .as_object()
                .and_then(|fields| fields.get("seq").cloned())
                .unwrap_or_default();
            let fields = BTreeMap::from([
                ("key".to_string(), Value::str(&key)),
                ("count".to_string(), Value::Int(*count)),
                ("seq".to_string(), seq),
            ]);
            let mut counted = Event::object(event.event_time, fields);
            counted.key = event.key;
            out.events.push(counted);
        }
    }

    fn snapshot(&self) -> dataflow_operators::Result<Option<OperatorSnapshot>> {
        Ok(Some(OperatorSnapshot {
            key_count: self.counts.len() as u64,
            state: serde_json::to_vec(&self.counts).expect("encode"),
        }))
    }

    fn restore(&mut self, state: &[u8]) -> dataflow_operators::Result<()> {
        self.counts = serde_json::from_slice(state)
            .map_err(|error| OperatorError::Checkpoint(error.to_string()))?;
        Ok(())
    }

    fn merge_snapshots(
        &self,
        parts: Vec<OperatorSnapshot>,
    ) -> dataflow_operators::Result<OperatorSnapshot> {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for part in parts {
            let part: BTreeMap<String, i64> = serde_json::from_slice(&part.state)
                .map_err(|error| OperatorError::Checkpoint(error.to_string()))?;
            counts.extend(part);
        }
        Ok(OperatorSnapshot {
            key_count: counts.len() as u64,
            state: serde_json::to_vec(&counts).expect("encode"),
        })
    }

    fn split_snapshot(
        &self,
        state: &[u8],
        workers: usize,
    ) -> dataflow_operators::Result<Vec<Vec<u8>>> {
        let counts: BTreeMap<String, i64> = serde_json::from_slice(state)
            .map_err(|error| OperatorError::Checkpoint(error.to_string()))?;
        let mut parts = vec![BTreeMap::new(); workers];
        for (key, count) in counts {
            parts[dataflow_window::key_partition(&Value::str(&key), workers)].insert(key, count);
        }
        Ok(parts
            .iter()
            .map(|part| serde_json::to_vec(part).expect("encode"))
            .collect())
    }
}

fn running_count(kind: &'static OperatorKind, opened: &Arc<Mutex<Vec<usize>>>) -> OperatorNode {
    OperatorNode::new(
        Arc::from("steps[1].running_count"),
        RunningCount {
            kind,
            counts: BTreeMap::new(),
            opened: opened.clone(),
        },
    )
}

const USERS: i64 = 13;
const EVENTS: i64 = 3_000;

/// `EVENTS` events numbered by `seq`, of `USERS` users in an irregular order.
fn input(dir: &Path) -> std::path::PathBuf {
    let lines: Vec<String> = (0..EVENTS)
        .map(|seq| {
            format!(
                r#"{{"timestamp":{},"user":"u{}","seq":{seq}}}"#,
                1_704_067_200_000i64 + seq,
                (seq * seq + seq / 7) % USERS
            )
        })
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    common::write_lines(dir, "input.jsonl", &lines)
}

/// A plan reading the input, keyed by user, with `parallelism` workers; its only operator so
/// far is the `key_by`.
fn keyed_plan(dir: &Path, parallelism: usize) -> Plan {
    let spec = PipelineBuilder::new("running")
        .file_source("events", input(dir))
        .key_by("user")
        .parallelism(parallelism)
        .sink(SinkSpec::file(dir.join("results.jsonl")))
        .dead_letters(SinkSpec::file(dir.join("dead.jsonl")))
        .spec()
        .expect("valid spec");
    plan(spec).expect("valid plan")
}

/// `(key, count, seq)` of every result in `dir`, in the order written.
fn results(dir: &Path) -> Vec<(String, i64, i64)> {
    common::read_json_lines(&dir.join("results.jsonl"))
        .iter()
        .map(|row| {
            (
                row["key"].as_str().expect("key").to_string(),
                row["count"].as_i64().expect("count"),
                row["seq"].as_i64().expect("seq"),
            )
        })
        .collect()
}

/// What the input implies: each event counted in `seq` order within its user.
fn expected() -> Vec<(String, i64, i64)> {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    let mut expected: Vec<_> = (0..EVENTS)
        .map(|seq| {
            let key = format!("u{}", (seq * seq + seq / 7) % USERS);
            let count = counts.entry(key.clone()).or_insert(0);
            *count += 1;
            (key, *count, seq)
        })
        .collect();
    expected.sort();
    expected
}

/// Asserts that within each key the counts are 1, 2, ... in `seq` order: every event of a key
/// was counted by one instance, in the order of the input.
fn assert_counted_in_order_per_key(results: &[(String, i64, i64)]) {
    let mut by_key: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for (key, count, seq) in results {
        by_key.entry(key).or_default().push((*seq, *count));
    }
    for (key, mut rows) in by_key {
        rows.sort();
        let counts: Vec<i64> = rows.iter().map(|&(_, count)| count).collect();
        let one_to_n: Vec<i64> = (1..=rows.len() as i64).collect();
        assert_eq!(counts, one_to_n, "key {key}: counts in seq order");
    }
}

#[test]
fn the_kinds_decide_which_operators_may_run_in_parallel() {
    // After a key_by, a keyed stateful operator runs in workers, its input routed by key.
    assert_eq!(
        parallel_part(&[&key_by::KIND, &RUNNING_COUNT]),
        Some((1, true))
    );
    // Declared as taking its input any way, its state could not be split: one worker.
    assert_eq!(parallel_part(&[&key_by::KIND, &RUNNING_COUNT_ANY]), None);
    // Keyed but without a key set before it: one worker too.
    assert_eq!(parallel_part(&[&RUNNING_COUNT]), None);
}

#[test]
fn a_running_count_on_one_worker_counts_each_key_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let opened = Arc::new(Mutex::new(Vec::new()));
    let mut plan = keyed_plan(dir.path(), 1);
    plan.operators.push(running_count(&RUNNING_COUNT, &opened));
    let summary = common::run(Pipeline::new(plan));
    assert_eq!(summary.events_read, EVENTS as u64);
    assert_eq!(summary.events_emitted, EVENTS as u64);
    let mut results = results(dir.path());
    assert_counted_in_order_per_key(&results);
    results.sort();
    assert_eq!(results, expected());
    assert_eq!(*opened.lock().expect("lock"), [0]);
}

/// Runs the keyed plan with a running count of `kind` after the key_by, on `parallelism`
/// workers: returns the results and the instances the operator was opened as (workers get
/// their operators from the plan's factory, so it builds the running count too).
fn run_counts(
    dir: &Path,
    parallelism: usize,
    kind: &'static OperatorKind,
) -> (Vec<(String, i64, i64)>, Vec<usize>) {
    let opened = Arc::new(Mutex::new(Vec::new()));
    let mut plan = keyed_plan(dir, parallelism);
    let spec_operators = plan.operator_factory.clone();
    let factory_opened = opened.clone();
    plan.operator_factory = dataflow_pipeline::plan::OperatorFactory::new(move || {
        let mut operators = spec_operators.build();
        operators.push(running_count(kind, &factory_opened));
        operators
    });
    plan.operators.push(running_count(kind, &opened));
    let summary = common::run(Pipeline::new(plan));
    assert_eq!(summary.events_read, EVENTS as u64);
    assert_eq!(summary.events_emitted, EVENTS as u64);
    let mut instances = opened.lock().expect("lock").clone();
    instances.sort();
    (results(dir), instances)
}

#[test]
fn a_running_count_on_three_workers_is_partitioned_by_key() {
    let one = tempfile::tempdir().expect("temp dir");
    let three = tempfile::tempdir().expect("temp dir");
    let (single, _) = run_counts(one.path(), 1, &RUNNING_COUNT);
    let (parallel, instances) = run_counts(three.path(), 3, &RUNNING_COUNT);
    assert_counted_in_order_per_key(&parallel);
    // Three workers ran it (the chain opens the plan's own instance as 0 first; the workers
    // open theirs as 0, 1 and 2).
    assert!(
        [0, 1, 2].iter().all(|i| instances.contains(i)),
        "opened as {instances:?}"
    );
    let (mut single, mut parallel) = (single, parallel);
    single.sort();
    parallel.sort();
    assert_eq!(parallel, single);
    assert_eq!(parallel, expected());
}

#[test]
fn a_running_count_of_a_kind_that_is_not_keyed_runs_as_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Declared `Partitioning::Any`, the operator's state cannot be split: the runtime keeps
    // one instance, and only it is opened.
    let (results, instances) = run_counts(dir.path(), 3, &RUNNING_COUNT_ANY);
    assert_eq!(instances, [0]);
    let mut results = results;
    assert_counted_in_order_per_key(&results);
    results.sort();
    assert_eq!(results, expected());
}
