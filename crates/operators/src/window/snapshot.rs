//! Writing and reading a keyed operator's checkpointed state one key at a time: the window's,
//! and the pattern and alert timelines' (`pattern::timeline`).
//!
//! A state is a header, then a sequence of `(key, value)` sorted by key, then a trailer, encoded
//! with the checkpoint crate's state codec (a window's is `(WindowSnapshot, watermark)`; a
//! timeline's is a `TimelineSnapshot`: the watermark, then its keys, then nothing).
//! Gathering a [`dataflow_window::WindowSnapshot`] first would hold every key's windows as
//! objects (several times the encoded size) beside their encoding; [`SnapshotWriter`] instead
//! encodes each key as it is visited (or copies its bytes from the store, which holds them in
//! the same encoding), sorts only the keys, and writes the same bytes as encoding the gathered
//! snapshot would (see [`dataflow_window::SnapshotHeader`] for why they are the same).

use std::ops::Range;

use std::marker::PhantomData;

use dataflow_event::Value;
use dataflow_window::{StoredKey, WindowError};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn failed(what: &str, error: impl std::fmt::Display) -> WindowError {
    WindowError::State(format!("{what}: {error}"))
}

fn encode_into(buffer: &mut Vec<u8>, value: &impl serde::Serialize) -> Result<(), WindowError> {
    let bytes = dataflow_checkpoint::encode_state(value)
        .map_err(|error| failed("encode a snapshot", error))?;
    buffer.extend_from_slice(&bytes);
    Ok(())
}

/// How many bytes of encoded entries a [`SnapshotWriter`] keeps per chunk: chunks are never
/// grown, so the entries take their size, not up to twice as a doubling buffer would.
const CHUNK_BYTES: usize = 1 << 20;

/// The keys of a snapshot being written: each key's encoded entry (key, then windows) in
/// chunks, in the order visited, and the keys with where their entries are, sorted at the end.
#[derive(Debug, Default)]
pub(crate) struct SnapshotWriter {
    chunks: Vec<Vec<u8>>,
    /// The bytes of all entries.
    len: usize,
    /// Each key, with its entry's chunk, and its place in the chunk.
    keys: Vec<(Value, u32, Range<u32>)>,
    /// An entry being encoded.
    entry: Vec<u8>,
}

impl SnapshotWriter {
    pub(crate) fn with_capacity(keys: usize) -> SnapshotWriter {
        SnapshotWriter {
            keys: Vec::with_capacity(keys),
            ..SnapshotWriter::default()
        }
    }

    /// Adds `key` with its `value` (a window's [`StoredKey`], a timeline's key entry).
    pub(crate) fn add(&mut self, key: &Value, value: &impl Serialize) -> Result<(), WindowError> {
        let mut entry = std::mem::take(&mut self.entry);
        entry.clear();
        encode_into(&mut entry, key)?;
        encode_into(&mut entry, value)?;
        self.push(key.clone(), &[&entry]);
        self.entry = entry;
        Ok(())
    }

    /// Adds `key`, already encoded as `encoded`, with its value encoded as `value`.
    pub(crate) fn add_encoded(&mut self, key: Value, encoded: &[u8], value: &[u8]) {
        self.push(key, &[encoded, value]);
    }

    fn push(&mut self, key: Value, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| chunk.capacity() - chunk.len() >= len);
        if !fits {
            self.chunks.push(Vec::with_capacity(CHUNK_BYTES.max(len)));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let start = chunk.len();
        for part in parts {
            chunk.extend_from_slice(part);
        }
        self.len += len;
        // A chunk holds at most max(CHUNK_BYTES, one entry) bytes, and an entry is a key's
        // encoding, far below 4 GiB: both fit in `u32`.
        let place = start as u32..chunk.len() as u32;
        self.keys.push((key, index as u32, place));
    }

    /// The encoded state of the keys added, which must be distinct, between `header` and
    /// `trailer`.
    pub(crate) fn finish(
        self,
        header: &impl Serialize,
        trailer: &impl Serialize,
    ) -> Result<Vec<u8>, WindowError> {
        Ok(self.sorted(header, trailer)?.to_vec())
    }

    /// The state [`SnapshotWriter::finish`] encodes, not yet gathered in one buffer: the keys
    /// sorted, each key's entry where it was written. Its bytes are written into a checkpoint
    /// file in pieces ([`dataflow_checkpoint::StateWriter`]).
    pub(crate) fn sorted(
        mut self,
        header: &impl Serialize,
        trailer: &impl Serialize,
    ) -> Result<SortedSnapshot, WindowError> {
        self.keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut head = Vec::new();
        encode_into(&mut head, header)?;
        encode_into(&mut head, &(self.keys.len() as u64))?;
        let mut tail = Vec::new();
        encode_into(&mut tail, trailer)?;
        // The keys themselves are no longer needed: only where their entries are.
        let places = self
            .keys
            .into_iter()
            .map(|(_, chunk, place)| (chunk, place))
            .collect();
        Ok(SortedSnapshot {
            len: (head.len() + self.len + tail.len()) as u64,
            head,
            chunks: self.chunks,
            places,
            tail,
        })
    }
}

/// A keyed state ready to be written: the header and the number of keys encoded, the keys'
/// entries in sorted order (where [`SnapshotWriter`] put them), then the trailer encoded.
#[derive(Debug)]
pub(crate) struct SortedSnapshot {
    head: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    /// Each entry's chunk and its place there, in the keys' order.
    places: Vec<(u32, Range<u32>)>,
    tail: Vec<u8>,
    len: u64,
}

impl SortedSnapshot {
    fn entries(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.places.iter().map(|(chunk, place)| {
            &self.chunks[*chunk as usize][place.start as usize..place.end as usize]
        })
    }

    /// The state in one buffer.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len as usize);
        out.extend_from_slice(&self.head);
        for entry in self.entries() {
            out.extend_from_slice(entry);
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

impl dataflow_checkpoint::StateWriter for SortedSnapshot {
    fn state_len(&self) -> u64 {
        self.len
    }

    fn write_state(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.head)?;
        for entry in self.entries() {
            out.write_all(entry)?;
        }
        out.write_all(&self.tail)
    }
}

/// An encoded state read one key at a time: its header on [`SnapshotReader::new`], then its
/// `(key, value)` entries `E` as an iterator, then the trailer after them
/// ([`SnapshotReader::trailer`]; a window's watermark: [`SnapshotReader::watermark`]).
pub(crate) struct SnapshotReader<'a, E = (Value, StoredKey)> {
    rest: &'a [u8],
    keys_left: u64,
    failed: bool,
    entry: PhantomData<E>,
}

fn invalid(what: &str, error: impl std::fmt::Display) -> WindowError {
    WindowError::InvalidSnapshot(format!("{what}: {error}"))
}

impl<'a, E> SnapshotReader<'a, E> {
    /// The header of the snapshot encoded in `state`, and a reader of its keys.
    pub(crate) fn new<H: DeserializeOwned>(
        state: &'a [u8],
    ) -> Result<(H, SnapshotReader<'a, E>), WindowError> {
        let (header, used): (H, usize) = dataflow_checkpoint::decode_state_prefix(state)
            .map_err(|error| invalid("cannot decode the header", error))?;
        let rest = &state[used..];
        let (keys_left, used): (u64, usize) = dataflow_checkpoint::decode_state_prefix(rest)
            .map_err(|error| invalid("cannot decode the number of keys", error))?;
        let reader = SnapshotReader {
            rest: &rest[used..],
            keys_left,
            failed: false,
            entry: PhantomData,
        };
        Ok((header, reader))
    }

    /// The watermark written after the keys of a window's state, once they are all read.
    pub(crate) fn watermark(self) -> Result<i64, WindowError> {
        self.trailer()
    }

    /// The trailer written after the keys, once they are all read; nothing may follow it.
    pub(crate) fn trailer<T: DeserializeOwned>(self) -> Result<T, WindowError> {
        if self.keys_left > 0 {
            return Err(invalid("the trailer", "read before the keys"));
        }
        dataflow_checkpoint::decode_state(self.rest)
            .map_err(|error| invalid("cannot decode the trailer", error))
    }
}

impl<E: DeserializeOwned> Iterator for SnapshotReader<'_, E> {
    type Item = Result<E, WindowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.keys_left == 0 || self.failed {
            return None;
        }
        match dataflow_checkpoint::decode_state_prefix::<E>(self.rest) {
            Ok((entry, used)) => {
                self.rest = &self.rest[used..];
                self.keys_left -= 1;
                Some(Ok(entry))
            }
            Err(error) => {
                self.failed = true;
                let left = self.keys_left;
                Some(Err(invalid(
                    &format!("cannot decode a key ({left} left)"),
                    error,
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use dataflow_state::{MemoryStore, SledStore, StateSnapshot};
    use dataflow_window::{AggregateKind, HeapStates, KeyedWindows, WindowConfig, WindowKind};
    use proptest::prelude::*;

    use super::super::{StoreStates, Windows};
    use super::SnapshotReader;

    /// Events `(key, time, value)` and watermark advances (`None`).
    type Ops = Vec<Option<(u8, i64, i64)>>;

    fn ops() -> impl Strategy<Value = Ops> {
        let op = prop_oneof![
            4 => (0u8..40, 0i64..400, -5i64..50).prop_map(Some),
            1 => Just(None),
        ];
        prop::collection::vec(op, 0..200)
    }

    fn config(kind: WindowKind) -> WindowConfig {
        WindowConfig {
            kind,
            allowed_lateness: 10,
            aggregates: vec![
                AggregateKind::Count,
                AggregateKind::Sum,
                AggregateKind::Last,
                AggregateKind::CountDistinct,
            ],
        }
    }

    /// Runs `ops` on `windows`, checking after each advance and at the end that the snapshot
    /// written key by key is the encoding of the gathered one.
    fn check(mut windows: Windows, ops: &Ops) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        let mut watermark = 0;
        let checked = |windows: &Windows, watermark: i64| {
            let written = windows.encode_snapshot(watermark).expect("written");
            // Written in pieces, as into a checkpoint file, it is the same bytes.
            let sorted = windows.sorted_snapshot(watermark).expect("sorted");
            let mut streamed = Vec::new();
            dataflow_checkpoint::StateWriter::write_state(&sorted, &mut streamed).expect("written");
            prop_assert_eq!(
                dataflow_checkpoint::StateWriter::state_len(&sorted),
                streamed.len() as u64
            );
            prop_assert_eq!(&streamed, &written);
            let gathered = match windows {
                Windows::Heap(windows) => windows.snapshot(),
                Windows::Store(windows) => windows.snapshot(),
            }
            .expect("gathered");
            let encoded =
                dataflow_checkpoint::encode_state(&(gathered, watermark)).expect("encoded");
            prop_assert_eq!(&written, &encoded);
            // Read back key by key, into memory and into a store, it writes the same again.
            let config = match windows {
                Windows::Heap(windows) => windows.config().clone(),
                Windows::Store(windows) => windows.config().clone(),
            };
            let (header, mut keys) = SnapshotReader::new(&written).expect("a header");
            let heap = KeyedWindows::restore_keys(
                config.clone(),
                HeapStates::default(),
                &header,
                &mut keys,
            )
            .expect("restorable");
            prop_assert_eq!(keys.watermark().expect("a watermark"), watermark);
            let heap = Windows::Heap(heap);
            prop_assert_eq!(&heap.encode_snapshot(watermark).expect("written"), &written);
            let (header, mut keys) = SnapshotReader::new(&written).expect("a header");
            let states = StoreStates::new(Box::new(MemoryStore::new()), "steps[1].window")
                .with_cache_capacity(2);
            let stored = KeyedWindows::restore_keys(config.clone(), states, &header, &mut keys)
                .expect("restorable");
            let stored = Windows::Store(stored);
            prop_assert_eq!(
                &stored.encode_snapshot(watermark).expect("written"),
                &written
            );
            // Cut short, it is refused (by the keys or by the watermark), without a panic.
            let cut = &written[..written.len() - 1];
            let refused = SnapshotReader::new(cut).and_then(|(header, mut keys)| {
                KeyedWindows::restore_keys(config, HeapStates::default(), &header, &mut keys)?;
                keys.watermark()
            });
            prop_assert!(refused.is_err());
            Ok(())
        };
        for op in ops {
            match op {
                Some((key, time, value)) => {
                    let key = if key % 2 == 0 {
                        dataflow_event::Value::Int(i64::from(*key) - 20)
                    } else {
                        dataflow_event::Value::str(&format!("k{key}"))
                    };
                    let inputs = vec![dataflow_event::Value::Int(*value); 4];
                    let _ = windows.add(&key, *time, &inputs, &mut out);
                }
                None => {
                    watermark += 37;
                    while !windows
                        .advance_watermark_bounded(watermark, usize::MAX, &mut out)
                        .expect("advance")
                    {}
                    checked(&windows, watermark)?;
                }
            }
        }
        checked(&windows, watermark)
    }

    fn kind() -> impl Strategy<Value = WindowKind> {
        prop_oneof![
            Just(WindowKind::Tumbling { size: 50 }),
            Just(WindowKind::Sliding {
                size: 60,
                slide: 20
            }),
            Just(WindowKind::Session { gap: 15 }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn snapshots_written_key_by_key_equal_the_gathered_ones(kind in kind(), ops in ops()) {
            let heap = KeyedWindows::new(config(kind)).expect("valid");
            check(Windows::Heap(heap), &ops)?;
            // A cache smaller than the keys: some keys are copied from the store's bytes.
            for cache_keys in [0, 3] {
                let states = StoreStates::new(Box::new(MemoryStore::new()), "steps[1].window")
                    .with_cache_capacity(cache_keys);
                let stored = KeyedWindows::with_states(config(kind), states).expect("valid");
                check(Windows::Store(stored), &ops)?;
            }
        }
    }

    #[test]
    fn snapshots_written_from_sled_equal_the_gathered_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ops: Ops = (0..300i64)
            .map(|i| (i % 7 != 6).then(|| ((i * 13 % 40) as u8, i * 3 % 400, i % 11)))
            .collect();
        for kind in [
            WindowKind::Tumbling { size: 50 },
            WindowKind::Session { gap: 15 },
        ] {
            let store = SledStore::rebuild(&dir.path().join("state"), &StateSnapshot::default())
                .expect("sled store");
            let states =
                StoreStates::new(Box::new(store), "steps[1].window").with_cache_capacity(3);
            let stored = KeyedWindows::with_states(config(kind), states).expect("valid");
            check(Windows::Store(stored), &ops).expect("the same bytes");
        }
    }
}
