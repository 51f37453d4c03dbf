//! Window state kept in a [`StateStore`]: the [`KeyStates`] of window operators whose state
//! backend is not the in-memory default.
//!
//! Each operator has one namespace in its store, `<operator>`, mapping a key to its windows and
//! accumulators: the value is the key's timer ([`TIMER_BYTES`]: a flag byte, then the time
//! big-endian) followed by its [`StoredKey`]. Keys and windows are encoded with the checkpoint
//! crate's state codec, exactly as a checkpoint's window snapshot holds them, so a snapshot
//! copies a stored key's bytes without decoding its windows ([`StoreStates::write_snapshot`]).
//!
//! Timers are kept in memory ([`Timers`]), not in the store: a new window's timer costs no
//! store operation, and firing costs no scan. They are rebuilt from the keys' states on restore
//! ([`KeyStates::load`]), like the store itself.
//!
//! The keys in use are cached as objects, like the memory backend holds them, up to a bound
//! ([`DEFAULT_CACHE_KEYS`]): an event of a cached key costs no read, decode or write. When the
//! cache is full its states are all written back and it starts over. What the store holds
//! may lag behind the cache; that is fine, because the store is never the truth: a checkpoint
//! reads both, and a start rebuilds the store from a checkpoint.

use std::fmt;

use dataflow_event::Value;
use dataflow_state::{Entry, StateStore};
use dataflow_window::{KeyState, KeyStates, StoredKey, Timers, WindowError};
use rustc_hash::FxHashMap;

use super::snapshot::SnapshotWriter;

/// How many keys a [`StoreStates`] keeps as objects by default.
pub const DEFAULT_CACHE_KEYS: usize = 16_384;

/// How many bytes of a stored value hold the key's timer: a flag (0 none, 1 set), then the time
/// as big-endian `i64`.
const TIMER_BYTES: usize = 9;

/// How many entries a [`StoreStates`] writes to its store at once (on a spill or a load).
const WRITE_BATCH: usize = 1024;

/// A key's state held in the cache.
#[derive(Debug)]
struct Cached {
    state: KeyState,
    /// The store holds an entry for the key (perhaps an older state).
    in_store: bool,
}

/// [`KeyStates`] in a [`StateStore`], so state may be larger than memory, with the keys in use
/// cached as objects and the timers in memory.
pub struct StoreStates {
    store: Box<dyn StateStore>,
    namespace: String,
    /// Keys holding state, in the cache or the store.
    len: usize,
    cache: FxHashMap<Value, Cached>,
    capacity: usize,
    timers: Timers,
}

impl fmt::Debug for StoreStates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreStates")
            .field("store", &self.store)
            .field("namespace", &self.namespace)
            .field("len", &self.len)
            .field("cached", &self.cache.len())
            .field("timers", &self.timers.len())
            .finish()
    }
}

fn failed(what: &str, error: impl fmt::Display) -> WindowError {
    WindowError::State(format!("{what}: {error}"))
}

fn encode_key(key: &Value) -> Result<Vec<u8>, WindowError> {
    dataflow_checkpoint::encode_state(key).map_err(|error| failed("encode a key", error))
}

/// A stored value: the state's timer, then its windows.
fn encode_value(state: &KeyState) -> Result<Vec<u8>, WindowError> {
    let windows = dataflow_checkpoint::encode_state(&state.to_stored())
        .map_err(|error| failed("encode a state", error))?;
    let mut bytes = Vec::with_capacity(TIMER_BYTES + windows.len());
    match state.timer() {
        Some(time) => {
            bytes.push(1);
            bytes.extend_from_slice(&time.to_be_bytes());
        }
        None => bytes.extend_from_slice(&[0; TIMER_BYTES]),
    }
    bytes.extend_from_slice(&windows);
    Ok(bytes)
}

/// A stored value's timer and encoded windows.
fn split_value(bytes: &[u8]) -> Result<(Option<i64>, &[u8]), WindowError> {
    let too_short = || failed("read a state", "a value shorter than its timer");
    let (timer, windows) = bytes.split_at_checked(TIMER_BYTES).ok_or_else(too_short)?;
    let time = i64::from_be_bytes(timer[1..].try_into().map_err(|_| too_short())?);
    match timer[0] {
        0 => Ok((None, windows)),
        1 => Ok((Some(time), windows)),
        flag => Err(failed("read a state", format!("a timer flag of {flag}"))),
    }
}

fn decode_value(bytes: &[u8]) -> Result<KeyState, WindowError> {
    let (timer, windows) = split_value(bytes)?;
    let stored: StoredKey = dataflow_checkpoint::decode_state(windows)
        .map_err(|error| failed("decode a state", error))?;
    Ok(KeyState::from_stored(stored, timer))
}

impl StoreStates {
    /// The states of the operator `namespace` in `store`, which is the operator's own: a restore
    /// ([`KeyStates::load`]) replaces the store's whole contents. Caches up to
    /// [`DEFAULT_CACHE_KEYS`] keys.
    pub fn new(store: Box<dyn StateStore>, namespace: &str) -> StoreStates {
        StoreStates {
            store,
            namespace: namespace.to_string(),
            len: 0,
            cache: FxHashMap::default(),
            capacity: DEFAULT_CACHE_KEYS,
            timers: Timers::default(),
        }
    }

    /// Caches at most `keys` keys as objects (0 caches none: every update reads and writes).
    pub fn with_cache_capacity(mut self, keys: usize) -> StoreStates {
        self.capacity = keys;
        self
    }

    /// The number of timers registered, stale ones included.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    fn read(&self, key: &[u8]) -> Result<Option<KeyState>, WindowError> {
        let Some(bytes) = self
            .store
            .get(&self.namespace, key)
            .map_err(|error| failed("read a state", error))?
        else {
            return Ok(None);
        };
        decode_value(&bytes).map(Some)
    }

    fn write_batch(&mut self, batch: &mut Vec<Entry>) -> Result<(), WindowError> {
        self.store
            .put_batch(&self.namespace, batch)
            .map_err(|error| failed("write the states", error))?;
        batch.clear();
        Ok(())
    }

    /// Writes every state of the cache to the store and empties the cache.
    fn spill(&mut self) -> Result<(), WindowError> {
        let mut batch = Vec::with_capacity(WRITE_BATCH.min(self.cache.len()));
        for (key, cached) in std::mem::take(&mut self.cache) {
            batch.push((encode_key(&key)?, encode_value(&cached.state)?));
            if batch.len() == WRITE_BATCH {
                self.write_batch(&mut batch)?;
            }
        }
        self.write_batch(&mut batch)
    }

    /// Adds every key and its windows to `writer`, as a snapshot holds them: the cached keys
    /// encoded, the others as the store holds them, without decoding their windows.
    pub(crate) fn write_snapshot(&self, writer: &mut SnapshotWriter) -> Result<(), WindowError> {
        for (key, cached) in &self.cache {
            writer.add(key, &cached.state)?;
        }
        let scan = self
            .store
            .scan_prefix(&self.namespace, &[])
            .map_err(|error| failed("scan the states", error))?;
        for entry in scan {
            let (encoded, bytes) = entry.map_err(|error| failed("scan the states", error))?;
            let key: Value = dataflow_checkpoint::decode_state(&encoded)
                .map_err(|error| failed("decode a key", error))?;
            // A cached key's stored state may be older than the cached one, added above.
            if self.cache.contains_key(&key) {
                continue;
            }
            let (_, windows) = split_value(&bytes)?;
            writer.add_encoded(key, &encoded, windows);
        }
        Ok(())
    }

    fn delete_all(&mut self) -> Result<(), WindowError> {
        let keys: Vec<Vec<u8>> = self
            .store
            .scan_prefix(&self.namespace, &[])
            .map_err(|error| failed("scan", error))?
            .map(|entry| entry.map(|(key, _)| key))
            .collect::<Result<_, _>>()
            .map_err(|error| failed("scan", error))?;
        for key in keys {
            self.store
                .delete(&self.namespace, &key)
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
            if let Some(time) = cached.state.take_scheduled() {
                self.timers.register(time, key.clone());
            }
            if cached.state.is_empty() {
                if cached.in_store {
                    self.store
                        .delete(&self.namespace, &encode_key(key)?)
                        .map_err(|error| failed("delete a key", error))?;
                }
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
            self.timers.register(time, key.clone());
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
        Ok(self.timers.pop_due(watermark))
    }

    fn load(&mut self, states: Vec<(Value, KeyState)>) -> dataflow_window::Result<()> {
        // Written in batches: far faster than a write per key.
        let mut batch = Vec::with_capacity(WRITE_BATCH.min(states.len()));
        for (key, mut state) in states {
            batch.push((encode_key(&key)?, encode_value(&state)?));
            if let Some(time) = state.take_scheduled() {
                self.timers.register(time, key);
            }
            self.len += 1;
            if batch.len() == WRITE_BATCH {
                self.write_batch(&mut batch)?;
            }
        }
        self.write_batch(&mut batch)
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
            visit(&key, &decode_value(&bytes)?);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) -> dataflow_window::Result<()> {
        self.cache.clear();
        self.timers.clear();
        self.delete_all()?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_keep_the_timer_beside_the_windows() {
        for timer in [
            None,
            Some(i64::MIN),
            Some(-1),
            Some(0),
            Some(60_000),
            Some(i64::MAX),
        ] {
            let state = KeyState::from_stored(
                dataflow_checkpoint::decode_state(&[0]).expect("no windows"),
                timer,
            );
            let bytes = encode_value(&state).expect("encodable");
            let (read, windows) = split_value(&bytes).expect("a stored value");
            assert_eq!(read, timer);
            assert_eq!(windows, [0]);
            assert_eq!(decode_value(&bytes).expect("decodable").timer(), timer);
        }
        assert!(split_value(&[1, 0, 0]).is_err());
        assert!(split_value(&[2; TIMER_BYTES]).is_err());
    }
}
