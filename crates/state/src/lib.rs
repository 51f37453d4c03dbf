//! Keyed operator state.
//!
//! Stateful operators keep their state here as byte keys and values, in a namespace of their
//! own (one per operator), behind the [`StateStore`] trait. A checkpoint takes a
//! [`StateStore::snapshot`] — every entry in `(namespace, key)` order, the same bytes for the
//! same contents — and a restore puts one back.
//!
//! Two backends, chosen with [`Backend`]:
//!
//! - [`MemoryStore`] (the default): ordered in-memory maps.
//! - [`SledStore`]: a sled database on disk, for state larger than memory. The checkpoint, not
//!   sled, is the source of truth: on start the directory is rebuilt from the checkpoint being
//!   restored ([`Backend::rebuild`], [`SledStore::rebuild`]), so sled's own durability only
//!   matters between two flushes of one run.
//!
//! This is the only crate that touches sled.
//!
//! ```
//! use dataflow_state::{Backend, StateStore};
//!
//! # fn main() -> dataflow_state::Result<()> {
//! let mut store = Backend::Memory.open()?;
//! store.put("window", b"user-1/0", b"3")?;
//! store.put("window", b"user-1/60000", b"5")?;
//! store.put("window", b"user-2/0", b"1")?;
//! store.put("dedup", b"event-9", b"")?;
//!
//! // Everything of one key, in key order.
//! let user_1 = store.scan_prefix("window", b"user-1/")?.into_vec()?;
//! assert_eq!(user_1.len(), 2);
//! assert_eq!(user_1[0], (b"user-1/0".to_vec(), b"3".to_vec()));
//!
//! // A checkpoint takes a snapshot; a restart rebuilds a store (here on disk) from it.
//! let snapshot = store.snapshot()?;
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let sled = Backend::Sled { dir: dir.path().join("state") };
//! let restored = sled.rebuild(&snapshot)?;
//! assert_eq!(restored.snapshot()?, snapshot);
//! assert_eq!(restored.namespaces()?, ["dedup", "window"]);
//! assert_eq!(restored.key_count("window")?, 3);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod memory;
mod sled_store;
mod snapshot;

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

pub use backend::Backend;
pub use memory::MemoryStore;
pub use sled_store::{SledStore, DEFAULT_CACHE_BYTES};
pub use snapshot::StateSnapshot;

/// Errors of state stores.
#[derive(Debug, Error)]
pub enum StateError {
    /// A sled operation that failed.
    #[error("sled store {}: {op} failed: {cause}", path.display())]
    Sled {
        /// The store's directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// sled's error.
        /// Part of the message, not a separate `source()`: printing the chain says it once.
        cause: sled::Error,
    },
    /// A store directory that another open store holds (its lock is taken).
    #[error("sled store {} is in use: another store holds its lock", path.display())]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// A store directory that sled cannot open even fresh.
    #[error("sled store {} cannot be opened: {reason}", path.display())]
    Unopenable {
        /// The store's directory.
        path: PathBuf,
        /// sled's error or panic.
        reason: String,
    },
    /// An unusable store directory that could not be moved aside.
    #[error("cannot move {} aside: {reason}", path.display())]
    MoveAside {
        /// The store's directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file system operation on a store directory that failed.
    #[error("cannot {op} {}: {cause}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The directory.
        path: PathBuf,
        /// The IO error.
        /// Part of the message, not a separate `source()`: printing the chain says it once.
        cause: std::io::Error,
    },
}

/// The result of state operations.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// One `(key, value)` entry of a namespace.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Keyed state, namespaced per operator: the operations both backends share.
///
/// Namespaces are any strings, keys and values any bytes (empty ones included). A namespace
/// exists while it holds at least one entry: [`StateStore::namespaces`] lists only those, and
/// reading an unknown namespace is not an error (it is empty).
pub trait StateStore: Send + fmt::Debug {
    /// The value of `key` in `namespace`.
    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Sets `key` of `namespace` to `value`.
    fn put(&mut self, namespace: &str, key: &[u8], value: &[u8]) -> Result<()>;

    /// Sets every `(key, value)` of `entries` in `namespace`, as that many [`StateStore::put`]s
    /// would (not atomically), in one call: a disk store takes its tree once for all of them.
    fn put_batch(&mut self, namespace: &str, entries: &[Entry]) -> Result<()> {
        for (key, value) in entries {
            self.put(namespace, key, value)?;
        }
        Ok(())
    }

    /// Removes `key` from `namespace`; removing a missing key does nothing.
    fn delete(&mut self, namespace: &str, key: &[u8]) -> Result<()>;

    /// Entries of `namespace` whose key starts with `prefix`, in key order, read lazily. Each item
    /// is a `Result` because a disk store can fail half way; [`Scan::into_vec`] collects them.
    fn scan_prefix(&self, namespace: &str, prefix: &[u8]) -> Result<Scan<'_>>;

    /// Everything, for a checkpoint, in `(namespace, key)` order.
    fn snapshot(&self) -> Result<StateSnapshot>;

    /// Replaces everything with the snapshot's contents.
    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()>;

    /// The number of entries in `namespace` (0 for an unknown one).
    fn key_count(&self, namespace: &str) -> Result<u64>;

    /// The namespaces that hold entries, in order.
    fn namespaces(&self) -> Result<Vec<String>>;

    /// Makes every write so far durable, where the backend has a disk; does nothing in memory.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// The entries of a [`StateStore::scan_prefix`], in key order.
pub struct Scan<'a> {
    entries: Box<dyn Iterator<Item = Result<Entry>> + 'a>,
}

impl<'a> Scan<'a> {
    /// A scan over `entries`, which must come in key order (for implementors of [`StateStore`]).
    pub fn new(entries: impl Iterator<Item = Result<Entry>> + 'a) -> Self {
        Scan {
            entries: Box::new(entries),
        }
    }

    /// A scan with no entry.
    pub fn empty() -> Self {
        Scan::new(std::iter::empty())
    }

    /// All the entries, or the first error.
    pub fn into_vec(self) -> Result<Vec<Entry>> {
        self.collect()
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.entries.next()
    }
}

impl fmt::Debug for Scan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scan").finish_non_exhaustive()
    }
}
