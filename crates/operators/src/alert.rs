//! `alert`: tells, per key and in event time, when a condition starts holding and when it stops:
//! once each, not once per event. Events wait per key until the watermark passes them (the
//! pattern step's `timeline`), so disorder within the watermark bound changes nothing.
//!
//! Two rules: the condition holds on every event of the key for a duration (`for`), or on at
//! least N events within a sliding duration (`count` within `within`).

use std::collections::VecDeque;
use std::sync::Arc;

use dataflow_event::time::now_millis;
use dataflow_event::{Event, Field, FieldType, Layout, Payload, Schema, Value};
use dataflow_expr::Expr;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kind::{KeyEffect, OperatorKind, Partitioning};
use crate::operator::{checkpoint_error, dead_letter, Operator, OperatorSnapshot, Output};
use crate::pattern::timeline::{self, KeyLogic, Keyed, TimelineSnapshot};
use crate::window::{KeyView, OperatorView};

/// What every alert operator is: it keeps state per key, keeps its events' keys, and its
/// snapshot is a `TimelineSnapshot` of every key's buffered events and alert state.
pub const KIND: OperatorKind = OperatorKind {
    name: "alert",
    stateful: true,
    input: Partitioning::ByKey,
    key: KeyEffect::Preserves,
    inspect: Some(decode_snapshot),
};

/// When an alert holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertRule {
    /// The condition held on every event of the key for at least this long (ms): from the
    /// first event of a run of events meeting it to an event of the run this much later. It
    /// stops at the first event that does not meet it.
    For(i64),
    /// At least `count` events meeting the condition within `within` ms (a sliding window
    /// ending now). It stops when fewer than `count` of them are left in the window.
    Count {
        /// How many events.
        count: u32,
        /// Within how long (ms).
        within: i64,
    },
}

/// One key's alert state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AlertState {
    /// `For`: the time of the first event of the current run of events meeting the condition,
    /// and how many it has.
    run_start: Option<i64>,
    run_events: u64,
    /// `Count`: the times of the events meeting the condition still inside the window.
    times: VecDeque<i64>,
    /// Since when the alert holds, if it does.
    holding_since: Option<i64>,
    /// `Count`: the events meeting the condition since it started holding (those that made it
    /// hold included).
    held_events: u64,
}

#[derive(Debug)]
struct Logic {
    stage: Arc<str>,
    condition: Expr,
    rule: AlertRule,
    input_layout: Layout,
}

impl Logic {
    fn result(
        &self,
        key: &Value,
        started: bool,
        since: i64,
        at: i64,
        events: u64,
        out: &mut Output,
    ) {
        let duration = if started {
            Value::Null
        } else {
            Value::Int(at.saturating_sub(since))
        };
        out.events.push(Event {
            event_time: at,
            processing_time: now_millis(),
            key: Some(key.clone()),
            payload: Payload::Row(vec![
                key.clone(),
                Value::str(if started { "started" } else { "stopped" }),
                Value::Int(since),
                Value::Int(at),
                duration,
                Value::Int(i64::try_from(events).unwrap_or(i64::MAX)),
            ]),
            ..Event::default()
        });
    }

    /// `Count`: the time at which the window will hold fewer than `count` events (when
    /// holding), or when its oldest event leaves it (otherwise).
    fn window_deadline(&self, state: &AlertState) -> Option<i64> {
        let AlertRule::Count { count, within } = self.rule else {
            return None;
        };
        let oldest_needed = if state.holding_since.is_some() {
            let count = count as usize;
            state
                .times
                .len()
                .checked_sub(count)
                .and_then(|index| state.times.get(index))
        } else {
            state.times.front()
        };
        oldest_needed.map(|time| time.saturating_add(within))
    }

    /// `Count`: every event before `now` has been seen: a window that fell below `count`
    /// before `now` stops the alert at the moment it did (an event at that very moment may
    /// have kept it holding, so the stop waits for time to pass it); events that left the
    /// window for good are forgotten.
    fn advance(&self, key: &Value, state: &mut AlertState, now: i64, out: &mut Output) {
        let AlertRule::Count { within, .. } = self.rule else {
            return;
        };
        if let (Some(since), Some(deadline)) = (state.holding_since, self.window_deadline(state)) {
            if deadline < now {
                state.holding_since = None;
                self.result(key, false, since, deadline, state.held_events, out);
            }
        }
        while state
            .times
            .front()
            .is_some_and(|time| time.saturating_add(within) < now)
        {
            state.times.pop_front();
        }
    }
}

impl KeyLogic for Logic {
    type State = AlertState;

    fn event(&mut self, key: &Value, state: &mut AlertState, event: Event, out: &mut Output) {
        let time = event.event_time;
        self.advance(key, state, time, out);
        let holds = match self.condition.eval_bool(&event) {
            Ok(holds) => holds,
            Err(error) => {
                out.side.push(dead_letter(
                    &self.stage,
                    &event,
                    &self.input_layout,
                    error.to_string(),
                ));
                return;
            }
        };
        match self.rule {
            AlertRule::For(duration) => {
                if holds {
                    let start = *state.run_start.get_or_insert(time);
                    state.run_events += 1;
                    if state.holding_since.is_none() && time.saturating_sub(start) >= duration {
                        state.holding_since = Some(start);
                        self.result(key, true, start, time, state.run_events, out);
                    }
                } else {
                    if let Some(since) = state.holding_since.take() {
                        self.result(key, false, since, time, state.run_events, out);
                    }
                    state.run_start = None;
                    state.run_events = 0;
                }
            }
            AlertRule::Count { count, within } => {
                if holds {
                    state.times.push_back(time);
                    if state.holding_since.is_some() {
                        state.held_events += 1;
                    }
                }
                // The window at `time` is `(time - within, time]`.
                while state
                    .times
                    .front()
                    .is_some_and(|t| t.saturating_add(within) <= time)
                {
                    state.times.pop_front();
                }
                let enough = state.times.len() >= count as usize;
                match state.holding_since {
                    None if enough => {
                        state.holding_since = Some(time);
                        state.held_events = state.times.len() as u64;
                        self.result(key, true, time, time, state.held_events, out);
                    }
                    // The oldest needed event left the window at this very moment.
                    Some(since) if !enough => {
                        state.holding_since = None;
                        self.result(key, false, since, time, state.held_events, out);
                    }
                    _ => {}
                }
            }
        }
    }

    fn time(
        &mut self,
        key: &Value,
        state: &mut AlertState,
        now: i64,
        _end: bool,
        out: &mut Output,
    ) {
        self.advance(key, state, now, out);
    }

    fn deadline(&self, state: &AlertState) -> Option<i64> {
        due(self.window_deadline(state), state)
    }

    fn idle(&self, state: &AlertState) -> bool {
        state.run_start.is_none() && state.times.is_empty() && state.holding_since.is_none()
    }

    fn stage(&self) -> &Arc<str> {
        &self.stage
    }

    fn input_layout(&self) -> &Layout {
        &self.input_layout
    }
}

/// When a key is due, given its window deadline: a stop is certain, and an event can be
/// forgotten, once time has passed the deadline (`advance` acts at `deadline < now`).
fn due(deadline: Option<i64>, _state: &AlertState) -> Option<i64> {
    deadline.map(|deadline| deadline.saturating_add(1))
}

/// Tells when a condition starts and stops holding, per key. Results are events whose payload
/// is a row of `key`, `alert` (`started` or `stopped`), `since` (when it started holding),
/// `at` (when this was seen), `duration_ms` (for `stopped`: `at - since`) and `events` (the
/// events meeting the condition counted then).
pub struct Alert {
    keyed: Keyed<Logic>,
}

impl std::fmt::Debug for Alert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alert")
            .field("stage", &self.keyed.logic.stage)
            .finish_non_exhaustive()
    }
}

impl Alert {
    /// An alert step named `stage` over events of `input_layout`; returns it and the layout of
    /// its results. `key_type` is the type of the key set before it, when known.
    pub fn new(
        stage: Arc<str>,
        condition: Expr,
        rule: AlertRule,
        key_type: Option<FieldType>,
        input_layout: Layout,
    ) -> Result<(Alert, Layout), String> {
        let field = |name: &str, ty: FieldType, nullable: bool| Field {
            name: name.into(),
            ty,
            nullable,
        };
        let schema = Schema::from_fields([
            field("key", key_type.unwrap_or(FieldType::Json), true),
            field("alert", FieldType::String, false),
            field("since", FieldType::Timestamp, false),
            field("at", FieldType::Timestamp, false),
            field("duration_ms", FieldType::Int, true),
            field("events", FieldType::Int, false),
        ])
        .map_err(|error| error.to_string())?;
        Ok((
            Alert {
                keyed: Keyed::new(Logic {
                    stage,
                    condition,
                    rule,
                    input_layout,
                }),
            },
            Layout::Row(Arc::new(schema)),
        ))
    }
}

impl Alert {
    /// Keeps the alert state in a sled store of its own under `dir` (one database per parallel
    /// instance, opened by [`Operator::open`]), with a page cache of `cache_bytes`:
    /// `state.backend: sled`.
    pub fn keep_state_in(&mut self, dir: std::path::PathBuf, cache_bytes: u64, cache_keys: usize) {
        self.keyed.keep_state_in(dir, cache_bytes, cache_keys);
    }

    /// Keeps the alert state in `store` (its own), caching at most `cache_keys` keys as
    /// objects: what `state.backend: sled` does at open, with any store (for tests).
    pub fn keep_state_in_store(
        &mut self,
        store: Box<dyn dataflow_state::StateStore>,
        cache_keys: usize,
    ) {
        self.keyed.keep_state_in_store(store, cache_keys);
    }
}

impl Operator for Alert {
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
        timeline::merge_encoded::<AlertState>(&parts)
    }

    fn split_snapshot(&self, state: &[u8], workers: usize) -> crate::Result<Vec<Vec<u8>>> {
        timeline::split_encoded::<AlertState>(state, workers)
    }
}

/// Decodes the state of an alert operator: per key, its buffered events and whether it holds.
pub fn decode_snapshot(state: &[u8]) -> crate::Result<OperatorView> {
    let snapshot: TimelineSnapshot<AlertState> =
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
                    "holding_since": entry.state.holding_since,
                }),
            })
            .collect(),
    })
}
