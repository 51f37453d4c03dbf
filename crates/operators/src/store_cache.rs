//! Per-key state kept in a [`StateStore`] with the keys in use cached as objects: what the
//! window operator ([`crate::window::StoreStates`]) and the pattern and alert timelines
//! (`pattern::timeline`) keep their keys in when the state backend is not the in-memory
//! default.
//!
//! Each operator has one namespace in its store (its own store: a restore replaces the whole
//! namespace). Keys are grouped in buckets ([`BUCKETS`] of them, by a hash of the key encoded
//! with the checkpoint crate's state codec): the store holds one entry per bucket, whose value
//! lists the bucket's keys, each with its value's [`StoredValue`] bytes ([`bucket`]). A sled
//! store holds 200 to 300 bytes of memory per entry whatever its page cache, so a million keys
//! one entry each took about 250 MiB; in 32,768 buckets (about 30 keys each) they take about 50 MiB (see
//! docs/performance.md). Reading or writing a key outside the cache reads and rewrites its
//! bucket (about 30 keys at a million keys). The hash only has to agree within one run: a start
//! rebuilds the store from a checkpoint, which holds keys, not buckets.
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

/// How many entries a [`StoreCache`] writes to its store at once (on a load).
const WRITE_BATCH: usize = 1024;

/// How many buckets a [`StoreCache`] spreads its keys over: at most this many store entries.
pub(crate) const BUCKETS: u32 = 1 << 15;

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

/// The keys of one bucket with their values, as the store holds them: each key and then its
/// value, both as a LEB128 length followed by the bytes, in no particular order.
pub(crate) mod bucket {
    use std::ops::Range;

    /// The store key of the bucket of an encoded key among `buckets`: a hash of it (FNV-1a,
    /// then the SplitMix64 finalizer so that every bit of the key moves the low bits),
    /// big-endian.
    pub(crate) fn of(key: &[u8], buckets: u32) -> [u8; 4] {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= hash >> 30;
        hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash ^= hash >> 27;
        hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
        hash ^= hash >> 31;
        ((hash % u64::from(buckets.max(1))) as u32).to_be_bytes()
    }

    fn push_len(bytes: &mut Vec<u8>, mut len: usize) {
        while len >= 0x80 {
            bytes.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        bytes.push(len as u8);
    }

    /// The length at `at` and where its bytes start, or `None` if it runs past the end or
    /// beyond what a `usize` holds.
    fn read_len(bytes: &[u8], mut at: usize) -> Option<(usize, usize)> {
        let mut len = 0usize;
        for shift in (0..usize::BITS).step_by(7) {
            let byte = *bytes.get(at)?;
            at += 1;
            len |= usize::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some((len, at));
            }
        }
        None
    }

    /// One entry: where it lies whole, and where its key and its value lie.
    pub(crate) struct Slot {
        pub(crate) whole: Range<usize>,
        pub(crate) key: Range<usize>,
        pub(crate) value: Range<usize>,
    }

    /// The entries of a bucket in order, or an error naming where it is malformed.
    pub(crate) fn slots(bytes: &[u8]) -> impl Iterator<Item = Result<Slot, String>> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            if at >= bytes.len() {
                return None;
            }
            let start = at;
            let mut field = || {
                let (len, from) = read_len(bytes, at)?;
                let end = from.checked_add(len).filter(|end| *end <= bytes.len())?;
                at = end;
                Some(from..end)
            };
            let slot = match (field(), field()) {
                (Some(key), Some(value)) => Ok(Slot {
                    whole: start..at,
                    key,
                    value,
                }),
                _ => {
                    let error = format!(
                        "a bucket of {} bytes is malformed at byte {start}",
                        bytes.len()
                    );
                    at = bytes.len();
                    Err(error)
                }
            };
            Some(slot)
        })
    }

    /// The entry of `key`, if the bucket holds it.
    pub(crate) fn find(bytes: &[u8], key: &[u8]) -> Result<Option<Slot>, String> {
        for slot in slots(bytes) {
            let slot = slot?;
            if bytes[slot.key.clone()] == *key {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// The encoding of one entry.
    fn entry(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(key.len() + value.len() + 4);
        push_len(&mut bytes, key.len());
        bytes.extend_from_slice(key);
        push_len(&mut bytes, value.len());
        bytes.extend_from_slice(value);
        bytes
    }

    /// Sets `key` to `value` in the bucket: returns whether the key is new to it.
    pub(crate) fn put(bytes: &mut Vec<u8>, key: &[u8], value: &[u8]) -> Result<bool, String> {
        match find(bytes, key)? {
            Some(slot) => {
                bytes.splice(slot.whole, entry(key, value));
                Ok(false)
            }
            None => {
                bytes.extend_from_slice(&entry(key, value));
                Ok(true)
            }
        }
    }

    /// Removes `key` from the bucket: returns whether it held it.
    pub(crate) fn remove(bytes: &mut Vec<u8>, key: &[u8]) -> Result<bool, String> {
        match find(bytes, key)? {
            Some(slot) => {
                bytes.drain(slot.whole);
                Ok(true)
            }
            None => Ok(false),
        }
    }
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
    /// How many buckets the keys are spread over ([`BUCKETS`]; fewer in tests).
    buckets: u32,
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
            buckets: BUCKETS,
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

    /// The bucket `id` as the store holds it (empty if it holds none).
    fn read_bucket(&self, id: &[u8; 4]) -> crate::Result<Vec<u8>> {
        Ok(self
            .store
            .get(&self.namespace, id)
            .map_err(|error| failed("read a state", error))?
            .unwrap_or_default())
    }

    /// Writes the bucket `id`, or removes it when it is empty.
    fn write_bucket(&mut self, id: &[u8; 4], bytes: &[u8]) -> crate::Result<()> {
        let written = if bytes.is_empty() {
            self.store.delete(&self.namespace, id)
        } else {
            self.store.put(&self.namespace, id, bytes)
        };
        written.map_err(|error| failed("write a state", error))
    }

    /// Writes `entries` (encoded keys with their values' bytes) into their buckets, each bucket
    /// read and written once.
    fn write_entries(&mut self, entries: &mut Vec<Entry>) -> crate::Result<()> {
        let mut entries: Vec<([u8; 4], Entry)> = entries
            .drain(..)
            .map(|entry| (bucket::of(&entry.0, self.buckets), entry))
            .collect();
        entries.sort_unstable_by_key(|entry| entry.0);
        let mut rest = entries.as_slice();
        while let Some(((id, _), _)) = rest.split_first() {
            let same = rest.partition_point(|(other, _)| other == id);
            let (group, after) = rest.split_at(same);
            let mut bytes = self.read_bucket(id)?;
            for (_, (key, value)) in group {
                bucket::put(&mut bytes, key, value)
                    .map_err(|error| failed("read a state", error))?;
            }
            self.write_bucket(id, &bytes)?;
            rest = after;
        }
        Ok(())
    }

    fn to_bytes(value: &V) -> crate::Result<Vec<u8>> {
        value
            .to_bytes()
            .map_err(|error| failed("encode a state", error))
    }

    /// Removes the encoded `key` from its bucket.
    fn delete(&mut self, key: &[u8]) -> crate::Result<()> {
        let id = bucket::of(key, self.buckets);
        let mut bytes = self.read_bucket(&id)?;
        if bucket::remove(&mut bytes, key).map_err(|error| failed("delete a key", error))? {
            self.write_bucket(&id, &bytes)?;
        }
        Ok(())
    }

    /// Writes every value of the cache to the store and empties the cache.
    fn spill(&mut self) -> crate::Result<()> {
        let mut entries = Vec::with_capacity(self.cache.len());
        for (key, cached) in std::mem::take(&mut self.cache) {
            entries.push((encode_key(&key)?, Self::to_bytes(&cached.value)?));
        }
        self.write_entries(&mut entries)
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
        let id = bucket::of(&encoded, self.buckets);
        let mut bytes = self.read_bucket(&id)?;
        let slot = bucket::find(&bytes, &encoded).map_err(|error| failed("read a state", error))?;
        let existing = match &slot {
            Some(slot) => Some(
                V::from_bytes(&bytes[slot.value.clone()])
                    .map_err(|error| failed("decode a state", error))?,
            ),
            None => None,
        };
        let in_store = existing.is_some();
        if !in_store && !create {
            return Ok(None);
        }
        let mut value = existing.unwrap_or_default();
        let (result, keep) = update(&mut value);
        if !keep {
            if let Some(slot) = slot {
                bytes.drain(slot.whole);
                self.write_bucket(&id, &bytes)?;
                self.len -= 1;
            }
            return Ok(Some(result));
        }
        if !in_store {
            self.len += 1;
        }
        if self.capacity == 0 {
            bucket::put(&mut bytes, &encoded, &Self::to_bytes(&value)?)
                .map_err(|error| failed("write a state", error))?;
            self.write_bucket(&id, &bytes)?;
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
                self.write_entries(&mut batch)?;
            }
        }
        self.write_entries(&mut batch)
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
            let (_, bytes) = entry.map_err(|error| failed("scan the states", error))?;
            for slot in bucket::slots(&bytes) {
                let slot = slot.map_err(|error| failed("scan the states", error))?;
                let encoded = &bytes[slot.key];
                let key = decode_key(encoded)?;
                // A cached key's stored value may be older than the cached one, seen above.
                if self.cache.contains_key(&key) {
                    continue;
                }
                visit(
                    &key,
                    Held::Stored {
                        key: encoded,
                        value: &bytes[slot.value],
                    },
                )?;
            }
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
            self.store
                .delete(&self.namespace, &key)
                .map_err(|error| failed("delete a key", error))?;
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

    /// How many entries the cache's store holds in its namespace.
    fn store_entries(cache: &StoreCache<Count>) -> u64 {
        cache.store.key_count(&cache.namespace).expect("counted")
    }

    #[test]
    fn buckets_hold_their_entries_and_say_where_they_are_malformed() {
        let mut bytes = Vec::new();
        let long = vec![9u8; 300];
        assert!(bucket::put(&mut bytes, b"a", b"1").unwrap());
        assert!(bucket::put(&mut bytes, b"", &long).unwrap());
        assert!(bucket::put(&mut bytes, &long, b"").unwrap());
        assert!(!bucket::put(&mut bytes, b"a", b"22").unwrap());
        let entries = |bytes: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
            bucket::slots(bytes)
                .map(|slot| {
                    let slot = slot.unwrap();
                    (bytes[slot.key].to_vec(), bytes[slot.value].to_vec())
                })
                .collect()
        };
        assert_eq!(
            entries(&bytes),
            [
                (b"a".to_vec(), b"22".to_vec()),
                (Vec::new(), long.clone()),
                (long.clone(), Vec::new())
            ]
        );
        assert!(bucket::remove(&mut bytes, b"").unwrap());
        assert!(!bucket::remove(&mut bytes, b"b").unwrap());
        assert_eq!(entries(&bytes).len(), 2);
        let error = bucket::find(&bytes[..bytes.len() - 1], b"x").err();
        assert_eq!(
            error.as_deref(),
            Some("a bucket of 307 bytes is malformed at byte 5")
        );
        // A length that does not fit, and one that never ends.
        assert!(bucket::find(&[0xff; 12], b"x").is_err());
        assert!(bucket::find(&[0x80], b"x").is_err());
    }

    #[test]
    fn a_million_keys_spread_over_every_bucket() {
        let mut counts = vec![0u32; BUCKETS as usize];
        for key in 0..1_000_000i64 {
            let encoded = encode_key(&Value::Int(key)).expect("encodable");
            counts[u32::from_be_bytes(bucket::of(&encoded, BUCKETS)) as usize] += 1;
        }
        // 30.5 keys a bucket on average: none empty, none far above.
        let (least, most) = (counts.iter().min(), counts.iter().max());
        assert!(
            least >= Some(&1) && most <= Some(&70),
            "{least:?}..{most:?}"
        );
    }

    proptest! {
        #[test]
        fn a_malformed_bucket_is_an_error_not_a_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            key in prop::collection::vec(any::<u8>(), 0..4),
        ) {
            let _ = bucket::find(&bytes, &key);
            let mut copy = bytes.clone();
            let _ = bucket::put(&mut copy, &key, b"v");
            let _ = bucket::remove(&mut copy, &key);
            prop_assert!(bucket::slots(&bytes).count() <= bytes.len());
        }

        /// Whatever the cache's size and the number of buckets, the keys and values are those
        /// of a plain map: adds that drop a key reaching 0, and updates of existing keys only;
        /// and the store holds no more entries than buckets.
        #[test]
        fn a_store_cache_holds_what_a_map_would(
            ops in prop::collection::vec((0i64..12, -3i64..4, any::<bool>()), 0..200),
            capacity in 0usize..5,
            buckets in prop_oneof![1u32..4, Just(BUCKETS)],
        ) {
            let mut cache = StoreCache::<Count>::new(Box::new(MemoryStore::new()), "op");
            cache.set_cache_capacity(capacity);
            cache.buckets = buckets;
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
                prop_assert!(store_entries(&cache) <= u64::from(buckets));
            }
            prop_assert_eq!(contents(&cache), model.clone());
            cache.clear().expect("cleared");
            cache
                .load(model.iter().map(|(key, value)| (Value::Int(*key), Count(*value))))
                .expect("loaded");
            prop_assert_eq!(cache.len(), model.len());
            prop_assert_eq!(contents(&cache), model);
            prop_assert!(store_entries(&cache) <= u64::from(buckets));
            cache.clear().expect("cleared");
            prop_assert_eq!(store_entries(&cache), 0);
        }
    }
}
