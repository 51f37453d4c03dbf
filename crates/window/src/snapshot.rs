//! The serializable state of a [`crate::KeyedWindows`].

use dataflow_event::Value;
use serde::{Deserialize, Serialize};

use crate::aggregate::AccumulatorSnapshot;
use crate::{AggregateKind, WindowKind};

/// The complete state of a [`crate::KeyedWindows`]: its watermark and every key's open windows
/// with their accumulators, taken by [`crate::KeyedWindows::snapshot`] and brought back by
/// [`crate::KeyedWindows::restore`].
///
/// A snapshot is deterministic: keys, sets and maps are sorted, so equal states give equal
/// snapshots and equal encodings. Its contents are private; it is meant to be serialized with
/// serde, stored and restored.
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
