//! Window state kept in a [`StateStore`]: the [`KeyStates`] of window operators whose state
//! backend is not the in-memory default.
//!
//! Each operator has two namespaces in its store: `<operator>` maps a key to its windows and
//! accumulators (a [`StoredKey`]), and `<operator>/timers` holds one empty entry per timer,
//! keyed by its time (big-endian, sign bit flipped, so byte order is time order) then the key.
//! Keys and states are encoded with the checkpoint crate's state codec.
//!
//! The keys in use are cached as objects, like the memory backend holds them, up to a bound
//! ([`DEFAULT_CACHE_KEYS`]): an event of a cached key costs no read, decode or write. When the
//! cache is full its states are all written back and it starts over. What the store holds
//! may lag behind the cache; that is fine, because the store is never the truth: a checkpoint
//! reads both, and a start rebuilds the store from a checkpoint.

use std::fmt;

use dataflow_event::Value;
use dataflow_state::{StateSnapshot, StateStore};
use dataflow_window::{KeyState, KeyStates, StoredKey, WindowError};
use rustc_hash::FxHashMap;

/// How many keys a [`StoreStates`] keeps as objects by default.
pub const DEFAULT_CACHE_KEYS: usize = 16_384;

/// A key's state held in the cache.
#[derive(Debug)]
struct Cached {
    state: KeyState,
    /// The store holds an entry for the key (perhaps an older state).
    in_store: bool,
}

/// [`KeyStates`] in a [`StateStore`], so state may be larger than memory, with the keys in use
/// cached as objects.
pub struct StoreStates {
    store: Box<dyn StateStore>,
    namespace: String,
    timers: String,
    /// Keys holding state, in the cache or the store.
    len: usize,
    cache: FxHashMap<Value, Cached>,
    capacity: usize,
}

impl fmt::Debug for StoreStates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreStates")
            .field("store", &self.store)
            .field("namespace", &self.namespace)
            .field("len", &self.len)
            .field("cached", &self.cache.len())
            .finish()
    }
}

fn failed(what: &str, error: impl fmt::Display) -> WindowError {
    WindowError::State(format!("{what}: {error}"))
}

fn encode_key(key: &Value) -> Result<Vec<u8>, WindowError> {
    dataflow_checkpoint::encode_state(key).map_err(|error| failed("encode a key", error))
}

fn encode_value(state: &KeyState) -> Result<Vec<u8>, WindowError> {
    dataflow_checkpoint::encode_state(&state.to_stored())
        .map_err(|error| failed("encode a state", error))
}

/// A timer's entry key: its time, ordered as bytes, then the encoded key.
fn timer_key(time: i64, key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + key.len());
    bytes.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
    bytes.extend_from_slice(key);
    bytes
}

fn timer_time(entry: &[u8]) -> Option<i64> {
    let bytes: [u8; 8] = entry.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

impl StoreStates {
    /// The states of the operator `namespace` in `store`, which is the operator's own: a restore
    /// ([`KeyStates::load`]) replaces the store's whole contents. Caches up to
    /// [`DEFAULT_CACHE_KEYS`] keys.
    pub fn new(store: Box<dyn StateStore>, namespace: &str) -> StoreStates {
        StoreStates {
            store,
            namespace: namespace.to_string(),
            timers: format!("{namespace}/timers"),
            len: 0,
            cache: FxHashMap::default(),
            capacity: DEFAULT_CACHE_KEYS,
        }
    }

    /// Caches at most `keys` keys as objects (0 caches none: every update reads and writes).
    pub fn with_cache_capacity(mut self, keys: usize) -> StoreStates {
        self.capacity = keys;
        self
    }

    /// Writes the timer of the key encoded as `key` at `time`.
    fn write_timer(&mut self, time: i64, key: &[u8]) -> Result<(), WindowError> {
        self.store
            .put(&self.timers, &timer_key(time, key), &[])
            .map_err(|error| failed("write a timer", error))
    }

    fn read(&self, key: &[u8]) -> Result<Option<KeyState>, WindowError> {
        let Some(bytes) = self
            .store
            .get(&self.namespace, key)
            .map_err(|error| failed("read a state", error))?
        else {
            return Ok(None);
        };
        let stored: StoredKey = dataflow_checkpoint::decode_state(&bytes)
            .map_err(|error| failed("decode a state", error))?;
        Ok(Some(KeyState::from_stored(stored)))
    }

    /// Writes every state of the cache to the store and empties the cache.
    fn spill(&mut self) -> Result<(), WindowError> {
        for (key, cached) in std::mem::take(&mut self.cache) {
            self.store
                .put(
                    &self.namespace,
                    &encode_key(&key)?,
                    &encode_value(&cached.state)?,
                )
                .map_err(|error| failed("write a state", error))?;
        }
        Ok(())
    }

    fn delete_all(&mut self, namespace: &str) -> Result<(), WindowError> {
        let keys: Vec<Vec<u8>> = self
            .store
            .scan_prefix(namespace, &[])
            .map_err(|error| failed("scan", error))?
            .map(|entry| entry.map(|(key, _)| key))
            .collect::<Result<_, _>>()
            .map_err(|error| failed("scan", error))?;
        for key in keys {
            self.store
                .delete(namespace, &key)
                .map_err(|error| failed("delete", error))?;
        }
        Ok(())
    }
}

impl KeyStates for StoreStates {
    fn update<R>(
        &mut self,
        key: &Value,
        update: impl FnOnce(&mut KeyState) -> R,
    ) -> dataflow_window::Result<R> {
        if let Some(cached) = self.cache.get_mut(key) {
            let result = update(&mut cached.state);
            let scheduled = cached.state.take_scheduled();
            let emptied = cached.state.is_empty();
            // The key is encoded only when the store is to hear of it.
            let delete = emptied && cached.in_store;
            if scheduled.is_some() || delete {
                let encoded = encode_key(key)?;
                if let Some(time) = scheduled {
                    self.write_timer(time, &encoded)?;
                }
                if delete {
                    self.store
                        .delete(&self.namespace, &encoded)
                        .map_err(|error| failed("delete a key", error))?;
                }
            }
            if emptied {
                self.cache.remove(key);
                self.len -= 1;
            }
            return Ok(result);
        }
        let encoded = encode_key(key)?;
        let existing = self.read(&encoded)?;
        let in_store = existing.is_some();
        let mut state = existing.unwrap_or_default();
        let result = update(&mut state);
        if let Some(time) = state.take_scheduled() {
            self.write_timer(time, &encoded)?;
        }
        if state.is_empty() {
            if in_store {
                self.store
                    .delete(&self.namespace, &encoded)
                    .map_err(|error| failed("delete a key", error))?;
                self.len -= 1;
            }
            return Ok(result);
        }
        if !in_store {
            self.len += 1;
        }
        if self.capacity == 0 {
            self.store
                .put(&self.namespace, &encoded, &encode_value(&state)?)
                .map_err(|error| failed("write a state", error))?;
            return Ok(result);
        }
        if self.cache.len() >= self.capacity {
            self.spill()?;
        }
        self.cache.insert(key.clone(), Cached { state, in_store });
        Ok(result)
    }

    fn pop_due(&mut self, watermark: i64) -> dataflow_window::Result<Option<(i64, Vec<Value>)>> {
        let first = self
            .store
            .scan_prefix(&self.timers, &[])
            .map_err(|error| failed("scan the timers", error))?
            .next()
            .transpose()
            .map_err(|error| failed("scan the timers", error))?;
        let Some((entry, _)) = first else {
            return Ok(None);
        };
        let time = timer_time(&entry)
            .ok_or_else(|| failed("read a timer", "an entry shorter than a time"))?;
        if time > watermark {
            return Ok(None);
        }
        self.store
            .delete(&self.timers, &entry)
            .map_err(|error| failed("delete a timer", error))?;
        let key: Value = dataflow_checkpoint::decode_state(&entry[8..])
            .map_err(|error| failed("decode a timer's key", error))?;
        Ok(Some((time, vec![key])))
    }

    fn load(&mut self, states: Vec<(Value, KeyState)>) -> dataflow_window::Result<Option<Value>> {
        // One snapshot written in batches: far faster than a write per key.
        self.cache.clear();
        let mut snapshot = StateSnapshot::new();
        let count = states.len();
        for (key, mut state) in states {
            let encoded = encode_key(&key)?;
            if let Some(time) = state.take_scheduled() {
                snapshot.insert(&self.timers, &timer_key(time, &encoded), &[]);
            }
            if snapshot
                .insert(&self.namespace, &encoded, &encode_value(&state)?)
                .is_some()
            {
                return Ok(Some(key));
            }
        }
        // The store holds nothing of this operator (`with_states` cleared it), and nothing else.
        self.store
            .restore(&snapshot)
            .map_err(|error| failed("load the states", error))?;
        self.len = count;
        Ok(None)
    }

    fn for_each(&self, visit: &mut dyn FnMut(&Value, &KeyState)) -> dataflow_window::Result<()> {
        for (key, cached) in &self.cache {
            visit(key, &cached.state);
        }
        let scan = self
            .store
            .scan_prefix(&self.namespace, &[])
            .map_err(|error| failed("scan the states", error))?;
        for entry in scan {
            let (key, bytes) = entry.map_err(|error| failed("scan the states", error))?;
            let key: Value = dataflow_checkpoint::decode_state(&key)
                .map_err(|error| failed("decode a key", error))?;
            // A cached key's stored state may be older than the cached one, seen above.
            if self.cache.contains_key(&key) {
                continue;
            }
            let stored: StoredKey = dataflow_checkpoint::decode_state(&bytes)
                .map_err(|error| failed("decode a state", error))?;
            visit(&key, &KeyState::from_stored(stored));
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) -> dataflow_window::Result<()> {
        self.cache.clear();
        let (namespace, timers) = (self.namespace.clone(), self.timers.clone());
        self.delete_all(&namespace)?;
        self.delete_all(&timers)?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_sort_by_time() {
        let times = [i64::MIN, -5_000, -1, 0, 1, 60_000, i64::MAX];
        let keys: Vec<Vec<u8>> = times.iter().map(|&time| timer_key(time, b"k")).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (time, key) in times.iter().zip(&keys) {
            assert_eq!(timer_time(key), Some(*time));
        }
        assert_eq!(timer_time(b"short"), None);
    }
}
