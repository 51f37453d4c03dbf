//! The sled store's handling of its directory: unopenable directories are moved aside intact,
//! locked ones are left alone, rebuilds discard only what is sled's, and flushed writes survive
//! a crash.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dataflow_state::{Backend, SledStore, StateError, StateSnapshot, StateStore};

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_owned();
                out.insert(relative, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The `<name>.corrupt-*` siblings of `dir`, sorted.
fn moved_aside(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.corrupt-", dir.file_name().unwrap().to_str().unwrap());
    let mut found: Vec<PathBuf> = fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix))
        })
        .collect();
    found.sort();
    found
}

fn snapshot_of(entries: &[(&str, &str, &str)]) -> StateSnapshot {
    entries
        .iter()
        .map(|(ns, key, value)| (ns, key.as_bytes(), value.as_bytes()))
        .collect()
}

/// A store in `dir` holding one entry, closed.
fn make_store(dir: &Path) {
    let mut store = SledStore::open(dir).unwrap();
    store.put("window", b"k", b"v").unwrap();
    store.flush().unwrap();
}

fn assert_fresh_and_usable(dir: &Path) {
    let mut store = SledStore::open(dir).unwrap();
    assert_eq!(store.snapshot().unwrap(), StateSnapshot::new());
    store.put("ns", b"a", b"1").unwrap();
    assert_eq!(store.get("ns", b"a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn a_file_where_the_directory_should_be_is_moved_aside_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    fs::write(&dir, b"not a directory").unwrap();

    let store = SledStore::open(&dir).unwrap();
    assert_eq!(store.snapshot().unwrap(), StateSnapshot::new());
    drop(store);

    let aside = moved_aside(&dir);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::read(&aside[0]).unwrap(), b"not a directory");
    assert!(dir.is_dir());
    assert_fresh_and_usable(&dir);
}

#[test]
fn a_garbled_config_is_moved_aside_with_every_file_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    make_store(&dir);
    fs::write(dir.join("conf"), b"garbage where sled keeps its config").unwrap();
    let before = contents(&dir);

    assert_fresh_and_usable(&dir);

    let aside = moved_aside(&dir);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(contents(&aside[0]), before);
}

#[test]
fn a_garbled_log_is_moved_aside_not_opened_empty() {
    // sled opens a log it cannot read as empty (torn writes), and its recovery may rewrite the
    // log's first bytes before that shows: the missing format marker is what catches it. The
    // directory is moved aside; its config is intact.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    make_store(&dir);
    fs::write(dir.join("db"), vec![0xa5; 64 * 1024]).unwrap();
    let conf = fs::read(dir.join("conf")).unwrap();

    assert_fresh_and_usable(&dir);

    let aside = moved_aside(&dir);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(fs::read(aside[0].join("conf")).unwrap(), conf);
    assert!(aside[0].join("db").is_file());
}

#[test]
fn a_sled_database_that_is_not_a_state_store_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    // What another user of sled (or a future format) leaves: data, but no format marker.
    let other = sled::open(&dir).unwrap();
    other.insert(b"theirs", b"data").unwrap();
    other.flush().unwrap();
    drop(other);

    assert_fresh_and_usable(&dir);
    let aside = moved_aside(&dir);
    assert_eq!(aside.len(), 1, "{aside:?}");
    let other = sled::open(&aside[0]).unwrap();
    assert_eq!(other.get(b"theirs").unwrap().as_deref(), Some(&b"data"[..]));
}

#[test]
fn a_second_corruption_in_the_same_second_gets_its_own_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    fs::write(&dir, b"first").unwrap();
    drop(SledStore::open(&dir).unwrap());
    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, b"second").unwrap();
    drop(SledStore::open(&dir).unwrap());

    let aside = moved_aside(&dir);
    assert_eq!(aside.len(), 2, "{aside:?}");
    let mut kept: Vec<Vec<u8>> = aside.iter().map(|path| fs::read(path).unwrap()).collect();
    kept.sort();
    assert_eq!(kept, [b"first".to_vec(), b"second".to_vec()]);
}

#[test]
fn a_store_in_use_is_locked_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut first = SledStore::open(&dir).unwrap();
    first.put("ns", b"k", b"v").unwrap();

    let error = SledStore::open(&dir).unwrap_err();
    assert!(matches!(error, StateError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("state"), "{error}");
    let error = SledStore::rebuild(&dir, &StateSnapshot::new()).unwrap_err();
    assert!(matches!(error, StateError::Locked { .. }), "{error}");

    assert!(moved_aside(&dir).is_empty());
    assert_eq!(first.get("ns", b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn rebuild_replaces_an_old_store_and_is_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut old = SledStore::open(&dir).unwrap();
    old.put("stale", b"k", b"old").unwrap();
    old.put("window", b"a", b"old").unwrap();
    drop(old);

    let snapshot = snapshot_of(&[
        ("window", "a", "1"),
        ("window", "b", "2"),
        ("join", "x", ""),
    ]);
    let store = SledStore::rebuild(&dir, &snapshot).unwrap();
    assert_eq!(store.snapshot().unwrap(), snapshot);
    assert_eq!(store.namespaces().unwrap(), ["join", "window"]);
    drop(store);

    // A healthy old store is the past of the checkpoint: it is removed, not kept aside.
    assert!(moved_aside(&dir).is_empty());
    assert_eq!(SledStore::open(&dir).unwrap().snapshot().unwrap(), snapshot);
}

#[test]
fn rebuild_moves_aside_what_sled_did_not_create() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = snapshot_of(&[("window", "a", "1")]);

    // A directory with someone's files in it.
    let dir = tmp.path().join("mistaken");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("notes.txt"), b"precious").unwrap();
    let store = SledStore::rebuild(&dir, &snapshot).unwrap();
    assert_eq!(store.snapshot().unwrap(), snapshot);
    let aside = moved_aside(&dir);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        contents(&aside[0]),
        BTreeMap::from([(PathBuf::from("notes.txt"), b"precious".to_vec())])
    );

    // A file.
    let file = tmp.path().join("file");
    fs::write(&file, b"a file").unwrap();
    let store = SledStore::rebuild(&file, &snapshot).unwrap();
    assert_eq!(store.snapshot().unwrap(), snapshot);
    assert_eq!(fs::read(&moved_aside(&file)[0]).unwrap(), b"a file");

    // A corrupt store.
    let corrupt = tmp.path().join("corrupt");
    make_store(&corrupt);
    fs::write(corrupt.join("conf"), b"garbage longer than a config").unwrap();
    let before = contents(&corrupt);
    let store = SledStore::rebuild(&corrupt, &snapshot).unwrap();
    assert_eq!(store.snapshot().unwrap(), snapshot);
    assert_eq!(contents(&moved_aside(&corrupt)[0]), before);
}

#[test]
fn rebuild_creates_missing_and_fills_empty_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = snapshot_of(&[("a", "k", "v")]);
    let missing = tmp.path().join("deep").join("missing");
    assert_eq!(
        SledStore::rebuild(&missing, &snapshot)
            .unwrap()
            .snapshot()
            .unwrap(),
        snapshot
    );
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert_eq!(
        SledStore::rebuild(&empty, &snapshot)
            .unwrap()
            .snapshot()
            .unwrap(),
        snapshot
    );
    assert!(moved_aside(&missing).is_empty());
    assert!(moved_aside(&empty).is_empty());
}

#[test]
fn the_backend_opens_and_rebuilds_either_store() {
    let tmp = tempfile::tempdir().unwrap();
    let snapshot = snapshot_of(&[("window", "a", "1"), ("window", "ab", "2")]);
    let backends = [
        Backend::default(),
        Backend::Sled {
            dir: tmp.path().join("state"),
        },
    ];
    assert_eq!(backends[0], Backend::Memory);
    for backend in &backends {
        let store = backend.rebuild(&snapshot).unwrap();
        assert_eq!(store.snapshot().unwrap(), snapshot, "{backend:?}");
        let entries = store
            .scan_prefix("window", b"a")
            .unwrap()
            .into_vec()
            .unwrap();
        assert_eq!(entries.len(), 2, "{store:?}");
        drop(store);
        let reopened = backend.open().unwrap();
        let expected = match backend {
            Backend::Memory => StateSnapshot::new(),
            Backend::Sled { .. } => snapshot.clone(),
        };
        assert_eq!(reopened.snapshot().unwrap(), expected, "{backend:?}");
    }
}

#[test]
fn errors_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<StateError>();
    fn assert_send<T: Send>() {}
    assert_send::<SledStore>();
    assert_send::<Box<dyn StateStore>>();
}

const CRASH_CHILD: &str = "DATAFLOW_STATE_CRASH_CHILD_DIR";
const CRASH_EXIT: i32 = 42;

/// Run as a child process: writes, flushes, writes more, then exits without closing the store
/// (no destructor runs), as a crash would.
fn crash_child(dir: &Path) -> ! {
    let mut store = SledStore::open(dir).unwrap();
    for i in 0..200u32 {
        store.put("flushed", &i.to_be_bytes(), b"value").unwrap();
    }
    store.delete("flushed", &7u32.to_be_bytes()).unwrap();
    store.flush().unwrap();
    for i in 0..200u32 {
        store.put("unflushed", &i.to_be_bytes(), b"value").unwrap();
    }
    store.delete("flushed", &8u32.to_be_bytes()).unwrap();
    std::process::exit(CRASH_EXIT);
}

#[test]
fn flushed_writes_survive_a_crash() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD) {
        crash_child(Path::new(&dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "flushed_writes_survive_a_crash",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, &dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(CRASH_EXIT),
        "the child did not reach its crash"
    );

    let store = SledStore::open(&dir).unwrap();
    assert!(moved_aside(&dir).is_empty());
    for i in 0..200u32 {
        let value = store.get("flushed", &i.to_be_bytes()).unwrap();
        match i {
            7 => assert_eq!(value, None),
            // Deleted after the flush: either outcome is allowed.
            8 => {}
            _ => assert_eq!(value.as_deref(), Some(&b"value"[..]), "key {i}"),
        }
    }
    // Unflushed writes may or may not be there, but nothing else is.
    for (key, value) in store
        .scan_prefix("unflushed", b"")
        .unwrap()
        .into_vec()
        .unwrap()
    {
        assert_eq!(key.len(), 4);
        assert_eq!(value, b"value");
    }
}

/// A batch of puts leaves what the same puts one by one leave, counts included, in both stores,
/// also over existing keys and across more entries than one sled batch holds.
#[test]
fn batches_of_puts_equal_single_puts() {
    let tmp = tempfile::tempdir().unwrap();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..3000u32)
        .map(|i| ((i % 2500).to_be_bytes().to_vec(), i.to_le_bytes().to_vec()))
        .collect();
    let mut one_by_one = dataflow_state::MemoryStore::new();
    one_by_one.put("window", b"\xff", b"old").unwrap();
    for (key, value) in &entries {
        one_by_one.put("window", key, value).unwrap();
    }
    let mut sled = SledStore::open_with_cache(&tmp.path().join("state"), 1 << 20).unwrap();
    sled.put("window", b"\xff", b"old").unwrap();
    assert_eq!(sled.key_count("window").unwrap(), 1);
    sled.put_batch("window", &entries).unwrap();
    let mut memory = dataflow_state::MemoryStore::new();
    memory.put("window", b"\xff", b"old").unwrap();
    memory.put_batch("window", &entries).unwrap();
    for store in [&sled as &dyn StateStore, &memory] {
        assert_eq!(store.snapshot().unwrap(), one_by_one.snapshot().unwrap());
        assert_eq!(store.key_count("window").unwrap(), 2501);
    }
    sled.put_batch("other", &[]).unwrap();
    assert_eq!(sled.namespaces().unwrap(), ["window"]);
}
