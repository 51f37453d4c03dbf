//! Checkpoints of dataflow pipelines: what they hold, their file format, and where they are
//! kept.
//!
//! A [`Checkpoint`] holds the source positions, every operator's state (opaque bytes), the
//! watermarks and a fingerprint of the pipeline's shape. [`LocalStorage`] keeps each one in its
//! own directory, `<dir>/<id as 20 digits>/`, holding:
//!
//! - `data.bin`: a 52-byte header — magic `b"DFCKPT\0\0"`, format version (u16 LE, 1), codec id
//!   (u16 LE, 1 = bincode 2 with its standard config), payload length (u64 LE), sha256 of the
//!   payload — then the payload;
//! - `manifest.json`: a readable [`Manifest`] that must agree with the data file.
//!
//! Saves are atomic (temporary directory, fsyncs, rename, parent fsync) and keep the newest
//! valid checkpoints. Loads check everything before decoding anything: a corrupt, truncated,
//! oversized or mismatched file is a [`CheckpointError`] naming the checkpoint, the file and the
//! reason, never a panic. [`CheckpointStorage::latest_valid`] finds the checkpoint to restore.
//!
//! This crate is the only one that knows the file format and sha2, and depends on no other
//! crate of the workspace. Identifiers are validated here once, so that nothing built from one
//! can escape the checkpoint directory.
//!
//! ```
//! use dataflow_checkpoint::{
//!     Checkpoint, CheckpointId, CheckpointStorage, LocalStorage, OperatorState, PartitionState,
//!     SourceState,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let storage = LocalStorage::new(dir.path(), 3)?;
//!
//! let checkpoint = Checkpoint {
//!     id: "42".parse()?,
//!     created_at_ms: 1_700_000_000_000,
//!     pipeline_fingerprint: "9f86d081".to_string(),
//!     sources: vec![SourceState {
//!         name: "orders".to_string(),
//!         partitions: vec![PartitionState {
//!             name: "data/orders.jsonl".to_string(),
//!             offset: 8192,
//!             line: 120,
//!             watermark: 1_699_999_990_000,
//!         }],
//!     }],
//!     operators: vec![OperatorState {
//!         name: "totals".to_string(),
//!         kind: "window".to_string(),
//!         key_count: 2,
//!         state: vec![1, 2, 3],
//!     }],
//!     watermark: 1_699_999_990_000,
//! };
//! let manifest = storage.save(&checkpoint)?;
//! assert_eq!(manifest.operators[0].bytes, 3);
//! assert!(dir.path().join("00000000000000000042/data.bin").is_file());
//!
//! let (restored, refused) = storage.latest_valid()?.expect("one checkpoint");
//! assert_eq!(restored, checkpoint);
//! assert!(refused.is_empty());
//!
//! // Ids are decimal numbers only, so none can name a path outside the directory.
//! assert!("../x".parse::<CheckpointId>().is_err());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod arb;
mod codec;
mod error;
mod fs;
mod manifest;
mod model;
mod storage;
mod stream;

pub use codec::{
    decode_state, decode_state_prefix, encode_state, fingerprint, CODEC_BINCODE_STANDARD,
    DEFAULT_MAX_PAYLOAD, FORMAT_VERSION, HEADER_LEN, MAGIC,
};
pub use error::{CheckpointError, Corruption, FileKind, Result};
pub use fs::{FailingFs, FileSystem, FsOp, StdFs};
pub use manifest::{
    Manifest, ManifestDiff, OperatorDiff, OperatorSummary, PartitionDiff, MAX_MANIFEST_LEN,
};
pub use model::{Checkpoint, OperatorState, PartitionState, SourceState};
pub use storage::{
    CheckpointEntry, CheckpointStorage, LocalStorage, Pin, Retention, DATA_FILE, EPOCH_FILE,
    MANIFEST_FILE, TMP_PREFIX,
};
pub use stream::{StateWriter, StreamedCheckpoint, StreamedOperator};

/// A checkpoint's id: a number that grows with each checkpoint of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckpointId(pub u64);

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for CheckpointId {
    type Err = CheckpointError;

    /// Only ASCII digits are accepted, so an id never holds a path separator or `..`.
    fn from_str(text: &str) -> Result<Self> {
        if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CheckpointError::InvalidId(text.chars().take(64).collect()));
        }
        text.parse()
            .map(CheckpointId)
            .map_err(|_| CheckpointError::InvalidId(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_decimal_numbers_only() {
        assert_eq!("7".parse::<CheckpointId>().unwrap(), CheckpointId(7));
        assert_eq!(
            "18446744073709551615".parse::<CheckpointId>().unwrap(),
            CheckpointId(u64::MAX)
        );
        for bad in [
            "",
            "-1",
            "1.0",
            "../1",
            "%2e%2e",
            "1/2",
            "99999999999999999999999",
            "18446744073709551616",
            "000000000000000000001",
            "..",
            ".",
            "/1",
            "1\\2",
            " 1",
            "1 ",
            "+1",
            "1\0",
            "\u{0661}",
            "%31",
        ] {
            assert!(bad.parse::<CheckpointId>().is_err(), "{bad}");
        }
    }
}
