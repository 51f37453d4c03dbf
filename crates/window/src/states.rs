//! Where [`crate::KeyedWindows`] keeps the state of its keys: the [`KeyStates`] trait, and
//! [`HeapStates`], its in-memory implementation.
//!
//! A key's state ([`KeyState`]) is its open windows with their accumulators, and the time of
//! its timer: the earliest watermark at which it has a window to fire or to purge. Every store
//! keeps its timers in memory, in [`Timers`] (a priority queue of times and keys, as Flink keeps
//! heap timers beside RocksDB): a timer is written for most new windows and read when they
//! fire, so keeping them on disk would cost store operations per event, and a store's timers
//! are rebuilt from its keys' states on restore ([`KeyStates::load`]). Stores outside this crate
//! (the pipeline's, over `dataflow-state`) persist a key's windows as a [`StoredKey`] and its
//! timer ([`KeyState::timer`]) beside it.

use std::collections::BTreeMap;
use std::fmt;

use dataflow_event::Value;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::aggregate::Accumulator;
use crate::running::Running;
use crate::snapshot::SliceSnapshot;
use crate::{Result, WindowConfig};

/// A pane of tumbling and sliding windows, or a session.
#[derive(Clone, Debug)]
pub(crate) struct Slice {
    pub(crate) start: i64,
    /// Exclusive. Panes: `start + pane`. Sessions: at least `start + gap`.
    pub(crate) end: i64,
    /// Sessions only: a result reflecting the session's current contents and bounds has been
    /// emitted. Always false for panes, whose windows have fired exactly when their end is at or
    /// below the watermark.
    pub(crate) fired: bool,
    /// One per aggregate of the config, in its order.
    pub(crate) accumulators: Box<[Accumulator]>,
}

impl Slice {
    pub(crate) fn new(start: i64, end: i64, config: &WindowConfig) -> Slice {
        Slice {
            start,
            end,
            fired: false,
            accumulators: Accumulator::new_set(&config.aggregates),
        }
    }

    pub(crate) fn add(&mut self, inputs: &[Value], timestamp: i64, seq: u64) {
        for (accumulator, input) in self.accumulators.iter_mut().zip(inputs) {
            accumulator.add(input, timestamp, seq);
        }
    }

    pub(crate) fn values(&self) -> Vec<Value> {
        self.accumulators.iter().map(Accumulator::value).collect()
    }

    pub(crate) fn snapshot(&self) -> SliceSnapshot {
        SliceSnapshot {
            start: self.start,
            end: self.end,
            fired: self.fired,
            accumulators: self
                .accumulators
                .iter()
                .map(Accumulator::snapshot)
                .collect(),
        }
    }

    pub(crate) fn from_snapshot(snapshot: SliceSnapshot) -> Slice {
        Slice {
            start: snapshot.start,
            end: snapshot.end,
            fired: snapshot.fired,
            accumulators: snapshot
                .accumulators
                .into_iter()
                .map(|accumulator| accumulator.restore())
                .collect(),
        }
    }
}

/// The state of one key: its open windows and its timer.
#[derive(Clone, Debug, Default)]
pub struct KeyState {
    /// Sorted by start and disjoint (so also sorted by end). A key whose slices are empty after
    /// an update is removed from its store.
    pub(crate) slices: Vec<Slice>,
    /// The time of this key's live timer. It is at most the earliest watermark at which this
    /// key's state has a window to fire or a slice to purge. Timers at other times are stale.
    pub(crate) timer: Option<i64>,
    /// A timer set during an update, for the store to register when the update ends.
    pub(crate) scheduled: Option<i64>,
    /// Sliding windows: the combination of the panes of the window fired last, derived from
    /// `slices` (never stored), rebuilt when missing.
    pub(crate) running: Option<Box<Running>>,
}

impl KeyState {
    /// Makes sure the key is looked at when the watermark reaches `time`.
    pub(crate) fn schedule(&mut self, time: i64) {
        if self.timer.is_none_or(|timer| time < timer) {
            self.timer = Some(time);
            self.scheduled = Some(time);
        }
    }

    /// Whether the key holds no window: its store drops it.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// The timer registered by the last update, if any; taking it leaves `None`. Stores call this
    /// after every [`KeyStates::update`] and register the timer under the key.
    pub fn take_scheduled(&mut self) -> Option<i64> {
        self.scheduled.take()
    }

    /// The time of the key's live timer, which a store keeps beside its [`StoredKey`].
    pub fn timer(&self) -> Option<i64> {
        self.timer
    }

    /// The serializable form of the key's windows, for stores that keep bytes.
    pub fn to_stored(&self) -> StoredKey {
        StoredKey {
            slices: self.slices.iter().map(Slice::snapshot).collect(),
        }
    }

    /// The state whose windows a [`StoredKey`] was taken of, with its live timer.
    pub fn from_stored(stored: StoredKey, timer: Option<i64>) -> KeyState {
        KeyState {
            slices: stored
                .slices
                .into_iter()
                .map(Slice::from_snapshot)
                .collect(),
            timer,
            scheduled: None,
            running: None,
        }
    }
}

/// The serializable form of a [`KeyState`]'s windows (not its timer). Its contents are
/// private: it is meant to be serialized with serde, stored and read back.
///
/// It serializes exactly as the windows of a key do inside a [`crate::WindowSnapshot`], so a
/// snapshot can be written from stored keys without decoding them
/// ([`crate::SnapshotHeader`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredKey {
    slices: Vec<SliceSnapshot>,
}

impl StoredKey {
    pub(crate) fn from_slices(slices: Vec<SliceSnapshot>) -> StoredKey {
        StoredKey { slices }
    }

    pub(crate) fn into_slices(self) -> Vec<SliceSnapshot> {
        self.slices
    }
}

/// Timers in memory: the keys to look at when the watermark reaches a time, ordered by time,
/// then in the order they were registered. A key may be registered at several times; all but
/// its state's timer are stale, and [`crate::KeyedWindows`] skips them.
///
/// An ordered map of times to key lists: handing out a time's keys moves its list whole, which
/// matters for windows (every key of a tumbling window fires at its end). The lists of times
/// handed out through [`Timers::pop_due_into`] are kept for new times (a few, small ones), so
/// that a caller with a time of its own for most timers (the pattern and alert timelines)
/// registers them without allocating a list each.
#[derive(Debug, Default)]
pub struct Timers {
    times: BTreeMap<i64, Vec<Value>>,
    /// Emptied lists, for new times.
    spare: Vec<Vec<Value>>,
}

/// How many emptied lists [`Timers`] keeps.
const SPARE_LISTS: usize = 64;

/// The largest capacity of an emptied list [`Timers`] keeps: larger ones are freed.
const SPARE_LIST_CAPACITY: usize = 16;

impl Timers {
    /// Registers `key` at `time`.
    pub fn register(&mut self, time: i64, key: Value) {
        let spare = &mut self.spare;
        self.times
            .entry(time)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(key);
    }

    /// Removes and returns the earliest time at or below `watermark` with its keys, in the
    /// order they were registered.
    pub fn pop_due(&mut self, watermark: i64) -> Option<(i64, Vec<Value>)> {
        match self.times.first_entry() {
            Some(entry) if *entry.key() <= watermark => Some(entry.remove_entry()),
            _ => None,
        }
    }

    /// [`Timers::pop_due`] into `keys` (whatever it held is dropped), so that a caller can
    /// reuse one buffer: returns the time, or `None` (with `keys` empty) when no timer is due.
    pub fn pop_due_into(&mut self, watermark: i64, keys: &mut Vec<Value>) -> Option<i64> {
        keys.clear();
        let (time, mut list) = self.pop_due(watermark)?;
        std::mem::swap(keys, &mut list);
        // `list` is now the caller's old buffer, empty.
        if self.spare.len() < SPARE_LISTS && (1..=SPARE_LIST_CAPACITY).contains(&list.capacity()) {
            self.spare.push(list);
        }
        Some(time)
    }

    /// The number of timers registered, stale ones included.
    pub fn len(&self) -> usize {
        self.times.values().map(Vec::len).sum()
    }

    /// Whether no timer is registered.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Drops every timer.
    pub fn clear(&mut self) {
        self.times.clear();
    }
}

#[cfg(test)]
mod timer_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Timers hand out times in order, each with its keys in the order registered, whichever
        /// way they are popped, reusing lists or not.
        #[test]
        fn timers_pop_what_a_sorted_map_holds(
            ops in prop::collection::vec(prop_oneof![
                (0i64..30, 0i64..1000).prop_map(|(time, key)| (Some(time), key)),
                (0i64..40).prop_map(|watermark| (None, watermark)),
            ], 0..200),
        ) {
            let mut timers = Timers::default();
            let mut model: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
            for (time, value) in ops {
                match time {
                    Some(time) => {
                        timers.register(time, Value::Int(value));
                        model.entry(time).or_default().push(Value::Int(value));
                    }
                    None => loop {
                        let expected = match model.first_entry() {
                            Some(entry) if *entry.key() <= value => Some(entry.remove_entry()),
                            _ => None,
                        };
                        // Both ways of popping, in turn.
                        let found = if model.len() % 2 == 0 {
                            timers.pop_due(value)
                        } else {
                            let mut keys = vec![Value::Int(-1)];
                            timers.pop_due_into(value, &mut keys).map(|time| (time, keys))
                        };
                        prop_assert_eq!(&found, &expected);
                        if found.is_none() {
                            break;
                        }
                    },
                }
                prop_assert_eq!(timers.len(), model.values().map(Vec::len).sum::<usize>());
            }
        }
    }
}

/// The keys of one [`crate::KeyedWindows`], with their states and timers.
///
/// Implementations keep states in memory ([`HeapStates`]) or serialized in a key-value store.
/// Their errors are [`crate::WindowError::State`]; after one the windows are unusable and the
/// caller restores them from a snapshot.
pub trait KeyStates: fmt::Debug + Send {
    /// Calls `update` on the state of `key` (an empty one if the key has none) and keeps what it
    /// leaves: the key is dropped if the state is empty, and a timer the update scheduled
    /// ([`KeyState::take_scheduled`]) is registered.
    fn update<R>(&mut self, key: &Value, update: impl FnOnce(&mut KeyState) -> R) -> Result<R>;

    /// Removes and returns the earliest timer at or below `watermark`: its time and every key
    /// registered at it (a bounded advance fires them together, from the watermark before that
    /// time); some may be stale: their state's timer is another time, or they are gone. Both
    /// stores keep their timers in [`Timers`], which hands out a time's keys at once.
    fn pop_due(&mut self, watermark: i64) -> Result<Option<(i64, Vec<Value>)>>;

    /// Adds keys with their states, as a restore does: called after [`KeyStates::clear`], any
    /// number of times, with keys in ascending order over all calls (so never twice the same
    /// key), each state's timer to be registered ([`KeyState::take_scheduled`]).
    fn load(&mut self, states: Vec<(Value, KeyState)>) -> Result<()>;

    /// Calls `visit` on every key and its state, in no particular order.
    fn for_each(&self, visit: &mut dyn FnMut(&Value, &KeyState)) -> Result<()>;

    /// The number of keys holding state.
    fn len(&self) -> usize;

    /// Whether no key holds state.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key and timer.
    fn clear(&mut self) -> Result<()>;
}

/// Key states in memory: a hash map of keys and the timers ([`Timers`]). The default.
#[derive(Debug, Default)]
pub struct HeapStates {
    keys: FxHashMap<Value, KeyState>,
    timers: Timers,
}

impl HeapStates {
    /// The number of timers registered, stale ones included.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    fn register(&mut self, key: &Value, state: &mut KeyState) {
        if let Some(time) = state.take_scheduled() {
            self.timers.register(time, key.clone());
        }
    }
}

impl KeyStates for HeapStates {
    fn update<R>(&mut self, key: &Value, update: impl FnOnce(&mut KeyState) -> R) -> Result<R> {
        // Look up by reference first: the key is only cloned when it is new.
        if let Some(state) = self.keys.get_mut(key) {
            let result = update(state);
            if state.is_empty() {
                self.keys.remove(key);
            } else if let Some(time) = state.take_scheduled() {
                self.timers.register(time, key.clone());
            }
            return Ok(result);
        }
        let mut state = KeyState::default();
        let result = update(&mut state);
        if !state.is_empty() {
            self.register(key, &mut state);
            self.keys.insert(key.clone(), state);
        }
        Ok(result)
    }

    fn pop_due(&mut self, watermark: i64) -> Result<Option<(i64, Vec<Value>)>> {
        Ok(self.timers.pop_due(watermark))
    }

    fn load(&mut self, states: Vec<(Value, KeyState)>) -> Result<()> {
        self.keys.reserve(states.len());
        for (key, mut state) in states {
            self.register(&key, &mut state);
            self.keys.insert(key, state);
        }
        Ok(())
    }

    fn for_each(&self, visit: &mut dyn FnMut(&Value, &KeyState)) -> Result<()> {
        for (key, state) in &self.keys {
            visit(key, state);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn clear(&mut self) -> Result<()> {
        self.keys.clear();
        self.timers.clear();
        Ok(())
    }
}
