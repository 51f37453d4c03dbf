//! What the model tests of the keyed event-time operators (pattern, alert, over) share: where
//! an operator keeps its state, and driving one through a checkpoint restored into another.

use dataflow_event::Event;
use dataflow_operators::{Operator, Output};
use dataflow_state::{MemoryStore, SledStore, StateSnapshot, StateStore};

/// Where an operator keeps its state.
#[derive(Clone, Debug)]
pub enum Backend {
    Memory,
    /// A memory store, caching this many keys as objects.
    Store(usize),
    /// A sled store in this directory, caching this many keys as objects.
    Sled(std::path::PathBuf, usize),
}

impl Backend {
    /// The store an operator in this backend keeps its keys in, with how many it caches as
    /// objects; `None` in memory.
    pub fn store(&self) -> Option<(Box<dyn StateStore>, usize)> {
        match self {
            Backend::Memory => None,
            Backend::Store(cache_keys) => Some((Box::new(MemoryStore::new()), *cache_keys)),
            Backend::Sled(dir, cache_keys) => {
                let store = SledStore::rebuild(dir, &StateSnapshot::default()).unwrap();
                Some((Box::new(store), *cache_keys))
            }
        }
    }
}

/// Drives an operator built by `build(before)` with `batches` in order, each followed by the
/// watermark `bound` behind the newest event so far; after batch `restore_at` its checkpoint is
/// restored into a new operator built by `build(after)`, which goes on; at the end, the input
/// ends. Every output goes to `collect`. Returns the checkpoint.
pub fn drive<O: Operator>(
    build: impl Fn(&Backend) -> O,
    batches: impl IntoIterator<Item = Vec<Event>>,
    bound: i64,
    restore_at: usize,
    before: &Backend,
    after: &Backend,
    mut collect: impl FnMut(Output),
) -> Vec<u8> {
    let mut operator = build(before);
    let mut checkpoint = Vec::new();
    let mut newest = i64::MIN;
    for (index, events) in batches.into_iter().enumerate() {
        newest = events.iter().fold(newest, |n, e| n.max(e.event_time));
        let mut out = Output::default();
        operator.process(events, &mut out);
        operator.on_watermark(newest - bound, &mut out);
        collect(out);
        if index == restore_at {
            let snapshot = operator.snapshot().unwrap().unwrap();
            // A sled directory has one owner at a time: the old store goes first.
            drop(operator);
            operator = build(after);
            operator.restore(&snapshot.state).unwrap();
            checkpoint = snapshot.state;
        }
    }
    let mut out = Output::default();
    operator.finish(true, &mut out);
    collect(out);
    checkpoint
}
