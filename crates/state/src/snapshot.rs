//! The serialisable image of a whole store, for checkpoints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The entries of one namespace, by key.
pub(crate) type Entries = BTreeMap<Vec<u8>, Vec<u8>>;

/// Everything a store holds: namespaces, each with its `(key, value)` pairs.
///
/// Namespaces and keys are kept sorted and a namespace without entries is never kept, so two
/// snapshots with the same contents are equal and serialise to the same bytes whatever order the
/// contents were written in. Decoding normalises too: an empty namespace in the input is dropped.
///
/// ```
/// use dataflow_state::StateSnapshot;
///
/// let mut a = StateSnapshot::new();
/// a.insert("counts", b"b", b"2");
/// a.insert("counts", b"a", b"1");
/// let mut b = StateSnapshot::new();
/// b.insert("counts", b"a", b"1");
/// b.insert("counts", b"b", b"2");
/// assert_eq!(a, b);
/// let keys: Vec<&[u8]> = a.iter().map(|(_, key, _)| key).collect();
/// assert_eq!(keys, [b"a".as_slice(), b"b".as_slice()]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SnapshotRepr")]
pub struct StateSnapshot {
    namespaces: BTreeMap<String, Entries>,
}

/// What is decoded, before empty namespaces are dropped.
#[derive(Deserialize)]
struct SnapshotRepr {
    namespaces: BTreeMap<String, Entries>,
}

impl From<SnapshotRepr> for StateSnapshot {
    fn from(repr: SnapshotRepr) -> Self {
        let mut namespaces = repr.namespaces;
        namespaces.retain(|_, entries| !entries.is_empty());
        StateSnapshot { namespaces }
    }
}

impl StateSnapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` of `namespace` to `value`, returning the previous value.
    pub fn insert(&mut self, namespace: &str, key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        match self.namespaces.get_mut(namespace) {
            Some(entries) => entries.insert(key.to_vec(), value.to_vec()),
            None => {
                let entries = BTreeMap::from([(key.to_vec(), value.to_vec())]);
                self.namespaces.insert(namespace.to_owned(), entries);
                None
            }
        }
    }

    /// Removes `key` of `namespace`, returning its value; a namespace left empty is removed.
    pub fn remove(&mut self, namespace: &str, key: &[u8]) -> Option<Vec<u8>> {
        let entries = self.namespaces.get_mut(namespace)?;
        let old = entries.remove(key);
        if entries.is_empty() {
            self.namespaces.remove(namespace);
        }
        old
    }

    /// The value of `key` in `namespace`.
    pub fn get(&self, namespace: &str, key: &[u8]) -> Option<&[u8]> {
        self.namespaces.get(namespace)?.get(key).map(Vec::as_slice)
    }

    /// The namespaces that have entries, in order.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> + '_ {
        self.namespaces.keys().map(String::as_str)
    }

    /// The entries of `namespace`, in key order (none for an unknown namespace).
    pub fn entries<'a>(&'a self, namespace: &str) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.namespaces
            .get(namespace)
            .into_iter()
            .flat_map(|entries| entries.iter())
            .map(|(key, value)| (key.as_slice(), value.as_slice()))
    }

    /// Every entry as `(namespace, key, value)`, in `(namespace, key)` order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8], &[u8])> + '_ {
        self.namespaces.iter().flat_map(|(namespace, entries)| {
            entries
                .iter()
                .map(move |(key, value)| (namespace.as_str(), key.as_slice(), value.as_slice()))
        })
    }

    /// The number of entries in `namespace`.
    pub fn key_count(&self, namespace: &str) -> u64 {
        self.namespaces
            .get(namespace)
            .map_or(0, |entries| entries.len() as u64)
    }

    /// The number of entries in all namespaces.
    pub fn len(&self) -> u64 {
        self.namespaces
            .values()
            .map(|entries| entries.len() as u64)
            .sum()
    }

    /// Whether the snapshot holds no entry.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// The namespaces and their entries, for the stores of this crate.
    pub(crate) fn as_map(&self) -> &BTreeMap<String, Entries> {
        &self.namespaces
    }

    /// A snapshot of `namespaces`, whose empty namespaces are dropped.
    pub(crate) fn from_map(mut namespaces: BTreeMap<String, Entries>) -> Self {
        namespaces.retain(|_, entries| !entries.is_empty());
        StateSnapshot { namespaces }
    }

    /// The namespaces and their entries.
    pub(crate) fn into_map(self) -> BTreeMap<String, Entries> {
        self.namespaces
    }
}

impl<N: AsRef<str>, K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(N, K, V)> for StateSnapshot {
    /// A snapshot of `(namespace, key, value)` entries; a later entry for the same key wins.
    fn from_iter<I: IntoIterator<Item = (N, K, V)>>(iter: I) -> Self {
        let mut snapshot = StateSnapshot::new();
        for (namespace, key, value) in iter {
            snapshot.insert(namespace.as_ref(), key.as_ref(), value.as_ref());
        }
        snapshot
    }
}
