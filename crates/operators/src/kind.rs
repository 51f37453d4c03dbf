//! The static facts of each kind of operator, declared beside its code (`filter::KIND`,
//! `window::KIND`, ...) and looked up here by the name a checkpoint stores. The runtime asks
//! them how to partition an operator's input and whether it keeps state; the API and `admin`
//! ask them how to read a snapshot. Nothing outside this crate matches kind names.

use std::fmt;

use crate::window::OperatorView;
use crate::{alert, filter, join, key_by, map, over, pattern, window, Result};

/// How the input of an operator must be spread over parallel workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// Any way: each event is processed on its own.
    Any,
    /// By the event's key (`dataflow_window::key_partition`): the operator keeps state per key,
    /// so every event of a key must reach the same worker.
    ByKey,
}

/// What an operator does to its events' keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEffect {
    /// Events leave with the key they came with.
    Preserves,
    /// Events leave with a key the operator sets.
    Sets,
    /// What leaves carries no key of its input (a window's results).
    Drops,
}

/// Reads a snapshot of one kind of operator as readable JSON.
pub type InspectFn = fn(&[u8]) -> Result<OperatorView>;

/// What is true of every operator of one kind.
#[derive(Clone, Copy)]
pub struct OperatorKind {
    /// The kind's name, as written in checkpoints, metrics and the API: `window`.
    pub name: &'static str,
    /// Whether its operators keep state that checkpoints hold.
    pub stateful: bool,
    /// How its input must be partitioned across parallel workers.
    pub input: Partitioning,
    /// What it does to keys.
    pub key: KeyEffect,
    /// Reads a snapshot of this kind as readable JSON; `None` for kinds without state.
    pub inspect: Option<InspectFn>,
}

impl OperatorKind {
    /// Whether parallel workers of this kind need their input routed by key.
    pub fn keyed(&self) -> bool {
        self.input == Partitioning::ByKey
    }
}

impl PartialEq for OperatorKind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for OperatorKind {}

impl fmt::Debug for OperatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorKind")
            .field("name", &self.name)
            .field("stateful", &self.stateful)
            .field("input", &self.input)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for OperatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Which operators of a chain can run in parallel workers: `Some((start, by_key))` when the
/// operators from `start` to the end can, their input routed by key when `by_key` (and round
/// robin otherwise); `None` when the chain must run as one. Decided by the kinds' facts alone:
/// every stateful operator must take its input by key, from the first keyed operator on the
/// key must be the one set before it (no operator between two keyed ones may set or drop it),
/// and a key must have been set before the first keyed operator.
pub fn parallel_part(kinds: &[&OperatorKind]) -> Option<(usize, bool)> {
    if kinds
        .iter()
        .any(|kind| kind.stateful && kind.input != Partitioning::ByKey)
    {
        return None;
    }
    let keyed: Vec<usize> = (0..kinds.len()).filter(|&i| kinds[i].keyed()).collect();
    let (Some(&first), Some(&last)) = (keyed.first(), keyed.last()) else {
        return Some((0, false));
    };
    let key_set = kinds[..first]
        .iter()
        .any(|kind| kind.key == KeyEffect::Sets);
    let key_kept = kinds[first..last]
        .iter()
        .all(|kind| kind.key == KeyEffect::Preserves);
    (key_set && key_kept).then_some((first, true))
}

/// Every built-in kind.
pub const ALL: [&OperatorKind; 11] = [
    &filter::KIND,
    &map::KIND,
    &key_by::KIND,
    &window::KIND,
    &pattern::KIND,
    &alert::KIND,
    &over::KIND,
    &join::branch::KIND,
    &join::interval::KIND,
    &join::window::KIND,
    &join::lookup::KIND,
];

/// The kind named `name`, as a checkpoint names it.
pub fn by_name(name: &str) -> Option<&'static OperatorKind> {
    ALL.into_iter().find(|kind| kind.name == name)
}

/// Decodes the state of an operator of kind `kind` (as named in the checkpoint) into readable
/// JSON.
pub fn decode_state(kind: &str, state: &[u8]) -> Result<OperatorView> {
    match by_name(kind).and_then(|kind| kind.inspect) {
        Some(inspect) => inspect(state),
        None => Err(crate::OperatorError::Checkpoint(format!(
            "operators of kind `{kind}` keep no state that can be shown"
        ))),
    }
}
