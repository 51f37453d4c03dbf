//! The committed checkpoint of format version 1 must keep loading, whatever the format
//! becomes.
//!
//! The fixture in `tests/fixtures/v1/` was written by `write_v1_fixture`, which rewrites it only
//! when asked:
//!
//! ```sh
//! DATAFLOW_WRITE_FIXTURES=1 cargo test -p dataflow-checkpoint --test fixture write_v1_fixture
//! ```
//!
//! Never rewrite the v1 fixture after a format change: add a fixture for the new version.

use std::fs;
use std::path::PathBuf;

use dataflow_checkpoint::{
    Checkpoint, CheckpointId, CheckpointStorage, LocalStorage, OperatorState, PartitionState,
    SourceState, DATA_FILE, MANIFEST_FILE,
};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// The checkpoint in the fixture.
fn v1_checkpoint() -> Checkpoint {
    Checkpoint {
        id: CheckpointId(7),
        created_at_ms: 1_704_067_200_250,
        pipeline_fingerprint: "5d41402abc4b2a76b9719d911017c592".to_string(),
        sources: vec![
            SourceState {
                name: "orders".to_string(),
                partitions: vec![
                    PartitionState {
                        name: "data/orders-1.jsonl".to_string(),
                        offset: 65_536,
                        line: 812,
                        watermark: 1_704_067_195_000,
                    },
                    PartitionState {
                        name: "data/orders-2.jsonl".to_string(),
                        offset: 0,
                        line: 0,
                        watermark: i64::MIN,
                    },
                ],
            },
            SourceState {
                name: "stdin".to_string(),
                partitions: Vec::new(),
            },
        ],
        operators: vec![
            OperatorState {
                name: "revenue_per_region".to_string(),
                kind: "window".to_string(),
                key_count: 3,
                state: (0u8..=40).collect(),
            },
            OperatorState {
                name: "unique_users".to_string(),
                kind: "window".to_string(),
                key_count: 0,
                state: Vec::new(),
            },
        ],
        watermark: 1_704_067_195_000,
    }
}

/// Rewrites the fixture, only when `DATAFLOW_WRITE_FIXTURES=1`.
#[test]
fn write_v1_fixture() {
    if std::env::var_os("DATAFLOW_WRITE_FIXTURES").is_none_or(|v| v != "1") {
        return;
    }
    let dir = fixture_dir();
    let storage = LocalStorage::new(&dir, 1).unwrap();
    let checkpoint_dir = storage.checkpoint_dir(CheckpointId(7));
    if checkpoint_dir.exists() {
        fs::remove_dir_all(&checkpoint_dir).unwrap();
    }
    storage.save(&v1_checkpoint()).unwrap();
}

#[test]
fn the_v1_fixture_loads() {
    let storage = LocalStorage::new(fixture_dir(), 1).unwrap();
    let entries = storage.list().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, CheckpointId(7));
    assert_eq!(entries[0].dir.file_name().unwrap(), "00000000000000000007");

    let checkpoint = storage.load(CheckpointId(7)).unwrap();
    assert_eq!(checkpoint, v1_checkpoint());
    let (latest, refused) = storage.latest_valid().unwrap().unwrap();
    assert_eq!(latest, checkpoint);
    assert!(refused.is_empty());

    let manifest = storage.verify(CheckpointId(7)).unwrap();
    assert_eq!(manifest.format_version, 1);
    assert_eq!(manifest.codec, 1);
    assert_eq!(manifest.created_at, "2024-01-01T00:00:00.250Z");
    assert_eq!(manifest.operators[0].bytes, 41);
    assert_eq!(manifest.sources, v1_checkpoint().sources);

    let data = fs::read(entries[0].dir.join(DATA_FILE)).unwrap();
    assert_eq!(&data[..12], b"DFCKPT\0\0\x01\x00\x01\x00");
    assert_eq!(manifest.data_file_size, data.len() as u64);
    let json = fs::read_to_string(entries[0].dir.join(MANIFEST_FILE)).unwrap();
    assert!(json.contains(&manifest.payload_sha256));
}
