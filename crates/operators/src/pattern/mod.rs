//! `pattern`: complex event processing over a keyed stream: a sequence of named stages, each
//! with a CEL condition, matched per key in event time (`matcher`), with events buffered per
//! key until the watermark passes them (`timeline`).
//!
//! The semantics (contiguity, quantifiers, greedy and reluctant stages, `within`, the
//! after-match skip, timeouts) are documented for users in `docs/configuration.md` under
//! "pattern"; `matcher` states them for the code.

mod matcher;
pub(crate) mod timeline;

use std::sync::Arc;

use dataflow_event::time::{format_rfc3339, now_millis};
use dataflow_event::{Event, Field, FieldType, Layout, Payload, Schema, Value};
use dataflow_expr::Expr;
use serde_json::json;

use crate::kind::{KeyEffect, OperatorKind, Partitioning};
use crate::operator::{
    checkpoint_error, dead_letter, Operator, OperatorSnapshot, Output, SideData, SideKind,
};
use crate::window::{KeyView, OperatorView};
use crate::SideRecord;

use matcher::{Found, KeyMatches, Thread};
use timeline::{KeyLogic, Keyed, TimelineSnapshot};

/// What every pattern operator is: it keeps partial matches per key, so its input must be
/// partitioned by key; its results keep the key of their events; its snapshot is a
/// `TimelineSnapshot` of every key's buffered events and partial matches, encoded with
/// `dataflow_checkpoint::encode_state`, readable through [`decode_snapshot`].
pub const KIND: OperatorKind = OperatorKind {
    name: "pattern",
    stateful: true,
    input: Partitioning::ByKey,
    key: KeyEffect::Preserves,
    inspect: Some(decode_snapshot),
};

/// What happens after a match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AfterMatch {
    /// No later match may start at or before the match's last event (no two matches share an
    /// event): `skip_past_last`, the default.
    #[default]
    SkipPastLast,
    /// Every event may start a match of its own, so matches may overlap: `skip_to_next`.
    SkipToNext,
}

/// What a selected field computes over a stage's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// The value on the stage's first event.
    First,
    /// The value on the stage's last event.
    Last,
    /// The number of the stage's events.
    Count,
    /// The sum of the values over the stage's events.
    Sum,
}

/// One stage of a pattern.
#[derive(Clone, Debug)]
pub struct StageDef {
    /// Its name, unique in the pattern.
    pub name: String,
    /// When an event belongs to it, compiled against [`binding_layout`] when `bound`.
    pub condition: Expr,
    /// Whether the condition refers to earlier stages (and so was compiled against
    /// [`binding_layout`]).
    pub bound: bool,
    /// The fewest events it takes (0: optional).
    pub min: u32,
    /// The most events it takes; `None`: no limit.
    pub max: Option<u32>,
    /// Whether it takes as many events as it can (else as few).
    pub greedy: bool,
    /// Whether its events must each follow the previous matched event directly.
    pub strict: bool,
    /// A negative stage: no event between its neighbours may meet its condition.
    pub negative: bool,
}

/// One field of a pattern's results.
#[derive(Clone, Debug)]
pub struct SelectDef {
    /// The output field.
    pub name: String,
    /// What it computes.
    pub aggregate: Aggregate,
    /// The name of the (positive) stage whose events it reads.
    pub stage: String,
    /// What it reads of each event (`None` for `count`), compiled against the stream's layout.
    pub input: Option<Expr>,
}

/// A checked pattern.
#[derive(Debug)]
pub struct PatternDef {
    stages: Vec<StageDef>,
    /// The indices of the positive stages in `stages`.
    positives: Vec<usize>,
    positive_names: Vec<String>,
    /// A null binding for every positive stage: what the first stage's condition sees.
    no_bindings: Vec<Value>,
    /// For each positive stage, the negative stages right after it.
    negatives_after: Vec<Vec<usize>>,
    within: Option<i64>,
    after_match: AfterMatch,
    select: Vec<Select>,
    input_layout: Layout,
}

#[derive(Debug)]
struct Select {
    name: String,
    aggregate: Aggregate,
    /// Index among the positive stages.
    stage: usize,
    input: Option<Expr>,
}

/// The layout the conditions of a pattern's stages are compiled against: the stream's, with
/// one field per positive stage (of the names given, in order) holding the payload of that
/// stage's first event as a map. Fails when a name is also a field of the stream.
pub fn binding_layout(layout: &Layout, names: &[String]) -> Result<Layout, String> {
    match layout {
        Layout::Object => Ok(Layout::Object),
        Layout::Row(schema) => {
            let mut fields: Vec<Field> = schema.fields().to_vec();
            for name in names {
                if schema.index_of(name).is_some() {
                    return Err(format!(
                        "stage name `{name}` is also a field of the stream: rename the stage"
                    ));
                }
                fields.push(Field {
                    name: name.clone(),
                    ty: FieldType::Json,
                    nullable: true,
                });
            }
            Schema::from_fields(fields)
                .map(|schema| Layout::Row(Arc::new(schema)))
                .map_err(|error| error.to_string())
        }
    }
}

impl PatternDef {
    /// A pattern of `stages` over a stream of `input_layout`; checks the shape rules the config
    /// check also reports (so a pattern built in code is as safe), naming the stage at fault.
    pub fn new(
        stages: Vec<StageDef>,
        within: Option<i64>,
        after_match: AfterMatch,
        select: Vec<SelectDef>,
        input_layout: Layout,
    ) -> Result<PatternDef, String> {
        let problems = shape_problems(&stages, within);
        if let Some((_, message)) = problems.into_iter().next() {
            return Err(message);
        }
        let positives: Vec<usize> = (0..stages.len())
            .filter(|&index| !stages[index].negative)
            .collect();
        let positive_names: Vec<String> = positives
            .iter()
            .map(|&index| stages[index].name.clone())
            .collect();
        let mut negatives_after = vec![Vec::new(); positives.len()];
        let mut current = None;
        for (index, stage) in stages.iter().enumerate() {
            if stage.negative {
                if let Some(slot) = current.and_then(|c: usize| negatives_after.get_mut(c)) {
                    slot.push(index);
                }
            } else {
                current = Some(current.map_or(0, |c| c + 1));
            }
        }
        let mut selects = Vec::new();
        for field in select {
            let Some(stage) = positive_names.iter().position(|name| *name == field.stage) else {
                return Err(format!(
                    "field `{}` reads stage `{}`, which is not a (positive) stage of the pattern",
                    field.name, field.stage
                ));
            };
            selects.push(Select {
                name: field.name,
                aggregate: field.aggregate,
                stage,
                input: field.input,
            });
        }
        Ok(PatternDef {
            no_bindings: vec![Value::Null; positives.len()],
            stages,
            positives,
            positive_names,
            negatives_after,
            within,
            after_match,
            select: selects,
            input_layout,
        })
    }
}

/// Quantifier and shape rules of a pattern, each with the index of the stage at fault (`None`:
/// the pattern as a whole): what `processor check` reports.
pub fn shape_problems(stages: &[StageDef], within: Option<i64>) -> Vec<(Option<usize>, String)> {
    let mut problems = Vec::new();
    let Some(first) = stages.first() else {
        return vec![(None, "a pattern needs at least one stage".into())];
    };
    if first.negative || first.min == 0 {
        problems.push((
            Some(0),
            "the first stage must be a positive stage taking at least one event".into(),
        ));
    }
    if stages.last().is_some_and(|stage| stage.negative) {
        problems.push((
            Some(stages.len() - 1),
            "a pattern cannot end with a negative stage: an expected event that did not come is a timed-out match (see `within`)".into(),
        ));
    }
    for (index, stage) in stages.iter().enumerate() {
        if let Some(max) = stage.max {
            if max == 0 {
                problems.push((
                    Some(index),
                    "a stage must take at least one event: `max` (or `times`) cannot be 0".into(),
                ));
            } else if stage.min > max {
                problems.push((
                    Some(index),
                    format!("`min` ({}) is larger than `max` ({max})", stage.min),
                ));
            }
        }
        if stage.negative {
            let neighbours = [index.checked_sub(1), Some(index + 1)];
            if neighbours
                .into_iter()
                .flatten()
                .filter_map(|n| stages.get(n))
                .any(|n| !n.negative && n.min == 0)
            {
                problems.push((
                    Some(index),
                    "a negative stage cannot be next to an optional stage".into(),
                ));
            }
        }
    }
    if within.is_none() {
        let unbounded = stages.iter().position(|s| !s.negative && s.max.is_none());
        let relaxed = stages
            .iter()
            .enumerate()
            .skip(1)
            .position(|(_, s)| s.negative || !s.strict)
            .map(|p| p + 1);
        if let Some(index) = unbounded {
            problems.push((Some(index), "a stage without `max` needs `within` on the pattern: its partial matches could grow without bound".into()));
        } else if let Some(index) = relaxed {
            problems.push((Some(index), "a relaxed or negative stage needs `within` on the pattern: partial matches waiting for it could pile up without bound".into()));
        }
    }
    problems
}

/// The logic a pattern runs per key.
#[derive(Debug)]
struct Logic {
    stage: Arc<str>,
    def: Arc<PatternDef>,
    output_layout: Layout,
    input_layout: Layout,
    found: Vec<Found>,
}

impl KeyLogic for Logic {
    type State = KeyMatches;

    fn event(&mut self, key: &Value, state: &mut KeyMatches, event: Event, out: &mut Output) {
        state.event(&self.def, event, &mut self.found);
        self.emit(key, out);
    }

    fn time(&mut self, key: &Value, state: &mut KeyMatches, now: i64, end: bool, out: &mut Output) {
        state.expire(&self.def, now, end, &mut self.found);
        self.emit(key, out);
    }

    fn deadline(&self, state: &KeyMatches) -> Option<i64> {
        state.deadline(&self.def)
    }

    fn idle(&self, state: &KeyMatches) -> bool {
        state.is_empty()
    }

    fn stage(&self) -> &Arc<str> {
        &self.stage
    }

    fn input_layout(&self) -> &Layout {
        &self.input_layout
    }
}

impl Logic {
    fn row(&self, key: &Value, thread: &Thread) -> Vec<Value> {
        let stages: Vec<Value> = self
            .def
            .positive_names
            .iter()
            .zip(&thread.counts)
            .filter(|(_, count)| **count > 0)
            .map(|(name, _)| Value::str(name))
            .collect();
        let mut row = Vec::with_capacity(4 + thread.selected.len());
        row.push(key.clone());
        row.push(Value::Int(thread.first_time));
        row.push(Value::Int(thread.last_time));
        row.push(Value::List(Arc::new(stages)));
        row.extend(
            thread
                .selected
                .iter()
                .map(|accumulator| accumulator.value()),
        );
        row
    }

    fn emit(&mut self, key: &Value, out: &mut Output) {
        let now = now_millis();
        for found in std::mem::take(&mut self.found) {
            match found {
                Found::Match(thread) => out.events.push(Event {
                    event_time: thread.last_time,
                    processing_time: now,
                    key: Some(key.clone()),
                    payload: Payload::Row(self.row(key, &thread)),
                    ..Event::default()
                }),
                Found::TimedOut { thread, deadline } => {
                    let event = Event {
                        event_time: thread.last_time,
                        processing_time: now,
                        key: Some(key.clone()),
                        payload: Payload::Row(self.row(key, &thread)),
                        ..Event::default()
                    };
                    let reached = self
                        .def
                        .positive_names
                        .get(thread.stage)
                        .map_or("?", String::as_str);
                    let reason = match deadline {
                        Some(deadline) => format!(
                            "partial match timed out at {} waiting in stage `{reached}`",
                            format_rfc3339(deadline)
                        ),
                        None => format!(
                            "partial match left waiting in stage `{reached}` at the end of input"
                        ),
                    };
                    out.side.push(SideRecord {
                        kind: SideKind::TimedOut,
                        stage: self.stage.clone(),
                        reason,
                        line: None,
                        record: SideData::event(&event, &self.output_layout),
                    });
                }
                Found::Failed { event, reason } => {
                    out.side
                        .push(dead_letter(&self.stage, &event, &self.input_layout, reason));
                }
            }
        }
    }
}

/// Matches a pattern per key in event time. Results are events whose payload is a row of
/// `key`, `start` and `end` (the times of the first and last matched events), `stages` (the
/// names of the stages that took events) and the selected fields in order; timed-out partial
/// matches are side records of the same row.
pub struct Pattern {
    keyed: Keyed<Logic>,
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pattern")
            .field("stage", &self.keyed.logic.stage)
            .finish_non_exhaustive()
    }
}

impl Pattern {
    /// A pattern step named `stage`; returns it and the layout of its results. `key_type` is
    /// the type of the key set by the `key_by` before it, when known.
    pub fn new(
        stage: Arc<str>,
        def: PatternDef,
        key_type: Option<FieldType>,
    ) -> Result<(Pattern, Layout), String> {
        let mut fields = vec![
            Field {
                name: "key".into(),
                ty: key_type.unwrap_or(FieldType::Json),
                nullable: true,
            },
            Field {
                name: "start".into(),
                ty: FieldType::Timestamp,
                nullable: false,
            },
            Field {
                name: "end".into(),
                ty: FieldType::Timestamp,
                nullable: false,
            },
            Field {
                name: "stages".into(),
                ty: FieldType::Json,
                nullable: false,
            },
        ];
        for select in &def.select {
            let ty = match select.aggregate {
                Aggregate::Count => FieldType::Int,
                _ => match select.input.as_ref().and_then(Expr::output_type) {
                    Some(FieldType::Timestamp) if select.aggregate == Aggregate::Sum => {
                        FieldType::Int
                    }
                    Some(ty) => ty,
                    None => FieldType::Json,
                },
            };
            fields.push(Field {
                name: select.name.clone(),
                ty,
                nullable: true,
            });
        }
        let schema = Schema::from_fields(fields).map_err(|error| error.to_string())?;
        let output_layout = Layout::Row(Arc::new(schema));
        let input_layout = def.input_layout.clone();
        Ok((
            Pattern {
                keyed: Keyed::new(Logic {
                    stage,
                    def: Arc::new(def),
                    output_layout: output_layout.clone(),
                    input_layout,
                    found: Vec::new(),
                }),
            },
            output_layout,
        ))
    }

    /// Keeps the partial matches in a sled store of their own under `dir` (one database per
    /// parallel instance, opened by [`Operator::open`]), with a page cache of `cache_bytes`:
    /// `state.backend: sled`.
    pub fn keep_state_in(&mut self, dir: std::path::PathBuf, cache_bytes: u64, cache_keys: usize) {
        self.keyed.keep_state_in(dir, cache_bytes, cache_keys);
    }

    /// Keeps the partial matches in `store` (its own), caching at most `cache_keys` keys as
    /// objects: what `state.backend: sled` does at open, with any store (for tests).
    pub fn keep_state_in_store(
        &mut self,
        store: Box<dyn dataflow_state::StateStore>,
        cache_keys: usize,
    ) {
        self.keyed.keep_state_in_store(store, cache_keys);
    }

    /// The number of keys holding buffered events or partial matches.
    pub fn key_count(&self) -> usize {
        self.keyed.timeline.key_count()
    }
}

impl Operator for Pattern {
    fn kind(&self) -> &'static OperatorKind {
        &KIND
    }

    fn process(&mut self, batch: Vec<Event>, out: &mut Output) {
        self.keyed.process(batch, out)
    }

    fn open(&mut self, instance: usize) -> crate::Result<()> {
        self.keyed.open(instance)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> i64 {
        self.keyed.on_watermark(watermark, out)
    }

    fn finish(&mut self, fire: bool, out: &mut Output) {
        self.keyed.finish(fire, out)
    }

    fn snapshot(&self) -> crate::Result<Option<OperatorSnapshot>> {
        self.keyed.snapshot()
    }

    fn restore(&mut self, state: &[u8]) -> crate::Result<()> {
        self.keyed.restore(state)
    }

    fn merge_snapshots(&self, parts: Vec<OperatorSnapshot>) -> crate::Result<OperatorSnapshot> {
        timeline::merge_encoded::<KeyMatches>(&parts)
    }

    fn split_snapshot(&self, state: &[u8], workers: usize) -> crate::Result<Vec<Vec<u8>>> {
        timeline::split_encoded::<KeyMatches>(state, workers)
    }
}

/// Decodes the state of a pattern operator: per key, its buffered events and its partial
/// matches.
pub fn decode_snapshot(state: &[u8]) -> crate::Result<OperatorView> {
    let snapshot: TimelineSnapshot<KeyMatches> =
        dataflow_checkpoint::decode_state(state).map_err(checkpoint_error)?;
    Ok(OperatorView {
        watermark: snapshot.watermark,
        keys: snapshot
            .keys
            .iter()
            .map(|(key, entry)| KeyView {
                key: key.to_json(),
                value: json!({
                    "buffered_events": entry.buffer.len(),
                    "partial_matches": entry.state.start_count(),
                }),
            })
            .collect(),
    })
}
