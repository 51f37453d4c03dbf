//! What travels between the runtime's tasks: [`Message`] from the sources to the chain,
//! [`SinkMessage`] to the sinks, [`WorkerMessage`] to the parallel workers, and the
//! [`PendingCheckpoint`] the chain hands the checkpoint writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflow_checkpoint::{PartitionState, StreamedCheckpoint};
use dataflow_event::Event;
use dataflow_operators::OperatorSnapshot;
use tokio::sync::oneshot;

use crate::Result;

/// What travels from the sources to the operator chain, in order.
#[derive(Debug)]
pub enum Message {
    /// A batch of events.
    Events(Vec<Event>),
    /// The source's watermark advanced.
    Watermark(i64),
    /// A checkpoint barrier: everything before it belongs to checkpoint `id`, and the source's
    /// partitions were where `partitions` says when it passed.
    Barrier {
        /// The checkpoint.
        id: u64,
        /// Each partition's position and watermark at the barrier.
        partitions: Vec<PartitionState>,
    },
    /// The source has ended. `fire` tells whether open windows should fire (end of a bounded
    /// input) or be kept (a stop that leaves them to a checkpoint).
    End {
        /// Fire open windows.
        fire: bool,
        /// Where its partitions ended, for the checkpoints taken after it.
        partitions: Vec<PartitionState>,
    },
}

/// What the chain (or a worker) sends a sink.
pub(super) enum SinkMessage {
    Events(Arc<Vec<Event>>),
    /// Make everything before checkpoint `id`'s barrier durable, then acknowledge.
    Barrier(u64, oneshot::Sender<Result<()>>),
    /// Checkpoint `id` is saved: publish what was prepared for it.
    Commit(u64),
    /// The watermark after the events sent before it (only to sinks that want it).
    Watermark(i64),
}

/// What drives the operators next.
#[derive(Debug)]
pub(super) enum Drive {
    Events(Vec<Event>),
    /// Events read from the source `input` (its index among the pipeline's sources), for the
    /// first operator of the chain.
    Input(usize, Vec<Event>),
    Watermark(i64),
    Tick(i64),
    Finish(bool),
}

/// What a worker is sent, in stream order.
pub(super) enum WorkerMessage {
    /// Events (of the keys it owns), a watermark, a tick or the end of input.
    Drive(Drive),
    /// A checkpoint barrier: reply with every operator's snapshot, taken after everything
    /// before it was processed and handed to the sinks.
    Snapshot(oneshot::Sender<Result<Vec<Option<OperatorSnapshot>>>>),
}

/// A checkpoint taken by the chain, saved once every sink has acknowledged its barrier.
pub(super) struct PendingCheckpoint {
    /// Its operators' states are written into the checkpoint file where they are.
    pub(super) checkpoint: StreamedCheckpoint,
    pub(super) acks: Vec<oneshot::Receiver<Result<()>>>,
    /// How long the operators paused to snapshot their state.
    pub(super) snapshot_time: Duration,
    /// When the coordinator asked for its barrier (when the chain saw the first of them, if
    /// this run did not ask for it).
    pub(super) triggered: Instant,
}
