//! `over`: Flink's OVER aggregation (`PARTITION BY key ORDER BY time ROWS BETWEEN N-1
//! PRECEDING AND CURRENT ROW`). For every event of a key, in event-time order, one result: the
//! event's own fields plus aggregates over the key's last `rows` events, the current one
//! included. Events wait per key until the watermark passes them (the pattern step's
//! `timeline`), so disorder within the watermark bound changes nothing.
//!
//! Each key keeps only the aggregate inputs (and times) of its last `rows` events, so its state
//! is bounded by `rows`; a key, once seen, is kept (as Flink keeps it without a state TTL).

use std::collections::VecDeque;
use std::sync::Arc;

use dataflow_event::{Event, Field, FieldType, Layout, Payload, Schema, Value};
use dataflow_expr::Expr;
use dataflow_window::{aggregate_rows, check_aggregate_inputs, AggregateKind};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kind::{KeyEffect, OperatorKind, Partitioning};
use crate::operator::{checkpoint_error, dead_letter, Operator, OperatorSnapshot, Output};
use crate::pattern::timeline::{self, KeyLogic, Keyed, TimelineSnapshot};
use crate::window::{KeyView, OperatorView};

/// What every over operator is: it keeps state per key, keeps its events' keys, and its
/// snapshot is a `TimelineSnapshot` of every key's buffered events and last rows.
pub const KIND: OperatorKind = OperatorKind {
    name: "over",
    stateful: true,
    input: Partitioning::ByKey,
    key: KeyEffect::Preserves,
    inspect: Some(decode_snapshot),
};

/// The aggregates an over step computes: the ones whose value over a set of rows does not
/// depend on anything but those rows.
pub const AGGREGATES: [AggregateKind; 5] = [
    AggregateKind::Count,
    AggregateKind::Sum,
    AggregateKind::Avg,
    AggregateKind::Min,
    AggregateKind::Max,
];

/// One key's state: the time and aggregate inputs of its last `rows` events, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct OverState {
    rows: VecDeque<(i64, Vec<Value>)>,
}

#[derive(Debug)]
struct Logic {
    stage: Arc<str>,
    rows: usize,
    kinds: Vec<AggregateKind>,
    names: Vec<String>,
    inputs: Vec<Option<Expr>>,
    input_layout: Layout,
}

impl KeyLogic for Logic {
    type State = OverState;

    fn event(&mut self, _key: &Value, state: &mut OverState, mut event: Event, out: &mut Output) {
        let mut values = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            match input.as_ref().map(|expr| expr.eval(&event)) {
                None => values.push(Value::Null),
                Some(Ok(value)) => values.push(value),
                Some(Err(error)) => {
                    out.side.push(dead_letter(
                        &self.stage,
                        &event,
                        &self.input_layout,
                        error.to_string(),
                    ));
                    return;
                }
            }
        }
        if let Err(error) = check_aggregate_inputs(&self.kinds, &values) {
            out.side.push(dead_letter(
                &self.stage,
                &event,
                &self.input_layout,
                error.to_string(),
            ));
            return;
        }
        state.rows.push_back((event.event_time, values));
        while state.rows.len() > self.rows {
            state.rows.pop_front();
        }
        let results = aggregate_rows(
            &self.kinds,
            state
                .rows
                .iter()
                .map(|(time, values)| (values.as_slice(), *time)),
        );
        match &mut event.payload {
            Payload::Row(row) => row.extend(results),
            Payload::Object(object) => {
                for (name, value) in self.names.iter().zip(results) {
                    object.insert(name.clone(), value);
                }
            }
        }
        out.events.push(event);
    }

    fn time(&mut self, _: &Value, _: &mut OverState, _: i64, _: bool, _: &mut Output) {}

    fn deadline(&self, _state: &OverState) -> Option<i64> {
        None
    }

    fn idle(&self, state: &OverState) -> bool {
        state.rows.is_empty()
    }

    fn stage(&self) -> &Arc<str> {
        &self.stage
    }

    fn input_layout(&self) -> &Layout {
        &self.input_layout
    }
}

/// Aggregates over each key's last `rows` events. Results are the input events, in event-time
/// order per key, each with the aggregates appended (a row's fields after its own, an object's
/// as members).
pub struct Over {
    keyed: Keyed<Logic>,
}

impl std::fmt::Debug for Over {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Over")
            .field("stage", &self.keyed.logic.stage)
            .field("rows", &self.keyed.logic.rows)
            .finish_non_exhaustive()
    }
}

impl Over {
    /// An over step named `stage` over events of `input_layout`, aggregating each key's last
    /// `rows` events; `aggregates` are (output name, function, input expression), each function
    /// one of [`AGGREGATES`]. Returns it and the layout of its results.
    pub fn new(
        stage: Arc<str>,
        rows: usize,
        aggregates: Vec<(String, AggregateKind, Option<Expr>)>,
        input_layout: Layout,
    ) -> Result<(Over, Layout), String> {
        if rows == 0 {
            return Err("`rows` must be at least 1".into());
        }
        if let Some((_, kind, _)) = aggregates
            .iter()
            .find(|(_, kind, _)| !AGGREGATES.contains(kind))
        {
            return Err(format!(
                "an over step computes count, sum, avg, min and max, not `{}`",
                kind.name()
            ));
        }
        let output = match &input_layout {
            Layout::Object => Layout::Object,
            Layout::Row(schema) => {
                let mut fields: Vec<Field> = schema.fields().to_vec();
                for (name, kind, _) in &aggregates {
                    let ty = match kind {
                        AggregateKind::Count => FieldType::Int,
                        AggregateKind::Avg => FieldType::Float,
                        _ => FieldType::Json,
                    };
                    fields.push(Field {
                        name: name.as_str().into(),
                        ty,
                        nullable: true,
                    });
                }
                Layout::Row(Arc::new(
                    Schema::from_fields(fields).map_err(|error| error.to_string())?,
                ))
            }
        };
        let mut kinds = Vec::new();
        let mut names = Vec::new();
        let mut inputs = Vec::new();
        for (name, kind, input) in aggregates {
            names.push(name);
            kinds.push(kind);
            inputs.push(input);
        }
        Ok((
            Over {
                keyed: Keyed::new(Logic {
                    stage,
                    rows,
                    kinds,
                    names,
                    inputs,
                    input_layout,
                }),
            },
            output,
        ))
    }

    /// Keeps the state in a sled store of its own under `dir` (one database per parallel
    /// instance, opened by [`Operator::open`]), with a page cache of `cache_bytes`:
    /// `state.backend: sled`.
    pub fn keep_state_in(&mut self, dir: std::path::PathBuf, cache_bytes: u64, cache_keys: usize) {
        self.keyed.keep_state_in(dir, cache_bytes, cache_keys);
    }

    /// Keeps the state in `store` (its own), caching at most `cache_keys` keys as objects:
    /// what `state.backend: sled` does at open, with any store (for tests).
    pub fn keep_state_in_store(
        &mut self,
        store: Box<dyn dataflow_state::StateStore>,
        cache_keys: usize,
    ) {
        self.keyed.keep_state_in_store(store, cache_keys);
    }
}

impl Operator for Over {
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
        timeline::merge_encoded::<OverState>(&parts)
    }

    fn split_snapshot(&self, state: &[u8], workers: usize) -> crate::Result<Vec<Vec<u8>>> {
        timeline::split_encoded::<OverState>(state, workers)
    }
}

/// Decodes the state of an over operator: per key, its buffered events and rows kept.
pub fn decode_snapshot(state: &[u8]) -> crate::Result<OperatorView> {
    let snapshot: TimelineSnapshot<OverState> =
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
                    "rows": entry.state.rows.len(),
                }),
            })
            .collect(),
    })
}
