//! Restoring from a checkpoint: which checkpoint a run starts from ([`RestoreMode`],
//! [`RestoreOptions`]), whether it fits the pipeline ([`compatibility`], which the restore in
//! place of [`crate::control`] checks too), and the restore itself on a run's start.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use dataflow_checkpoint::{
    Checkpoint, CheckpointId, CheckpointStorage, FileSystem, LocalStorage, OperatorState,
    PartitionState, SourceState,
};
use dataflow_connectors::source::PartitionPosition;
use dataflow_metrics::Metrics;
use dataflow_operators::OperatorKind;

use super::source_feed::OpenedSource;
use crate::control::{restore_error, ControlHandle};
use crate::plan::Plan;
use crate::{PipelineError, Result};

/// Which checkpoint a run starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestoreMode {
    /// The newest checkpoint that verifies; newer ones that do not are named in the log as
    /// errors. No checkpoint at all starts afresh.
    #[default]
    Latest,
    /// This checkpoint, or fail.
    Id(u64),
    /// None: start from the beginning of the input.
    Fresh,
}

/// How a run restores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Which checkpoint.
    pub mode: RestoreMode,
    /// Restore a checkpoint of another pipeline shape: what still maps is restored, the rest
    /// is listed and dropped.
    pub allow_non_restored_state: bool,
}

/// A pipeline's shape as far as its checkpoints go: its operators by name and kind, its
/// sources by name, and the fingerprint of both.
#[derive(Clone, Debug)]
pub(crate) struct Shape {
    /// The operators, in order.
    pub(crate) operators: Vec<(String, &'static OperatorKind)>,
    /// The sources' names, in order.
    pub(crate) sources: Vec<String>,
    /// [`Plan::fingerprint`].
    pub(crate) fingerprint: String,
}

impl Shape {
    /// The shape of `plan`.
    pub(crate) fn of(plan: &Plan) -> Shape {
        Shape {
            operators: plan
                .operators
                .iter()
                .map(|node| (node.info.name.to_string(), node.info.kind))
                .collect(),
            sources: plan.sources.iter().map(|s| s.spec.name.clone()).collect(),
            fingerprint: plan.fingerprint(),
        }
    }
}

/// How a checkpoint maps onto a pipeline's [`Shape`].
#[derive(Debug)]
pub(crate) struct Compatibility<'a> {
    /// Whether the checkpoint was taken by a pipeline of this shape (same fingerprint).
    pub(crate) same_shape: bool,
    /// The operator states that map to an operator of the pipeline (same name and kind), with
    /// that operator's index.
    pub(crate) operators: Vec<(usize, &'a OperatorState)>,
    /// The source states that map to a source of the pipeline (same name), with its index.
    pub(crate) sources: Vec<(usize, &'a SourceState)>,
    /// What the checkpoint holds that maps to nothing here: `operator NAME (KIND)` and
    /// `source NAME`, in the checkpoint's order.
    pub(crate) dropped: Vec<String>,
    /// The stateful operators of the pipeline the checkpoint holds no state for: they start
    /// empty.
    pub(crate) empty: Vec<String>,
}

impl Compatibility<'_> {
    /// Whether everything the checkpoint holds restores, into a pipeline of its shape.
    pub(crate) fn fits(&self) -> bool {
        self.same_shape && self.dropped.is_empty()
    }
}

/// How `checkpoint` maps onto a pipeline of `shape`: operators match by name and kind, sources
/// by name.
pub(crate) fn compatibility<'a>(checkpoint: &'a Checkpoint, shape: &Shape) -> Compatibility<'a> {
    let mut operators = Vec::new();
    let mut sources = Vec::new();
    let mut dropped = Vec::new();
    for state in &checkpoint.operators {
        match shape
            .operators
            .iter()
            .position(|(name, kind)| *name == state.name && kind.name == state.kind)
        {
            Some(index) => operators.push((index, state)),
            None => dropped.push(format!("operator {} ({})", state.name, state.kind)),
        }
    }
    for state in &checkpoint.sources {
        match shape.sources.iter().position(|name| *name == state.name) {
            Some(index) => sources.push((index, state)),
            None => dropped.push(format!("source {}", state.name)),
        }
    }
    let empty = shape
        .operators
        .iter()
        .enumerate()
        .filter(|(index, (_, kind))| {
            kind.stateful && !operators.iter().any(|(restored, _)| restored == index)
        })
        .map(|(_, (name, _))| name.clone())
        .collect();
    Compatibility {
        same_shape: checkpoint.pipeline_fingerprint == shape.fingerprint,
        operators,
        sources,
        dropped,
        empty,
    }
}

pub(super) fn checkpoint_error(error: dataflow_checkpoint::CheckpointError) -> PipelineError {
    PipelineError::Checkpoint(error.to_string())
}

/// Where a run starts: the checkpoint storage, if checkpoints are configured, and what was
/// restored from it.
pub(super) struct Start {
    pub(super) storage: Option<Arc<LocalStorage>>,
    /// Each source's restored partitions (empty for a source starting afresh).
    pub(super) initial: Vec<Vec<PartitionState>>,
    /// The id of the newest checkpoint in the storage, 0 if none.
    pub(super) last_id: u64,
    /// The restored watermark, `i64::MIN` when starting afresh.
    pub(super) watermark: i64,
    /// The checkpoint restored, if any.
    pub(super) restored: Option<u64>,
}

/// Opens the checkpoint storage of `plan` (through `fs` if given, sharing the retention pins
/// of `control`) and restores the checkpoint `restore` chooses into the plan's operators
/// (already open) and `sources`.
pub(super) fn restore_on_start(
    plan: &mut Plan,
    restore: RestoreOptions,
    fs: Option<Arc<dyn FileSystem>>,
    claim: bool,
    metrics: &Metrics,
    sources: &mut [OpenedSource],
    control: &ControlHandle,
) -> Result<Start> {
    let storage = match &plan.checkpoint {
        Some(spec) => {
            let mut storage = match fs {
                Some(fs) => LocalStorage::with_fs(&spec.dir, spec.retain, fs),
                None => LocalStorage::new(&spec.dir, spec.retain),
            }
            .map_err(checkpoint_error)?
            .with_retention(control.retention().clone());
            // A new owner claims the directory before it reads it: a previous owner still
            // running can save no checkpoint after the one restored here.
            if claim {
                storage.claim().map_err(checkpoint_error)?;
            }
            Some(Arc::new(storage))
        }
        None => None,
    };
    let mut start = Start {
        storage: None,
        initial: vec![Vec::new(); sources.len()],
        last_id: 0,
        watermark: i64::MIN,
        restored: None,
    };
    match &storage {
        Some(storage) => {
            start.last_id = storage
                .list()
                .map_err(checkpoint_error)?
                .last()
                .map(|entry| entry.id.0)
                .unwrap_or(0);
            let restore_started = Instant::now();
            if let Some(checkpoint) = choose_checkpoint(storage, restore.mode, control)? {
                start.watermark = checkpoint.watermark;
                start.restored = Some(checkpoint.id.0);
                restore_checkpoint(
                    &checkpoint,
                    restore.allow_non_restored_state,
                    plan,
                    sources,
                    &mut start.initial,
                )?;
                tracing::info!(
                    checkpoint = checkpoint.id.0,
                    watermark = checkpoint.watermark,
                    operators = checkpoint.operators.len(),
                    millis = restore_started.elapsed().as_millis() as u64,
                    "restored checkpoint"
                );
                metrics.checkpoints(&plan.name).restored(
                    checkpoint.id.0,
                    SystemTime::now(),
                    restore_started.elapsed(),
                );
            }
        }
        None if restore.mode != RestoreMode::Latest && restore.mode != RestoreMode::Fresh => {
            return Err(PipelineError::Checkpoint(
                "a checkpoint to restore was named, but the pipeline has no `checkpoint` settings"
                    .into(),
            ));
        }
        None => {}
    }
    start.storage = storage;
    Ok(start)
}

/// The checkpoint to restore, if any. A newer checkpoint that fails its checks is logged as an
/// error and the previous valid one is used; if none is valid the run fails rather than
/// silently start from nothing.
///
/// The checkpoint of a restore in place (the one `control` waits for) is pinned against
/// retention; should it still have vanished (deleted from outside), the restore is refused
/// and the run resumes from the newest valid checkpoint, as after a crash, instead of ending.
fn choose_checkpoint(
    storage: &LocalStorage,
    mode: RestoreMode,
    control: &ControlHandle,
) -> Result<Option<Checkpoint>> {
    match mode {
        RestoreMode::Fresh => Ok(None),
        RestoreMode::Id(id) if control.pending_restore() == Some(id) => {
            match storage.load(CheckpointId(id)) {
                Ok(checkpoint) => Ok(Some(checkpoint)),
                Err(error) => {
                    tracing::error!(
                        checkpoint = id,
                        %error,
                        "the checkpoint to restore in place is gone; resuming from the newest valid one"
                    );
                    control.restore_refused(id, restore_error(error));
                    choose_checkpoint(storage, RestoreMode::Latest, control)
                }
            }
        }
        RestoreMode::Id(id) => storage
            .load(CheckpointId(id))
            .map(Some)
            .map_err(checkpoint_error),
        RestoreMode::Latest => match storage.latest_valid().map_err(checkpoint_error)? {
            None => Ok(None),
            Some((checkpoint, refused)) => {
                for (id, reason) in &refused {
                    tracing::error!(
                        checkpoint = id.0,
                        %reason,
                        using = checkpoint.id.0,
                        "checkpoint refused; restoring an older one"
                    );
                }
                Ok(Some(checkpoint))
            }
        },
    }
}

/// Restores operators and seeks sources from `checkpoint`. State that maps to nothing in this
/// pipeline is refused unless `allow_non_restored` is set, and then listed.
fn restore_checkpoint(
    checkpoint: &Checkpoint,
    allow_non_restored: bool,
    plan: &mut Plan,
    sources: &mut [OpenedSource],
    initial: &mut [Vec<PartitionState>],
) -> Result<()> {
    let id = checkpoint.id.0;
    let fit = compatibility(checkpoint, &Shape::of(plan));
    if !fit.same_shape && !allow_non_restored {
        return Err(PipelineError::Checkpoint(format!(
            "checkpoint {id} was taken by a pipeline of another shape (its operators or sources \
             differ); run with --allow-non-restored-state to restore what still maps, or --fresh"
        )));
    }
    for (index, state) in &fit.operators {
        plan.operators[*index].operator.restore(&state.state)?;
    }
    for (index, state) in &fit.sources {
        let positions: Vec<PartitionPosition> = state
            .partitions
            .iter()
            .map(|p| PartitionPosition {
                name: p.name.clone(),
                offset: p.offset,
                line: p.line,
            })
            .collect();
        sources[*index].source.seek(&positions)?;
        initial[*index] = state.partitions.clone();
    }
    if !fit.dropped.is_empty() {
        if !allow_non_restored {
            return Err(PipelineError::Checkpoint(format!(
                "checkpoint {id} holds state this pipeline has no place for: {}",
                fit.dropped.join(", ")
            )));
        }
        tracing::warn!(
            checkpoint = id,
            dropped = %fit.dropped.join(", "),
            empty = %fit.empty.join(", "),
            "state not restored"
        );
    }
    Ok(())
}
