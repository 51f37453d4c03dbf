//! Model tests: both backends against a plain ordered map, over generated sequences of
//! operations. After every operation the store's answer, its whole snapshot and its namespaces
//! equal the model's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dataflow_state::{Backend, MemoryStore, SledStore, StateSnapshot, StateStore};
use proptest::prelude::*;

/// Namespaces chosen to collide with the sled store's tree names if it did not keep them apart:
/// sled's default tree, and the store's own tree prefix.
const NAMESPACES: &[&str] = &[
    "",
    "window",
    "window/x",
    "__sled__default",
    "ns:window",
    "ü",
];

type Model = BTreeMap<(String, Vec<u8>), Vec<u8>>;

#[derive(Clone, Debug)]
enum Op {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    Get(usize, Vec<u8>),
    Scan(usize, Vec<u8>),
    Count(usize),
    Namespaces,
    Snapshot,
    /// Restores the snapshot taken this many snapshots ago (modulo how many there are).
    Restore(usize),
    Flush,
    /// Closes the store and opens it again from its directory (sled only).
    Restart {
        flush: bool,
    },
    /// Opens a store rebuilt from an earlier snapshot.
    Rebuild(usize),
}

/// Keys from a tiny alphabet, so that keys collide and prefixes hit, miss, and are prefixes of
/// each other (the empty prefix included); 0xff checks that the prefix upper bound is right.
fn bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(b'b'), Just(0xff)],
        0..=max_len,
    )
}

fn op(sled: bool) -> impl Strategy<Value = Op> {
    let ns = 0..NAMESPACES.len();
    prop_oneof![
        8 => (ns.clone(), bytes(3), bytes(2)).prop_map(|(n, k, v)| Op::Put(n, k, v)),
        3 => (ns.clone(), bytes(3)).prop_map(|(n, k)| Op::Delete(n, k)),
        3 => (ns.clone(), bytes(3)).prop_map(|(n, k)| Op::Get(n, k)),
        4 => (ns.clone(), bytes(2)).prop_map(|(n, p)| Op::Scan(n, p)),
        1 => ns.prop_map(Op::Count),
        1 => Just(Op::Namespaces),
        2 => Just(Op::Snapshot),
        1 => any::<usize>().prop_map(Op::Restore),
        1 => Just(Op::Flush),
        // Memory does not survive a restart: it flushes instead (which does nothing).
        2 => any::<bool>().prop_map(move |flush| match sled {
            true => Op::Restart { flush },
            false => Op::Flush,
        }),
        1 => any::<usize>().prop_map(Op::Rebuild),
    ]
}

/// A backend under test, with what it can do beyond [`StateStore`].
trait Subject {
    fn store(&mut self) -> &mut dyn StateStore;
    fn restart(&mut self, flush: bool);
    fn rebuild(&mut self, snapshot: &StateSnapshot);
}

struct Memory(Box<dyn StateStore>);

impl Subject for Memory {
    fn store(&mut self) -> &mut dyn StateStore {
        self.0.as_mut()
    }

    fn restart(&mut self, _flush: bool) {
        unreachable!("memory does not survive a restart: not generated")
    }

    fn rebuild(&mut self, snapshot: &StateSnapshot) {
        self.0 = Backend::Memory.rebuild(snapshot).unwrap();
    }
}

struct Sled {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    store: Option<SledStore>,
}

impl Sled {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let store = SledStore::open(&dir).unwrap();
        Sled {
            _tmp: tmp,
            dir,
            store: Some(store),
        }
    }
}

impl Subject for Sled {
    fn store(&mut self) -> &mut dyn StateStore {
        self.store.as_mut().unwrap()
    }

    fn restart(&mut self, flush: bool) {
        let store = self.store.take().unwrap();
        if flush {
            store.flush().unwrap();
        }
        // Dropping flushes too: a clean close keeps everything.
        drop(store);
        self.store = Some(SledStore::open(&self.dir).unwrap());
    }

    fn rebuild(&mut self, snapshot: &StateSnapshot) {
        // The old store must be closed first: it holds the directory's lock.
        self.store = None;
        self.store = Some(SledStore::rebuild(&self.dir, snapshot).unwrap());
    }
}

fn model_snapshot(model: &Model) -> StateSnapshot {
    model
        .iter()
        .map(|((ns, key), value)| (ns.as_str(), key.as_slice(), value.as_slice()))
        .collect()
}

fn model_namespaces(model: &Model) -> Vec<String> {
    let mut names: Vec<String> = model.keys().map(|(ns, _)| ns.clone()).collect();
    names.dedup();
    names
}

fn snapshot_model(snapshot: &StateSnapshot) -> Model {
    snapshot
        .iter()
        .map(|(ns, key, value)| ((ns.to_owned(), key.to_vec()), value.to_vec()))
        .collect()
}

fn run(subject: &mut dyn Subject, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::new();
    let mut snapshots: Vec<StateSnapshot> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Put(ns, key, value) => {
                subject.store().put(NAMESPACES[*ns], key, value).unwrap();
                model.insert((NAMESPACES[*ns].to_owned(), key.clone()), value.clone());
            }
            Op::Delete(ns, key) => {
                subject.store().delete(NAMESPACES[*ns], key).unwrap();
                model.remove(&(NAMESPACES[*ns].to_owned(), key.clone()));
            }
            Op::Get(ns, key) => {
                let got = subject.store().get(NAMESPACES[*ns], key).unwrap();
                let want = model
                    .get(&(NAMESPACES[*ns].to_owned(), key.clone()))
                    .cloned();
                prop_assert_eq!(got, want, "step {}: {:?}", step, op);
            }
            Op::Scan(ns, prefix) => {
                let got = subject
                    .store()
                    .scan_prefix(NAMESPACES[*ns], prefix)
                    .unwrap()
                    .into_vec()
                    .unwrap();
                let want: Vec<(Vec<u8>, Vec<u8>)> = model
                    .iter()
                    .filter(|((n, key), _)| n == NAMESPACES[*ns] && key.starts_with(prefix))
                    .map(|((_, key), value)| (key.clone(), value.clone()))
                    .collect();
                prop_assert_eq!(got, want, "step {}: {:?}", step, op);
            }
            Op::Count(ns) => {
                let got = subject.store().key_count(NAMESPACES[*ns]).unwrap();
                let want = model.keys().filter(|(n, _)| n == NAMESPACES[*ns]).count() as u64;
                prop_assert_eq!(got, want, "step {}: {:?}", step, op);
            }
            Op::Namespaces => {
                let got = subject.store().namespaces().unwrap();
                prop_assert_eq!(got, model_namespaces(&model), "step {}: {:?}", step, op);
            }
            Op::Snapshot => {
                let snapshot = subject.store().snapshot().unwrap();
                prop_assert_eq!(&snapshot, &model_snapshot(&model), "step {}", step);
                snapshots.push(snapshot);
            }
            Op::Restore(back) | Op::Rebuild(back) => {
                let snapshot = match snapshots.len() {
                    0 => StateSnapshot::new(),
                    n => snapshots[n - 1 - back % n].clone(),
                };
                if matches!(op, Op::Restore(_)) {
                    subject.store().restore(&snapshot).unwrap();
                } else {
                    subject.rebuild(&snapshot);
                }
                model = snapshot_model(&snapshot);
            }
            Op::Flush => subject.store().flush().unwrap(),
            Op::Restart { flush } => subject.restart(*flush),
        }
        // After every step, the whole contents agree, and so do the counts.
        let store = subject.store();
        prop_assert_eq!(
            store.snapshot().unwrap(),
            model_snapshot(&model),
            "step {}: {:?}",
            step,
            op
        );
        let namespaces = model_namespaces(&model);
        prop_assert_eq!(
            store.namespaces().unwrap(),
            namespaces.clone(),
            "step {}",
            step
        );
        for ns in namespaces {
            let want = model.keys().filter(|(n, _)| *n == ns).count() as u64;
            prop_assert_eq!(
                store.key_count(&ns).unwrap(),
                want,
                "step {}: {:?}",
                step,
                ns
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn memory_store_matches_the_model(ops in proptest::collection::vec(op(false), 1..60)) {
        run(&mut Memory(Backend::Memory.open().unwrap()), &ops)?;
    }

    #[test]
    fn memory_store_built_directly_matches_the_model(
        ops in proptest::collection::vec(op(false), 1..30)
    ) {
        run(&mut Memory(Box::new(MemoryStore::new())), &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sled_store_matches_the_model(ops in proptest::collection::vec(op(true), 1..50)) {
        run(&mut Sled::new(), &ops)?;
    }
}
