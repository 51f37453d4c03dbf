//! The checkpoint decoder, through `LocalStorage::load` on a directory of its own: any data
//! file, manifest or operator state must be refused by name, never panic, and never make it
//! allocate beyond a small multiple of the bytes it holds (the script runs this target with
//! `-malloc_limit_mb`).
//!
//! The first byte picks what the rest is:
//! - 0: the whole data file (`data.bin`), next to the seed's manifest;
//! - 1: a payload, behind a header with the right length and sha256, so that bincode decodes
//!   it (random bytes almost never pass the checksum);
//! - 2: the manifest (`manifest.json`), next to the seed's data file;
//! - 3: an operator's state, decoded as the API and `admin` show it (kind `window`).
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use dataflow_checkpoint::{
    CheckpointId, CheckpointStorage, LocalStorage, CODEC_BINCODE_STANDARD, DATA_FILE,
    FORMAT_VERSION, MAGIC, MANIFEST_FILE,
};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

/// The checkpoint crate's v1 fixture, written by its own API.
const SEED_DATA: &[u8] =
    include_bytes!("../../crates/checkpoint/tests/fixtures/v1/00000000000000000007/data.bin");
const SEED_MANIFEST: &[u8] =
    include_bytes!("../../crates/checkpoint/tests/fixtures/v1/00000000000000000007/manifest.json");
const ID: CheckpointId = CheckpointId(7);

struct Dir {
    _temp: tempfile::TempDir,
    checkpoint: PathBuf,
    storage: LocalStorage,
}

static DIR: LazyLock<Dir> = LazyLock::new(|| {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let checkpoint = temp.path().join("00000000000000000007");
    std::fs::create_dir(&checkpoint).expect("the checkpoint directory");
    let storage = LocalStorage::open_for_reading(temp.path()).expect("storage");
    Dir {
        _temp: temp,
        checkpoint,
        storage,
    }
});

/// A data file holding `payload` behind a valid header.
fn data_file(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(52 + payload.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&CODEC_BINCODE_STANDARD.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(payload));
    bytes.extend_from_slice(payload);
    bytes
}

fn load(data: &[u8], manifest: &[u8]) {
    let dir = &*DIR;
    std::fs::write(dir.checkpoint.join(DATA_FILE), data).expect("write data.bin");
    std::fs::write(dir.checkpoint.join(MANIFEST_FILE), manifest).expect("write manifest.json");
    if let Err(error) = dir.storage.load(ID) {
        assert!(!error.to_string().is_empty(), "an error without a message");
    }
    let _ = dir.storage.verify(ID);
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    match mode % 4 {
        0 => load(rest, SEED_MANIFEST),
        1 => load(&data_file(rest), SEED_MANIFEST),
        2 => load(SEED_DATA, rest),
        _ => {
            let _ = dataflow_operators::kind::decode_state("window", rest);
        }
    }
});
