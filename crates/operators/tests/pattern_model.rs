//! The pattern operator against a naive matcher written plainly here: for each start event it
//! enumerates every labelling of the key's later events (taken by a stage, or skipped), keeps
//! the labellings the rules of `docs/configuration.md` allow, and picks the preferred one. The
//! operator sees the same events disordered within the watermark bound, in batches, with a
//! checkpoint and restore into a new operator in the middle.
//!
//! Each stream runs twice: with the partial matches in memory, then in a state store (a small
//! key cache, so most keys go through the store), the checkpoint taken with one restored with the
//! other. Both give the naive matcher's results and the same checkpoint bytes; a smaller run does
//! the same through sled.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflow_event::{Event, FieldType, Layout, Payload, Schema, Value};
use dataflow_expr::Expr;
use dataflow_operators::pattern::{
    binding_layout, AfterMatch, Aggregate, PatternDef, SelectDef, StageDef,
};
use dataflow_operators::{Output, Pattern, SideData, SideKind};
use proptest::prelude::*;

mod harness;
use harness::{drive, Backend};

/// A stage condition, both as CEL for the operator and as Rust for the model.
#[derive(Clone, Copy, Debug)]
enum Cond {
    Gt(i64),
    Lt(i64),
    Eq(i64),
    Even,
    /// `v > s0.v`: greater than the first stage's first event.
    AboveFirst,
    /// `v < s0.v`.
    BelowFirst,
}

impl Cond {
    fn cel(self) -> String {
        match self {
            Cond::Gt(c) => format!("v > {c}"),
            Cond::Lt(c) => format!("v < {c}"),
            Cond::Eq(c) => format!("v == {c}"),
            Cond::Even => "v % 2 == 0".into(),
            Cond::AboveFirst => "v > s0.v".into(),
            Cond::BelowFirst => "v < s0.v".into(),
        }
    }

    fn holds(self, v: i64, first: Option<i64>) -> bool {
        match self {
            Cond::Gt(c) => v > c,
            Cond::Lt(c) => v < c,
            Cond::Eq(c) => v == c,
            Cond::Even => v % 2 == 0,
            Cond::AboveFirst => first.is_some_and(|f| v > f),
            Cond::BelowFirst => first.is_some_and(|f| v < f),
        }
    }

    fn bound(self) -> bool {
        matches!(self, Cond::AboveFirst | Cond::BelowFirst)
    }
}

#[derive(Clone, Debug)]
struct TStage {
    cond: Cond,
    min: u32,
    max: Option<u32>,
    greedy: bool,
    strict: bool,
    negative: bool,
}

#[derive(Clone, Debug)]
struct TPattern {
    stages: Vec<TStage>,
    within: Option<i64>,
    skip: AfterMatch,
}

impl TPattern {
    fn positives(&self) -> Vec<&TStage> {
        self.stages.iter().filter(|s| !s.negative).collect()
    }

    /// For each positive stage, the conditions of the negative stages right after it.
    fn negatives_after(&self) -> Vec<Vec<Cond>> {
        let mut out: Vec<Vec<Cond>> = Vec::new();
        for stage in &self.stages {
            if stage.negative {
                if let Some(last) = out.last_mut() {
                    last.push(stage.cond);
                }
            } else {
                out.push(Vec::new());
            }
        }
        out
    }
}

fn schema_layout() -> Layout {
    Layout::Row(Arc::new(Schema::new([("v", FieldType::Int)]).unwrap()))
}

/// The names the test gives positive stages: `s0`, `s1`...; negatives are `n0`, `n1`...
fn names(pattern: &TPattern) -> Vec<String> {
    let (mut p, mut n) = (0, 0);
    pattern
        .stages
        .iter()
        .map(|stage| {
            if stage.negative {
                n += 1;
                format!("n{}", n - 1)
            } else {
                p += 1;
                format!("s{}", p - 1)
            }
        })
        .collect()
}

fn build(pattern: &TPattern) -> Pattern {
    let layout = schema_layout();
    let all_names = names(pattern);
    let positive_names: Vec<String> = all_names
        .iter()
        .filter(|n| n.starts_with('s'))
        .cloned()
        .collect();
    let bound_layout = binding_layout(&layout, &positive_names).unwrap();
    let stages = pattern
        .stages
        .iter()
        .zip(&all_names)
        .map(|(stage, name)| StageDef {
            name: name.clone(),
            condition: Expr::compile(
                &stage.cond.cel(),
                if stage.cond.bound() {
                    &bound_layout
                } else {
                    &layout
                },
            )
            .unwrap(),
            bound: stage.cond.bound(),
            min: stage.min,
            max: stage.max,
            greedy: stage.greedy,
            strict: stage.strict,
            negative: stage.negative,
        })
        .collect();
    let last = positive_names.last().unwrap().clone();
    let select = vec![
        SelectDef {
            name: "first_v".into(),
            aggregate: Aggregate::First,
            stage: "s0".into(),
            input: Some(Expr::compile("v", &layout).unwrap()),
        },
        SelectDef {
            name: "last_v".into(),
            aggregate: Aggregate::Last,
            stage: last.clone(),
            input: Some(Expr::compile("v", &layout).unwrap()),
        },
        SelectDef {
            name: "n_last".into(),
            aggregate: Aggregate::Count,
            stage: last.clone(),
            input: None,
        },
        SelectDef {
            name: "sum_last".into(),
            aggregate: Aggregate::Sum,
            stage: last,
            input: Some(Expr::compile("v", &layout).unwrap()),
        },
    ];
    let def = PatternDef::new(stages, pattern.within, pattern.skip, select, layout).unwrap();
    Pattern::new(Arc::from("steps[1].pattern"), def, Some(FieldType::String))
        .unwrap()
        .0
}

/// One result as both sides report it: matched or timed out, key, start, end, stages taken,
/// first_v, last_v, n_last, sum_last.
type Row = (
    bool,
    String,
    i64,
    i64,
    Vec<String>,
    Value,
    Value,
    i64,
    Value,
);

// ---------------------------------------------------------------- the naive matcher

/// A labelling of the events from a start on: for each, `Some(stage)` taken by that positive
/// stage or `None` skipped; it ends with its last taken event.
#[derive(Clone, Debug)]
struct Cand {
    labels: Vec<Option<usize>>,
}

struct Naive<'a> {
    pattern: &'a TPattern,
    positives: Vec<&'a TStage>,
    negatives: Vec<Vec<Cond>>,
    /// The key's events, sorted by time: (time, v).
    events: &'a [(i64, i64)],
}

/// The state a labelling is in after its labels so far.
#[derive(Clone, Debug)]
struct State {
    stage: usize,
    counts: Vec<u32>,
    first: Option<i64>,
    gap: bool,
}

impl<'a> Naive<'a> {
    fn state(&self, start: usize, labels: &[Option<usize>]) -> State {
        let mut state = State {
            stage: 0,
            counts: vec![0; self.positives.len()],
            first: None,
            gap: false,
        };
        for (offset, label) in labels.iter().enumerate() {
            match label {
                Some(stage) => {
                    state.stage = *stage;
                    state.counts[*stage] += 1;
                    if *stage == 0 && state.first.is_none() {
                        state.first = Some(self.events[start + offset].1);
                    }
                    state.gap = false;
                }
                None => state.gap = true,
            }
        }
        state
    }

    /// The stages a labelling in `state` may give event `v` to.
    fn takers(&self, state: &State, v: i64) -> Vec<usize> {
        let i = state.stage;
        let stage = self.positives[i];
        let mut takers = Vec::new();
        let count = state.counts[i];
        if stage.max.is_none_or(|m| count < m)
            && !(stage.strict && state.gap)
            && stage.cond.holds(v, state.first)
        {
            takers.push(i);
        }
        if count >= stage.min {
            for j in i + 1..self.positives.len() {
                let next = self.positives[j];
                if !(next.strict && state.gap) && next.cond.holds(v, state.first) {
                    takers.push(j);
                }
                if next.min > 0 {
                    break;
                }
            }
        }
        takers
    }

    /// Whether a labelling in `state` may skip event `v`: nothing may take it, and no negative
    /// stage after a stage that has its minimum matches it.
    fn may_skip(&self, state: &State, v: i64) -> bool {
        let i = state.stage;
        let stage = self.positives[i];
        self.takers(state, v).is_empty()
            && !(state.counts[i] >= stage.min
                && self.negatives[i].iter().any(|n| n.holds(v, state.first)))
    }

    /// Whether a labelling in `state` could still take some later event.
    fn has_future(&self, state: &State) -> bool {
        let i = state.stage;
        let stage = self.positives[i];
        let count = state.counts[i];
        let stay = stage.max.is_none_or(|m| count < m) && !stage.strict;
        let mut go = false;
        if count >= stage.min {
            for j in i + 1..self.positives.len() {
                go |= !self.positives[j].strict;
                if self.positives[j].min > 0 {
                    break;
                }
            }
        }
        stay || go
    }

    fn complete(&self, state: &State) -> bool {
        state.counts[state.stage] >= self.positives[state.stage].min
            && self.positives[state.stage + 1..].iter().all(|s| s.min == 0)
    }

    /// Every valid labelling from `start` over the events before `end` (exclusive index).
    fn enumerate(&self, start: usize, end: usize) -> Vec<Cand> {
        let mut out = Vec::new();
        let first = self.events[start].1;
        if !self.positives[0].cond.holds(first, None) {
            return out;
        }
        let mut stack = vec![Cand {
            labels: vec![Some(0)],
        }];
        while let Some(cand) = stack.pop() {
            out.push(cand.clone());
            let mut labels = cand.labels.clone();
            // Extend by skips, then one take.
            loop {
                let index = start + labels.len();
                if index >= end {
                    break;
                }
                let state = self.state(start, &labels);
                let v = self.events[index].1;
                for taker in self.takers(&state, v) {
                    let mut next = labels.clone();
                    next.push(Some(taker));
                    stack.push(Cand { labels: next });
                }
                if !self.may_skip(&state, v) {
                    break;
                }
                labels.push(None);
            }
        }
        out
    }

    /// The rank of a label at `state` (higher is preferred); `None` stands for having ended.
    fn rank(&self, state: &State, label: Option<Option<usize>>) -> i64 {
        let greedy = self.positives[state.stage].greedy;
        match label {
            None => {
                if greedy {
                    -1
                } else {
                    1000
                }
            }
            Some(None) => 0,
            Some(Some(stage)) if stage == state.stage => {
                if greedy {
                    500
                } else {
                    1
                }
            }
            Some(Some(stage)) => 400 - stage as i64,
        }
    }

    /// Whether `a` is preferred to `b` (both from `start`, neither a prefix-equal of the other).
    fn prefer(&self, start: usize, a: &[Option<usize>], b: &[Option<usize>]) -> bool {
        let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let state = self.state(start, &a[..common]);
        let ra = self.rank(&state, a.get(common).copied());
        let rb = self.rank(&state, b.get(common).copied());
        ra > rb
    }

    fn best<'c>(&self, start: usize, cands: impl Iterator<Item = &'c Cand>) -> Option<Cand> {
        let mut best: Option<&Cand> = None;
        for cand in cands {
            best = match best {
                Some(current) if !self.prefer(start, &cand.labels, &current.labels) => {
                    Some(current)
                }
                _ => Some(cand),
            };
        }
        best.cloned()
    }

    /// The outcome of the start at `start`: `Some((matched, labels))`, or `None` when it
    /// neither matched nor timed out.
    fn outcome(&self, start: usize) -> Option<(bool, Cand)> {
        let deadline = self.pattern.within.map(|w| self.events[start].0 + w);
        let end = (start..self.events.len())
            .find(|&i| deadline.is_some_and(|d| self.events[i].0 >= d))
            .unwrap_or(self.events.len());
        let cands = self.enumerate(start, end);
        // Labellings end with a take.
        let cands: Vec<Cand> = cands
            .into_iter()
            .filter(|c| c.labels.last().is_some_and(|l| l.is_some()))
            .collect();
        let complete: Vec<&Cand> = cands
            .iter()
            .filter(|c| self.complete(&self.state(start, &c.labels)))
            .collect();
        if let Some(best) = self.best(start, complete.into_iter()) {
            return Some((true, best));
        }
        // Alive at the deadline (or the end of input): every later event before it skipped,
        // each time still able to take a later one.
        let alive: Vec<Cand> = cands
            .iter()
            .filter_map(|c| {
                let mut labels = c.labels.clone();
                while start + labels.len() < end {
                    let state = self.state(start, &labels);
                    if !self.has_future(&state) {
                        return None;
                    }
                    if !self.may_skip(&state, self.events[start + labels.len()].1) {
                        return None;
                    }
                    labels.push(None);
                }
                Some(Cand { labels })
            })
            .collect();
        self.best(start, alive.iter()).map(|c| (false, c))
    }

    fn row(&self, key: &str, start: usize, matched: bool, cand: &Cand) -> Row {
        let taken: Vec<(usize, i64, i64)> = cand
            .labels
            .iter()
            .enumerate()
            .filter_map(|(offset, label)| {
                label.map(|stage| {
                    (
                        stage,
                        self.events[start + offset].0,
                        self.events[start + offset].1,
                    )
                })
            })
            .collect();
        let last_stage = self.positives.len() - 1;
        let mut stages: Vec<String> = Vec::new();
        for (stage, _, _) in &taken {
            let name = format!("s{stage}");
            if !stages.contains(&name) {
                stages.push(name);
            }
        }
        let of_last: Vec<i64> = taken
            .iter()
            .filter(|(s, _, _)| *s == last_stage)
            .map(|(_, _, v)| *v)
            .collect();
        (
            matched,
            key.to_string(),
            taken.first().map(|t| t.1).unwrap_or_default(),
            taken.last().map(|t| t.1).unwrap_or_default(),
            stages,
            taken
                .iter()
                .find(|(s, _, _)| *s == 0)
                .map_or(Value::Null, |t| Value::Int(t.2)),
            of_last.last().map_or(Value::Null, |v| Value::Int(*v)),
            of_last.len() as i64,
            if of_last.is_empty() {
                Value::Null
            } else {
                Value::Int(of_last.iter().sum())
            },
        )
    }

    fn results(&self, key: &str) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut start = 0;
        while start < self.events.len() {
            match self.outcome(start) {
                Some((true, cand)) => {
                    rows.push(self.row(key, start, true, &cand));
                    let last = start + cand.labels.len() - 1;
                    start = match self.pattern.skip {
                        AfterMatch::SkipPastLast => last + 1,
                        AfterMatch::SkipToNext => start + 1,
                    };
                }
                Some((false, cand)) => {
                    rows.push(self.row(key, start, false, &cand));
                    start += 1;
                }
                None => start += 1,
            }
        }
        rows
    }
}

fn naive(pattern: &TPattern, events: &BTreeMap<String, Vec<(i64, i64)>>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (key, key_events) in events {
        let naive = Naive {
            pattern,
            positives: pattern.positives(),
            negatives: pattern.negatives_after(),
            events: key_events,
        };
        rows.extend(naive.results(key));
    }
    rows.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    rows
}

// ---------------------------------------------------------------- the operator

fn row_of(matched: bool, event: &Event) -> Row {
    let Payload::Row(row) = &event.payload else {
        panic!("a row result");
    };
    let stages = match &row[3] {
        Value::List(items) => items
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
        other => panic!("stages: {other:?}"),
    };
    (
        matched,
        row[0].as_str().unwrap().to_string(),
        row[1].as_i64().unwrap(),
        row[2].as_i64().unwrap(),
        stages,
        row[4].clone(),
        row[5].clone(),
        row[6].as_i64().unwrap(),
        row[7].clone(),
    )
}

fn collect(out: Output, rows: &mut Vec<Row>) {
    for event in &out.events {
        rows.push(row_of(true, event));
    }
    for side in out.side {
        assert_eq!(side.kind, SideKind::TimedOut, "{side:?}");
        let SideData::Event { event, .. } = side.record else {
            panic!("an event");
        };
        rows.push(row_of(false, &event));
    }
}

/// `pattern`'s operator with its partial matches in `backend`.
fn build_in(pattern: &TPattern, backend: &Backend) -> Pattern {
    let mut operator = build(pattern);
    if let Some((store, cache_keys)) = backend.store() {
        operator.keep_state_in_store(store, cache_keys);
    }
    operator
}

/// What a run gave: its results, sorted, and the checkpoint it took.
struct Run {
    rows: Vec<Row>,
    checkpoint: Vec<u8>,
}

/// Runs the operator on `arrivals` (events in arrival order) in batches of `batch`, the
/// watermark `bound` behind the newest event after each batch, with a checkpoint and restore
/// into a new operator after batch `restore_at`: in `before` up to the checkpoint, in `after`
/// from the restore on.
fn run(
    pattern: &TPattern,
    arrivals: &[(String, i64, i64)],
    bound: i64,
    batch: usize,
    restore_at: usize,
    before: &Backend,
    after: &Backend,
) -> Run {
    let mut rows = Vec::new();
    let batches: Vec<Vec<Event>> = arrivals
        .chunks(batch.max(1))
        .map(|chunk| {
            chunk
                .iter()
                .map(|(key, time, v)| {
                    let mut event = Event::row(*time, vec![Value::Int(*v)]);
                    event.key = Some(Value::str(key));
                    event
                })
                .collect()
        })
        .collect();
    let checkpoint = drive(
        |backend| build_in(pattern, backend),
        batches,
        bound,
        restore_at,
        before,
        after,
        |out| collect(out, &mut rows),
    );
    rows.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    Run { rows, checkpoint }
}

/// The naive matcher's results on `arrivals`, per key in time order.
fn expected(pattern: &TPattern, arrivals: &[(String, i64, i64)]) -> Vec<Row> {
    let mut by_key: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for (key, time, v) in arrivals {
        by_key.entry(key.clone()).or_default().push((*time, *v));
    }
    for events in by_key.values_mut() {
        events.sort();
    }
    naive(pattern, &by_key)
}

// ---------------------------------------------------------------- generators

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        (0i64..6).prop_map(Cond::Gt),
        (1i64..7).prop_map(Cond::Lt),
        (0i64..6).prop_map(Cond::Eq),
        Just(Cond::Even),
    ]
}

fn later_cond() -> impl Strategy<Value = Cond> {
    prop_oneof![4 => cond(), 1 => Just(Cond::AboveFirst), 1 => Just(Cond::BelowFirst)]
}

/// exactly N, at least N, between N and M, optional.
fn quantifier(first: bool) -> impl Strategy<Value = (u32, Option<u32>)> {
    let options = prop_oneof![
        (1u32..3).prop_map(|n| (n, Some(n))),
        (1u32..3).prop_map(|n| (n, None)),
        (1u32..3, 0u32..2).prop_map(|(n, extra)| (n, Some(n + extra))),
        Just((0, Some(1))),
    ];
    options.prop_map(move |(min, max)| {
        if first && min == 0 {
            (1, max)
        } else {
            (min, max)
        }
    })
}

fn positive(first: bool) -> impl Strategy<Value = TStage> {
    let condition = if first {
        cond().boxed()
    } else {
        later_cond().boxed()
    };
    (condition, quantifier(first), any::<bool>(), any::<bool>()).prop_map(
        |(cond, (min, max), greedy, strict)| TStage {
            cond,
            min,
            max,
            greedy,
            strict,
            negative: false,
        },
    )
}

fn pattern() -> impl Strategy<Value = TPattern> {
    (
        positive(true),
        prop::collection::vec(
            (positive(false), prop::option::weighted(0.3, later_cond())),
            0..3,
        ),
        prop::option::weighted(0.8, 4i64..30),
        any::<bool>(),
    )
        .prop_map(|(first, rest, within, skip)| {
            let mut stages = vec![first];
            for (stage, negative) in rest {
                let previous_optional = stages.last().is_some_and(|s: &TStage| s.min == 0);
                if let Some(cond) = negative {
                    if !previous_optional && stage.min > 0 {
                        stages.push(TStage {
                            cond,
                            min: 1,
                            max: Some(1),
                            greedy: true,
                            strict: false,
                            negative: true,
                        });
                    }
                }
                stages.push(stage);
            }
            let mut pattern = TPattern {
                stages,
                within,
                skip: if skip {
                    AfterMatch::SkipPastLast
                } else {
                    AfterMatch::SkipToNext
                },
            };
            // Without `within`, only strict, bounded patterns are accepted.
            let needs_within = pattern
                .stages
                .iter()
                .enumerate()
                .any(|(i, s)| s.negative || s.max.is_none() || (i > 0 && !s.strict));
            if needs_within && pattern.within.is_none() {
                pattern.within = Some(12);
            }
            pattern
        })
}

/// Per key up to 7 events at distinct times within 0..40, values 0..6; the arrival order is
/// sorted by time plus a jitter of at most `bound`, so nothing is behind the watermark.
fn stream() -> impl Strategy<Value = (Vec<(String, i64, i64)>, i64)> {
    let key_events = prop::collection::btree_map(0i64..40, (0i64..6, 0i64..6), 0..7);
    (prop::collection::vec(key_events, 1..4), 0i64..6).prop_map(|(keys, bound)| {
        let mut events = Vec::new();
        for (index, times) in keys.into_iter().enumerate() {
            for (time, (v, jitter)) in times {
                events.push((format!("k{index}"), time, v, jitter.min(bound)));
            }
        }
        events.sort_by_key(|(key, time, _, jitter)| (time + jitter, key.clone(), *time));
        (
            events
                .into_iter()
                .map(|(key, time, v, _)| (key, time, v))
                .collect(),
            bound,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn pattern_matches_the_naive_matcher(
        pattern in pattern(),
        (arrivals, bound) in stream(),
        batch in 1usize..6,
        restore_at in 0usize..10,
        cache_keys in 0usize..3,
    ) {
        let expected = expected(&pattern, &arrivals);
        let store = Backend::Store(cache_keys);
        let memory = run(&pattern, &arrivals, bound, batch, restore_at, &Backend::Memory, &store);
        prop_assert_eq!(&memory.rows, &expected, "pattern {:?}", pattern);
        let stored = run(&pattern, &arrivals, bound, batch, restore_at, &store, &Backend::Memory);
        prop_assert_eq!(&stored.rows, &expected, "in a store: pattern {:?}", pattern);
        prop_assert!(memory.checkpoint == stored.checkpoint, "the checkpoints differ");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// The same through sled, restored into sled: sled's store is the one in production.
    #[test]
    fn pattern_in_sled_matches_the_naive_matcher(
        pattern in pattern(),
        (arrivals, bound) in stream(),
        batch in 1usize..6,
        restore_at in 0usize..10,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let sled = Backend::Sled(dir.path().join("state"), 1);
        let expected = expected(&pattern, &arrivals);
        let memory = run(&pattern, &arrivals, bound, batch, restore_at, &Backend::Memory, &Backend::Memory);
        let stored = run(&pattern, &arrivals, bound, batch, restore_at, &sled, &sled);
        prop_assert_eq!(&stored.rows, &expected, "in sled: pattern {:?}", pattern);
        prop_assert!(memory.checkpoint == stored.checkpoint, "the checkpoints differ");
    }
}
