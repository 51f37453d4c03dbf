//! Local storage: round trips, corruption of every kind, failures at each step of a save,
//! retention, the size cap and identifiers.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dataflow_checkpoint::{
    Checkpoint, CheckpointError, CheckpointId, CheckpointStorage, Corruption, FailingFs, FileKind,
    FsOp, LocalStorage, OperatorState, PartitionState, SourceState, DATA_FILE, HEADER_LEN,
    MANIFEST_FILE,
};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

fn sample(id: u64) -> Checkpoint {
    Checkpoint {
        id: CheckpointId(id),
        created_at_ms: 1_700_000_000_000 + id as i64,
        pipeline_fingerprint: "9f86d081884c7d65".to_string(),
        sources: vec![SourceState {
            name: "orders".to_string(),
            partitions: vec![
                PartitionState {
                    name: "data/orders-1.jsonl".to_string(),
                    offset: 100 * id,
                    line: 3 * id,
                    watermark: 1_699_999_990_000,
                },
                PartitionState {
                    name: "data/orders-2.jsonl".to_string(),
                    offset: 7,
                    line: 1,
                    watermark: i64::MIN,
                },
            ],
        }],
        operators: vec![
            OperatorState {
                name: "totals".to_string(),
                kind: "window".to_string(),
                key_count: id,
                state: vec![id as u8; 5],
            },
            OperatorState {
                name: "dedup".to_string(),
                kind: "count_distinct".to_string(),
                key_count: 0,
                state: Vec::new(),
            },
        ],
        watermark: 1_699_999_990_000,
    }
}

fn open(retain: usize) -> (TempDir, LocalStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path(), retain).unwrap();
    (dir, storage)
}

fn ids(storage: &LocalStorage) -> Vec<u64> {
    storage.list().unwrap().iter().map(|e| e.id.0).collect()
}

/// Every name in the checkpoint directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn data_path(storage: &LocalStorage, id: u64) -> PathBuf {
    storage.checkpoint_dir(CheckpointId(id)).join(DATA_FILE)
}

fn manifest_path(storage: &LocalStorage, id: u64) -> PathBuf {
    storage.checkpoint_dir(CheckpointId(id)).join(MANIFEST_FILE)
}

/// The reason checkpoint `id` is refused, checking the error names the file of `kind`.
fn refusal(storage: &LocalStorage, id: u64, kind: FileKind) -> Corruption {
    let error = storage.load(CheckpointId(id)).unwrap_err();
    let message = error.to_string();
    match error {
        CheckpointError::Corrupt {
            checkpoint,
            kind: found,
            file,
            reason,
        } => {
            assert_eq!(checkpoint, CheckpointId(id));
            assert_eq!(found, kind, "{message}");
            let expected_file = match kind {
                FileKind::Data => data_path(storage, id),
                FileKind::Manifest => manifest_path(storage, id),
            };
            assert_eq!(file, expected_file);
            assert!(
                message.starts_with(&format!("checkpoint {id}: {kind} ")),
                "{message}"
            );
            assert!(message.contains(&file.display().to_string()), "{message}");
            // `verify` refuses it the same way.
            assert!(storage.verify(CheckpointId(id)).is_err());
            reason
        }
        other => panic!("expected a corrupt checkpoint, got {other:?}"),
    }
}

/// Checks that `latest_valid` falls back to checkpoint `valid`, refusing exactly `refused`.
fn assert_falls_back(storage: &LocalStorage, valid: u64, refused: &[u64]) {
    let (checkpoint, refusals) = storage.latest_valid().unwrap().expect("a valid checkpoint");
    assert_eq!(checkpoint, sample(valid));
    let refused_ids: Vec<u64> = refusals.iter().map(|(id, _)| id.0).collect();
    assert_eq!(refused_ids, refused);
    for (id, error) in &refusals {
        assert!(
            error.to_string().starts_with(&format!("checkpoint {id}: ")),
            "{error}"
        );
    }
}

#[test]
fn save_then_load_round_trips() {
    let (dir, storage) = open(3);
    let cp = sample(12);
    let saved = storage.save(&cp).unwrap();

    assert_eq!(storage.load(CheckpointId(12)).unwrap(), cp);
    let entries = storage.list().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, CheckpointId(12));
    assert_eq!(entries[0].dir, dir.path().join("00000000000000000012"));
    assert_eq!(names(dir.path()), ["00000000000000000012"]);
    assert_eq!(names(&entries[0].dir), [DATA_FILE, MANIFEST_FILE]);

    let data = fs::read(data_path(&storage, 12)).unwrap();
    assert_eq!(&data[..8], b"DFCKPT\0\0");
    assert_eq!(u16::from_le_bytes([data[8], data[9]]), 1);
    assert_eq!(u16::from_le_bytes([data[10], data[11]]), 1);
    let payload_len = u64::from_le_bytes(data[12..20].try_into().unwrap());
    assert_eq!(payload_len as usize, data.len() - HEADER_LEN);
    let sha: [u8; 32] = Sha256::digest(&data[HEADER_LEN..]).into();
    assert_eq!(&data[20..52], &sha);

    let manifest = storage.manifest(CheckpointId(12)).unwrap();
    assert_eq!(manifest, saved);
    assert_eq!(storage.verify(CheckpointId(12)).unwrap(), saved);
    assert_eq!(manifest.id, CheckpointId(12));
    assert_eq!(manifest.created_at_ms, 1_700_000_000_012);
    assert_eq!(manifest.created_at, "2023-11-14T22:13:20.012Z");
    assert_eq!(manifest.pipeline_fingerprint, "9f86d081884c7d65");
    assert_eq!(manifest.watermark, 1_699_999_990_000);
    assert_eq!(manifest.sources, cp.sources);
    let operators: Vec<(&str, &str, u64, u64)> = manifest
        .operators
        .iter()
        .map(|op| (op.name.as_str(), op.kind.as_str(), op.key_count, op.bytes))
        .collect();
    assert_eq!(
        operators,
        [
            ("totals", "window", 12, 5),
            ("dedup", "count_distinct", 0, 0)
        ]
    );
    assert_eq!(manifest.format_version, 1);
    assert_eq!(manifest.codec, 1);
    assert_eq!(manifest.data_file_size, data.len() as u64);
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(manifest.payload_sha256, hex);

    // The manifest is readable JSON with these names.
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(manifest_path(&storage, 12)).unwrap()).unwrap();
    assert_eq!(json["id"], 12);
    assert_eq!(json["payload_sha256"], hex.as_str());
    assert_eq!(json["sources"][0]["partitions"][0]["offset"], 1200);
    assert_eq!(json["operators"][0]["bytes"], 5);

    // A reopened storage sees the same.
    let reopened = LocalStorage::new(dir.path(), 3).unwrap();
    assert_eq!(reopened.load(CheckpointId(12)).unwrap(), cp);
}

#[test]
fn checkpoints_are_never_overwritten() {
    let (_dir, storage) = open(3);
    storage.save(&sample(1)).unwrap();
    let mut other = sample(1);
    other.watermark = 0;
    assert!(matches!(
        storage.save(&other),
        Err(CheckpointError::AlreadyExists { .. })
    ));
    assert_eq!(storage.load(CheckpointId(1)).unwrap(), sample(1));
}

#[test]
fn missing_checkpoints_are_not_found() {
    let (_dir, storage) = open(3);
    for error in [
        storage.load(CheckpointId(4)).unwrap_err(),
        storage.verify(CheckpointId(4)).unwrap_err(),
        storage.manifest(CheckpointId(4)).unwrap_err(),
        storage.delete(CheckpointId(4)).unwrap_err(),
    ] {
        assert!(
            matches!(
                error,
                CheckpointError::NotFound {
                    checkpoint: CheckpointId(4),
                    ..
                }
            ),
            "{error}"
        );
    }
    assert!(storage.latest_valid().unwrap().is_none());
}

#[test]
fn delete_removes_a_checkpoint() {
    let (dir, storage) = open(3);
    storage.save(&sample(1)).unwrap();
    storage.save(&sample(2)).unwrap();
    storage.delete(CheckpointId(2)).unwrap();
    assert_eq!(ids(&storage), [1]);
    assert_eq!(names(dir.path()), ["00000000000000000001"]);
    assert_falls_back(&storage, 1, &[]);
}

#[test]
fn a_zero_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        LocalStorage::new(dir.path(), 0),
        Err(CheckpointError::InvalidRetention(0))
    ));
}

/// Saves checkpoints 1 and 2 and returns the pristine data file of 2.
fn two_saved() -> (TempDir, LocalStorage, Vec<u8>) {
    let (dir, storage) = open(5);
    storage.save(&sample(1)).unwrap();
    storage.save(&sample(2)).unwrap();
    let data = fs::read(data_path(&storage, 2)).unwrap();
    (dir, storage, data)
}

#[test]
fn a_byte_flipped_anywhere_in_the_data_file_is_refused() {
    let (_dir, storage, pristine) = two_saved();
    let path = data_path(&storage, 2);
    for position in 0..pristine.len() {
        for mask in [0x01, 0xff] {
            let mut bad = pristine.clone();
            bad[position] ^= mask;
            fs::write(&path, &bad).unwrap();
            let reason = refusal(&storage, 2, FileKind::Data);
            let expected = match position {
                0..8 => matches!(reason, Corruption::BadMagic { .. }),
                8..10 => matches!(reason, Corruption::UnsupportedVersion { .. }),
                10..12 => matches!(reason, Corruption::UnknownCodec { .. }),
                12..20 => matches!(
                    reason,
                    Corruption::LengthMismatch { .. } | Corruption::PayloadTooLarge { .. }
                ),
                _ => matches!(reason, Corruption::ChecksumMismatch { .. }),
            };
            assert!(expected, "byte {position} ^ {mask:#x}: {reason}");
            assert_falls_back(&storage, 1, &[2]);
        }
    }
    fs::write(&path, &pristine).unwrap();
    assert_falls_back(&storage, 2, &[]);
}

#[test]
fn checksum_mismatches_are_reported_with_both_sums() {
    let (_dir, storage, mut data) = two_saved();
    let last = data.len() - 1;
    data[last] ^= 0x40;
    fs::write(data_path(&storage, 2), &data).unwrap();
    let message = storage.load(CheckpointId(2)).unwrap_err().to_string();
    let expected_prefix = format!(
        "checkpoint 2: data file {}: checksum mismatch: expected ",
        data_path(&storage, 2).display()
    );
    assert!(message.starts_with(&expected_prefix), "{message}");
    assert!(message.contains(", found "), "{message}");
}

#[test]
fn a_data_file_truncated_at_any_length_is_refused() {
    let (_dir, storage, pristine) = two_saved();
    for len in 0..pristine.len() {
        fs::write(data_path(&storage, 2), &pristine[..len]).unwrap();
        let reason = refusal(&storage, 2, FileKind::Data);
        if len < HEADER_LEN {
            assert!(
                matches!(reason, Corruption::TruncatedHeader { len: l, .. } if l == len as u64),
                "{len}: {reason}"
            );
        } else {
            assert!(
                matches!(reason, Corruption::LengthMismatch { .. }),
                "{len}: {reason}"
            );
        }
        assert_falls_back(&storage, 1, &[2]);
    }
}

#[test]
fn a_byte_appended_to_the_data_file_is_refused() {
    let (_dir, storage, mut data) = two_saved();
    data.push(0);
    fs::write(data_path(&storage, 2), &data).unwrap();
    let payload = (data.len() - HEADER_LEN) as u64;
    assert_eq!(
        refusal(&storage, 2, FileKind::Data),
        Corruption::LengthMismatch {
            header: payload - 1,
            actual: payload,
        }
    );
    assert_falls_back(&storage, 1, &[2]);
}

#[test]
fn another_checkpoints_manifest_is_refused() {
    let (_dir, storage, _) = two_saved();
    fs::copy(manifest_path(&storage, 1), manifest_path(&storage, 2)).unwrap();
    assert_eq!(
        refusal(&storage, 2, FileKind::Manifest),
        Corruption::IdMismatch {
            expected: CheckpointId(2),
            found: CheckpointId(1),
        }
    );
    assert!(storage.manifest(CheckpointId(2)).is_err());
    assert_falls_back(&storage, 1, &[2]);
}

#[test]
fn another_checkpoints_data_file_is_refused() {
    let (_dir, storage, _) = two_saved();
    fs::copy(data_path(&storage, 1), data_path(&storage, 2)).unwrap();
    assert_eq!(
        refusal(&storage, 2, FileKind::Data),
        Corruption::IdMismatch {
            expected: CheckpointId(2),
            found: CheckpointId(1),
        }
    );
    assert_falls_back(&storage, 1, &[2]);
}

/// Rewrites checkpoint 2's manifest with `edit` applied to its JSON.
fn edit_manifest(storage: &LocalStorage, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = manifest_path(storage, 2);
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut json);
    fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}

#[test]
fn an_edited_manifest_sha256_is_refused() {
    let (_dir, storage, _) = two_saved();
    edit_manifest(&storage, |json| {
        json["payload_sha256"] = "00".repeat(32).into();
    });
    let reason = refusal(&storage, 2, FileKind::Manifest);
    assert!(
        matches!(
            reason,
            Corruption::ManifestMismatch {
                field: "payload_sha256",
                ..
            }
        ),
        "{reason}"
    );
    assert!(reason.to_string().contains(&"00".repeat(32)), "{reason}");
    assert_falls_back(&storage, 1, &[2]);
}

#[test]
fn any_edited_manifest_field_is_refused() {
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit); 8] = [
        ("format_version", |j| j["format_version"] = 2.into()),
        ("data_file_size", |j| j["data_file_size"] = 1.into()),
        ("created_at_ms", |j| j["created_at_ms"] = 0.into()),
        ("created_at", |j| j["created_at"] = "yesterday".into()),
        ("pipeline_fingerprint", |j| {
            j["pipeline_fingerprint"] = "beef".into()
        }),
        ("watermark", |j| j["watermark"] = 5.into()),
        ("sources", |j| {
            j["sources"][0]["partitions"][1]["offset"] = 8.into()
        }),
        ("operators", |j| j["operators"][1]["bytes"] = 3.into()),
    ];
    for (field, edit) in edits {
        let (_dir, storage, _) = two_saved();
        edit_manifest(&storage, edit);
        let reason = refusal(&storage, 2, FileKind::Manifest);
        assert!(
            matches!(reason, Corruption::ManifestMismatch { field: f, .. } if f == field),
            "{field}: {reason}"
        );
        assert_falls_back(&storage, 1, &[2]);
    }
}

#[test]
fn unreadable_manifests_are_refused() {
    let (_dir, storage, _) = two_saved();
    let path = manifest_path(&storage, 2);
    let pristine = fs::read(&path).unwrap();
    for bad in [&b""[..], b"{", b"[]", b"{}", b"\xff\xfe"] {
        fs::write(&path, bad).unwrap();
        let reason = refusal(&storage, 2, FileKind::Manifest);
        assert!(matches!(reason, Corruption::BadManifest(_)), "{reason}");
    }
    fs::write(&path, &pristine).unwrap();
    edit_manifest(&storage, |json| json["extra"] = 1.into());
    assert!(matches!(
        refusal(&storage, 2, FileKind::Manifest),
        Corruption::BadManifest(_)
    ));
    assert_falls_back(&storage, 1, &[2]);
}

#[test]
fn missing_files_are_refused_with_their_path() {
    let (_dir, storage, _) = two_saved();
    fs::remove_file(data_path(&storage, 2)).unwrap();
    let message = storage.load(CheckpointId(2)).unwrap_err().to_string();
    assert!(message.starts_with("checkpoint 2: read "), "{message}");
    assert!(message.contains(DATA_FILE), "{message}");
    assert_falls_back(&storage, 1, &[2]);

    fs::remove_file(manifest_path(&storage, 2)).unwrap();
    let message = storage.load(CheckpointId(2)).unwrap_err().to_string();
    assert!(message.contains(MANIFEST_FILE), "{message}");
}

#[test]
fn when_every_checkpoint_is_refused_the_reasons_are_the_error() {
    let (_dir, storage, _) = two_saved();
    for id in [1, 2] {
        fs::write(data_path(&storage, id), b"junk").unwrap();
    }
    match storage.latest_valid() {
        Err(CheckpointError::NoValidCheckpoint { refused }) => {
            let ids: Vec<u64> = refused.iter().map(|(id, _)| id.0).collect();
            assert_eq!(ids, [2, 1]);
            assert!(matches!(
                refused[0].1.corruption(),
                Some(Corruption::TruncatedHeader { len: 4, .. })
            ));
        }
        other => panic!("expected every checkpoint refused, got {other:?}"),
    }
}

/// The steps of a save that can fail, as (operation, which call, description).
const FAILURES: [(FsOp, usize, &str); 8] = [
    (FsOp::CreateDir, 0, "creating the temporary directory"),
    (FsOp::WriteFile, 0, "writing data.bin"),
    (FsOp::SyncFile, 0, "fsyncing data.bin"),
    (FsOp::WriteFile, 1, "writing manifest.json"),
    (FsOp::SyncFile, 1, "fsyncing manifest.json"),
    (FsOp::SyncDir, 0, "fsyncing the temporary directory"),
    (FsOp::Rename, 0, "renaming to the final name"),
    (
        FsOp::SyncDir,
        1,
        "fsyncing the parent directory, after the rename",
    ),
];

#[test]
fn a_failure_at_any_step_of_a_save_is_returned_and_leaves_nothing() {
    for (op, nth, step) in FAILURES {
        let (dir, storage) = open(2);
        storage.save(&sample(1)).unwrap();
        storage.save(&sample(2)).unwrap();
        let failing_fs = Arc::new(FailingFs::new(op, nth));
        let failing = LocalStorage::with_fs(dir.path(), 2, failing_fs.clone()).unwrap();

        let error = failing.save(&sample(3)).unwrap_err();
        assert!(failing_fs.has_failed(), "{step}: no failure injected");
        let message = error.to_string();
        assert!(
            matches!(
                error,
                CheckpointError::Io {
                    checkpoint: Some(CheckpointId(3)),
                    ..
                }
            ),
            "{step}: {error:?}"
        );
        assert!(message.contains("injected failure"), "{step}: {message}");
        assert!(message.starts_with("checkpoint 3: "), "{step}: {message}");

        // Nothing complete-looking, nothing temporary left behind; the last checkpoint stands.
        assert_eq!(ids(&failing), [1, 2], "{step}");
        assert_eq!(
            names(dir.path()),
            ["00000000000000000001", "00000000000000000002"],
            "{step}"
        );
        assert_falls_back(&failing, 2, &[]);

        // The same storage saves the next time, and retention then applies.
        failing.save(&sample(3)).unwrap();
        assert_eq!(failing.load(CheckpointId(3)).unwrap(), sample(3), "{step}");
        assert_eq!(ids(&failing), [2, 3], "{step}");
        assert_falls_back(&storage, 3, &[]);
    }
}

#[test]
fn the_step_names_are_in_the_error() {
    let expected = [
        (FsOp::CreateDir, 0, "create directory "),
        (FsOp::SyncFile, 0, "write and fsync "),
        (FsOp::SyncDir, 0, "fsync directory "),
        (FsOp::Rename, 0, "rename "),
        (FsOp::SyncDir, 1, "fsync directory "),
    ];
    for (op, nth, action) in expected {
        let dir = tempfile::tempdir().unwrap();
        let storage =
            LocalStorage::with_fs(dir.path(), 2, Arc::new(FailingFs::new(op, nth))).unwrap();
        let message = storage.save(&sample(1)).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("checkpoint 1: {action}")),
            "{op:?} {nth}: {message}"
        );
    }
}

#[test]
fn an_interrupted_save_is_cleaned_up_when_the_storage_is_opened() {
    let (dir, storage) = open(2);
    storage.save(&sample(1)).unwrap();
    // As a crash before the rename leaves it: a complete-looking temporary directory.
    let tmp = dir.path().join(".tmp-00000000000000000002");
    fs::create_dir(&tmp).unwrap();
    fs::copy(data_path(&storage, 1), tmp.join(DATA_FILE)).unwrap();
    let deleting = dir.path().join(".tmp-delete-00000000000000000000");
    fs::create_dir(&deleting).unwrap();
    assert_eq!(ids(&storage), [1]);

    let reopened = LocalStorage::new(dir.path(), 2).unwrap();
    assert_eq!(names(dir.path()), ["00000000000000000001"]);
    assert_falls_back(&reopened, 1, &[]);
}

#[test]
fn only_canonical_directory_names_are_checkpoints() {
    let (dir, storage) = open(2);
    storage.save(&sample(1)).unwrap();
    for name in [
        "2",
        "000000000000000000003",
        "0000000000000000000a",
        "99999999999999999999",
        "lost+found",
    ] {
        fs::create_dir(dir.path().join(name)).unwrap();
    }
    // A file with a checkpoint's name is not a checkpoint directory.
    fs::write(dir.path().join("00000000000000000004"), b"").unwrap();
    assert_eq!(ids(&storage), [1]);
    assert_falls_back(&storage, 1, &[]);
}

#[test]
fn retention_keeps_the_newest() {
    let (dir, storage) = open(3);
    for id in 1..=5 {
        storage.save(&sample(id)).unwrap();
    }
    assert_eq!(ids(&storage), [3, 4, 5]);
    assert_eq!(
        names(dir.path()),
        [
            "00000000000000000003",
            "00000000000000000004",
            "00000000000000000005"
        ]
    );
}

#[test]
fn invalid_checkpoints_do_not_count_toward_retention() {
    let (_dir, storage) = open(2);
    storage.save(&sample(1)).unwrap();
    storage.save(&sample(2)).unwrap();
    storage.save(&sample(3)).unwrap();
    assert_eq!(ids(&storage), [2, 3]);
    // 3 goes bad; a save of 4 fails.
    fs::write(data_path(&storage, 3), b"DFCKPT\0\0").unwrap();
    let failing =
        LocalStorage::with_fs(storage.dir(), 2, Arc::new(FailingFs::new(FsOp::SyncDir, 1)))
            .unwrap();
    assert!(failing.save(&sample(4)).is_err());
    assert_eq!(ids(&storage), [2, 3]);
    assert_falls_back(&storage, 2, &[3]);

    // 5 is saved: 5 and 2 are the two newest valid ones; the invalid 3 is left in place.
    storage.save(&sample(5)).unwrap();
    assert_eq!(ids(&storage), [2, 3, 5]);
    assert_falls_back(&storage, 5, &[]);
    storage.save(&sample(6)).unwrap();
    assert_eq!(ids(&storage), [3, 5, 6]);
}

#[test]
fn retention_of_one_never_deletes_the_last_valid_checkpoint_for_an_invalid_newer_one() {
    let (_dir, storage) = open(1);
    storage.save(&sample(1)).unwrap();
    storage.save(&sample(2)).unwrap();
    assert_eq!(ids(&storage), [2]);
    let mut data = fs::read(data_path(&storage, 2)).unwrap();
    data[HEADER_LEN] ^= 1;
    fs::write(data_path(&storage, 2), &data).unwrap();
    // Invalid and the only one: refused, with its reason.
    assert!(matches!(
        storage.latest_valid(),
        Err(CheckpointError::NoValidCheckpoint { .. })
    ));
    storage.save(&sample(3)).unwrap();
    assert_eq!(ids(&storage), [2, 3]);
    storage.save(&sample(4)).unwrap();
    assert_eq!(ids(&storage), [2, 4]);
    assert_falls_back(&storage, 4, &[]);
}

#[test]
fn a_length_field_over_the_cap_is_refused_before_reading() {
    let (_dir, storage, mut data) = two_saved();
    data[12..20].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    fs::write(data_path(&storage, 2), &data).unwrap();
    assert_eq!(
        refusal(&storage, 2, FileKind::Data),
        Corruption::PayloadTooLarge {
            len: u64::MAX / 2,
            cap: dataflow_checkpoint::DEFAULT_MAX_PAYLOAD,
        }
    );
    assert_falls_back(&storage, 1, &[2]);
}

#[test]
fn a_length_field_is_checked_against_the_file_before_allocating() {
    // Without a cap, a length of 2^62 would abort the test if it were allocated.
    let (_dir, storage, mut data) = two_saved();
    let storage = storage.with_max_payload(u64::MAX);
    data[12..20].copy_from_slice(&(1u64 << 62).to_le_bytes());
    fs::write(data_path(&storage, 2), &data).unwrap();
    assert!(matches!(
        refusal(&storage, 2, FileKind::Data),
        Corruption::LengthMismatch {
            header: 0x4000_0000_0000_0000,
            ..
        }
    ));
}

#[test]
fn the_cap_applies_to_saves_and_loads() {
    let (dir, storage, data) = two_saved();
    let payload = (data.len() - HEADER_LEN) as u64;
    let small = storage.with_max_payload(payload - 1);
    assert_eq!(
        refusal(&small, 2, FileKind::Data),
        Corruption::PayloadTooLarge {
            len: payload,
            cap: payload - 1,
        }
    );
    let error = small.save(&sample(3)).unwrap_err();
    assert!(matches!(error, CheckpointError::TooLarge { .. }), "{error}");
    assert_eq!(
        names(dir.path()),
        ["00000000000000000001", "00000000000000000002"]
    );
}

#[test]
fn ids_cannot_name_paths() {
    for bad in [
        "../x",
        "..",
        "%2e%2e",
        "",
        "123456789012345678901",
        "18446744073709551616",
        "1/../2",
        "/etc",
        "-0",
    ] {
        let error = bad.parse::<CheckpointId>().unwrap_err();
        assert!(matches!(error, CheckpointError::InvalidId(_)), "{bad}");
        assert!(
            error.to_string().starts_with("invalid checkpoint id"),
            "{bad}"
        );
    }
    let (_dir, storage) = open(1);
    let max = CheckpointId(u64::MAX);
    assert_eq!(
        storage.checkpoint_dir(max),
        storage.dir().join("18446744073709551615")
    );
    assert_eq!(
        storage.checkpoint_dir(CheckpointId(0)),
        storage.dir().join("00000000000000000000")
    );
}

#[test]
fn a_timed_save_records_its_duration_in_the_manifest_only() {
    let (_dir, storage) = open(5);
    let triggered = std::time::Instant::now() - std::time::Duration::from_millis(42);
    let before = std::time::Instant::now();
    let manifest = storage.save_timed(&sample(1), Some(triggered)).unwrap();
    let at_most = 42 + before.elapsed().as_millis() as u64;
    let took = manifest.duration_ms.expect("a duration");
    assert!((42..=at_most).contains(&took), "{took} ms");
    // It is read back, and verifying does not compare it with the data file.
    assert_eq!(
        storage.verify(CheckpointId(1)).unwrap().duration_ms,
        Some(took)
    );
    assert_eq!(
        storage.manifest(CheckpointId(1)).unwrap().duration_ms,
        Some(took)
    );
    assert_eq!(storage.load(CheckpointId(1)).unwrap(), sample(1));
    let json = fs::read_to_string(manifest_path(&storage, 1)).unwrap();
    assert!(json.contains(&format!("\"duration_ms\": {took}")), "{json}");

    // An untimed save writes no duration, and such a manifest (as written before durations
    // existed) still verifies.
    let manifest = storage.save(&sample(2)).unwrap();
    assert_eq!(manifest.duration_ms, None);
    let json = fs::read_to_string(manifest_path(&storage, 2)).unwrap();
    assert!(!json.contains("duration_ms"), "{json}");
    assert_eq!(storage.verify(CheckpointId(2)).unwrap().duration_ms, None);
}
