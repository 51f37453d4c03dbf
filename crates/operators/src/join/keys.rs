//! Where a join keeps its keys' states: objects in a hash map (`state.backend: memory`), or
//! entries of the operator's own state store through a [`StoreCache`] (`state.backend: sled`),
//! the keys in use cached as objects, as the window's and the timeline's keys are. Either way a
//! key's value in the store is its state encoded as a checkpoint holds it, so a snapshot copies
//! a stored key's bytes, and both write the same checkpoint ([`Keys::snapshot`]).

use dataflow_event::Value;
use dataflow_state::StateStore;
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store_cache::{Held, StoreCache, StoredValue};
use crate::window::snapshot::SnapshotWriter;
use crate::OperatorError;

/// A key's state as a [`StoreCache`] holds it: the bytes are the state's own encoding, the same
/// as a key's value in a checkpoint.
#[derive(Debug, Default)]
pub(crate) struct Stored<S>(pub(crate) S);

impl<S: Serialize + DeserializeOwned> StoredValue for Stored<S> {
    fn to_bytes(&self) -> Result<Vec<u8>, String> {
        dataflow_checkpoint::encode_state(&self.0).map_err(|error| error.to_string())
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        dataflow_checkpoint::decode_state(bytes)
            .map(Stored)
            .map_err(|error| error.to_string())
    }
}

/// A join's keys and their states.
#[derive(Debug)]
pub(crate) enum Keys<S> {
    /// Objects in memory: the default, and the fastest.
    Memory(FxHashMap<Value, S>),
    /// The operator's own state store, with the keys in use cached as objects.
    Store(StoreCache<Stored<S>>),
}

impl<S> Default for Keys<S> {
    fn default() -> Self {
        Keys::Memory(FxHashMap::default())
    }
}

impl<S: Default + Serialize + DeserializeOwned> Keys<S> {
    /// Keys kept in `store` (the operator's own) under `namespace`, caching at most
    /// `cache_keys` as objects.
    pub(crate) fn in_store(
        store: Box<dyn StateStore>,
        namespace: &str,
        cache_keys: usize,
    ) -> Keys<S> {
        let mut cache = StoreCache::new(store, namespace);
        cache.set_cache_capacity(cache_keys);
        Keys::Store(cache)
    }

    /// How many keys hold a state.
    pub(crate) fn len(&self) -> usize {
        match self {
            Keys::Memory(keys) => keys.len(),
            Keys::Store(cache) => cache.len(),
        }
    }

    /// Calls `update` on the state of `key` (a default one if the key has none, or, unless
    /// `create`, nothing and returns `None`), which returns what to give back and whether to
    /// keep the key: a key not kept is forgotten.
    pub(crate) fn update<R>(
        &mut self,
        key: &Value,
        create: bool,
        update: impl FnOnce(&mut S) -> (R, bool),
    ) -> crate::Result<Option<R>> {
        match self {
            Keys::Memory(keys) => {
                if let Some(state) = keys.get_mut(key) {
                    let (result, keep) = update(state);
                    if !keep {
                        keys.remove(key);
                    }
                    return Ok(Some(result));
                }
                if !create {
                    return Ok(None);
                }
                let mut state = S::default();
                let (result, keep) = update(&mut state);
                if keep {
                    keys.insert(key.clone(), state);
                }
                Ok(Some(result))
            }
            Keys::Store(cache) => cache.update(key, create, |stored| update(&mut stored.0)),
        }
    }

    /// Every key, sorted.
    pub(crate) fn sorted_keys(&self) -> crate::Result<Vec<Value>> {
        let mut keys = match self {
            Keys::Memory(keys) => keys.keys().cloned().collect(),
            Keys::Store(cache) => cache.keys()?,
        };
        keys.sort_unstable();
        Ok(keys)
    }

    /// Calls `visit` on every key's state, in no particular order (a stored key's decoded).
    pub(crate) fn for_each_state(
        &self,
        visit: &mut dyn FnMut(&Value, &S) -> crate::Result<()>,
    ) -> crate::Result<()> {
        match self {
            Keys::Memory(keys) => keys.iter().try_for_each(|(key, state)| visit(key, state)),
            Keys::Store(cache) => cache.for_each(&mut |key, held| match held {
                Held::Object(stored) => visit(key, &stored.0),
                Held::Stored { value, .. } => {
                    let stored: Stored<S> = crate::store_cache::decode_held(value)?;
                    visit(key, &stored.0)
                }
            }),
        }
    }

    /// Adds every key's state to `writer`: a cached one encoded, a stored one copied as the
    /// store holds it (the same bytes).
    pub(crate) fn write(&self, writer: &mut SnapshotWriter) -> crate::Result<()> {
        let invalid =
            |error: dataflow_window::WindowError| OperatorError::Checkpoint(error.to_string());
        match self {
            Keys::Memory(keys) => {
                for (key, state) in keys {
                    writer.add(key, state).map_err(invalid)?;
                }
                Ok(())
            }
            Keys::Store(cache) => cache.for_each(&mut |key, held| {
                match held {
                    Held::Object(stored) => writer.add(key, &stored.0).map_err(invalid)?,
                    Held::Stored {
                        key: encoded,
                        value,
                    } => writer.add_encoded(key.clone(), encoded, value),
                }
                Ok(())
            }),
        }
    }

    /// Drops every key.
    pub(crate) fn clear(&mut self) -> crate::Result<()> {
        match self {
            Keys::Memory(keys) => {
                keys.clear();
                Ok(())
            }
            Keys::Store(cache) => cache.clear(),
        }
    }

    /// Adds restored keys with their states (after [`Keys::clear`], each key once).
    pub(crate) fn load(&mut self, states: Vec<(Value, S)>) -> crate::Result<()> {
        match self {
            Keys::Memory(keys) => {
                keys.extend(states);
                Ok(())
            }
            Keys::Store(cache) => {
                cache.load(states.into_iter().map(|(key, state)| (key, Stored(state))))
            }
        }
    }
}
