//! Per-key state kept in a [`StateStore`] with the keys in use cached as objects: what the
//! window operator ([`crate::window::StoreStates`]) and the pattern and alert timelines
//! (`pattern::timeline`) keep their keys in when the state backend is not the in-memory
//! default.
//!
//! Each operator has one namespace in its store (its own store: a restore replaces the whole
//! namespace), mapping a key encoded with the checkpoint crate's state codec to its value's
//! [`StoredValue`] bytes.
//!
//! The keys in use are cached as objects, like the memory backend holds them, up to a bound
//! ([`DEFAULT_CACHE_KEYS`]): an update of a cached key costs no read, decode or write. When the
//! cache is full its values are all written back and it starts over. What the store holds
//! may lag behind the cache; that is fine, because the store is never the truth: a checkpoint
//! reads both ([`StoreCache::for_each`]), and a start rebuilds the store from a checkpoint.
//!
//! Timers are not kept here: each user keeps its own in memory ([`dataflow_window::Timers`])
//! and rebuilds them from the values on restore.

use std::fmt;

use dataflow_event::Value;
use dataflow_state::{Entry, StateStore};
use rustc_hash::FxHashMap;

use crate::OperatorError;

/// How many keys a [`StoreCache`] keeps as objects by default.
pub const DEFAULT_CACHE_KEYS: usize = 16_384;

/// How many entries a [`StoreCache`] writes to its store at once (on a spill or a load).
const WRITE_BATCH: usize = 1024;

/// A value kept in a [`StoreCache`]: how it is written to and read from the store.
pub(crate) trait StoredValue: Sized {
    /// The bytes the store holds for the value.
    fn to_bytes(&self) -> Result<Vec<u8>, String>;

    /// The value of bytes written by [`StoredValue::to_bytes`].
    fn from_bytes(bytes: &[u8]) -> Result<Self, String>;
}

/// How [`StoreCache::for_each`] hands out a key's value: as an object (a cached key), or as the
/// bytes the store holds, with the key's encoding, so a snapshot can copy them undecoded.
pub(crate) enum Held<'a, V> {
    /// A cached key's value.
    Object(&'a V),
    /// A stored key: its encoding and its value's bytes.
    Stored { key: &'a [u8], value: &'a [u8] },
}

/// A key's value held in the cache.
#[derive(Debug)]
struct Cached<V> {
    value: V,
    /// The store holds an entry for the key (perhaps an older value).
    in_store: bool,
}

fn failed(what: &str, error: impl fmt::Display) -> OperatorError {
    OperatorError::State(format!("{what}: {error}"))
}

fn encode_key(key: &Value) -> crate::Result<Vec<u8>> {
    dataflow_checkpoint::encode_state(key).map_err(|error| failed("encode a key", error))
}

fn decode_key(bytes: &[u8]) -> crate::Result<Value> {
    dataflow_checkpoint::decode_state(bytes).map_err(|error| failed("decode a key", error))
}

/// Values per key in a [`StateStore`], so state may be larger than memory, with the keys in use
/// cached as objects.
pub(crate) struct StoreCache<V> {
    store: Box<dyn StateStore>,
    namespace: String,
    /// Keys holding a value, in the cache or the store.
    len: usize,
    cache: FxHashMap<Value, Cached<V>>,
    capacity: usize,
}

impl<V> fmt::Debug for StoreCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreCache")
            .field("store", &self.store)
            .field("namespace", &self.namespace)
            .field("len", &self.len)
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl<V: StoredValue + Default> StoreCache<V> {
    /// The values of the operator `namespace` in `store`, which is the operator's own. Caches up
    /// to [`DEFAULT_CACHE_KEYS`] keys.
    pub(crate) fn new(store: Box<dyn StateStore>, namespace: &str) -> StoreCache<V> {
        StoreCache {
            store,
            namespace: namespace.to_string(),
            len: 0,
            cache: FxHashMap::default(),
            capacity: DEFAULT_CACHE_KEYS,
        }
    }

    /// Caches at most `keys` keys as objects (0 caches none: every update reads and writes).
    pub(crate) fn set_cache_capacity(&mut self, keys: usize) {
        self.capacity = keys;
    }

    /// The number of keys holding a value.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn read(&self, key: &[u8]) -> crate::Result<Option<V>> {
        let Some(bytes) = self
            .store
            .get(&self.namespace, key)
            .map_err(|error| failed("read a state", error))?
        else {
            return Ok(None);
        };
        V::from_bytes(&bytes)
            .map(Some)
            .map_err(|error| failed("decode a state", error))
    }

    fn to_bytes(value: &V) -> crate::Result<Vec<u8>> {
        value
            .to_bytes()
            .map_err(|error| failed("encode a state", error))
    }

    fn write_batch(&mut self, batch: &mut Vec<Entry>) -> crate::Result<()> {
        self.store
            .put_batch(&self.namespace, batch)
            .map_err(|error| failed("write the states", error))?;
        batch.clear();
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> crate::Result<()> {
        self.store
            .delete(&self.namespace, key)
            .map_err(|error| failed("delete a key", error))
    }

    /// Writes every value of the cache to the store and empties the cache.
    fn spill(&mut self) -> crate::Result<()> {
        let mut batch = Vec::with_capacity(WRITE_BATCH.min(self.cache.len()));
        for (key, cached) in std::mem::take(&mut self.cache) {
            batch.push((encode_key(&key)?, Self::to_bytes(&cached.value)?));
            if batch.len() == WRITE_BATCH {
                self.write_batch(&mut batch)?;
            }
        }
        self.write_batch(&mut batch)
    }

    /// Calls `update` on the value of `key` (a default one if the key has none, or, unless
    /// `create`, nothing and returns `None`), which returns what to give back and whether to
    /// keep the key: a key not kept is forgotten.
    pub(crate) fn update<R>(
        &mut self,
        key: &Value,
        create: bool,
        update: impl FnOnce(&mut V) -> (R, bool),
    ) -> crate::Result<Option<R>> {
        if let Some(cached) = self.cache.get_mut(key) {
            let (result, keep) = update(&mut cached.value);
            if !keep {
                if cached.in_store {
                    self.delete(&encode_key(key)?)?;
                }
                self.cache.remove(key);
                self.len -= 1;
            }
            return Ok(Some(result));
        }
        let encoded = encode_key(key)?;
        let existing = self.read(&encoded)?;
        let in_store = existing.is_some();
        if !in_store && !create {
            return Ok(None);
        }
        let mut value = existing.unwrap_or_default();
        let (result, keep) = update(&mut value);
        if !keep {
            if in_store {
                self.delete(&encoded)?;
                self.len -= 1;
            }
            return Ok(Some(result));
        }
        if !in_store {
            self.len += 1;
        }
        if self.capacity == 0 {
            self.store
                .put(&self.namespace, &encoded, &Self::to_bytes(&value)?)
                .map_err(|error| failed("write a state", error))?;
            return Ok(Some(result));
        }
        if self.cache.len() >= self.capacity {
            self.spill()?;
        }
        self.cache.insert(key.clone(), Cached { value, in_store });
        Ok(Some(result))
    }

    /// Adds keys with their values, as a restore does: after [`StoreCache::clear`], never twice
    /// the same key. Written in batches, far faster than a write per key.
    pub(crate) fn load(
        &mut self,
        values: impl IntoIterator<Item = (Value, V)>,
    ) -> crate::Result<()> {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        for (key, value) in values {
            batch.push((encode_key(&key)?, Self::to_bytes(&value)?));
            self.len += 1;
            if batch.len() == WRITE_BATCH {
                self.write_batch(&mut batch)?;
            }
        }
        self.write_batch(&mut batch)
    }

    /// Calls `visit` on every key and its value, in no particular order: the cached ones as
    /// objects, the others as the store holds them, undecoded.
    pub(crate) fn for_each(
        &self,
        visit: &mut dyn FnMut(&Value, Held<'_, V>) -> crate::Result<()>,
    ) -> crate::Result<()> {
        for (key, cached) in &self.cache {
            visit(key, Held::Object(&cached.value))?;
        }
        let scan = self
            .store
            .scan_prefix(&self.namespace, &[])
            .map_err(|error| failed("scan the states", error))?;
        for entry in scan {
            let (encoded, bytes) = entry.map_err(|error| failed("scan the states", error))?;
            let key = decode_key(&encoded)?;
            // A cached key's stored value may be older than the cached one, seen above.
            if self.cache.contains_key(&key) {
                continue;
            }
            visit(
                &key,
                Held::Stored {
                    key: &encoded,
                    value: &bytes,
                },
            )?;
        }
        Ok(())
    }

    /// Every key, in no particular order.
    pub(crate) fn keys(&self) -> crate::Result<Vec<Value>> {
        let mut keys = Vec::with_capacity(self.len);
        self.for_each(&mut |key, _| {
            keys.push(key.clone());
            Ok(())
        })?;
        Ok(keys)
    }

    /// Drops every key.
    pub(crate) fn clear(&mut self) -> crate::Result<()> {
        self.cache.clear();
        let keys: Vec<Vec<u8>> = self
            .store
            .scan_prefix(&self.namespace, &[])
            .map_err(|error| failed("scan", error))?
            .map(|entry| entry.map(|(key, _)| key))
            .collect::<Result<_, _>>()
            .map_err(|error| failed("scan", error))?;
        for key in keys {
            self.delete(&key)?;
        }
        self.len = 0;
        Ok(())
    }
}

/// Decodes a stored value, as [`Held::Stored`] hands it out.
pub(crate) fn decode_held<V: StoredValue>(bytes: &[u8]) -> crate::Result<V> {
    V::from_bytes(bytes).map_err(|error| failed("decode a state", error))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dataflow_state::MemoryStore;
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Default, Clone, PartialEq)]
    struct Count(i64);

    impl StoredValue for Count {
        fn to_bytes(&self) -> Result<Vec<u8>, String> {
            Ok(self.0.to_le_bytes().to_vec())
        }

        fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| "not 8 bytes".to_string())?;
            Ok(Count(i64::from_le_bytes(bytes)))
        }
    }

    fn contents(cache: &StoreCache<Count>) -> BTreeMap<i64, i64> {
        let mut seen = BTreeMap::new();
        cache
            .for_each(&mut |key, held| {
                let Value::Int(key) = key else {
                    panic!("an int key");
                };
                let value = match held {
                    Held::Object(value) => value.clone(),
                    Held::Stored { value, .. } => decode_held(value)?,
                };
                assert!(seen.insert(*key, value.0).is_none(), "a key seen twice");
                Ok(())
            })
            .expect("readable");
        seen
    }

    proptest! {
        /// Whatever the cache's size, the keys and values are those of a plain map: adds that
        /// drop a key reaching 0, and updates of existing keys only.
        #[test]
        fn a_store_cache_holds_what_a_map_would(
            ops in prop::collection::vec((0i64..12, -3i64..4, any::<bool>()), 0..200),
            capacity in 0usize..5,
        ) {
            let mut cache = StoreCache::<Count>::new(Box::new(MemoryStore::new()), "op");
            cache.set_cache_capacity(capacity);
            let mut model = BTreeMap::new();
            for (key, add, create) in ops {
                let present = model.contains_key(&key);
                let result = cache
                    .update(&Value::Int(key), create, |count| {
                        count.0 += add;
                        (count.0, count.0 != 0)
                    })
                    .expect("updated");
                if present || create {
                    let total = model.get(&key).copied().unwrap_or(0) + add;
                    prop_assert_eq!(result, Some(total));
                    if total == 0 {
                        model.remove(&key);
                    } else {
                        model.insert(key, total);
                    }
                } else {
                    prop_assert_eq!(result, None);
                }
                prop_assert_eq!(cache.len(), model.len());
            }
            prop_assert_eq!(contents(&cache), model.clone());
            cache.clear().expect("cleared");
            cache
                .load(model.iter().map(|(key, value)| (Value::Int(*key), Count(*value))))
                .expect("loaded");
            prop_assert_eq!(cache.len(), model.len());
            prop_assert_eq!(contents(&cache), model);
        }
    }
}
