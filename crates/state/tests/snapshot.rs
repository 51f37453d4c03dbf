//! Snapshots are deterministic: the same contents, written in any order into either backend,
//! give equal snapshots and the same bincode bytes.

use std::collections::BTreeMap;

use dataflow_state::{MemoryStore, SledStore, StateSnapshot, StateStore};
use proptest::prelude::*;
use serde::Serialize;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
}

fn decode(bytes: &[u8]) -> StateSnapshot {
    let (snapshot, read) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).unwrap();
    assert_eq!(read, bytes.len());
    snapshot
}

type Contents = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// One entry of [`Contents`].
type Item = ((String, Vec<u8>), Vec<u8>);

fn contents() -> impl Strategy<Value = Contents> {
    proptest::collection::btree_map(
        (
            prop_oneof![Just("a"), Just("b"), Just("window/1"), Just("")].prop_map(String::from),
            proptest::collection::vec(any::<u8>(), 0..4),
        ),
        proptest::collection::vec(any::<u8>(), 0..4),
        0..40,
    )
}

/// Writes `order` into `store`, after junk that is then deleted (so the store's history differs
/// from its contents).
fn fill(store: &mut dyn StateStore, order: &[Item], junk: bool) {
    if junk {
        for ((ns, key), _) in order {
            store.put(ns, key, b"junk").unwrap();
        }
        store.put("junk-only", b"k", b"v").unwrap();
        store.delete("junk-only", b"k").unwrap();
    }
    for ((ns, key), value) in order {
        store.put(ns, key, value).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn same_contents_in_any_order_give_the_same_snapshot_and_bytes(
        (contents, shuffled) in contents().prop_flat_map(|contents| {
            let entries: Vec<_> = contents.clone().into_iter().collect();
            (Just(contents), Just(entries).prop_shuffle())
        })
    ) {
        let sorted: Vec<_> = contents.into_iter().collect();
        let mut reversed = sorted.clone();
        reversed.reverse();

        let mut memory_sorted = MemoryStore::new();
        fill(&mut memory_sorted, &sorted, false);
        let mut memory_shuffled = MemoryStore::new();
        fill(&mut memory_shuffled, &shuffled, true);
        let tmp = tempfile::tempdir().unwrap();
        let mut sled = SledStore::open(&tmp.path().join("state")).unwrap();
        fill(&mut sled, &reversed, true);

        let expected = memory_sorted.snapshot().unwrap();
        let bytes = encode(&expected);
        for store in [&memory_shuffled as &dyn StateStore, &sled] {
            let snapshot = store.snapshot().unwrap();
            prop_assert_eq!(&snapshot, &expected);
            prop_assert_eq!(encode(&snapshot), bytes.clone());
        }
        let built: StateSnapshot = shuffled
            .iter()
            .map(|((ns, key), value)| (ns, key, value))
            .collect();
        prop_assert_eq!(encode(&built), bytes.clone());
        prop_assert_eq!(decode(&bytes), expected);
    }
}

#[test]
fn a_snapshot_lists_entries_in_namespace_then_key_order() {
    let mut store = MemoryStore::new();
    store.put("b", b"2", b"").unwrap();
    store.put("a", b"\xff", b"x").unwrap();
    store.put("b", b"1", b"").unwrap();
    store.put("a", b"", b"empty key").unwrap();
    let snapshot = store.snapshot().unwrap();
    let order: Vec<(&str, &[u8])> = snapshot.iter().map(|(ns, key, _)| (ns, key)).collect();
    assert_eq!(
        order,
        [("a", &b""[..]), ("a", b"\xff"), ("b", b"1"), ("b", b"2")]
    );
    assert_eq!(snapshot.len(), 4);
    assert_eq!(snapshot.key_count("a"), 2);
    assert_eq!(snapshot.get("a", b""), Some(&b"empty key"[..]));
    assert_eq!(snapshot.namespaces().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(snapshot.entries("b").count(), 2);
    assert_eq!(snapshot.entries("missing").count(), 0);
}

#[test]
fn decoding_drops_empty_namespaces() {
    #[derive(Serialize)]
    struct Raw {
        namespaces: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    }
    let raw = Raw {
        namespaces: BTreeMap::from([
            ("empty".to_owned(), BTreeMap::new()),
            (
                "full".to_owned(),
                BTreeMap::from([(b"k".to_vec(), b"v".to_vec())]),
            ),
        ]),
    };
    let decoded = decode(&encode(&raw));
    let mut expected = StateSnapshot::new();
    expected.insert("full", b"k", b"v");
    assert_eq!(decoded, expected);
    assert_eq!(encode(&decoded), encode(&expected));
}

#[test]
fn removing_the_last_key_removes_the_namespace() {
    let mut snapshot = StateSnapshot::new();
    assert_eq!(snapshot.insert("ns", b"k", b"1"), None);
    assert_eq!(snapshot.insert("ns", b"k", b"2"), Some(b"1".to_vec()));
    assert_eq!(snapshot.remove("ns", b"k"), Some(b"2".to_vec()));
    assert_eq!(snapshot.remove("ns", b"k"), None);
    assert!(snapshot.is_empty());
    assert_eq!(snapshot, StateSnapshot::new());
    assert_eq!(encode(&snapshot), encode(&StateSnapshot::new()));
}
