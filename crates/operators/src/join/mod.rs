//! Joins of two streams, keyed and in event time: `interval` (a row of one side meets the rows of
//! the other within bounds of its time), `window` (both in the same tumbling or sliding window)
//! and `lookup` (each event of a stream meets the version of a changelog table as of its time).
//!
//! A join has two inputs, `left` and `right`, which reach it as one stream: the `branch`
//! operator before it ([`branch::Branches`]) runs each input's own steps, sets the join key and
//! wraps every event with its side ([`tag`]), so that the runtime's single chain, its routing by
//! key to parallel workers and its watermarks serve a join unchanged. The join unwraps them.
//!
//! Every join kind is one [`Join`] over a [`Logic`] that keeps one key's rows; the [`Join`]
//! keeps the keys, wakes each when the watermark passes the time its logic asked for, emits the
//! joined rows and counts what matched and what did not ([`JoinCounters`]).
//!
//! Results: a row of the left input's fields then the right input's (as the plan names them,
//! prefixed), `null` for a side without a partner (outer joins), then, for window joins, the
//! window's `window_start` and `window_end`. A result's event time is the later of its two
//! rows' times (the one row's time when it has no partner), and its key is the join key.
//!
//! Watermarks: a join forwards `W - holdback`, where `holdback` is how far behind the watermark
//! the results it may still emit can lie (the upper bound of an outer interval join, the size
//! of a window), so that what follows it never sees its results as late.
//!
//! State: each key's [`Logic::State`] is an object in memory (`state.backend: memory`) or an
//! entry of the operator's own state store, the keys in use cached as objects
//! ([`Join::keep_state_in`], `state.backend: sled`); the timers are in memory either way and
//! rebuilt from the keys' states on restore. A checkpoint is the same bytes whichever holds the
//! keys: a [`JoinSnapshot`], written one key at a time (a stored key's bytes copied).

pub mod branch;
pub mod interval;
mod keys;
pub mod lookup;
pub mod window;

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflow_event::time::{format_rfc3339, now_millis};
use dataflow_event::{Event, Layout, Payload, Value};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use dataflow_state::StateStore;

use crate::kind::OperatorKind;
use crate::operator::{
    checkpoint_error, dead_letter, Operator, OperatorSnapshot, Output, SideData, SideKind,
    SideRecord,
};
use crate::pattern::timeline::{open_store, state_failure, StateDir};
use crate::window::snapshot::{SnapshotReader, SnapshotWriter};
use crate::window::{KeyView, OperatorView};
use crate::OperatorError;
use keys::Keys;

pub use branch::{Branches, Lane};
pub use interval::IntervalJoin;
pub use lookup::LookupJoin;
pub use window::WindowJoin;

/// Which rows without a partner a join emits (with `null` for the missing side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinType {
    /// Only matched pairs.
    Inner,
    /// Matched pairs, and left rows that never found a partner.
    Left,
    /// Matched pairs, and right rows that never found a partner.
    Right,
    /// Matched pairs, and the rows of either side that never found a partner.
    Full,
}

impl JoinType {
    /// Whether unmatched left rows are emitted.
    pub fn keeps_left(self) -> bool {
        matches!(self, JoinType::Left | JoinType::Full)
    }

    /// Whether unmatched right rows are emitted.
    pub fn keeps_right(self) -> bool {
        matches!(self, JoinType::Right | JoinType::Full)
    }
}

/// The side of a join an event comes from, as [`tag`] marks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The left input.
    Left,
    /// The right input.
    Right,
    /// The right input of a lookup join, deleting its key from the table.
    RightDelete,
}

impl Side {
    fn code(self) -> i64 {
        match self {
            Side::Left => 0,
            Side::Right => 1,
            Side::RightDelete => 2,
        }
    }

    fn from_code(code: i64) -> Option<Side> {
        match code {
            0 => Some(Side::Left),
            1 => Some(Side::Right),
            2 => Some(Side::RightDelete),
            _ => None,
        }
    }
}

/// `event` (with a row payload) wrapped as a row of `side` for a join: its payload becomes
/// `[side, [values...]]`. Only the join after a `branch` reads this form.
pub fn tag(side: Side, mut event: Event) -> Event {
    let values = match std::mem::take(&mut event.payload) {
        Payload::Row(values) => Value::List(Arc::new(values)),
        Payload::Object(fields) => Value::Map(Arc::new(fields)),
    };
    event.payload = Payload::Row(vec![Value::Int(side.code()), values]);
    event
}

/// The side of an event wrapped by [`tag`], and the event with its row payload back (without
/// copying its values); the event as it came if it is not wrapped.
fn untag(mut event: Event) -> Result<(Side, Event), Event> {
    let Payload::Row(tagged) = &mut event.payload else {
        return Err(event);
    };
    let side = match tagged.as_slice() {
        [Value::Int(code), Value::List(_)] => Side::from_code(*code),
        _ => None,
    };
    let (Some(side), Some(Value::List(values))) = (side, tagged.pop()) else {
        return Err(event);
    };
    let values = Arc::try_unwrap(values).unwrap_or_else(|shared| shared.as_ref().clone());
    event.payload = Payload::Row(values);
    Ok((side, event))
}

/// One row held by a join: its event time, its arrival order (which orders rows of equal
/// times), and its values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Its event time.
    pub time: i64,
    /// Its place in the join's arrival order.
    pub seq: u64,
    /// Its fields, in its input's layout.
    pub values: Vec<Value>,
}

/// What a join counts: pairs emitted, and rows of each side that never found a partner
/// (emitted with nulls by an outer join on that side, dropped otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCounters {
    /// Joined pairs emitted.
    pub matched: u64,
    /// Left rows (stream events of a lookup join) that found no partner.
    pub unmatched_left: u64,
    /// Right rows that found no partner.
    pub unmatched_right: u64,
}

impl JoinCounters {
    fn add(&mut self, other: JoinCounters) {
        self.matched += other.matched;
        self.unmatched_left += other.unmatched_left;
        self.unmatched_right += other.unmatched_right;
    }
}

/// Where a join's logic emits results, and what it counts.
#[derive(Debug)]
pub struct Emit<'a> {
    out: &'a mut Output,
    counters: &'a mut JoinCounters,
    left_width: usize,
    right_width: usize,
}

impl Emit<'_> {
    /// Emits a result of `key` at `time`: the left values (or nulls), the right values (or
    /// nulls), then `extra`. Counts a pair, or an unmatched row of the side present.
    fn row(
        &mut self,
        key: &Value,
        time: i64,
        left: Option<&[Value]>,
        right: Option<&[Value]>,
        extra: &[Value],
    ) {
        let mut values = Vec::with_capacity(self.left_width + self.right_width + extra.len());
        match left {
            Some(left) => values.extend_from_slice(left),
            None => values.resize(self.left_width, Value::Null),
        }
        match right {
            Some(right) => values.extend_from_slice(right),
            None => values.resize(self.left_width + self.right_width, Value::Null),
        }
        values.extend_from_slice(extra);
        self.out.events.push(Event {
            event_time: time,
            processing_time: now_millis(),
            key: Some(key.clone()),
            payload: Payload::Row(values),
            ..Event::default()
        });
        if left.is_some() && right.is_some() {
            self.counters.matched += 1;
        }
    }

    /// Counts `count` left rows that never found a partner.
    fn unmatched_left(&mut self, count: u64) {
        self.counters.unmatched_left += count;
        self.out.unmatched += count;
    }

    /// Counts `count` right rows that never found a partner.
    fn unmatched_right(&mut self, count: u64) {
        self.counters.unmatched_right += count;
        self.out.unmatched += count;
    }
}

/// What one kind of join does with one key's rows.
pub trait Logic: Send {
    /// The state of one key.
    type State: Default + Serialize + DeserializeOwned + Send;

    /// The kind's static facts.
    fn kind(&self) -> &'static OperatorKind;

    /// A row of `side` arrived (not behind the watermark, which is `watermark`).
    fn insert(
        &self,
        key: &Value,
        state: &mut Self::State,
        side: Side,
        row: Row,
        watermark: i64,
        emit: &mut Emit<'_>,
    );

    /// Event time reached `watermark` for the key: the time it was due at ([`Logic::due`]),
    /// which the watermark has reached; everything due before was run before.
    fn advance(&self, key: &Value, state: &mut Self::State, watermark: i64, emit: &mut Emit<'_>);

    /// The input ended: emit everything the key still owes.
    fn finish(&self, key: &Value, state: &mut Self::State, emit: &mut Emit<'_>);

    /// The watermark at which the key wants [`Logic::advance`] called, if any.
    fn due(&self, state: &Self::State) -> Option<i64>;

    /// [`Logic::due`] after a row of `side` at `time` was inserted into `state`, whose due was
    /// `previous` before: by default worked out again; a kind whose due is the earliest of its
    /// rows' says so in constant time.
    fn due_after_insert(
        &self,
        state: &Self::State,
        _side: Side,
        _time: i64,
        _previous: Option<i64>,
    ) -> Option<i64> {
        self.due(state)
    }

    /// How many rows the key holds (0: the key can be forgotten).
    fn rows(&self, state: &Self::State) -> usize;

    /// How far behind the watermark the results it may still emit lie: the join forwards
    /// `W - holdback`.
    fn holdback(&self) -> i64;
}

/// The serializable form of a join's state: keys sorted, with the watermark, the arrival
/// counter and the counters. A join writes it key by key ([`Operator::snapshot`]) without
/// gathering it; merging and splitting parallel instances' states decode it whole.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinSnapshot<S, K = Value> {
    /// The watermark seen last.
    pub watermark: i64,
    /// The next arrival number.
    pub seq: u64,
    /// What was matched and what was not.
    pub counters: JoinCounters,
    /// Every key's state.
    pub keys: Vec<(K, S)>,
}

/// What both inputs of a join look like: their layouts (for late and dead records) and widths.
#[derive(Clone, Debug)]
pub struct JoinInputs {
    /// The layout of the left input (after its steps).
    pub left: Layout,
    /// The layout of the right input (after its steps).
    pub right: Layout,
}

impl JoinInputs {
    fn width(layout: &Layout) -> usize {
        layout.schema().map_or(0, |schema| schema.len())
    }
}

/// A keyed, event-time join of two inputs, of the kind its [`Logic`] gives.
pub struct Join<L: Logic> {
    stage: Arc<str>,
    logic: L,
    inputs: JoinInputs,
    /// Every key's state: in memory, or in the operator's own store ([`Join::keep_state_in`]).
    keys: Keys<L::State>,
    /// The keys due when the watermark reaches each time; `wake` says which entry counts (a key
    /// may sit at times it is no longer due at). In memory whichever backend holds the keys,
    /// and rebuilt from the keys' states on restore.
    timers: BTreeMap<i64, Vec<Value>>,
    wake: FxHashMap<Value, i64>,
    watermark: i64,
    seq: u64,
    counters: JoinCounters,
    /// How many results a watermark or the end hands on at once (every key's results whole):
    /// past it the operator is [`Operator::pending`] and goes on at the next call.
    emit_limit: usize,
    pending: bool,
    /// At the end of input: the keys still to finish, in descending order (popped from the
    /// back); `None` before the end.
    finishing: Option<Vec<Value>>,
    /// Where the keys' states live with `state.backend: sled` (else in memory).
    state_dir: StateDir,
}

impl<L: Logic> std::fmt::Debug for Join<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Join")
            .field("stage", &self.stage)
            .field("kind", &self.logic.kind().name)
            .finish_non_exhaustive()
    }
}

/// The header of a join's checkpointed state, written before its keys: a [`JoinSnapshot`] is
/// the watermark, the arrival counter and the counters, then the keys, then nothing.
type Header = (i64, u64, JoinCounters);

impl<L: Logic> Join<L> {
    /// A join named `stage` of inputs laid out as `inputs`, doing what `logic` does, its state
    /// in memory.
    pub fn new(stage: Arc<str>, logic: L, inputs: JoinInputs) -> Join<L> {
        Join {
            stage,
            logic,
            inputs,
            keys: Keys::default(),
            timers: BTreeMap::new(),
            wake: FxHashMap::default(),
            watermark: i64::MIN,
            seq: 0,
            counters: JoinCounters::default(),
            emit_limit: usize::MAX,
            pending: false,
            finishing: None,
            state_dir: None,
        }
    }

    /// Keeps the keys' states in a sled store of its own under `dir` (one database per parallel
    /// instance, opened by [`Operator::open`]), with a page cache of `cache_bytes` and at most
    /// `cache_keys` keys cached as objects: `state.backend: sled`.
    pub fn keep_state_in(&mut self, dir: std::path::PathBuf, cache_bytes: u64, cache_keys: usize) {
        self.state_dir = Some((dir, cache_bytes, cache_keys));
    }

    /// Keeps the keys' states in `store` (its own), caching at most `cache_keys` keys as
    /// objects: what `state.backend: sled` does at open, with any store (for tests). Called
    /// before anything is processed: it drops the keys held.
    pub fn keep_state_in_store(&mut self, store: Box<dyn StateStore>, cache_keys: usize) {
        self.keys = Keys::in_store(store, &self.stage, cache_keys);
        self.timers.clear();
        self.wake.clear();
    }

    /// Hands on at most about `limit` results per call of a watermark or the end (a key's
    /// results whole), the rest at the next call ([`Operator::pending`]).
    pub fn limit_emission(&mut self, limit: usize) {
        self.emit_limit = limit.max(1);
    }

    /// What it has matched and not matched so far.
    pub fn counters(&self) -> JoinCounters {
        self.counters
    }

    /// How many keys hold rows.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many rows it holds, over every key (a state store that fails to read is an error).
    pub fn held_rows(&self) -> crate::Result<usize> {
        let mut rows = 0;
        self.keys.for_each_state(&mut |_, state| {
            rows += self.logic.rows(state);
            Ok(())
        })?;
        Ok(rows)
    }

    fn emit<'a>(
        out: &'a mut Output,
        counters: &'a mut JoinCounters,
        inputs: &JoinInputs,
    ) -> Emit<'a> {
        Emit {
            out,
            counters,
            left_width: JoinInputs::width(&inputs.left),
            right_width: JoinInputs::width(&inputs.right),
        }
    }

    /// Records that `key` is due at `due` (or no longer due), registering a timer unless it is
    /// due then already.
    fn schedule(&mut self, key: Value, due: Option<i64>) {
        match due {
            Some(due) => {
                if self.wake.get(&key) != Some(&due) {
                    self.timers.entry(due).or_default().push(key.clone());
                    self.wake.insert(key, due);
                }
            }
            None => {
                self.wake.remove(&key);
            }
        }
    }

    /// `event` (unwrapped), of `side`, arrived behind the watermark.
    fn late(&self, side: Side, event: &Event, out: &mut Output) {
        let layout = match side {
            Side::Left => &self.inputs.left,
            Side::Right | Side::RightDelete => &self.inputs.right,
        };
        out.side.push(SideRecord {
            kind: SideKind::Late,
            stage: self.stage.clone(),
            reason: format!(
                "event time {} is behind the watermark {}",
                format_rfc3339(event.event_time),
                format_rfc3339(self.watermark),
            ),
            line: None,
            record: SideData::event(event, layout),
        });
    }

    /// A state store failure, naming the operator.
    fn failure(&self, error: OperatorError) -> OperatorError {
        state_failure(&self.stage, error)
    }

    /// Runs every key due by the watermark (see [`Operator::on_watermark`]).
    fn run_due(&mut self, out: &mut Output) -> crate::Result<()> {
        let emitted = out.events.len();
        while let Some((&due, _)) = self.timers.first_key_value() {
            if due > self.watermark {
                break;
            }
            if out.events.len() - emitted >= self.emit_limit {
                self.pending = true;
                break;
            }
            let Some((due, mut keys)) = self.timers.pop_first() else {
                break;
            };
            keys.sort();
            keys.dedup();
            let mut keys = keys.into_iter();
            while let Some(key) = keys.next() {
                if self.wake.get(&key) != Some(&due) {
                    // A stale entry: the key is due at another time.
                    continue;
                }
                self.wake.remove(&key);
                let logic = &self.logic;
                let mut emit = Self::emit(out, &mut self.counters, &self.inputs);
                let next = self.keys.update(&key, false, |state| {
                    logic.advance(&key, state, due, &mut emit);
                    let held = logic.rows(state) > 0;
                    (held.then(|| logic.due(state)).flatten(), held)
                });
                let next = match next {
                    Ok(next) => next.flatten(),
                    Err(error) => {
                        // The keys of this time not yet run stay due.
                        self.timers.entry(due).or_default().extend(keys);
                        return Err(error);
                    }
                };
                self.schedule(key, next);
                if out.events.len() - emitted >= self.emit_limit && keys.len() > 0 {
                    // The keys of this time not yet run wait for the next call.
                    self.timers.entry(due).or_default().extend(keys);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Finishes the keys left (see [`Operator::finish`]).
    fn finish_keys(&mut self, out: &mut Output) -> crate::Result<()> {
        let mut remaining = match self.finishing.take() {
            Some(remaining) => remaining,
            None => {
                let mut keys = self.keys.sorted_keys()?;
                keys.reverse();
                keys
            }
        };
        let emitted = out.events.len();
        while let Some(key) = remaining.pop() {
            let logic = &self.logic;
            let mut emit = Self::emit(out, &mut self.counters, &self.inputs);
            self.keys.update(&key, false, |state| {
                logic.finish(&key, state, &mut emit);
                ((), false)
            })?;
            if out.events.len() - emitted >= self.emit_limit && !remaining.is_empty() {
                self.pending = true;
                self.finishing = Some(remaining);
                return Ok(());
            }
        }
        self.timers.clear();
        self.wake.clear();
        Ok(())
    }

    /// Replaces the state with the checkpointed `state` (a [`JoinSnapshot`], read one key at a
    /// time), and schedules every key by its logic.
    fn restore_state(&mut self, state: &[u8]) -> crate::Result<()> {
        let invalid =
            |error: dataflow_window::WindowError| OperatorError::Checkpoint(error.to_string());
        let ((watermark, seq, counters), mut entries) =
            SnapshotReader::<(Value, L::State)>::new::<Header>(state).map_err(invalid)?;
        self.keys.clear()?;
        self.timers.clear();
        self.wake.clear();
        self.finishing = None;
        self.pending = false;
        self.watermark = watermark;
        self.seq = seq;
        self.counters = counters;
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        for entry in entries.by_ref() {
            let (key, state) = entry.map_err(invalid)?;
            if self.logic.rows(&state) == 0 {
                continue;
            }
            let due = self.logic.due(&state);
            self.schedule(key.clone(), due);
            batch.push((key, state));
            if batch.len() == LOAD_BATCH {
                self.keys.load(std::mem::take(&mut batch))?;
            }
        }
        self.keys.load(batch)?;
        entries.trailer::<()>().map_err(invalid)
    }
}

/// How many restored keys a join adds to its keys at once.
const LOAD_BATCH: usize = 1024;

impl<L: Logic> Operator for Join<L> {
    fn kind(&self) -> &'static OperatorKind {
        self.logic.kind()
    }

    fn open(&mut self, instance: usize) -> crate::Result<()> {
        if let Some((dir, cache_bytes, cache_keys)) = &self.state_dir {
            let store = open_store(&self.stage, dir, *cache_bytes, instance)?;
            let cache_keys = *cache_keys;
            self.keep_state_in_store(store, cache_keys);
        }
        Ok(())
    }

    fn process(&mut self, batch: Vec<Event>, out: &mut Output) {
        for event in batch {
            let (side, event) = match untag(event) {
                Ok(untagged) => untagged,
                Err(event) => {
                    out.side.push(dead_letter(
                        &self.stage,
                        &event,
                        &Layout::Object,
                        "a join takes only the events of its inputs' branch".into(),
                    ));
                    continue;
                }
            };
            if event.event_time < self.watermark {
                self.late(side, &event, out);
                continue;
            }
            let Event {
                key,
                payload,
                event_time,
                ..
            } = event;
            let Payload::Row(values) = payload else {
                continue;
            };
            let key = key.unwrap_or(Value::Null);
            let row = Row {
                time: event_time,
                seq: self.seq,
                values,
            };
            self.seq += 1;
            let time = row.time;
            let watermark = self.watermark;
            let previous = self.wake.get(&key).copied();
            let logic = &self.logic;
            let mut emit = Self::emit(out, &mut self.counters, &self.inputs);
            let due = self.keys.update(&key, true, |state| {
                logic.insert(&key, state, side, row, watermark, &mut emit);
                let held = logic.rows(state) > 0;
                let due = held
                    .then(|| logic.due_after_insert(state, side, time, previous))
                    .flatten();
                (due, held)
            });
            match due {
                Ok(due) => self.schedule(key, due.flatten()),
                Err(error) => {
                    out.failure = Some(self.failure(error));
                    return;
                }
            }
        }
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> i64 {
        // Called again with the same watermark while pending: goes on with the keys left due.
        self.watermark = self.watermark.max(watermark);
        self.pending = false;
        // Keys run at the times they are due, in time order then key order, each advanced to
        // that time only (it may be due again before the watermark): so the results come in
        // the same order however the watermark advanced, in one step or many, and a run
        // restored from a checkpoint repeats the order of a run never stopped.
        if let Err(error) = self.run_due(out) {
            out.failure = Some(self.failure(error));
        }
        watermark.saturating_sub(self.logic.holdback())
    }

    fn finish(&mut self, fire: bool, out: &mut Output) {
        self.pending = false;
        if !fire {
            return;
        }
        if let Err(error) = self.finish_keys(out) {
            out.failure = Some(self.failure(error));
        }
    }

    fn pending(&self) -> bool {
        self.pending
    }

    fn snapshot(&self) -> crate::Result<Option<OperatorSnapshot>> {
        // Written key by key (a stored key copied as its bytes): the same bytes as encoding the
        // gathered `JoinSnapshot`, whichever backend holds the keys.
        let mut writer = SnapshotWriter::with_capacity(self.keys.len());
        self.keys
            .write(&mut writer)
            .map_err(|error| self.failure(error))?;
        let header: Header = (self.watermark, self.seq, self.counters);
        let state = writer
            .finish(&header, &())
            .map_err(|error| OperatorError::Checkpoint(error.to_string()))?;
        Ok(Some(OperatorSnapshot {
            key_count: self.keys.len() as u64,
            state,
        }))
    }

    fn restore(&mut self, state: &[u8]) -> crate::Result<()> {
        self.restore_state(state)
            .map_err(|error| self.failure(error))
    }

    fn merge_snapshots(&self, parts: Vec<OperatorSnapshot>) -> crate::Result<OperatorSnapshot> {
        let mut merged = JoinSnapshot::<L::State> {
            watermark: i64::MIN,
            seq: 0,
            counters: JoinCounters::default(),
            keys: Vec::new(),
        };
        for part in parts {
            let part: JoinSnapshot<L::State> =
                dataflow_checkpoint::decode_state(&part.state).map_err(checkpoint_error)?;
            merged.watermark = merged.watermark.max(part.watermark);
            merged.seq = merged.seq.max(part.seq);
            merged.counters.add(part.counters);
            merged.keys.extend(part.keys);
        }
        merged.keys.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(OperatorSnapshot {
            key_count: merged.keys.len() as u64,
            state: dataflow_checkpoint::encode_state(&merged).map_err(checkpoint_error)?,
        })
    }

    fn split_snapshot(&self, state: &[u8], workers: usize) -> crate::Result<Vec<Vec<u8>>> {
        let snapshot: JoinSnapshot<L::State> =
            dataflow_checkpoint::decode_state(state).map_err(checkpoint_error)?;
        let workers = workers.max(1);
        let mut parts: Vec<JoinSnapshot<L::State>> = (0..workers)
            .map(|worker| JoinSnapshot {
                watermark: snapshot.watermark,
                seq: snapshot.seq,
                // The counters are the operator's, not a key's: the first worker carries them.
                counters: if worker == 0 {
                    snapshot.counters
                } else {
                    JoinCounters::default()
                },
                keys: Vec::new(),
            })
            .collect();
        for (key, state) in snapshot.keys {
            let index = dataflow_window::key_partition(&key, workers);
            parts[index].keys.push((key, state));
        }
        parts
            .iter()
            .map(|part| dataflow_checkpoint::encode_state(part).map_err(checkpoint_error))
            .collect()
    }
}

/// The readable view of a join's state, whatever its kind: per key, how many rows it holds
/// as JSON of its state (the counters are the operator's: [`Join::counters`]).
fn inspect<S: DeserializeOwned + Serialize>(state: &[u8]) -> crate::Result<OperatorView> {
    let snapshot: JoinSnapshot<S> =
        dataflow_checkpoint::decode_state(state).map_err(checkpoint_error)?;
    let keys: Vec<KeyView> = snapshot
        .keys
        .iter()
        .map(|(key, state)| KeyView {
            key: key.to_json(),
            value: serde_json::to_value(state).unwrap_or(serde_json::Value::Null),
        })
        .collect();
    Ok(OperatorView {
        watermark: snapshot.watermark,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use dataflow_state::MemoryStore;

    use super::*;

    fn interval() -> Join<IntervalJoin> {
        let layout = Layout::Row(Arc::new(
            dataflow_event::Schema::new([("v", dataflow_event::FieldType::Int)]).expect("a schema"),
        ));
        Join::new(
            Arc::from("steps[0].join"),
            IntervalJoin {
                lower: -5,
                upper: 5,
                how: JoinType::Full,
            },
            JoinInputs {
                left: layout.clone(),
                right: layout,
            },
        )
    }

    /// A gathered snapshot of a few keys with rows of both sides, encoded whole, as every
    /// version before the key-by-key writer wrote it.
    fn gathered() -> Vec<u8> {
        let held = |time: i64, seq: u64, matched: bool| interval::Held {
            row: Row {
                time,
                seq,
                values: vec![Value::Int(time * 10)],
            },
            matched,
        };
        let mut keys: Vec<(Value, interval::IntervalState)> = (0..7i64)
            .map(|k| {
                let key = if k % 2 == 0 {
                    Value::Int(k - 3)
                } else {
                    Value::str(&format!("person-{k}"))
                };
                let state = interval::IntervalState {
                    left: (0..k)
                        .map(|i| held(1_000 + i, i as u64, i % 2 == 0))
                        .collect(),
                    right: (0..(k % 3) + 1)
                        .map(|i| held(1_002 + i, 10 + i as u64, false))
                        .collect(),
                };
                (key, state)
            })
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let snapshot = JoinSnapshot {
            watermark: 990,
            seq: 40,
            counters: JoinCounters {
                matched: 3,
                unmatched_left: 2,
                unmatched_right: 1,
            },
            keys,
        };
        dataflow_checkpoint::encode_state(&snapshot).expect("encodable")
    }

    /// A gathered checkpoint restores in memory and in a store caching none, some or all of its
    /// keys, and each writes it back byte for byte, key by key; cut short or with a byte more,
    /// it is refused without a panic.
    #[test]
    fn snapshots_written_key_by_key_equal_the_gathered_ones() {
        let encoded = gathered();
        for cache_keys in [None, Some(0), Some(2), Some(100)] {
            let mut join = interval();
            if let Some(cache_keys) = cache_keys {
                join.keep_state_in_store(Box::new(MemoryStore::new()), cache_keys);
            }
            join.restore(&encoded).expect("restorable");
            assert_eq!(join.key_count(), 7);
            assert_eq!(join.counters().matched, 3);
            assert_eq!(join.held_rows().expect("readable"), 21 + 13);
            let written = join.snapshot().expect("written").expect("a state");
            assert_eq!(written.key_count, 7);
            assert!(written.state == encoded, "cache {cache_keys:?}");
            // Run to the end, both hold nothing more.
            let mut out = Output::default();
            join.on_watermark(i64::MAX, &mut out);
            assert!(out.failure.is_none());
            assert_eq!(join.key_count(), 0, "cache {cache_keys:?}");
            let cut = &encoded[..encoded.len() - 1];
            assert!(join.restore(cut).is_err());
            let mut longer = encoded.clone();
            longer.push(0);
            assert!(join.restore(&longer).is_err());
        }
    }
}
