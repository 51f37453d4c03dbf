//! Control of a running pipeline: what it is doing (status, watermarks), a checkpoint on
//! demand, and a restore of a chosen checkpoint without restarting the process.
//!
//! [`ControlHandle`] is cloneable and shared by whoever controls the run (the processor's API).
//! It reaches the run through a channel into the checkpoint coordinator, which injects a
//! barrier at once or takes the run down; and through its live status, which the source threads
//! update after each batch. A restore is checked before anything changes (the checkpoint must
//! verify and fit this pipeline); then the run stops without a final checkpoint (pending,
//! uncommitted sink output is discarded as on any recovery) and [`crate::runtime::Pipeline::run`]
//! starts it again from that checkpoint, sources seeked, and answers the request once restored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dataflow_checkpoint::{
    Checkpoint, CheckpointError, CheckpointId, CheckpointStorage, LocalStorage, Pin, Retention,
};
use dataflow_event::time::now_millis;
use dataflow_metrics::{Counters, Metrics};
use dataflow_window::{BoundedOutOfOrderness, WatermarkCombiner};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::plan::Plan;
use crate::runtime::restore::{compatibility, Compatibility, Shape};

pub use dataflow_api::control::ControlError;
pub use dataflow_api::{
    OperatorRestore, OperatorStatus, PartitionWatermark, PipelineStatus, RestoreReport,
    SourceRestore, SourceWatermark, Watermarks,
};

/// The run's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Opening its inputs and outputs, restoring.
    Starting,
    /// Processing.
    Running,
    /// Stopping to restore a checkpoint.
    Restoring,
    /// Done (end of input or stop).
    Stopped,
    /// Failed: a sink, source or operator failed and the run ended (or is ending) with its
    /// error, which the status carries.
    Failed,
}

impl RunState {
    /// The state's name in the API: `starting`, `running`, `restoring`, `stopped`, `failed`.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Restoring => "restoring",
            RunState::Stopped => "stopped",
            RunState::Failed => "failed",
        }
    }
}

/// A request to the checkpoint coordinator.
#[derive(Debug)]
pub(crate) enum Request {
    /// Take a checkpoint now; answers its id.
    Trigger(oneshot::Sender<u64>),
    /// Stop the run without a final checkpoint.
    Halt,
}

/// A restore waiting for the next run to start from its checkpoint.
#[derive(Debug)]
pub(crate) struct PendingRestore {
    pub(crate) id: u64,
    report: RestoreReport,
    reply: oneshot::Sender<Result<RestoreReport, ControlError>>,
    /// Keeps retention from deleting the checkpoint until the restore is answered.
    _pin: Pin,
}

#[derive(Debug)]
struct Shared {
    pipeline: String,
    /// The operators and sources checkpoints are matched against.
    shape: Shape,
    checkpoint_dir: Option<std::path::PathBuf>,
    started: Instant,
    counters: Arc<Counters>,
    metrics: Arc<Metrics>,
    requests: mpsc::UnboundedSender<Request>,
    inbox: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>>,
    live: Mutex<Live>,
    restore: Mutex<Option<PendingRestore>>,
    /// Shared with every run's checkpoint storage: the pins of restores under way.
    retention: Retention,
    restores: AtomicU64,
    last_triggered: AtomicU64,
    /// The first checkpoint id of this process's first run (0 before it starts).
    first_own: AtomicU64,
    can_restart: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Live {
    state: RunState,
    /// Why the run failed, once it has.
    error: Option<String>,
    restored_from: Option<u64>,
    sources: Vec<SourceWatermark>,
    idle_timeouts: Vec<Option<i64>>,
}

/// Controls a running pipeline; cloning shares it.
#[derive(Clone, Debug)]
pub struct ControlHandle {
    shared: Arc<Shared>,
}

/// Why a checkpoint to restore cannot be: gone (404), failing its checks (422), or another
/// failure.
pub(crate) fn restore_error(error: CheckpointError) -> ControlError {
    match error {
        CheckpointError::NotFound { .. } => ControlError::NotFound(error.to_string()),
        // A file that went away between two reads: deleted meanwhile.
        CheckpointError::Io { ref cause, .. } if cause.kind() == std::io::ErrorKind::NotFound => {
            ControlError::NotFound(error.to_string())
        }
        CheckpointError::Corrupt { .. } | CheckpointError::TooLarge { .. } => {
            ControlError::Verification(error.to_string())
        }
        other => ControlError::Failed(other.to_string()),
    }
}

/// Mutex poisoning only follows a panic elsewhere; the data stays usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ControlHandle {
    pub(crate) fn new(plan: &Plan, counters: Arc<Counters>, metrics: Arc<Metrics>) -> Self {
        let (requests, inbox) = mpsc::unbounded_channel();
        let live = Live {
            state: RunState::Starting,
            error: None,
            restored_from: None,
            sources: Vec::new(),
            idle_timeouts: Vec::new(),
        };
        let shared = Shared {
            pipeline: plan.name.clone(),
            shape: Shape::of(plan),
            checkpoint_dir: plan.checkpoint.as_ref().map(|c| c.dir.clone()),
            started: Instant::now(),
            counters,
            metrics,
            requests,
            inbox: Arc::new(tokio::sync::Mutex::new(inbox)),
            live: Mutex::new(live),
            restore: Mutex::new(None),
            retention: Retention::default(),
            restores: AtomicU64::new(0),
            last_triggered: AtomicU64::new(0),
            first_own: AtomicU64::new(0),
            can_restart: std::sync::atomic::AtomicBool::new(false),
        };
        ControlHandle {
            shared: Arc::new(shared),
        }
    }

    pub(crate) fn set_can_restart(&self, can: bool) {
        self.shared.can_restart.store(can, Ordering::SeqCst);
    }

    /// What every run's checkpoint storage shares: the pins of restores under way, and which
    /// checkpoints were saved.
    pub(crate) fn retention(&self) -> &Retention {
        &self.shared.retention
    }

    /// The checkpoint a restore in place waits to start from, if one does.
    pub(crate) fn pending_restore(&self) -> Option<u64> {
        lock(&self.shared.restore)
            .as_ref()
            .map(|pending| pending.id)
    }

    /// The checkpoint of the pending restore `id` cannot be loaded by the restarted run (it
    /// vanished after it was checked): the restore is refused with `error` and the run resumes
    /// as after any recovery.
    pub(crate) fn restore_refused(&self, id: u64, error: ControlError) {
        let mut pending = lock(&self.shared.restore);
        if pending.as_ref().is_some_and(|pending| pending.id == id) {
            if let Some(restore) = pending.take() {
                let _ = restore.reply.send(Err(error));
            }
        }
    }

    /// The coordinator's inbox (locked by the coordinator of the current run).
    pub(crate) fn inbox(&self) -> Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>> {
        self.shared.inbox.clone()
    }

    /// A run starts: fresh source reports.
    pub(crate) fn run_starting(&self, plan: &Plan) {
        let mut live = lock(&self.shared.live);
        live.state = RunState::Starting;
        live.idle_timeouts = plan
            .sources
            .iter()
            .map(|s| s.spec.watermark.idle_timeout)
            .collect();
        live.sources = plan
            .sources
            .iter()
            .map(|s| SourceWatermark {
                name: s.spec.name.clone(),
                watermark: i64::MIN,
                idle: false,
                ended: false,
                last_event_ms: None,
                holding_back: None,
                partitions: Vec::new(),
            })
            .collect();
    }

    /// The run restored `restored` (if any) and runs: answers a pending restore.
    pub(crate) fn run_started(&self, restored: Option<u64>) {
        {
            let mut live = lock(&self.shared.live);
            live.state = RunState::Running;
            live.restored_from = restored;
        }
        if let Some(pending) = lock(&self.shared.restore).take() {
            if restored == Some(pending.id) {
                self.shared.restores.fetch_add(1, Ordering::SeqCst);
                tracing::info!(checkpoint = pending.id, "restored in place; running again");
                let _ = pending.reply.send(Ok(pending.report));
            } else {
                let _ = pending.reply.send(Err(ControlError::Failed(format!(
                    "the pipeline restarted without checkpoint {}",
                    pending.id
                ))));
            }
        }
    }

    /// The run ended. Returns the restore to start next, if one was asked for.
    pub(crate) fn run_ended(&self, result: Result<(), String>) -> Option<u64> {
        let mut pending = lock(&self.shared.restore);
        match (&result, pending.as_ref()) {
            (Ok(()), Some(restore)) => {
                lock(&self.shared.live).state = RunState::Restoring;
                Some(restore.id)
            }
            _ => {
                let mut live = lock(&self.shared.live);
                match &result {
                    Ok(()) => live.state = RunState::Stopped,
                    Err(why) => {
                        live.state = RunState::Failed;
                        live.error.get_or_insert_with(|| why.clone());
                    }
                }
                drop(live);
                if let Some(restore) = pending.take() {
                    let why = result.err().unwrap_or_else(|| "the run ended".into());
                    let _ = restore.reply.send(Err(ControlError::Failed(why)));
                }
                None
            }
        }
    }

    /// The run is failing for `reason` (it ends with that error): status and readiness say so
    /// from now on.
    pub(crate) fn run_failing(&self, reason: &str) {
        let mut live = lock(&self.shared.live);
        live.state = RunState::Failed;
        live.error.get_or_insert_with(|| reason.to_owned());
    }

    /// Whether the pipeline can take work: `Err` with the reason once the run has failed.
    pub fn ready(&self) -> Result<(), String> {
        let live = lock(&self.shared.live);
        match (live.state, &live.error) {
            (RunState::Failed, Some(error)) => Err(format!("the pipeline failed: {error}")),
            (RunState::Failed, None) => Err("the pipeline failed".into()),
            _ => Ok(()),
        }
    }

    /// The restart after a restore request failed before the run started.
    pub(crate) fn restart_failed(&self, why: String) {
        self.end_restore(ControlError::Failed(why));
    }

    /// The restore request was overtaken by the end of the run (a stop, the end of the input)
    /// before its restart: nothing was restored, and nothing is running to restore into, so the
    /// answer is 409 `not_running`, not a server fault.
    pub(crate) fn restart_abandoned(&self, why: &str) {
        self.end_restore(ControlError::NotRunning(why.into()));
    }

    fn end_restore(&self, error: ControlError) {
        if let Some(restore) = lock(&self.shared.restore).take() {
            let _ = restore.reply.send(Err(error));
        }
        lock(&self.shared.live).state = RunState::Stopped;
    }

    /// A source thread's report, after a batch.
    pub(crate) fn report_source(
        &self,
        input: usize,
        names: &[String],
        generators: &[BoundedOutOfOrderness],
        combiner: &WatermarkCombiner,
        event_partition: Option<usize>,
        ended: bool,
    ) {
        let now = now_millis();
        let mut live = lock(&self.shared.live);
        let idle_timeout = live.idle_timeouts.get(input).copied().flatten();
        let Some(source) = live.sources.get_mut(input) else {
            return;
        };
        if source.partitions.len() != names.len() {
            // The first report, or partitions found while running: those known keep their
            // last event's time.
            let mut known: std::collections::HashMap<String, Option<i64>> = source
                .partitions
                .iter()
                .map(|p| (p.name.clone(), p.last_event_ms))
                .collect();
            source.partitions = names
                .iter()
                .map(|name| PartitionWatermark {
                    name: name.clone(),
                    watermark: i64::MIN,
                    idle: false,
                    last_event_ms: known.remove(name).flatten(),
                })
                .collect();
        }
        for (index, partition) in source.partitions.iter_mut().enumerate() {
            if let Some(generator) = generators.get(index) {
                partition.watermark = generator.current();
            }
            partition.idle = combiner.is_idle(index);
            if event_partition == Some(index) {
                partition.last_event_ms = Some(now);
            }
        }
        if event_partition.is_some() {
            source.last_event_ms = Some(now);
        }
        source.ended = ended;
        source.watermark = combiner.current();
        source.holding_back = combiner
            .holding_back()
            .and_then(|index| names.get(index).cloned());
        let quiet = match (idle_timeout, source.last_event_ms) {
            (Some(timeout), Some(last)) => now - last > timeout,
            _ => false,
        };
        source.idle =
            quiet || (!source.partitions.is_empty() && source.partitions.iter().all(|p| p.idle));
    }

    /// What the pipeline is doing.
    pub fn status(&self) -> PipelineStatus {
        let counters = &self.shared.counters;
        let summary = counters.summary(self.shared.started.elapsed());
        let live = lock(&self.shared.live);
        let operators = self
            .shared
            .shape
            .operators
            .iter()
            .map(|(name, kind)| {
                let metrics = self
                    .shared
                    .metrics
                    .operator(&self.shared.pipeline, name, kind.name);
                OperatorStatus {
                    name: name.clone(),
                    kind: kind.name.to_string(),
                    events_in: metrics.events_received_count(),
                    events_out: metrics.events_sent_count(),
                }
            })
            .collect();
        PipelineStatus {
            pipeline: self.shared.pipeline.clone(),
            state: live.state.name().to_string(),
            uptime_ms: self.shared.started.elapsed().as_millis() as u64,
            events_read: summary.events_read,
            events_emitted: summary.events_emitted,
            late_events: summary.late_events,
            dead_letters: summary.dead_letters,
            watermark: counters.watermark(),
            last_checkpoint: Some(counters.last_checkpoint()).filter(|id| *id > 0),
            restored_from: live.restored_from,
            restores: self.shared.restores.load(Ordering::SeqCst),
            operators,
            error: live.error.clone(),
            tasks: Vec::new(),
        }
    }

    /// The watermarks of every source and partition, and which input holds the operators back.
    pub fn watermarks(&self) -> Watermarks {
        let live = lock(&self.shared.live);
        let now = now_millis();
        let holding_back = live
            .sources
            .iter()
            .filter(|s| !s.ended && !s.idle)
            .min_by_key(|s| s.watermark)
            .map(|s| s.name.clone());
        Watermarks {
            watermark: self.shared.counters.watermark(),
            holding_back,
            sources: live.sources.clone(),
            operators: self
                .shared
                .shape
                .operators
                .iter()
                .map(|(n, _)| n.clone())
                .collect(),
            now_ms: now,
        }
    }

    fn running(&self) -> Result<(), ControlError> {
        match lock(&self.shared.live).state {
            RunState::Running => Ok(()),
            RunState::Starting => Err(ControlError::NotRunning("it is starting".into())),
            RunState::Restoring => Err(ControlError::NotRunning("it is restoring".into())),
            RunState::Stopped => Err(ControlError::NotRunning("it has stopped".into())),
            RunState::Failed => Err(ControlError::NotRunning("it has failed".into())),
        }
    }

    /// Takes a checkpoint now; returns its id. Completion shows in the checkpoint list, or
    /// [`ControlHandle::last_checkpoint`] reaching the id.
    pub async fn trigger(&self) -> Result<u64, ControlError> {
        if self.shared.checkpoint_dir.is_none() {
            return Err(ControlError::NoCheckpoints);
        }
        self.running()?;
        let (reply, answer) = oneshot::channel();
        self.shared
            .requests
            .send(Request::Trigger(reply))
            .map_err(|_| ControlError::NotRunning("it has stopped".into()))?;
        let id = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .map_err(|_| ControlError::NotRunning("the coordinator did not answer".into()))?
            .map_err(|_| ControlError::NotRunning("the run ended".into()))?;
        self.shared.last_triggered.fetch_max(id, Ordering::SeqCst);
        tracing::info!(checkpoint = id, "checkpoint requested");
        Ok(id)
    }

    /// A run starts after checkpoint `last_id` (the newest stored, or 0): the first run of
    /// the process fixes [`ControlHandle::first_own`].
    pub(crate) fn run_starts_after(&self, last_id: u64) {
        let _ = self.shared.first_own.compare_exchange(
            0,
            last_id.saturating_add(1),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// The first checkpoint id this process could take (ids below it are an earlier run's);
    /// 0 before the first run starts.
    pub fn first_own(&self) -> u64 {
        self.shared.first_own.load(Ordering::SeqCst)
    }

    /// The highest id a trigger answered, 0 if none.
    pub fn last_triggered(&self) -> u64 {
        self.shared.last_triggered.load(Ordering::SeqCst)
    }

    /// The last completed checkpoint, 0 before the first.
    pub fn last_checkpoint(&self) -> u64 {
        self.shared.counters.last_checkpoint()
    }

    /// Whether this process stored checkpoint `id` at some point (it may since have been
    /// removed by retention or deleted).
    pub fn was_completed(&self, id: u64) -> bool {
        self.shared.retention.was_saved(CheckpointId(id))
    }

    /// Whether the pipeline still runs (or restarts).
    pub fn is_live(&self) -> bool {
        !matches!(
            lock(&self.shared.live).state,
            RunState::Stopped | RunState::Failed
        )
    }

    /// Restores checkpoint `id` in place, or with `dry_run` says what that would do. A
    /// checkpoint that fails verification or does not fit the pipeline is refused and nothing
    /// changes. Answers once the pipeline runs again from the checkpoint.
    pub async fn restore(&self, id: u64, dry_run: bool) -> Result<RestoreReport, ControlError> {
        let dir = self
            .shared
            .checkpoint_dir
            .clone()
            .ok_or(ControlError::NoCheckpoints)?;
        // Pinned before it is read: retention either deleted it already (and the load says
        // so) or keeps it until this restore is answered.
        let retention = self.shared.retention.clone();
        let (checkpoint, pin) = tokio::task::spawn_blocking(move || {
            let pin = retention.pin(CheckpointId(id));
            let checkpoint = LocalStorage::open_for_reading(&dir)?.load(CheckpointId(id))?;
            Ok::<_, CheckpointError>((checkpoint, pin))
        })
        .await
        .map_err(|error| ControlError::Failed(error.to_string()))?
        .map_err(restore_error)?;
        let fit = compatibility(&checkpoint, &self.shared.shape);
        if !fit.fits() {
            return Err(ControlError::Incompatible(format!(
                "checkpoint {id} was taken by a pipeline of another shape; it holds: {}",
                if fit.dropped.is_empty() {
                    "state in another layout".to_string()
                } else {
                    fit.dropped.join(", ")
                }
            )));
        }
        let mut report = self.restore_report(&checkpoint, fit, dry_run);
        if dry_run {
            return Ok(report);
        }
        if !self.shared.can_restart.load(Ordering::SeqCst) {
            return Err(ControlError::Failed(
                "this pipeline cannot be restarted in place (it was not given a way to re-plan)"
                    .into(),
            ));
        }
        let (reply, answer) = oneshot::channel();
        {
            let mut live = lock(&self.shared.live);
            if live.state != RunState::Running {
                drop(live);
                return Err(self.running().err().unwrap_or(ControlError::NotRunning(
                    "another restore is under way".into(),
                )));
            }
            let mut pending = lock(&self.shared.restore);
            if pending.is_some() {
                return Err(ControlError::NotRunning(
                    "another restore is under way".into(),
                ));
            }
            report.last_checkpoint_before = Some(self.last_checkpoint()).filter(|id| *id > 0);
            *pending = Some(PendingRestore {
                id,
                report,
                reply,
                _pin: pin,
            });
            live.state = RunState::Restoring;
        }
        tracing::warn!(checkpoint = id, "restore requested: stopping the run");
        if self.shared.requests.send(Request::Halt).is_err() {
            self.restart_abandoned("the run has ended");
        }
        answer
            .await
            .map_err(|_| ControlError::Failed("the restore was abandoned".into()))?
    }

    /// What restoring `checkpoint`, which maps onto the pipeline as `fit` says, does.
    fn restore_report(
        &self,
        checkpoint: &Checkpoint,
        fit: Compatibility<'_>,
        dry_run: bool,
    ) -> RestoreReport {
        let operators = fit
            .operators
            .iter()
            .map(|(_, state)| OperatorRestore {
                name: state.name.clone(),
                kind: state.kind.clone(),
                key_count: state.key_count,
            })
            .collect();
        let sources = fit
            .sources
            .iter()
            .map(|(_, state)| SourceRestore {
                name: state.name.clone(),
                partitions: state
                    .partitions
                    .iter()
                    .map(|p| (p.name.clone(), p.offset, p.line))
                    .collect(),
            })
            .collect();
        let created =
            SystemTime::UNIX_EPOCH + Duration::from_millis(checkpoint.created_at_ms.max(0) as u64);
        let age = SystemTime::now()
            .duration_since(created)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        RestoreReport {
            checkpoint: checkpoint.id.0,
            dry_run,
            watermark: checkpoint.watermark,
            operators,
            empty: fit.empty,
            sources,
            dropped: fit.dropped,
            discarded: format!(
                "everything processed after checkpoint {} ({} ms ago): open windows and \
                 uncommitted output are dropped and recomputed from its source positions",
                checkpoint.id.0, age
            ),
            last_checkpoint_before: Some(self.last_checkpoint()).filter(|id| *id > 0),
        }
    }

    /// Drops requests left when the pipeline is done, so their callers hear it at once.
    pub(crate) async fn close(&self) {
        let mut inbox = self.shared.inbox.lock().await;
        inbox.close();
        while inbox.try_recv().is_ok() {}
    }
}
