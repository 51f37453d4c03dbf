//! Window state kept in a [`StateStore`]: the [`KeyStates`] of window operators whose state
//! backend is not the in-memory default.
//!
//! Each operator has two namespaces in its store: `<operator>` maps a key to its windows and
//! accumulators (a [`StoredKey`]), and `<operator>/timers` holds one empty entry per timer,
//! keyed by its time (big-endian, sign bit flipped, so byte order is time order) then the key.
//! Keys and states are encoded with the checkpoint crate's state codec.

use std::fmt;

use dataflow_event::Value;
use dataflow_state::{StateSnapshot, StateStore};
use dataflow_window::{KeyState, KeyStates, StoredKey, WindowError};

/// [`KeyStates`] in a [`StateStore`]: every update reads the key's state, changes it and writes
/// it back, so state may be larger than memory.
pub struct StoreStates {
    store: Box<dyn StateStore>,
    namespace: String,
    timers: String,
    /// Keys holding state: the store's count of `namespace`, kept here to be cheap.
    len: usize,
}

impl fmt::Debug for StoreStates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreStates")
            .field("store", &self.store)
            .field("namespace", &self.namespace)
            .field("len", &self.len)
            .finish()
    }
}

fn failed(what: &str, error: impl fmt::Display) -> WindowError {
    WindowError::State(format!("{what}: {error}"))
}

fn encode_key(key: &Value) -> Result<Vec<u8>, WindowError> {
    dataflow_checkpoint::encode_state(key).map_err(|error| failed("encode a key", error))
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
    /// ([`KeyStates::load`]) replaces the store's whole contents.
    pub fn new(store: Box<dyn StateStore>, namespace: &str) -> StoreStates {
        StoreStates {
            store,
            namespace: namespace.to_string(),
            timers: format!("{namespace}/timers"),
            len: 0,
        }
    }

    /// The store the states live in.
    pub fn store(&self) -> &dyn StateStore {
        self.store.as_ref()
    }

    fn write_back(
        &mut self,
        key: &[u8],
        existed: bool,
        state: &mut KeyState,
    ) -> Result<(), WindowError> {
        if state.is_empty() {
            if existed {
                self.store
                    .delete(&self.namespace, key)
                    .map_err(|error| failed("delete a key", error))?;
                self.len -= 1;
            }
            return Ok(());
        }
        if let Some(time) = state.take_scheduled() {
            self.store
                .put(&self.timers, &timer_key(time, key), &[])
                .map_err(|error| failed("write a timer", error))?;
        }
        let bytes = dataflow_checkpoint::encode_state(&state.to_stored())
            .map_err(|error| failed("encode a state", error))?;
        self.store
            .put(&self.namespace, key, &bytes)
            .map_err(|error| failed("write a state", error))?;
        if !existed {
            self.len += 1;
        }
        Ok(())
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
        let encoded = encode_key(key)?;
        let existing = self.read(&encoded)?;
        let existed = existing.is_some();
        let mut state = existing.unwrap_or_default();
        let result = update(&mut state);
        self.write_back(&encoded, existed, &mut state)?;
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
        let mut snapshot = StateSnapshot::new();
        let count = states.len();
        for (key, mut state) in states {
            let encoded = encode_key(&key)?;
            if let Some(time) = state.take_scheduled() {
                snapshot.insert(&self.timers, &timer_key(time, &encoded), &[]);
            }
            let bytes = dataflow_checkpoint::encode_state(&state.to_stored())
                .map_err(|error| failed("encode a state", error))?;
            if snapshot.insert(&self.namespace, &encoded, &bytes).is_some() {
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
        let scan = self
            .store
            .scan_prefix(&self.namespace, &[])
            .map_err(|error| failed("scan the states", error))?;
        for entry in scan {
            let (key, bytes) = entry.map_err(|error| failed("scan the states", error))?;
            let key: Value = dataflow_checkpoint::decode_state(&key)
                .map_err(|error| failed("decode a key", error))?;
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
