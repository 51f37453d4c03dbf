//! Per-key event-time buffering shared by the `pattern` and `alert` operators: events wait,
//! per key, until the watermark passes them and are then handed to the key's logic in time
//! order (equal times in arrival order), so that input disordered within the watermark bound
//! gives the same results as sorted input. Each key may also ask to be woken at a time of its
//! own (a deadline), which the watermark passing it triggers.
//!
//! The keys' entries (buffer and state) are objects in memory (`state.backend: memory`) or live
//! in the operator's own state store through a [`StoreCache`] (`state.backend: sled`), as the
//! window's keys do; the deadlines (`timers`, `wake`) are in memory either way and rebuilt from
//! the entries on restore. A checkpoint's state is the same bytes whichever holds the keys: a
//! [`TimelineSnapshot`], written key by key ([`Timeline::snapshot`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use dataflow_event::{Event, Value};
use dataflow_state::{SledStore, StateSnapshot, StateStore};
use dataflow_window::{Timers, WindowError};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use dataflow_event::time::format_rfc3339;

use crate::operator::{checkpoint_error, OperatorSnapshot, Output, SideData, SideKind, SideRecord};
use crate::store_cache::{Held, StoreCache, StoredValue};
use crate::window::snapshot::{SnapshotReader, SnapshotWriter};
use crate::OperatorError;

/// What a keyed event-time operator does with one key's events and time.
pub(crate) trait KeyLogic {
    /// The state of one key.
    type State: Default + Serialize + DeserializeOwned;

    /// `event`, the key's next event in time order.
    fn event(&mut self, key: &Value, state: &mut Self::State, event: Event, out: &mut Output);

    /// Event time has reached `now` for the key (every event before it was handed on); `end`
    /// at the end of input, when `now` is `i64::MAX` and nothing more will come.
    fn time(&mut self, key: &Value, state: &mut Self::State, now: i64, end: bool, out: &mut Output);

    /// The time (a watermark value) at which the key's state wants [`KeyLogic::time`] called.
    fn deadline(&self, state: &Self::State) -> Option<i64>;

    /// Whether the key's state holds nothing (so the key can be forgotten).
    fn idle(&self, state: &Self::State) -> bool;

    /// The operator's name, for its dead letters and errors.
    fn stage(&self) -> &std::sync::Arc<str>;

    /// The layout of the events it is given.
    fn input_layout(&self) -> &dataflow_event::Layout;
}

/// A keyed event-time operator on a [`Timeline`]: its logic, every key's entry, and where the
/// entries live with `state.backend: sled`. `pattern`, `alert` and `over` are each one of these
/// with a logic of their own, and their `Operator` methods hand over to it.
pub(crate) struct Keyed<L: KeyLogic> {
    pub(crate) logic: L,
    pub(crate) timeline: Timeline<L::State>,
    /// Where the keys' state lives with `state.backend: sled` (else in memory).
    state_dir: StateDir,
}

impl<L: KeyLogic> Keyed<L> {
    /// `logic`, with no key yet, in memory.
    pub(crate) fn new(logic: L) -> Keyed<L> {
        Keyed {
            logic,
            timeline: Timeline::default(),
            state_dir: None,
        }
    }

    /// Keeps the state in a sled store of its own under `dir` (one database per parallel
    /// instance, opened by [`Keyed::open`]), with a page cache of `cache_bytes` and at most
    /// `cache_keys` keys cached as objects: `state.backend: sled`.
    pub(crate) fn keep_state_in(&mut self, dir: PathBuf, cache_bytes: u64, cache_keys: usize) {
        self.state_dir = Some((dir, cache_bytes, cache_keys));
    }

    /// Keeps the state in `store` (its own), caching at most `cache_keys` keys as objects: what
    /// `state.backend: sled` does at open, with any store (for tests).
    pub(crate) fn keep_state_in_store(&mut self, store: Box<dyn StateStore>, cache_keys: usize) {
        self.timeline.keep_in(store, self.logic.stage());
        self.timeline.set_cache_capacity(cache_keys);
    }

    pub(crate) fn process(&mut self, batch: Vec<Event>, out: &mut Output) {
        let logic = &self.logic;
        insert_batch(
            &mut self.timeline,
            batch,
            logic.stage(),
            logic.input_layout(),
            out,
        );
    }

    pub(crate) fn open(&mut self, instance: usize) -> crate::Result<()> {
        if let Some((dir, cache_bytes, cache_keys)) = &self.state_dir {
            let store = open_store(self.logic.stage(), dir, *cache_bytes, instance)?;
            self.timeline.keep_in(store, self.logic.stage());
            self.timeline.set_cache_capacity(*cache_keys);
        }
        Ok(())
    }

    pub(crate) fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> i64 {
        if let Err(error) = self.timeline.advance(watermark, &mut self.logic, out) {
            out.failure = Some(state_failure(self.logic.stage(), error));
        }
        watermark
    }

    pub(crate) fn finish(&mut self, fire: bool, out: &mut Output) {
        if fire {
            if let Err(error) = self.timeline.finish(&mut self.logic, out) {
                out.failure = Some(state_failure(self.logic.stage(), error));
            }
        }
    }

    pub(crate) fn snapshot(&self) -> crate::Result<Option<OperatorSnapshot>> {
        self.timeline
            .snapshot()
            .map(Some)
            .map_err(|error| state_failure(self.logic.stage(), error))
    }

    pub(crate) fn restore(&mut self, state: &[u8]) -> crate::Result<()> {
        let logic = &self.logic;
        self.timeline
            .restore(state, |state| logic.deadline(state))
            .map_err(|error| state_failure(logic.stage(), error))
    }
}

/// One key: the events not yet handed on, sorted by time (stable), and the logic's state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct KeyEntry<S> {
    pub(crate) buffer: VecDeque<Event>,
    pub(crate) state: S,
}

/// A key's entry in a store is encoded as a checkpoint holds it, so a snapshot copies its bytes.
impl<S: Serialize + DeserializeOwned> StoredValue for KeyEntry<S> {
    fn to_bytes(&self) -> Result<Vec<u8>, String> {
        dataflow_checkpoint::encode_state(self).map_err(|error| error.to_string())
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        dataflow_checkpoint::decode_state(bytes).map_err(|error| error.to_string())
    }
}

/// A key's entry in memory, with the time it is due at: one hash-map lookup finds both (the
/// keys in a store have theirs in [`Timeline::wake`]).
#[derive(Debug)]
struct Slot<S> {
    entry: KeyEntry<S>,
    wake: Option<i64>,
}

/// Where a timeline keeps its keys' entries.
#[derive(Debug)]
enum Keys<S> {
    /// Objects in memory: the default, and the fastest. The emptied buffers of forgotten keys
    /// are kept for new keys ([`recycle`]): most keys hold an event only until the watermark
    /// passes it, and are then forgotten, so this saves an allocation and a free per event.
    Memory {
        keys: FxHashMap<Value, Slot<S>>,
        spare: Vec<VecDeque<Event>>,
    },
    /// The operator's own state store, with the keys in use cached as objects.
    Store(StoreCache<KeyEntry<S>>),
}

/// How many emptied buffers a timeline in memory keeps for new keys.
const SPARE_BUFFERS: usize = 1024;

/// The largest capacity of an emptied buffer kept for a new key: a larger one goes back to the
/// allocator, so that the spare buffers hold little memory.
const SPARE_CAPACITY: usize = 8;

/// Keeps the (empty) `buffer` of a forgotten key for a new key, if it is worth keeping.
fn recycle(spare: &mut Vec<VecDeque<Event>>, buffer: VecDeque<Event>) {
    if spare.len() < SPARE_BUFFERS && (1..=SPARE_CAPACITY).contains(&buffer.capacity()) {
        debug_assert!(buffer.is_empty());
        spare.push(buffer);
    }
}

/// Every key's buffered events and state, and when each key is due.
#[derive(Debug)]
pub(crate) struct Timeline<S> {
    keys: Keys<S>,
    /// The keys due when the watermark reaches each time. A key may also sit at times it is no
    /// longer due at (when it became due earlier): `wake` says which entry counts, and the
    /// others are skipped when they come up. So timers compare times only, never keys.
    timers: Timers,
    /// The time each key in a store is due at (a key in memory has its own, [`Slot::wake`]).
    wake: FxHashMap<Value, i64>,
    watermark: i64,
    /// The keys of a due time being run (kept for its allocation).
    due_keys: Vec<Value>,
}

/// The serializable form of a [`Timeline`]: keys sorted, with the watermark.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TimelineSnapshot<S> {
    pub(crate) watermark: i64,
    pub(crate) keys: Vec<(Value, KeyEntry<S>)>,
}

impl<S> Default for Timeline<S> {
    fn default() -> Self {
        Timeline {
            keys: Keys::Memory {
                keys: FxHashMap::default(),
                spare: Vec::new(),
            },
            timers: Timers::default(),
            wake: FxHashMap::default(),
            watermark: i64::MIN,
            due_keys: Vec::new(),
        }
    }
}

/// When a key is due: once the watermark passes its first buffered event (at its time + 1),
/// or at the logic's `deadline`, whichever comes first.
fn due_of<S>(entry: &KeyEntry<S>, deadline: Option<i64>) -> Option<i64> {
    let next_event = entry
        .buffer
        .front()
        .map(|event| event.event_time.saturating_add(1));
    match (next_event, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Adds `event` to the buffer of `entry`, after the events of its time or before.
fn buffer_event<S>(entry: &mut KeyEntry<S>, event: Event) {
    let time = event.event_time;
    let at = entry
        .buffer
        .partition_point(|queued| queued.event_time <= time);
    entry.buffer.insert(at, event);
}

/// Hands `entry` its events before `now` (all of them at the `end`), then the time; returns
/// when the key is due next and whether it still holds anything.
fn run_entry<L: KeyLogic>(
    key: &Value,
    entry: &mut KeyEntry<L::State>,
    now: i64,
    end: bool,
    logic: &mut L,
    out: &mut Output,
) -> (Option<i64>, bool) {
    while entry
        .buffer
        .front()
        .is_some_and(|event| end || event.event_time < now)
    {
        if let Some(event) = entry.buffer.pop_front() {
            logic.event(key, &mut entry.state, event, out);
        }
    }
    logic.time(key, &mut entry.state, now, end, out);
    let due = due_of(entry, logic.deadline(&entry.state));
    let keep = !(entry.buffer.is_empty() && logic.idle(&entry.state));
    (due, keep)
}

/// How many restored keys a timeline in a store writes at once.
const LOAD_BATCH: usize = 1024;

/// Where a pattern or alert step keeps its state with `state.backend: sled`: its directory
/// under the state directory, the cap of sled's page cache in bytes, and the most keys cached
/// as objects.
pub(crate) type StateDir = Option<(PathBuf, u64, usize)>;

/// The operator `stage`'s own sled store for its parallel instance `instance` under `dir`,
/// empty: sled is a cache, and a restore fills it from the checkpoint.
pub(crate) fn open_store(
    stage: &str,
    dir: &Path,
    cache_bytes: u64,
    instance: usize,
) -> crate::Result<Box<dyn StateStore>> {
    let dir = dir.join(format!("instance-{instance}"));
    let store = SledStore::rebuild_with_cache(&dir, &StateSnapshot::default(), cache_bytes)
        .map_err(|error| OperatorError::State(format!("{stage}: state store: {error}")))?;
    Ok(Box::new(store))
}

fn invalid(error: WindowError) -> OperatorError {
    OperatorError::Checkpoint(error.to_string())
}

impl<S: Default + Serialize + DeserializeOwned> Timeline<S> {
    /// Keeps the keys in `store` (the operator's own) under `namespace` instead of in memory.
    /// Called before anything is buffered (at open): it drops whatever the timeline holds.
    pub(crate) fn keep_in(&mut self, store: Box<dyn StateStore>, namespace: &str) {
        *self = Timeline {
            keys: Keys::Store(StoreCache::new(store, namespace)),
            ..Timeline::default()
        };
    }

    /// With the keys in a store, caches at most `keys` of them as objects (0: none).
    pub(crate) fn set_cache_capacity(&mut self, keys: usize) {
        if let Keys::Store(cache) = &mut self.keys {
            cache.set_cache_capacity(keys);
        }
    }

    /// The watermark seen last.
    pub(crate) fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The number of keys holding events or state.
    pub(crate) fn key_count(&self) -> usize {
        match &self.keys {
            Keys::Memory { keys, .. } => keys.len(),
            Keys::Store(cache) => cache.len(),
        }
    }

    /// Buffers `event` for `key`; gives it back if it is behind the watermark (late).
    pub(crate) fn insert(&mut self, key: Value, event: Event) -> crate::Result<Option<Event>> {
        let time = event.event_time;
        if time < self.watermark {
            return Ok(Some(event));
        }
        // An event at `time` is handed on once the watermark passes it: at `time + 1`; a key
        // due by then stays due when it was.
        let due = time.saturating_add(1);
        match &mut self.keys {
            Keys::Memory { keys, spare } => {
                let slot = keys.entry(key.clone()).or_insert_with(|| Slot {
                    entry: KeyEntry {
                        buffer: spare.pop().unwrap_or_default(),
                        state: S::default(),
                    },
                    wake: None,
                });
                buffer_event(&mut slot.entry, event);
                if slot.wake.is_none_or(|wake| wake > due) {
                    slot.wake = Some(due);
                    self.timers.register(due, key);
                }
            }
            Keys::Store(cache) => {
                cache.update(&key, true, |entry| (buffer_event(entry, event), true))?;
                if self.wake.get(&key).is_none_or(|&wake| wake > due) {
                    self.timers.register(due, key.clone());
                    self.wake.insert(key, due);
                }
            }
        }
        Ok(None)
    }

    /// Advances to `watermark`: every key due by then gets its events before it, in time
    /// order, then the time. Keys are taken in the order they are due (then as registered).
    pub(crate) fn advance<L: KeyLogic<State = S>>(
        &mut self,
        watermark: i64,
        logic: &mut L,
        out: &mut Output,
    ) -> crate::Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        // One buffer for the keys of every due time: no allocation per time.
        let mut keys = std::mem::take(&mut self.due_keys);
        while let Some(due) = self.timers.pop_due_into(watermark, &mut keys) {
            for key in keys.drain(..) {
                self.run_due(key, due, watermark, logic, out)?;
            }
        }
        self.due_keys = keys;
        Ok(())
    }

    /// The end of input: every key, in key order, gets all its events, then the end of time.
    pub(crate) fn finish<L: KeyLogic<State = S>>(
        &mut self,
        logic: &mut L,
        out: &mut Output,
    ) -> crate::Result<()> {
        self.timers.clear();
        self.wake.clear();
        let now = i64::MAX;
        match &mut self.keys {
            Keys::Memory { keys, spare } => {
                let mut sorted: Vec<Value> = keys.keys().cloned().collect();
                sorted.sort();
                for key in sorted {
                    let Some(slot) = keys.get_mut(&key) else {
                        continue;
                    };
                    slot.wake = None;
                    let (_, keep) = run_entry(&key, &mut slot.entry, now, true, logic, out);
                    if !keep {
                        if let Some(slot) = keys.remove(&key) {
                            recycle(spare, slot.entry.buffer);
                        }
                    }
                }
            }
            Keys::Store(cache) => {
                let mut sorted = cache.keys()?;
                sorted.sort();
                for key in sorted {
                    cache.update(&key, false, |entry| {
                        let (_, keep) = run_entry(&key, entry, now, true, logic, out);
                        ((), keep)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Runs `key`, found due at `due` by its timer, at `now`, unless the timer is stale (the
    /// key became due earlier and was run then), and schedules it again if it still waits.
    fn run_due<L: KeyLogic<State = S>>(
        &mut self,
        key: Value,
        due: i64,
        now: i64,
        logic: &mut L,
        out: &mut Output,
    ) -> crate::Result<()> {
        let next = match &mut self.keys {
            Keys::Memory { keys, spare } => {
                let Some(slot) = keys.get_mut(&key) else {
                    return Ok(());
                };
                if slot.wake != Some(due) {
                    return Ok(());
                }
                let (next, keep) = run_entry(&key, &mut slot.entry, now, false, logic, out);
                slot.wake = next;
                if !keep {
                    if let Some(slot) = keys.remove(&key) {
                        recycle(spare, slot.entry.buffer);
                    }
                    return Ok(());
                }
                next
            }
            Keys::Store(cache) => {
                if self.wake.get(&key) != Some(&due) {
                    return Ok(());
                }
                self.wake.remove(&key);
                let ran = cache.update(&key, false, |entry| {
                    let (next, keep) = run_entry(&key, entry, now, false, logic, out);
                    ((next, keep), keep)
                })?;
                let Some((Some(next), true)) = ran else {
                    return Ok(());
                };
                self.wake.insert(key.clone(), next);
                Some(next)
            }
        };
        if let Some(next) = next {
            self.timers.register(next, key);
        }
        Ok(())
    }

    /// The checkpointed state: the encoded [`TimelineSnapshot`], written key by key (a key in
    /// the store is copied as its bytes), the same bytes whichever holds the keys.
    pub(crate) fn snapshot(&self) -> crate::Result<OperatorSnapshot> {
        let mut writer = SnapshotWriter::with_capacity(self.key_count());
        match &self.keys {
            Keys::Memory { keys, .. } => {
                for (key, slot) in keys {
                    writer.add(key, &slot.entry).map_err(invalid)?;
                }
            }
            Keys::Store(cache) => cache.for_each(&mut |key, held| {
                match held {
                    Held::Object(entry) => writer.add(key, entry).map_err(invalid)?,
                    Held::Stored {
                        key: encoded,
                        value,
                    } => writer.add_encoded(key.clone(), encoded, value),
                }
                Ok(())
            })?,
        }
        // A `TimelineSnapshot` is the watermark, then the keys, then nothing.
        Ok(OperatorSnapshot {
            key_count: self.key_count() as u64,
            state: writer.finish(&self.watermark, &()).map_err(invalid)?,
        })
    }

    /// Replaces everything with the checkpointed `state` (a [`TimelineSnapshot`], read one key
    /// at a time); `deadline` tells when each key's state is due.
    pub(crate) fn restore(
        &mut self,
        state: &[u8],
        deadline: impl Fn(&S) -> Option<i64>,
    ) -> crate::Result<()> {
        let (watermark, mut entries) =
            SnapshotReader::<(Value, KeyEntry<S>)>::new::<i64>(state).map_err(invalid)?;
        self.timers.clear();
        self.wake.clear();
        self.watermark = watermark;
        let timers = &mut self.timers;
        let mut schedule = |key: &Value, entry: &KeyEntry<S>| {
            let due = due_of(entry, deadline(&entry.state));
            if let Some(due) = due {
                timers.register(due, key.clone());
            }
            due
        };
        match &mut self.keys {
            Keys::Memory { keys, .. } => {
                keys.clear();
                for entry in entries.by_ref() {
                    let (key, entry) = entry.map_err(invalid)?;
                    let wake = schedule(&key, &entry);
                    keys.insert(key, Slot { entry, wake });
                }
            }
            Keys::Store(cache) => {
                cache.clear()?;
                let mut batch = Vec::with_capacity(LOAD_BATCH);
                for entry in entries.by_ref() {
                    let (key, entry) = entry.map_err(invalid)?;
                    if let Some(due) = schedule(&key, &entry) {
                        self.wake.insert(key.clone(), due);
                    }
                    batch.push((key, entry));
                    if batch.len() == LOAD_BATCH {
                        cache.load(batch.drain(..))?;
                    }
                }
                cache.load(batch)?;
            }
        }
        entries.trailer::<()>().map_err(invalid)
    }
}

/// Buffers `batch` per key in `timeline`; an event behind its watermark goes to `out` as a late
/// record of `stage`: what the pattern and alert steps do with their input. A state store that
/// fails stops it, with the failure in `out`.
pub(crate) fn insert_batch<S: Default + Serialize + DeserializeOwned>(
    timeline: &mut Timeline<S>,
    batch: Vec<Event>,
    stage: &std::sync::Arc<str>,
    layout: &dataflow_event::Layout,
    out: &mut Output,
) {
    for event in batch {
        let key = event.key.clone().unwrap_or(Value::Null);
        match timeline.insert(key, event) {
            Ok(None) => {}
            Ok(Some(event)) => out.side.push(SideRecord {
                kind: SideKind::Late,
                stage: stage.clone(),
                reason: format!(
                    "event time {} is behind the watermark {}",
                    format_rfc3339(event.event_time),
                    format_rfc3339(timeline.watermark()),
                ),
                line: None,
                record: SideData::event(&event, layout),
            }),
            Err(error) => {
                out.failure = Some(state_failure(stage, error));
                return;
            }
        }
    }
}

/// A state store failure of the operator `stage`, naming it.
pub(crate) fn state_failure(stage: &str, error: OperatorError) -> OperatorError {
    match error {
        OperatorError::State(message) => OperatorError::State(format!("{stage}: {message}")),
        other => other,
    }
}

/// Merges the snapshots of parallel instances (each with keys of its own) into one.
pub(crate) fn merge<S>(parts: Vec<TimelineSnapshot<S>>) -> TimelineSnapshot<S> {
    let mut watermark = i64::MIN;
    let mut keys = Vec::new();
    for part in parts {
        watermark = watermark.max(part.watermark);
        keys.extend(part.keys);
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    TimelineSnapshot { watermark, keys }
}

/// Splits a snapshot into one per worker by `dataflow_window::key_partition`.
pub(crate) fn split<S>(snapshot: TimelineSnapshot<S>, workers: usize) -> Vec<TimelineSnapshot<S>> {
    let workers = workers.max(1);
    let mut parts: Vec<TimelineSnapshot<S>> = (0..workers)
        .map(|_| TimelineSnapshot {
            watermark: snapshot.watermark,
            keys: Vec::new(),
        })
        .collect();
    for (key, entry) in snapshot.keys {
        let index = dataflow_window::key_partition(&key, workers);
        if let Some(part) = parts.get_mut(index) {
            part.keys.push((key, entry));
        }
    }
    parts
}

/// `snapshot` encoded as an operator's checkpointed state.
pub(crate) fn encode<S: Serialize>(
    snapshot: &TimelineSnapshot<S>,
) -> crate::Result<OperatorSnapshot> {
    Ok(OperatorSnapshot {
        key_count: snapshot.keys.len() as u64,
        state: dataflow_checkpoint::encode_state(snapshot).map_err(checkpoint_error)?,
    })
}

/// A timeline's checkpointed state, decoded.
pub(crate) fn decode<S: DeserializeOwned>(state: &[u8]) -> crate::Result<TimelineSnapshot<S>> {
    dataflow_checkpoint::decode_state(state).map_err(checkpoint_error)
}

/// The encoded states of parallel instances merged into one ([`merge`]).
pub(crate) fn merge_encoded<S: Serialize + DeserializeOwned>(
    parts: &[OperatorSnapshot],
) -> crate::Result<OperatorSnapshot> {
    let decoded = parts
        .iter()
        .map(|part| decode::<S>(&part.state))
        .collect::<crate::Result<Vec<_>>>()?;
    encode(&merge(decoded))
}

/// An encoded state split by key for `workers` instances ([`split`]).
pub(crate) fn split_encoded<S: Serialize + DeserializeOwned>(
    state: &[u8],
    workers: usize,
) -> crate::Result<Vec<Vec<u8>>> {
    split(decode::<S>(state)?, workers)
        .iter()
        .map(|part| dataflow_checkpoint::encode_state(part).map_err(checkpoint_error))
        .collect()
}

#[cfg(test)]
mod tests {
    use dataflow_state::MemoryStore;

    use super::*;

    /// A gathered snapshot of a few keys with buffered events and states.
    fn gathered() -> TimelineSnapshot<Vec<i64>> {
        let event = |time: i64, v: i64| Event::row(time, vec![Value::Int(v)]);
        TimelineSnapshot {
            watermark: 1_000,
            keys: (0..7i64)
                .map(|k| {
                    let key = if k % 2 == 0 {
                        Value::Int(k - 3)
                    } else {
                        Value::str(&format!("card-{k}"))
                    };
                    let entry = KeyEntry {
                        buffer: (0..k).map(|i| event(1_000 + i * 10, k * i)).collect(),
                        state: (0..(k % 3)).collect(),
                    };
                    (key, entry)
                })
                .collect(),
        }
    }

    /// A checkpoint of the gathered form (as every version so far wrote it) restores in memory
    /// and in a store, and is written back byte for byte, key by key, by either.
    #[test]
    fn snapshots_written_key_by_key_equal_the_gathered_ones() {
        let mut snapshot = gathered();
        snapshot.keys.sort_by(|a, b| a.0.cmp(&b.0));
        let encoded = encode(&snapshot).expect("encodable");
        for cache_keys in [None, Some(0), Some(2), Some(100)] {
            let mut timeline = Timeline::<Vec<i64>>::default();
            if let Some(cache_keys) = cache_keys {
                timeline.keep_in(Box::new(MemoryStore::new()), "steps[2].pattern");
                timeline.set_cache_capacity(cache_keys);
            }
            timeline
                .restore(&encoded.state, |state| state.first().copied())
                .expect("restorable");
            assert_eq!(timeline.key_count(), 7);
            assert_eq!(timeline.watermark(), 1_000);
            // In a store, the restored keys are all stored: the snapshot copies their bytes.
            let written = timeline.snapshot().expect("written");
            assert_eq!(written.key_count, 7);
            assert!(written.state == encoded.state, "cache {cache_keys:?}");
            // Cut short, or with a byte more, it is refused without a panic.
            let cut = &encoded.state[..encoded.state.len() - 1];
            assert!(timeline.restore(cut, |_| None).is_err());
            let mut longer = encoded.state.clone();
            longer.push(0);
            assert!(timeline.restore(&longer, |_| None).is_err());
        }
    }
}
