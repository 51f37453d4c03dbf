//! Per-key event-time buffering shared by the `pattern` and `alert` operators: events wait,
//! per key, until the watermark passes them and are then handed to the key's logic in time
//! order (equal times in arrival order), so that input disordered within the watermark bound
//! gives the same results as sorted input. Each key may also ask to be woken at a time of its
//! own (a deadline), which the watermark passing it triggers.

use std::collections::{BTreeMap, VecDeque};

use dataflow_event::{Event, Value};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use dataflow_event::time::format_rfc3339;

use crate::operator::{checkpoint_error, OperatorSnapshot, Output, SideData, SideKind, SideRecord};

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
}

/// One key: the events not yet handed on, sorted by time (stable), and the logic's state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct KeyEntry<S> {
    pub(crate) buffer: VecDeque<Event>,
    pub(crate) state: S,
}

/// Every key's buffered events and state, and when each key is due.
#[derive(Debug)]
pub(crate) struct Timeline<S> {
    keys: FxHashMap<Value, KeyEntry<S>>,
    /// The keys due when the watermark reaches each time. A key may also sit at times it is no
    /// longer due at (when it became due earlier): `wake` says which entry counts, and the
    /// others are skipped when they come up. So timers compare times only, never keys.
    timers: BTreeMap<i64, Vec<Value>>,
    /// The time each key is due at.
    wake: FxHashMap<Value, i64>,
    watermark: i64,
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
            keys: FxHashMap::default(),
            timers: BTreeMap::new(),
            wake: FxHashMap::default(),
            watermark: i64::MIN,
        }
    }
}

impl<S: Default> Timeline<S> {
    /// The watermark seen last.
    pub(crate) fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The number of keys holding events or state.
    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Buffers `event` for `key`; gives it back if it is behind the watermark (late).
    pub(crate) fn insert(&mut self, key: Value, event: Event) -> Result<(), Event> {
        let time = event.event_time;
        if time < self.watermark {
            return Err(event);
        }
        let entry = self.keys.entry(key.clone()).or_default();
        let at = entry
            .buffer
            .partition_point(|queued| queued.event_time <= time);
        entry.buffer.insert(at, event);
        // An event at `time` is handed on once the watermark passes it: at `time + 1`.
        let due = time.saturating_add(1);
        match self.wake.get(&key) {
            Some(&wake) if wake <= due => {}
            _ => self.schedule(key, due),
        }
        Ok(())
    }

    /// Makes `key` due at `due` (whatever it was due at before).
    fn schedule(&mut self, key: Value, due: i64) {
        self.timers.entry(due).or_default().push(key.clone());
        self.wake.insert(key, due);
    }

    /// Advances to `watermark`: every key due by then gets its events before it, in time
    /// order, then the time. Keys are taken in the order they are due (then by key).
    pub(crate) fn advance<L: KeyLogic<State = S>>(
        &mut self,
        watermark: i64,
        logic: &mut L,
        out: &mut Output,
    ) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        while let Some((&due, _)) = self.timers.first_key_value() {
            if due > watermark {
                break;
            }
            let Some((due, keys)) = self.timers.pop_first() else {
                break;
            };
            for key in keys {
                if self.wake.get(&key) != Some(&due) {
                    // A stale entry: the key became due earlier and was run then.
                    continue;
                }
                self.wake.remove(&key);
                self.run_key(key, watermark, false, logic, out);
            }
        }
    }

    /// The end of input: every key, in key order, gets all its events, then the end of time.
    pub(crate) fn finish<L: KeyLogic<State = S>>(&mut self, logic: &mut L, out: &mut Output) {
        let mut keys: Vec<Value> = self.keys.keys().cloned().collect();
        keys.sort();
        self.timers.clear();
        self.wake.clear();
        for key in keys {
            self.run_key(key, i64::MAX, true, logic, out);
        }
    }

    fn run_key<L: KeyLogic<State = S>>(
        &mut self,
        key: Value,
        now: i64,
        end: bool,
        logic: &mut L,
        out: &mut Output,
    ) {
        let Some(entry) = self.keys.get_mut(&key) else {
            return;
        };
        while entry
            .buffer
            .front()
            .is_some_and(|event| end || event.event_time < now)
        {
            if let Some(event) = entry.buffer.pop_front() {
                logic.event(&key, &mut entry.state, event, out);
            }
        }
        logic.time(&key, &mut entry.state, now, end, out);
        let next_event = entry
            .buffer
            .front()
            .map(|event| event.event_time.saturating_add(1));
        let due = match (next_event, logic.deadline(&entry.state)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if entry.buffer.is_empty() && logic.idle(&entry.state) {
            self.keys.remove(&key);
            return;
        }
        if let Some(due) = due {
            if !end {
                self.schedule(key, due);
            }
        }
    }

    /// Every key's events and state, sorted by key.
    pub(crate) fn snapshot(&self) -> TimelineSnapshot<&S> {
        let mut keys: Vec<(Value, KeyEntry<&S>)> = self
            .keys
            .iter()
            .map(|(key, entry)| {
                (
                    key.clone(),
                    KeyEntry {
                        buffer: entry.buffer.clone(),
                        state: &entry.state,
                    },
                )
            })
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        TimelineSnapshot {
            watermark: self.watermark,
            keys,
        }
    }

    /// Replaces everything with `snapshot`; `deadline` tells when each key's state is due.
    pub(crate) fn restore(
        &mut self,
        snapshot: TimelineSnapshot<S>,
        deadline: impl Fn(&S) -> Option<i64>,
    ) {
        *self = Timeline::default();
        self.watermark = snapshot.watermark;
        for (key, entry) in snapshot.keys {
            let next_event = entry
                .buffer
                .front()
                .map(|event| event.event_time.saturating_add(1));
            let due = match (next_event, deadline(&entry.state)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(due) = due {
                self.schedule(key.clone(), due);
            }
            self.keys.insert(key, entry);
        }
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

/// Buffers `batch` per key in `timeline`; an event behind its watermark goes to `out` as a late
/// record of `stage`: what the pattern and alert steps do with their input.
pub(crate) fn insert_batch<S: Default>(
    timeline: &mut Timeline<S>,
    batch: Vec<Event>,
    stage: &std::sync::Arc<str>,
    layout: &dataflow_event::Layout,
    out: &mut Output,
) {
    for event in batch {
        let key = event.key.clone().unwrap_or(Value::Null);
        if let Err(event) = timeline.insert(key, event) {
            out.side.push(SideRecord {
                kind: SideKind::Late,
                stage: stage.clone(),
                reason: format!(
                    "event time {} is behind the watermark {}",
                    format_rfc3339(event.event_time),
                    format_rfc3339(timeline.watermark()),
                ),
                line: None,
                record: SideData::event(&event, layout),
            });
        }
    }
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
