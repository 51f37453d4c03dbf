//! What a checkpoint holds. The operators' state is opaque bytes, so this crate needs to know
//! nothing of the pipeline.

use serde::{Deserialize, Serialize};

use crate::CheckpointId;

/// A consistent snapshot of a running pipeline: where each source is, every operator's state,
/// the watermarks, and a fingerprint of the pipeline's shape (so a checkpoint is never restored
/// into a different pipeline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The checkpoint's id; ids grow with each checkpoint of a pipeline.
    pub id: CheckpointId,
    /// When the checkpoint was taken, epoch milliseconds.
    pub created_at_ms: i64,
    /// A fingerprint of the pipeline's shape, hex, computed by the pipeline.
    pub pipeline_fingerprint: String,
    /// The position of every source.
    pub sources: Vec<SourceState>,
    /// The state of every stateful operator.
    pub operators: Vec<OperatorState>,
    /// The pipeline's combined watermark, epoch milliseconds.
    pub watermark: i64,
}

/// The position of one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// The source's name in the pipeline.
    pub name: String,
    /// The position in each of its partitions (files, for a file source).
    pub partitions: Vec<PartitionState>,
}

/// The position in one partition of a source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The partition's name, e.g. a file path.
    pub name: String,
    /// The byte offset of the next record to read.
    pub offset: u64,
    /// The line number of the next record to read.
    pub line: u64,
    /// The partition's watermark, epoch milliseconds.
    pub watermark: i64,
}

/// The state of one operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    /// The operator's name in the pipeline.
    pub name: String,
    /// The operator's kind, e.g. `window`.
    pub kind: String,
    /// How many keys the state holds (shown in manifests; not interpreted).
    pub key_count: u64,
    /// The state, opaque bytes produced and read by the operator.
    pub state: Vec<u8>,
}
