//! Two owners of one checkpoint directory (a scale-out task's previous owner, paused, and the
//! process the partition moved to): once the new owner claims the directory, every save of
//! the previous one is refused, before it writes and again right before its rename, and
//! nothing of it is left behind.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use dataflow_checkpoint::{
    Checkpoint, CheckpointError, CheckpointId, CheckpointStorage, FileSystem, LocalStorage,
    OperatorState, StdFs, EPOCH_FILE,
};

fn sample(id: u64) -> Checkpoint {
    Checkpoint {
        id: CheckpointId(id),
        created_at_ms: 1_700_000_000_000,
        pipeline_fingerprint: "9f86d081884c7d65".to_string(),
        sources: Vec::new(),
        operators: vec![OperatorState {
            name: "totals".to_string(),
            kind: "window".to_string(),
            key_count: 1,
            state: vec![id as u8; 64],
        }],
        watermark: 0,
    }
}

fn ids(storage: &LocalStorage) -> Vec<u64> {
    storage.list().unwrap().iter().map(|e| e.id.0).collect()
}

/// The entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_fenced(error: CheckpointError, id: u64, own: u64, current: u64) {
    match &error {
        CheckpointError::Fenced {
            checkpoint,
            own: o,
            current: c,
            ..
        } => assert_eq!(
            (*checkpoint, *o, *c),
            (Some(CheckpointId(id)), own, current),
            "{error}"
        ),
        other => panic!("expected a fenced save, got {other}"),
    }
    let text = error.to_string();
    assert!(
        text.contains(&format!("checkpoint {id}: not saved"))
            && text.contains("taken over by a newer owner"),
        "{text}"
    );
}

#[test]
fn a_claim_fences_the_previous_owner() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = LocalStorage::new(dir.path(), 5).unwrap();
    assert_eq!(first.current_epoch().unwrap(), 0, "no owner yet");
    assert_eq!(first.claim().unwrap(), 1);
    first.save(&sample(1)).unwrap();
    first.save(&sample(2)).unwrap();

    // The partition moves: its new owner claims before it restores.
    let mut second = LocalStorage::new(dir.path(), 5).unwrap();
    assert_eq!(second.claim().unwrap(), 2);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(EPOCH_FILE)).unwrap(),
        "2\n"
    );
    let (restored, _) = second.latest_valid().unwrap().unwrap();
    assert_eq!(restored.id, CheckpointId(2));

    // The previous owner wakes up: refused, nothing written, under any id.
    let before = entries(dir.path());
    assert_fenced(first.save(&sample(3)).unwrap_err(), 3, 1, 2);
    assert_fenced(first.save(&sample(9)).unwrap_err(), 9, 1, 2);
    assert_eq!(entries(dir.path()), before);

    second.save(&sample(3)).unwrap();
    assert_eq!(ids(&second), [1, 2, 3]);

    // Ownership can come back: a claim always takes the next epoch.
    assert_eq!(first.claim().unwrap(), 3);
    first.save(&sample(4)).unwrap();
    assert_fenced(second.save(&sample(5)).unwrap_err(), 5, 2, 3);
    assert_eq!(ids(&first), [1, 2, 3, 4]);
}

#[test]
fn a_storage_that_never_claimed_is_not_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let plain = LocalStorage::new(dir.path(), 5).unwrap();
    let mut owner = LocalStorage::new(dir.path(), 5).unwrap();
    owner.claim().unwrap();
    assert_eq!(plain.epoch(), None);
    plain.save(&sample(1)).unwrap();
    assert_eq!(ids(&plain), [1]);
}

#[test]
fn a_bad_epoch_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = LocalStorage::new(dir.path(), 5).unwrap();
    std::fs::write(dir.path().join(EPOCH_FILE), "seven\n").unwrap();
    let error = storage.claim().unwrap_err();
    assert!(matches!(error, CheckpointError::BadEpoch { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(EPOCH_FILE) && text.contains("`seven\n`"),
        "{text}"
    );
}

#[test]
fn a_claim_interrupted_before_its_rename_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    // What a claim killed between its write and its rename leaves.
    std::fs::write(dir.path().join(".tmp-epoch"), "1\n").unwrap();
    let mut storage = LocalStorage::new(dir.path(), 5).unwrap();
    assert_eq!(storage.claim().unwrap(), 1);
    assert_eq!(entries(dir.path()), [EPOCH_FILE]);
}

/// The real file system, except that the first data file written first runs `hook` (another
/// owner's claim, landing while the save is under way).
struct ClaimDuringWrite {
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for ClaimDuringWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimDuringWrite")
    }
}

impl FileSystem for ClaimDuringWrite {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        StdFs.create_dir(path)
    }
    fn write_file_synced(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        StdFs.write_file_synced(path, contents)
    }
    fn write_file_synced_with(
        &self,
        path: &Path,
        fill: &mut dyn FnMut(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        if let Some(hook) = self.hook.lock().unwrap().take() {
            hook();
        }
        StdFs.write_file_synced_with(path, fill)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        StdFs.sync_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_dir_all(path)
    }
}

#[test]
fn a_claim_while_a_save_is_written_refuses_it_before_the_rename() {
    let dir = tempfile::tempdir().unwrap();
    // Opened before: opening a storage removes the temporary directories of saves under way.
    let mut other = LocalStorage::new(dir.path(), 5).unwrap();
    let fs = Arc::new(ClaimDuringWrite {
        hook: Mutex::new(Some(Box::new(move || {
            assert_eq!(other.claim().unwrap(), 2);
        }))),
    });
    let mut first = LocalStorage::with_fs(dir.path(), 5, fs).unwrap();
    assert_eq!(first.claim().unwrap(), 1);
    // Passes the check at the start, is claimed away while its data file is written.
    assert_fenced(first.save(&sample(1)).unwrap_err(), 1, 1, 2);
    assert_eq!(
        entries(dir.path()),
        [EPOCH_FILE],
        "no checkpoint and no temporary directory left"
    );
}
