//! Arbitrary checkpoints for the crate's property tests.

use proptest::prelude::*;

use crate::{Checkpoint, CheckpointId, OperatorState, PartitionState, SourceState};

/// Checkpoints with ids from `ids`, fewer than `operators` operator states and states shorter
/// than `state_len` bytes.
pub(crate) fn checkpoint(
    ids: impl Strategy<Value = u64>,
    state_len: usize,
    operators: usize,
) -> impl Strategy<Value = Checkpoint> {
    let partition = ("[a-z/.]{0,12}", any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
        |(name, offset, line, watermark)| PartitionState {
            name,
            offset,
            line,
            watermark,
        },
    );
    let source = ("[a-z]{0,8}", prop::collection::vec(partition, 0..3))
        .prop_map(|(name, partitions)| SourceState { name, partitions });
    let operator = (
        "\\PC{0,8}",
        "[a-z]{0,8}",
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..state_len),
    )
        .prop_map(|(name, kind, key_count, state)| OperatorState {
            name,
            kind,
            key_count,
            state,
        });
    (
        ids,
        any::<i64>(),
        "[0-9a-f]{0,64}",
        prop::collection::vec(source, 0..3),
        prop::collection::vec(operator, 0..operators),
        any::<i64>(),
    )
        .prop_map(
            |(id, created_at_ms, pipeline_fingerprint, sources, operators, watermark)| Checkpoint {
                id: CheckpointId(id),
                created_at_ms,
                pipeline_fingerprint,
                sources,
                operators,
                watermark,
            },
        )
}
