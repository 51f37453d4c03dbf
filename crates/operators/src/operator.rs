//! The operator trait and what operators emit besides events.

use std::sync::Arc;

use dataflow_event::{Event, Layout};

pub use dataflow_event::side::{SideData, SideKind, SideRecord};

use crate::kind::OperatorKind;
use crate::OperatorError;

/// What a step does to the stream. Operators are driven by one task, batch by batch; control
/// (watermarks, end of input) arrives through the other methods in stream order.
///
/// This is the whole contract: a filter implements `process` and `kind` only.
pub trait Operator: Send {
    /// The static facts of this operator's kind (stateful or not, how its input must be
    /// partitioned, how its snapshot is read): what the runtime and the API ask instead of
    /// matching kind names.
    fn kind(&self) -> &'static OperatorKind;

    /// Opens what the operator keeps outside memory (its state store), before anything else is
    /// called: before [`Operator::restore`] on a start from a checkpoint. `instance` tells
    /// parallel instances of one operator apart (0 without parallel workers).
    fn open(&mut self, _instance: usize) -> crate::Result<()> {
        Ok(())
    }

    /// Processes a batch of events, appending what it emits to `out`.
    fn process(&mut self, batch: Vec<Event>, out: &mut Output);

    /// Processes a batch that came from the source `input` (its index among the pipeline's
    /// sources): the first operator of a chain is driven this way, the others with
    /// [`Operator::process`]. Only an operator that tells sources apart (a join's `branch`)
    /// needs more than the default, which forgets where the batch came from.
    fn process_input(&mut self, _input: usize, batch: Vec<Event>, out: &mut Output) {
        self.process(batch, out);
    }

    /// The watermark has advanced to `watermark` (no more events before it are expected).
    /// Returns the watermark to forward downstream.
    fn on_watermark(&mut self, watermark: i64, _out: &mut Output) -> i64 {
        watermark
    }

    /// Processing time has advanced to `now`: operators on processing time fire here.
    fn on_tick(&mut self, _now: i64, _out: &mut Output) {}

    /// The input has ended. With `fire` set, stateful operators emit everything they hold.
    fn finish(&mut self, _fire: bool, _out: &mut Output) {}

    /// Whether the last control call ([`Operator::on_watermark`], [`Operator::on_tick`] or
    /// [`Operator::finish`]) stopped after one bounded batch of results with more left to emit.
    /// The runtime then hands on what was emitted, waiting for room downstream, and calls the
    /// same method again with the same argument until this is `false`, before anything else
    /// reaches the operator (the operators after it see the control once, after all of it).
    /// So an operator that fires much at once emits it under backpressure in batches, instead
    /// of gathering it whole.
    fn pending(&self) -> bool {
        false
    }

    /// The operator's state for a checkpoint, taken when a barrier has arrived on all its
    /// inputs. Stateless operators have none.
    fn snapshot(&self) -> crate::Result<Option<OperatorSnapshot>> {
        Ok(None)
    }

    /// [`Operator::snapshot`], as a writer of the state's bytes that a checkpoint streams into
    /// its file, so that a large state need not be gathered in one buffer (the same bytes).
    /// By default, the bytes of [`Operator::snapshot`].
    fn snapshot_streamed(&self) -> crate::Result<Option<StreamedSnapshot>> {
        Ok(self.snapshot()?.map(|snapshot| StreamedSnapshot {
            key_count: snapshot.key_count,
            state: Box::new(snapshot.state),
        }))
    }

    /// Replaces the operator's state with one from [`Operator::snapshot`].
    fn restore(&mut self, _state: &[u8]) -> crate::Result<()> {
        Ok(())
    }

    /// One snapshot holding the states of `parts`, taken by parallel instances of this
    /// operator that each held a share of the keys: what a checkpoint stores, so that it
    /// restores with any number of workers. Stateless operators take no snapshots.
    fn merge_snapshots(&self, _parts: Vec<OperatorSnapshot>) -> crate::Result<OperatorSnapshot> {
        Err(OperatorError::Checkpoint(
            "this operator keeps no state to merge".into(),
        ))
    }

    /// Splits a state from [`Operator::snapshot`] (or [`Operator::merge_snapshots`]) into one
    /// per worker, by `dataflow_window::key_partition`.
    fn split_snapshot(&self, _state: &[u8], _workers: usize) -> crate::Result<Vec<Vec<u8>>> {
        Err(OperatorError::Checkpoint(
            "this operator keeps no state to split".into(),
        ))
    }
}

/// What an operator contributes to a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorSnapshot {
    /// How many keys it holds state for (shown in manifests).
    pub key_count: u64,
    /// The state, encoded with `dataflow_checkpoint::encode_state`.
    pub state: Vec<u8>,
}

/// What an operator contributes to a checkpoint, its state as a writer of its bytes
/// ([`Operator::snapshot_streamed`]).
pub struct StreamedSnapshot {
    /// How many keys it holds state for (shown in manifests).
    pub key_count: u64,
    /// The state: the bytes [`Operator::snapshot`] would give.
    pub state: Box<dyn dataflow_checkpoint::StateWriter>,
}

impl std::fmt::Debug for StreamedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedSnapshot")
            .field("key_count", &self.key_count)
            .field("bytes", &self.state.state_len())
            .finish()
    }
}

/// Static facts about an operator, readable without running it (for logs, metrics and the API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorInfo {
    /// A stable name: `steps[1].filter`.
    pub name: Arc<str>,
    /// What kind of operator it is (its name: `filter`, `map`, `key_by`, `window`).
    pub kind: &'static OperatorKind,
}

/// An operator with its static facts.
pub struct OperatorNode {
    /// What it is.
    pub info: OperatorInfo,
    /// What it does.
    pub operator: Box<dyn Operator>,
}

impl OperatorNode {
    /// `operator`, named `name`; its kind is the operator's own.
    pub fn new(name: Arc<str>, operator: impl Operator + 'static) -> OperatorNode {
        OperatorNode {
            info: OperatorInfo {
                name,
                kind: operator.kind(),
            },
            operator: Box::new(operator),
        }
    }
}

impl std::fmt::Debug for OperatorNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorNode")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// What an operator emits: events for the next step, and side records.
#[derive(Debug, Default)]
pub struct Output {
    /// Events for the next step.
    pub events: Vec<Event>,
    /// Dead letters and late events.
    pub side: Vec<SideRecord>,
    /// Rows of a join that found no partner before the watermark passed them (emitted with
    /// nulls by an outer side, dropped by an inner one): counted here, so that they show in
    /// the operator's metrics.
    pub unmatched: u64,
    /// Set when the operator failed in a way no record is to blame for (its state store failed):
    /// the run stops with this error and a restart recovers from the last checkpoint.
    pub failure: Option<OperatorError>,
}

/// A checkpoint codec error as an operator's error.
pub(crate) fn checkpoint_error(error: dataflow_checkpoint::CheckpointError) -> OperatorError {
    OperatorError::Checkpoint(error.to_string())
}

/// A dead letter for `event` of `layout`, which left the stream at `stage` because of `reason`.
pub(crate) fn dead_letter(
    stage: &Arc<str>,
    event: &Event,
    layout: &Layout,
    reason: String,
) -> SideRecord {
    SideRecord {
        kind: SideKind::DeadLetter,
        stage: stage.clone(),
        reason,
        line: None,
        record: SideData::event(event, layout),
    }
}
