//! Window state kept in a [`StateStore`]: the [`KeyStates`] of window operators whose state
//! backend is not the in-memory default.
//!
//! The keys and their windows live in a [`StoreCache`] (shared with the pattern and alert
//! timelines): one entry per key in the operator's namespace, with the keys in use cached as
//! objects. A stored value is the key's timer ([`TIMER_BYTES`]: a flag byte, then the time
//! big-endian) followed by its [`StoredKey`]. Keys and windows are encoded with the checkpoint
//! crate's state codec, exactly as a checkpoint's window snapshot holds them, so a snapshot
//! copies a stored key's bytes without decoding its windows ([`StoreStates::write_snapshot`]).
//!
//! Timers are kept in memory ([`Timers`]), not in the store: a new window's timer costs no
//! store operation, and firing costs no scan. They are rebuilt from the keys' states on restore
//! ([`KeyStates::load`]), like the store itself.

use std::fmt;

use dataflow_event::Value;
use dataflow_state::StateStore;
use dataflow_window::{KeyState, KeyStates, StoredKey, Timers, WindowError};

use super::snapshot::SnapshotWriter;
pub use crate::store_cache::DEFAULT_CACHE_KEYS;
use crate::store_cache::{decode_held, Held, StoreCache, StoredValue};

/// How many bytes of a stored value hold the key's timer: a flag (0 none, 1 set), then the time
/// as big-endian `i64`.
const TIMER_BYTES: usize = 9;

/// [`KeyStates`] in a [`StateStore`], so state may be larger than memory, with the keys in use
/// cached as objects and the timers in memory.
pub struct StoreStates {
    keys: StoreCache<KeyState>,
    timers: Timers,
}

impl fmt::Debug for StoreStates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreStates")
            .field("keys", &self.keys)
            .field("timers", &self.timers.len())
            .finish()
    }
}

fn failed(what: &str, error: impl fmt::Display) -> WindowError {
    WindowError::State(format!("{what}: {error}"))
}

fn state_error(error: crate::OperatorError) -> WindowError {
    WindowError::State(error.to_string())
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

impl StoredValue for KeyState {
    fn to_bytes(&self) -> Result<Vec<u8>, String> {
        encode_value(self).map_err(|error| error.to_string())
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        decode_value(bytes).map_err(|error| error.to_string())
    }
}

impl StoreStates {
    /// The states of the operator `namespace` in `store`, which is the operator's own: a restore
    /// ([`KeyStates::load`]) replaces the store's whole contents. Caches up to
    /// [`DEFAULT_CACHE_KEYS`] keys.
    pub fn new(store: Box<dyn StateStore>, namespace: &str) -> StoreStates {
        StoreStates {
            keys: StoreCache::new(store, namespace),
            timers: Timers::default(),
        }
    }

    /// Caches at most `keys` keys as objects (0 caches none: every update reads and writes).
    pub fn with_cache_capacity(mut self, keys: usize) -> StoreStates {
        self.keys.set_cache_capacity(keys);
        self
    }

    /// The number of timers registered, stale ones included.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Adds every key and its windows to `writer`, as a snapshot holds them: the cached keys
    /// encoded, the others as the store holds them, without decoding their windows.
    pub(crate) fn write_snapshot(&self, writer: &mut SnapshotWriter) -> Result<(), WindowError> {
        let mut failure = None;
        self.keys
            .for_each(&mut |key, held| {
                let added = match held {
                    Held::Object(state) => writer.add(key, &state.to_stored()),
                    Held::Stored {
                        key: encoded,
                        value,
                    } => split_value(value)
                        .map(|(_, windows)| writer.add_encoded(key.clone(), encoded, windows)),
                };
                // A window error is not a state error: keep it whole, and stop.
                added.map_err(|error| {
                    let message = error.to_string();
                    failure = Some(error);
                    crate::OperatorError::State(message)
                })
            })
            .map_err(|error| failure.take().unwrap_or_else(|| state_error(error)))
    }
}

impl KeyStates for StoreStates {
    fn update<R>(
        &mut self,
        key: &Value,
        update: impl FnOnce(&mut KeyState) -> R,
    ) -> dataflow_window::Result<R> {
        let updated = self
            .keys
            .update(key, true, |state| {
                let result = update(state);
                let scheduled = state.take_scheduled();
                ((result, scheduled), !state.is_empty())
            })
            .map_err(state_error)?;
        let Some((result, scheduled)) = updated else {
            return Err(failed("update a key", "a key created is missing"));
        };
        if let Some(time) = scheduled {
            self.timers.register(time, key.clone());
        }
        Ok(result)
    }

    fn pop_due(&mut self, watermark: i64) -> dataflow_window::Result<Option<(i64, Vec<Value>)>> {
        Ok(self.timers.pop_due(watermark))
    }

    fn load(&mut self, mut states: Vec<(Value, KeyState)>) -> dataflow_window::Result<()> {
        for (key, state) in &mut states {
            if let Some(time) = state.take_scheduled() {
                self.timers.register(time, key.clone());
            }
        }
        self.keys.load(states).map_err(state_error)
    }

    fn for_each(&self, visit: &mut dyn FnMut(&Value, &KeyState)) -> dataflow_window::Result<()> {
        self.keys
            .for_each(&mut |key, held| {
                match held {
                    Held::Object(state) => visit(key, state),
                    Held::Stored { value, .. } => visit(key, &decode_held::<KeyState>(value)?),
                }
                Ok(())
            })
            .map_err(state_error)
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn clear(&mut self) -> dataflow_window::Result<()> {
        self.timers.clear();
        self.keys.clear().map_err(state_error)
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
