//! Keyed operator state.
//!
//! Stateful operators keep their state here, namespaced per operator, so that checkpoints can
//! snapshot it and restores rebuild it. This crate is the only one that will touch sled (the
//! store for state larger than memory); today it holds the in-memory store, whose ordered map is
//! also the reference the sled store will be tested against.
//!
//! ```
//! use dataflow_state::MemoryStore;
//!
//! let mut store = MemoryStore::default();
//! store.put(b"window/a", b"1".to_vec());
//! store.put(b"window/b", b"2".to_vec());
//! store.put(b"other/c", b"3".to_vec());
//! let keys: Vec<&[u8]> = store.scan_prefix(b"window/").map(|(k, _)| k).collect();
//! assert_eq!(keys, [b"window/a".as_slice(), b"window/b".as_slice()]);
//! ```
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use thiserror::Error;

/// Errors of state stores.
#[derive(Debug, Error)]
pub enum StateError {
    /// A snapshot that does not decode.
    #[error("invalid state snapshot: {0}")]
    InvalidSnapshot(String),
}

/// The result of state operations.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Keyed state in an ordered in-memory map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryStore {
    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>) -> Option<Vec<u8>> {
        self.entries.insert(key.to_vec(), value)
    }

    /// Removes `key`, returning its value.
    pub fn delete(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.remove(key)
    }

    /// The entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.entries
            .range(prefix.to_vec()..)
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.as_slice(), value.as_slice()))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_prefix_stops_at_the_first_key_outside_the_prefix() {
        let mut store = MemoryStore::default();
        for key in ["a", "ab", "abc", "ac", "b"] {
            store.put(key.as_bytes(), key.as_bytes().to_vec());
        }
        let keys: Vec<&[u8]> = store.scan_prefix(b"ab").map(|(k, _)| k).collect();
        assert_eq!(keys, [b"ab".as_slice(), b"abc".as_slice()]);
        assert_eq!(store.delete(b"ab"), Some(b"ab".to_vec()));
        assert_eq!(store.get(b"ab"), None);
        assert_eq!(store.len(), 4);
    }
}
