//! Retention and pins: a pinned checkpoint survives any number of saves past `retain`, and is
//! deleted by the first save after its pin is dropped; the record of saved checkpoints keeps
//! every id saved, also once retention has deleted it.

use dataflow_checkpoint::{Checkpoint, CheckpointId, CheckpointStorage, LocalStorage, Retention};

fn sample(id: u64) -> Checkpoint {
    Checkpoint {
        id: CheckpointId(id),
        created_at_ms: 1_700_000_000_000 + id as i64,
        pipeline_fingerprint: "0123456789abcdef".to_string(),
        sources: Vec::new(),
        operators: Vec::new(),
        watermark: 0,
    }
}

fn stored(storage: &LocalStorage) -> Vec<u64> {
    storage
        .list()
        .expect("list")
        .iter()
        .map(|entry| entry.id.0)
        .collect()
}

#[test]
fn a_pinned_checkpoint_outlives_retention_until_its_pin_is_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = LocalStorage::new(dir.path(), 3).expect("storage");
    for id in 1..=3 {
        storage.save(&sample(id)).expect("save");
    }
    let pin = storage.retention().pin(CheckpointId(1));
    assert!(storage.retention().is_pinned(CheckpointId(1)));
    for id in 4..=7 {
        storage.save(&sample(id)).expect("save");
    }
    // The newest three, and the pinned one.
    assert_eq!(stored(&storage), vec![1, 5, 6, 7]);
    assert_eq!(
        storage.load(CheckpointId(1)).expect("load").id,
        CheckpointId(1)
    );
    drop(pin);
    assert!(!storage.retention().is_pinned(CheckpointId(1)));
    storage.save(&sample(8)).expect("save");
    assert_eq!(stored(&storage), vec![6, 7, 8]);
}

#[test]
fn pins_count_and_are_shared_by_the_storages_of_one_retention() {
    let dir = tempfile::tempdir().expect("temp dir");
    let retention = Retention::default();
    let first = LocalStorage::new(dir.path(), 2)
        .expect("storage")
        .with_retention(retention.clone());
    first.save(&sample(1)).expect("save");
    first.save(&sample(2)).expect("save");
    let a = retention.pin(CheckpointId(1));
    let b = retention.pin(CheckpointId(1));
    // The next run's storage honours the pins taken through the shared retention.
    let second = LocalStorage::new(dir.path(), 2)
        .expect("storage")
        .with_retention(retention.clone());
    second.save(&sample(3)).expect("save");
    drop(a);
    second.save(&sample(4)).expect("save");
    assert_eq!(stored(&second), vec![1, 3, 4]);
    drop(b);
    second.save(&sample(5)).expect("save");
    assert_eq!(stored(&second), vec![4, 5]);
}

#[test]
fn the_record_of_saved_checkpoints_keeps_removed_ids_and_only_saved_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = LocalStorage::new(dir.path(), 1).expect("storage");
    // Gaps (checkpoints that failed) and ids out of order.
    for id in [2, 3, 5, 9, 8, 6, 4, 12, 11] {
        storage.save(&sample(id)).expect("save");
    }
    let saved: Vec<u64> = (0..=14)
        .filter(|id| storage.retention().was_saved(CheckpointId(*id)))
        .collect();
    assert_eq!(saved, vec![2, 3, 4, 5, 6, 8, 9, 11, 12]);
    // A storage of its own records nothing of another's.
    let other = LocalStorage::open_for_reading(dir.path()).expect("reader");
    assert!(!other.retention().was_saved(CheckpointId(2)));
}
