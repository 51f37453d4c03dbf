//! The serializable state of a [`crate::KeyedWindows`].

use std::borrow::Cow;

use dataflow_event::Value;
use serde::{Deserialize, Serialize};

use crate::aggregate::AccumulatorSnapshot;
use crate::{AggregateKind, Result, WindowError, WindowKind};

/// The complete state of a [`crate::KeyedWindows`]: its watermark and every key's open windows
/// with their accumulators, taken by [`crate::KeyedWindows::snapshot`] and brought back by
/// [`crate::KeyedWindows::restore`].
///
/// A snapshot is deterministic: keys, sets and maps are sorted, so equal states give equal
/// snapshots and equal encodings. Its contents are private; it is meant to be serialized with
/// serde, stored and restored, and read through [`WindowSnapshot::keys`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowSnapshot {
    /// The window kind of the operator, checked on restore.
    pub(crate) kind: WindowKind,
    /// The aggregates of the operator, checked on restore.
    pub(crate) aggregates: Vec<AggregateKind>,
    pub(crate) watermark: i64,
    /// The arrival number the next event gets.
    pub(crate) next_seq: u64,
    /// Sorted by key, keys unique.
    pub(crate) keys: Vec<KeySnapshot>,
}

impl WindowSnapshot {
    /// The watermark of the operator when the snapshot was taken.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The number of keys with open windows.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The aggregates of the operator, in the order of each window's results.
    pub fn aggregates(&self) -> &[AggregateKind] {
        &self.aggregates
    }

    /// A read-only view of every key, in the snapshot's (sorted) order: its open windows, each
    /// with its aggregates' current results, computed as the operator computes them.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = SnapshotKey<'_>> + '_ {
        self.keys.iter().map(move |key| SnapshotKey {
            key: &key.key,
            windows: key
                .slices
                .iter()
                .map(|slice| SnapshotWindow {
                    start: slice.start,
                    end: slice.end,
                    fired: slice.fired,
                    results: self
                        .aggregates
                        .iter()
                        .zip(&slice.accumulators)
                        .map(|(kind, accumulator)| (*kind, accumulator.value()))
                        .collect(),
                })
                .collect(),
        })
    }
}

/// What a [`WindowSnapshot`] serializes as before its keys, so that a snapshot can be written
/// one key at a time instead of gathered whole ([`crate::KeyedWindows::snapshot_header`]).
///
/// With serde formats that write a struct as its fields in order and a sequence as its length
/// then its items (bincode, the checkpoints' codec), a [`WindowSnapshot`] serializes exactly
/// as: this header; the number of keys as a `u64`; then every key in ascending order as the
/// pair `(key, windows)`, its [`Value`] and its [`crate::StoredKey`]
/// ([`crate::KeyState::to_stored`]).
///
/// A restore reads a snapshot the same way: the header (deserialized as a
/// `SnapshotHeader<'static>`), the number of keys, then the keys one at a time
/// ([`crate::KeyedWindows::restore_keys`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHeader<'a> {
    pub(crate) kind: WindowKind,
    pub(crate) aggregates: Cow<'a, [AggregateKind]>,
    pub(crate) watermark: i64,
    pub(crate) next_seq: u64,
}

/// One key of a [`WindowSnapshot`], as [`WindowSnapshot::keys`] shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotKey<'a> {
    /// The key.
    pub key: &'a Value,
    /// Its open panes (tumbling and sliding windows) or sessions, by start.
    pub windows: Vec<SnapshotWindow>,
}

/// A pane or session of a [`SnapshotKey`].
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotWindow {
    /// Where it starts (inclusive), epoch milliseconds.
    pub start: i64,
    /// Where it ends (exclusive), epoch milliseconds.
    pub end: i64,
    /// Whether its result was emitted already.
    pub fired: bool,
    /// Each aggregate with its current result over this pane or session.
    pub results: Vec<(AggregateKind, Value)>,
}

/// The open windows of one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeySnapshot {
    pub(crate) key: Value,
    /// Sorted by start; never empty.
    pub(crate) slices: Vec<SliceSnapshot>,
}

/// A pane (tumbling and sliding windows) or a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SliceSnapshot {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) fired: bool,
    pub(crate) accumulators: Vec<AccumulatorSnapshot>,
}

/// A 64-bit hash of a key that is the same on every run, machine and version of dataflow: the
/// FNV-1a hash of a canonical byte encoding of the value (a type tag, then little-endian
/// numbers, lengths as `u64`, string bytes). Parallel workers are chosen by it and snapshots
/// are split by it, so it must never change: a checkpoint's keys are routed again with it on
/// restore. It does not use `std::hash::Hash`, whose output Rust does not promise to keep.
pub fn key_hash(key: &Value) -> u64 {
    let mut hasher = Fnv1a(FNV_OFFSET);
    hasher.value(key);
    hasher.0
}

/// The worker, of `workers`, that owns `key`: `key_hash(key) % workers`. `workers` of 0 is
/// taken as 1.
pub fn key_partition(key: &Value, workers: usize) -> usize {
    (key_hash(key) % workers.max(1) as u64) as usize
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

struct Fnv1a(u64);

impl Fnv1a {
    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    fn len(&mut self, len: usize) {
        self.bytes(&(len as u64).to_le_bytes());
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.bytes(&[0]),
            Value::Bool(b) => self.bytes(&[1, u8::from(*b)]),
            Value::Int(i) => {
                self.bytes(&[2]);
                self.bytes(&i.to_le_bytes());
            }
            Value::Float(f) => {
                self.bytes(&[3]);
                self.bytes(&f.to_bits().to_le_bytes());
            }
            Value::Str(s) => {
                self.bytes(&[4]);
                self.len(s.len());
                self.bytes(s.as_bytes());
            }
            Value::List(items) => {
                self.bytes(&[5]);
                self.len(items.len());
                for item in items.iter() {
                    self.value(item);
                }
            }
            Value::Map(map) => {
                self.bytes(&[6]);
                self.len(map.len());
                for (name, item) in map.iter() {
                    self.len(name.len());
                    self.bytes(name.as_bytes());
                    self.value(item);
                }
            }
        }
    }
}

impl WindowSnapshot {
    /// One snapshot holding the state of `parts`, the snapshots of parallel instances of one
    /// window operator (each holding its own keys): the union of their keys, sorted; the
    /// highest watermark and arrival counter. Arrival numbers only order events within a key
    /// (for `first` and `last`), and a key lives in one part, so taking the highest counter
    /// keeps every key's order and every later arrival after it.
    ///
    /// Fails if the parts were taken with other window kinds or aggregates, or share a key.
    pub fn merge(parts: Vec<WindowSnapshot>) -> Result<WindowSnapshot> {
        let mut parts = parts.into_iter();
        let Some(mut merged) = parts.next() else {
            return Err(WindowError::InvalidSnapshot(
                "no snapshots to merge".to_string(),
            ));
        };
        for part in parts {
            if part.kind != merged.kind || part.aggregates != merged.aggregates {
                return Err(WindowError::InvalidSnapshot(format!(
                    "cannot merge a snapshot of {:?} {:?} with one of {:?} {:?}",
                    part.kind, part.aggregates, merged.kind, merged.aggregates
                )));
            }
            merged.watermark = merged.watermark.max(part.watermark);
            merged.next_seq = merged.next_seq.max(part.next_seq);
            merged.keys.extend(part.keys);
        }
        merged.keys.sort_by(|a, b| a.key.cmp(&b.key));
        if let Some(pair) = merged
            .keys
            .windows(2)
            .find(|pair| pair[0].key == pair[1].key)
        {
            return Err(WindowError::InvalidSnapshot(format!(
                "key {:?} is in two of the snapshots to merge",
                pair[0].key
            )));
        }
        Ok(merged)
    }

    /// Splits the snapshot into `workers` parts by [`key_partition`]: part `i` holds the keys
    /// worker `i` owns, with the same watermark and arrival counter. Merging the parts gives
    /// the snapshot back.
    pub fn split(self, workers: usize) -> Vec<WindowSnapshot> {
        let workers = workers.max(1);
        let mut parts: Vec<WindowSnapshot> = (0..workers)
            .map(|_| WindowSnapshot {
                kind: self.kind,
                aggregates: self.aggregates.clone(),
                watermark: self.watermark,
                next_seq: self.next_seq,
                keys: Vec::new(),
            })
            .collect();
        for key in self.keys {
            parts[key_partition(&key.key, workers)].keys.push(key);
        }
        parts
    }
}
