//! The in-memory store.

use std::collections::BTreeMap;

use crate::snapshot::Entries;
use crate::{Result, Scan, StateSnapshot, StateStore};

/// Keyed state in ordered in-memory maps, one per namespace: the default backend.
///
/// Its operations never fail; they return [`Result`] only to share the [`StateStore`] trait with
/// the sled store. A namespace whose last key is deleted is dropped.
///
/// ```
/// use dataflow_state::{MemoryStore, StateStore};
///
/// let mut store = MemoryStore::new();
/// store.put("window", b"a", b"1")?;
/// assert_eq!(store.get("window", b"a")?, Some(b"1".to_vec()));
/// assert_eq!(store.get("other", b"a")?, None);
/// # Ok::<(), dataflow_state::StateError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryStore {
    namespaces: BTreeMap<String, Entries>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding the contents of `snapshot`, without copying them.
    pub fn from_snapshot(snapshot: StateSnapshot) -> Self {
        MemoryStore {
            namespaces: snapshot.into_map(),
        }
    }

    /// The contents of the store, without copying them.
    pub fn into_snapshot(self) -> StateSnapshot {
        StateSnapshot::from_map(self.namespaces)
    }

    /// The number of entries in all namespaces.
    pub fn len(&self) -> u64 {
        self.namespaces
            .values()
            .map(|entries| entries.len() as u64)
            .sum()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }
}

impl From<StateSnapshot> for MemoryStore {
    fn from(snapshot: StateSnapshot) -> Self {
        MemoryStore::from_snapshot(snapshot)
    }
}

impl StateStore for MemoryStore {
    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .namespaces
            .get(namespace)
            .and_then(|entries| entries.get(key))
            .cloned())
    }

    fn put(&mut self, namespace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        match self.namespaces.get_mut(namespace) {
            Some(entries) => {
                entries.insert(key.to_vec(), value.to_vec());
            }
            None => {
                let entries = BTreeMap::from([(key.to_vec(), value.to_vec())]);
                self.namespaces.insert(namespace.to_owned(), entries);
            }
        }
        Ok(())
    }

    fn delete(&mut self, namespace: &str, key: &[u8]) -> Result<()> {
        if let Some(entries) = self.namespaces.get_mut(namespace) {
            entries.remove(key);
            if entries.is_empty() {
                self.namespaces.remove(namespace);
            }
        }
        Ok(())
    }

    fn scan_prefix(&self, namespace: &str, prefix: &[u8]) -> Result<Scan<'_>> {
        let Some(entries) = self.namespaces.get(namespace) else {
            return Ok(Scan::empty());
        };
        let start = prefix.to_vec();
        let prefix = prefix.to_vec();
        Ok(Scan::new(
            entries
                .range(start..)
                .take_while(move |(key, _)| key.starts_with(&prefix))
                .map(|(key, value)| Ok((key.clone(), value.clone()))),
        ))
    }

    fn snapshot(&self) -> Result<StateSnapshot> {
        Ok(StateSnapshot::from_map(self.namespaces.clone()))
    }

    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        self.namespaces = snapshot.as_map().clone();
        Ok(())
    }

    fn key_count(&self, namespace: &str) -> Result<u64> {
        Ok(self
            .namespaces
            .get(namespace)
            .map_or(0, |entries| entries.len() as u64))
    }

    fn namespaces(&self) -> Result<Vec<String>> {
        Ok(self.namespaces.keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_prefix_stops_at_the_first_key_outside_the_prefix() {
        let mut store = MemoryStore::new();
        for key in ["a", "ab", "abc", "ac", "b"] {
            store.put("ns", key.as_bytes(), key.as_bytes()).unwrap();
        }
        store.put("other", b"ab", b"x").unwrap();
        let keys: Vec<Vec<u8>> = store
            .scan_prefix("ns", b"ab")
            .unwrap()
            .map(|entry| entry.unwrap().0)
            .collect();
        assert_eq!(keys, [b"ab".to_vec(), b"abc".to_vec()]);
        store.delete("ns", b"ab").unwrap();
        assert_eq!(store.get("ns", b"ab").unwrap(), None);
        assert_eq!(store.key_count("ns").unwrap(), 4);
        assert_eq!(store.len(), 5);
    }

    #[test]
    fn a_namespace_whose_last_key_is_deleted_is_gone() {
        let mut store = MemoryStore::new();
        store.put("a", b"k", b"v").unwrap();
        store.put("b", b"k", b"v").unwrap();
        store.delete("a", b"k").unwrap();
        store.delete("missing", b"k").unwrap();
        assert_eq!(store.namespaces().unwrap(), ["b"]);
        assert_eq!(store.key_count("a").unwrap(), 0);
        let snapshot = store.clone().into_snapshot();
        assert_eq!(snapshot.namespaces().collect::<Vec<_>>(), ["b"]);
        assert_eq!(MemoryStore::from(snapshot), store);
    }
}
