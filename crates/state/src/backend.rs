//! The choice of backend, from configuration.

use std::path::PathBuf;

use crate::{MemoryStore, Result, SledStore, StateSnapshot, StateStore};

/// Where operator state is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// In memory ([`MemoryStore`]): the default.
    #[default]
    Memory,
    /// On disk in `dir` ([`SledStore`]), for state larger than memory.
    Sled {
        /// The store's directory, created if missing.
        dir: PathBuf,
    },
}

impl Backend {
    /// Opens the store as it is: empty in memory; on disk, whatever `dir` holds (an unopenable
    /// directory is moved aside, see [`SledStore::open`]).
    pub fn open(&self) -> Result<Box<dyn StateStore>> {
        match self {
            Backend::Memory => Ok(Box::new(MemoryStore::new())),
            Backend::Sled { dir } => Ok(Box::new(SledStore::open(dir)?)),
        }
    }

    /// Opens a store holding exactly `snapshot`, for a start from a checkpoint; on disk, `dir`
    /// is rebuilt (see [`SledStore::rebuild`]).
    pub fn rebuild(&self, snapshot: &StateSnapshot) -> Result<Box<dyn StateStore>> {
        match self {
            Backend::Memory => Ok(Box::new(MemoryStore::from_snapshot(snapshot.clone()))),
            Backend::Sled { dir } => Ok(Box::new(SledStore::rebuild(dir, snapshot)?)),
        }
    }
}
