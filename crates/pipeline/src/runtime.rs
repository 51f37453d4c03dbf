//! The runtime: sources on threads of their own, the operator chain and the sinks as tokio
//! tasks, bounded channels between them, and control messages in band with the events.
//!
//! ```text
//! source thread ─┐                                   ┌─> sink task (results)
//! source thread ─┼─(input, Message)─> chain task ────┼─> sink task (results)
//!                │     bounded          operators    └─> side task (dead letters, late events)
//!                └──────────── dead letters ───────────^
//! ```
//! Every channel is bounded: a slow sink fills its channel, which stops the chain, which fills
//! the chain's channel, which makes the sources wait. Memory stays bounded by the channel
//! capacities times the batch size. A source with a `rate_limit` also waits, on its own thread,
//! before each batch its token bucket cannot cover ([`dataflow_connectors::ratelimit`]).
//!
//! Checkpoints are aligned by barriers. Every interval the coordinator asks the sources for
//! barrier `n`; each source sends it in band after the batch it was reading, with its
//! partitions' positions and watermarks. The chain holds back the messages of an input whose
//! barrier has arrived until every live input's has, then snapshots the operators, asks the
//! sinks to flush, and hands the checkpoint to the writer, which saves it once every sink has
//! acknowledged. A newer barrier arriving during an alignment abandons the older checkpoint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;

use dataflow_checkpoint::{
    Checkpoint, CheckpointId, CheckpointStorage, FileSystem, LocalStorage, OperatorState,
    PartitionState, SourceState,
};
use dataflow_event::time::now_millis;
use dataflow_event::Event;
use dataflow_metrics::{
    Backpressure, CheckpointMetrics, Counters, Metrics, OperatorMetrics, RunSummary, SourceMetrics,
};
use dataflow_window::{BoundedOutOfOrderness, WatermarkCombiner};
use tokio::sync::{mpsc, oneshot, watch};

use crate::control::{ControlHandle, Request};
use crate::plan::{Plan, SourcePlan};
use crate::spec::{OnStop, WatermarkSpec};
use crate::{PipelineError, Result};
use dataflow_connectors::http::{IngestHub, IngestQueue};
use dataflow_connectors::ratelimit::RateLimiter;
use dataflow_connectors::side::SideWriter;
use dataflow_connectors::sink::{OpenMode, Sink};
use dataflow_connectors::source::{PartitionPosition, Poll, Source};
use dataflow_operators::{OperatorKind, OperatorSnapshot};
use dataflow_operators::{OperatorNode, Output, SideKind, SideRecord};

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

/// Asks a running pipeline to stop cleanly. Cloning shares the request.
#[derive(Clone, Debug)]
pub struct StopHandle {
    stopped: Arc<watch::Sender<bool>>,
}

impl Default for StopHandle {
    fn default() -> Self {
        StopHandle {
            stopped: Arc::new(watch::channel(false).0),
        }
    }
}

impl StopHandle {
    /// Requests a stop: sources stop reading, a final checkpoint is taken when checkpoints are
    /// configured, and open windows fire or are kept as configured.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves once a stop is requested.
    async fn stopped(&self) {
        let mut receiver = self.stopped.subscribe();
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }
}

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

/// A pipeline ready to run.
#[derive(Debug)]
pub struct Pipeline {
    plan: Plan,
    counters: Arc<Counters>,
    metrics: Arc<Metrics>,
    stop: StopHandle,
    restore: RestoreOptions,
    checkpoint_fs: Option<Arc<dyn FileSystem>>,
    control: ControlHandle,
    replan: Option<Replan>,
    /// The queues of the `http` sources, kept across restores in place.
    ingest: IngestHub,
}

/// Builds the plan again, for a restart in place (a plan's operators are consumed by a run).
#[derive(Clone)]
struct Replan(Arc<dyn Fn() -> Result<Plan> + Send + Sync>);

impl std::fmt::Debug for Replan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replan")
    }
}

/// How often the chain checks idle inputs and advances processing time.
const TICK: Duration = Duration::from_millis(100);
/// How long a followed file waits before looking for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// The longest a source sleeps at once while waiting for its rate limit, so that a stop is seen.
const RATE_WAIT_SLICE: Duration = Duration::from_millis(50);
/// How long a stop waits for the sources' final barriers before giving up on them.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A checkpoint taken by the chain, saved once every sink has acknowledged its barrier.
struct PendingCheckpoint {
    checkpoint: Checkpoint,
    acks: Vec<oneshot::Receiver<Result<()>>>,
    /// How long the operators paused to snapshot their state.
    snapshot_time: Duration,
}

/// What the chain sends a sink.
enum SinkMessage {
    Events(Arc<Vec<Event>>),
    /// Make everything before checkpoint `id`'s barrier durable, then acknowledge.
    Barrier(u64, oneshot::Sender<Result<()>>),
    /// Checkpoint `id` is saved: publish what was prepared for it.
    Commit(u64),
}

impl Pipeline {
    /// A pipeline for a checked plan.
    pub fn new(plan: Plan) -> Pipeline {
        let counters = Arc::new(Counters::default());
        let metrics = Arc::new(Metrics::new());
        // Register every stage now, in pipeline order, so that the backpressure report lists
        // them in that order (and before the run starts).
        for source in &plan.sources {
            metrics.source(&plan.name, &source.spec.name);
        }
        for node in &plan.operators {
            metrics.operator(&plan.name, &node.info.name, node.info.kind.name);
        }
        for index in 0..plan.sinks.len() {
            metrics.operator(&plan.name, &sink_stage(index), "sink");
        }
        let control = ControlHandle::new(&plan, counters.clone(), metrics.clone());
        let ingest = IngestHub::new(
            &plan.name,
            plan.sources.iter().filter_map(|source| {
                let queue = source.spec.kind.ingest_queue()?;
                let limiter = source.spec.rate_limit.as_ref().map(RateLimiter::new);
                Some(IngestQueue::new(
                    &source.spec.name,
                    source.decoder.clone(),
                    queue,
                    limiter,
                ))
            }),
            &metrics,
        );
        Pipeline {
            ingest,
            plan,
            counters,
            metrics,
            stop: StopHandle::default(),
            restore: RestoreOptions::default(),
            checkpoint_fs: None,
            control,
            replan: None,
        }
    }

    /// Lets the run restart in place from a chosen checkpoint (see [`crate::control`]):
    /// `replan` builds the same plan again, since a run consumes its operators.
    pub fn with_replan(
        mut self,
        replan: impl Fn() -> Result<Plan> + Send + Sync + 'static,
    ) -> Pipeline {
        self.replan = Some(Replan(Arc::new(replan)));
        self
    }

    /// A handle that reports on the run and controls it: status, watermarks, checkpoints on
    /// demand, restore in place.
    pub fn control(&self) -> ControlHandle {
        self.control.clone()
    }

    /// Writes checkpoints through `fs` instead of the real file system (tests inject failures
    /// with `dataflow_checkpoint::FailingFs`).
    pub fn with_checkpoint_fs(mut self, fs: Arc<dyn FileSystem>) -> Pipeline {
        self.checkpoint_fs = Some(fs);
        self
    }

    /// Sets which checkpoint the run starts from (when checkpoints are configured).
    pub fn with_restore(mut self, restore: RestoreOptions) -> Pipeline {
        self.restore = restore;
        self
    }

    /// The run's Prometheus metrics (the contract of `docs/metrics.md`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Where the run's time goes: `backpressure().report()` gives each source's, operator's
    /// and sink's busy, backpressured and starved shares over the last interval, and the stage
    /// most likely holding the pipeline back. Cloneable; valid before, during and after the run.
    pub fn backpressure(&self) -> Backpressure {
        self.metrics.backpressure()
    }

    /// The queues of the `http` sources, which the processor's `POST /ingest` feeds (see
    /// [`dataflow_connectors::http`]); empty without such sources.
    pub fn ingest(&self) -> IngestHub {
        self.ingest.clone()
    }

    /// The live counters of the run.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// A handle that stops the run.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The plan being run.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Total bytes of the bounded file inputs, when every source is a bounded file.
    pub fn input_size_hint(&self) -> Option<u64> {
        self.plan
            .sources
            .iter()
            .map(|source| source.spec.kind.size_hint())
            .sum()
    }

    /// Runs to the end of the input, or until stopped. Must be called within a multi-threaded
    /// tokio runtime. A restore asked through [`Pipeline::control`] ends the current run
    /// without a final checkpoint and runs again from the chosen checkpoint.
    pub async fn run(self) -> Result<RunSummary> {
        let started = Instant::now();
        let control = self.control.clone();
        let counters = self.counters.clone();
        let stop = self.stop.clone();
        control.set_can_restart(self.replan.is_some());
        let mut pipeline = self;
        loop {
            let again = (
                pipeline.metrics.clone(),
                pipeline.checkpoint_fs.clone(),
                pipeline.replan.clone(),
            );
            let ingest = pipeline.ingest.clone();
            let result = pipeline.run_once().await;
            let restart = control.run_ended(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            let (metrics, checkpoint_fs, replan) = again;
            match (result, restart, replan) {
                (Ok(_), Some(id), Some(replan)) if !stop.is_stopped() => {
                    let plan = match (replan.0)() {
                        Ok(plan) => plan,
                        Err(error) => {
                            control.restart_failed(error.to_string());
                            control.close().await;
                            return Err(error);
                        }
                    };
                    pipeline = Pipeline {
                        plan,
                        counters: counters.clone(),
                        metrics,
                        stop: stop.clone(),
                        restore: RestoreOptions {
                            mode: RestoreMode::Id(id),
                            allow_non_restored_state: false,
                        },
                        checkpoint_fs,
                        control: control.clone(),
                        replan: Some(replan),
                        ingest,
                    };
                }
                (result, restart, _) => {
                    if restart.is_some() {
                        control.restart_failed("the pipeline was stopped".into());
                    }
                    control.close().await;
                    return result.map(|_| counters.summary(started.elapsed()));
                }
            }
        }
    }

    /// One run, from opening the inputs to the end of input, a stop, or a halt for a restore.
    async fn run_once(self) -> Result<RunSummary> {
        let started = Instant::now();
        let Pipeline {
            mut plan,
            counters,
            metrics,
            stop,
            restore,
            checkpoint_fs,
            control,
            replan: _,
            ingest,
        } = self;
        control.run_starting(&plan);
        let capacity = plan.runtime.channel_capacity;
        let batch_size = plan.runtime.batch_size;
        let fingerprint = plan.fingerprint();

        // Open every sink and source before anything runs, so a bad path fails the run at once.
        let mut sources = Vec::new();
        for source in &plan.sources {
            let mut opened = open_source(source, &ingest)?;
            // Decoding spreads over as many threads as there are workers (file sources).
            opened.decode_in_parallel(plan.runtime.parallelism)?;
            sources.push((opened, source.spec.watermark));
        }
        let source_names: Vec<String> = plan.sources.iter().map(|s| s.spec.name.clone()).collect();
        let limiters: Vec<Option<RateLimiter>> = plan
            .sources
            .iter()
            // An http source applies its rate limit when it admits a request (it cannot wait).
            .map(|s| match s.spec.kind.is_ingest() {
                true => None,
                false => s.spec.rate_limit.as_ref().map(RateLimiter::new),
            })
            .collect();

        // Operators open their state stores before a restore fills them.
        for node in &mut plan.operators {
            node.operator.open(0)?;
        }

        // Checkpoints: open the storage and restore before anything runs.
        let storage = match &plan.checkpoint {
            Some(spec) => Some(Arc::new(
                match checkpoint_fs {
                    Some(fs) => LocalStorage::with_fs(&spec.dir, spec.retain, fs),
                    None => LocalStorage::new(&spec.dir, spec.retain),
                }
                .map_err(checkpoint_error)?,
            )),
            None => None,
        };
        let mut initial: Vec<Vec<PartitionState>> = vec![Vec::new(); sources.len()];
        let mut last_id = 0;
        let mut start_watermark = i64::MIN;
        let mut restored_id = None;
        match &storage {
            Some(storage) => {
                last_id = storage
                    .list()
                    .map_err(checkpoint_error)?
                    .last()
                    .map(|entry| entry.id.0)
                    .unwrap_or(0);
                let restore_started = Instant::now();
                if let Some(checkpoint) = choose_checkpoint(storage, restore.mode)? {
                    start_watermark = checkpoint.watermark;
                    restored_id = Some(checkpoint.id.0);
                    restore_checkpoint(
                        &checkpoint,
                        &fingerprint,
                        restore.allow_non_restored_state,
                        &mut plan,
                        &mut sources,
                        &mut initial,
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
                        std::time::SystemTime::now(),
                        restore_started.elapsed(),
                    );
                }
            }
            None if restore.mode != RestoreMode::Latest && restore.mode != RestoreMode::Fresh => {
                return Err(PipelineError::Checkpoint(
                    "a checkpoint to restore was named, but the pipeline has no `checkpoint` settings".into(),
                ));
            }
            None => {}
        }

        // A run resumed from a checkpoint keeps what earlier runs wrote to its file outputs (what
        // they wrote after the checkpoint is written again: at least once); a run from the
        // start writes them anew.
        let mode = if restored_id.is_some() {
            OpenMode::Append
        } else {
            OpenMode::Truncate
        };
        let dead_letters = SideWriter::open(&plan.dead_letters, "dead letters", mode).await?;
        let late = match &plan.late_events {
            Some(spec) if *spec != plan.dead_letters => {
                Some(SideWriter::open(spec, "late events", mode).await?)
            }
            _ => None,
        };

        // Sinks recover to the restored checkpoint: exactly-once sinks drop what it does not cover.
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        for spec in &plan.sinks {
            let layout = plan.output_layout.clone();
            let write_time = !plan.output_is_windowed;
            sinks.push(spec.open(layout, write_time, restored_id, mode).await?);
        }

        let (side_tx, side_rx) = mpsc::channel::<Vec<SideRecord>>(capacity);
        let (chain_done, chain_done_rx) = oneshot::channel::<()>();
        let side_task = tokio::spawn(run_side(
            side_rx,
            chain_done_rx,
            dead_letters,
            late,
            counters.clone(),
        ));
        let mut sink_txs = Vec::new();
        let mut sink_tasks = Vec::new();
        for (index, sink) in sinks.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel::<SinkMessage>(capacity);
            sink_txs.push(tx);
            let sink_metrics = metrics.operator(&plan.name, &sink_stage(index), "sink");
            // The first sink measures how long results took to reach it.
            let latency = (index == 0).then(|| counters.clone());
            sink_tasks.push(tokio::spawn(run_sink(rx, sink, sink_metrics, latency)));
        }
        let (writer_tx, writer_task) = match &storage {
            Some(storage) => {
                let (tx, rx) = mpsc::channel::<PendingCheckpoint>(2);
                (
                    Some(tx),
                    Some(tokio::spawn(run_writer(
                        rx,
                        storage.clone(),
                        sink_txs.clone(),
                        counters.clone(),
                        metrics.checkpoints(&plan.name),
                    ))),
                )
            }
            None => (None, None),
        };

        // The coordinator asks the sources for barriers; on a stop it asks for a final one
        // (when checkpointing) and only then tells the sources to stop.
        let trigger = Arc::new(AtomicU64::new(0));
        let source_stop = Arc::new(AtomicBool::new(false));
        // Set with `source_stop` by a halt for a restore: the sources end without firing.
        let halt = Arc::new(AtomicBool::new(false));
        let (aligned_tx, aligned_rx) = watch::channel(last_id);
        let coordinator = tokio::spawn(coordinate(
            plan.checkpoint.as_ref().map(|c| c.interval),
            last_id,
            trigger.clone(),
            source_stop.clone(),
            aligned_rx,
            stop.clone(),
            Control {
                inbox: control.inbox(),
                halt: halt.clone(),
            },
        ));

        let (chain_tx, chain_rx) = mpsc::channel::<(usize, Message)>(capacity);
        let inputs = sources.len();
        let idle_timeout = sources.iter().filter_map(|(_, w)| w.idle_timeout).min();
        let fire_on_stop = plan.runtime.on_stop == OnStop::Fire;
        let mut source_tasks = Vec::new();
        for (input, (((source, watermark), initial), limiter)) in
            sources.into_iter().zip(initial).zip(limiters).enumerate()
        {
            let feed = SourceFeed {
                input,
                tx: chain_tx.clone(),
                side: side_tx.clone(),
                counters: counters.clone(),
                trigger: trigger.clone(),
                stop: source_stop.clone(),
                batch_size,
                fire_on_stop,
                limiter,
                metrics: metrics.source(&plan.name, &plan.sources[input].spec.name),
                control: control.clone(),
                halt: halt.clone(),
            };
            source_tasks.push(tokio::task::spawn_blocking(move || {
                feed.run(source, watermark, initial)
            }));
        }
        drop(chain_tx);

        let workers = start_workers(
            &mut plan,
            &metrics,
            WorkerOutputs {
                sinks: &sink_txs,
                side: &side_tx,
                counters: &counters,
            },
            restored_id.is_some(),
            start_watermark,
        )?;
        let operator_metrics = plan
            .operators
            .iter()
            .map(|node| metrics.operator(&plan.name, &node.info.name, node.info.kind.name))
            .collect();
        let chain = Chain {
            workers,
            operators: std::mem::take(&mut plan.operators),
            operator_metrics,
            sinks: sink_txs,
            side: side_tx,
            counters: counters.clone(),
            writer: writer_tx,
            aligned: aligned_tx,
            source_names,
            fingerprint,
            last_watermark: start_watermark,
            drain_on_stop: plan.sources.iter().any(|s| s.spec.kind.is_ingest()),
        };
        control.run_started(restored_id);
        let chain_result = chain
            .run(chain_rx, inputs, idle_timeout, stop.clone(), fire_on_stop)
            .await;
        coordinator.abort();
        // Sources may still hold the side channel (one blocked reading stdin after a stop): the
        // side task drains what is queued and ends instead of waiting for them.
        let _ = chain_done.send(());

        let mut first_error = chain_result.err();
        for task in sink_tasks {
            let result = task
                .await
                .map_err(|e| PipelineError::Runtime(format!("sink task failed: {e}")));
            if let Err(error) = result.and_then(|r| r) {
                first_error.get_or_insert(error);
            }
        }
        if let Some(task) = writer_task {
            if let Err(error) = task.await {
                first_error.get_or_insert(PipelineError::Runtime(format!(
                    "checkpoint writer failed: {error}"
                )));
            }
        }
        match side_task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(error) => {
                first_error.get_or_insert(PipelineError::Runtime(format!(
                    "dead-letter task failed: {error}"
                )));
            }
        }
        // A stopped run does not wait for sources blocked in a read (stdin); the others have
        // ended or seen their channel close.
        if !stop.is_stopped() {
            for task in source_tasks {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        first_error.get_or_insert(error);
                    }
                    Err(error) => {
                        first_error.get_or_insert(PipelineError::Runtime(format!(
                            "source task failed: {error}"
                        )));
                    }
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(counters.summary(started.elapsed())),
        }
    }
}

fn checkpoint_error(error: dataflow_checkpoint::CheckpointError) -> PipelineError {
    PipelineError::Checkpoint(error.to_string())
}

/// The checkpoint to restore, if any. A newer checkpoint that fails its checks is logged as an
/// error and the previous valid one is used; if none is valid the run fails rather than
/// silently start from nothing.
fn choose_checkpoint(storage: &LocalStorage, mode: RestoreMode) -> Result<Option<Checkpoint>> {
    match mode {
        RestoreMode::Fresh => Ok(None),
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
    fingerprint: &str,
    allow_non_restored: bool,
    plan: &mut Plan,
    sources: &mut [(Box<dyn Source>, WatermarkSpec)],
    initial: &mut [Vec<PartitionState>],
) -> Result<()> {
    let id = checkpoint.id.0;
    if checkpoint.pipeline_fingerprint != fingerprint && !allow_non_restored {
        return Err(PipelineError::Checkpoint(format!(
            "checkpoint {id} was taken by a pipeline of another shape (its operators or sources \
             differ); run with --allow-non-restored-state to restore what still maps, or --fresh"
        )));
    }
    let mut dropped = Vec::new();
    for state in &checkpoint.operators {
        match plan
            .operators
            .iter_mut()
            .find(|node| *node.info.name == *state.name && node.info.kind.name == state.kind)
        {
            Some(node) => node.operator.restore(&state.state)?,
            None => dropped.push(format!("operator {} ({})", state.name, state.kind)),
        }
    }
    for state in &checkpoint.sources {
        match plan.sources.iter().position(|s| s.spec.name == state.name) {
            Some(index) => {
                let positions: Vec<PartitionPosition> = state
                    .partitions
                    .iter()
                    .map(|p| PartitionPosition {
                        name: p.name.clone(),
                        offset: p.offset,
                        line: p.line,
                    })
                    .collect();
                sources[index].0.seek(&positions)?;
                initial[index] = state.partitions.clone();
            }
            None => dropped.push(format!("source {}", state.name)),
        }
    }
    if !dropped.is_empty() {
        if !allow_non_restored {
            return Err(PipelineError::Checkpoint(format!(
                "checkpoint {id} holds state this pipeline has no place for: {}",
                dropped.join(", ")
            )));
        }
        tracing::warn!(checkpoint = id, dropped = %dropped.join(", "), "state not restored");
    }
    Ok(())
}

/// What the coordinator hears from the [`ControlHandle`]: requests, and the flag a halt sets.
struct Control {
    inbox: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>>,
    halt: Arc<AtomicBool>,
}

/// What woke the coordinator.
enum Wake {
    Barrier,
    Stop,
    Request(Request),
}

/// Asks for a barrier every `interval` once the previous one is aligned, or at once when the
/// control handle asks; on a stop asks for a final one (when checkpointing), then tells the
/// sources to stop; on a halt (a restore) tells them to stop without one.
async fn coordinate(
    interval: Option<i64>,
    mut last_id: u64,
    trigger: Arc<AtomicU64>,
    source_stop: Arc<AtomicBool>,
    mut aligned: watch::Receiver<u64>,
    stop: StopHandle,
    control: Control,
) {
    // Held for the run: the next run's coordinator takes the inbox over.
    let mut inbox = control.inbox.lock().await;
    let period = interval.map(|interval| Duration::from_millis(interval.max(1) as u64));
    let mut now = false;
    loop {
        let wake = if now {
            Wake::Barrier
        } else {
            tokio::select! {
                _ = async { if let Some(period) = period { tokio::time::sleep(period).await } }, if period.is_some() => Wake::Barrier,
                _ = stop.stopped() => Wake::Stop,
                Some(request) = inbox.recv() => Wake::Request(request),
            }
        };
        match wake {
            Wake::Stop => {
                if period.is_some() {
                    last_id += 1;
                    trigger.store(last_id, Ordering::SeqCst);
                }
                source_stop.store(true, Ordering::SeqCst);
                return;
            }
            Wake::Request(Request::Halt) => {
                control.halt.store(true, Ordering::SeqCst);
                source_stop.store(true, Ordering::SeqCst);
                return;
            }
            Wake::Request(Request::Trigger(reply)) => {
                // Without checkpoints the handle refuses before asking.
                let _ = reply.send(last_id + 1);
                now = period.is_some();
            }
            Wake::Barrier => {
                now = false;
                last_id += 1;
                trigger.store(last_id, Ordering::SeqCst);
                let wanted = last_id;
                loop {
                    tokio::select! {
                        _ = aligned.wait_for(|id| *id >= wanted) => break,
                        _ = stop.stopped() => {
                            last_id += 1;
                            trigger.store(last_id, Ordering::SeqCst);
                            source_stop.store(true, Ordering::SeqCst);
                            return;
                        }
                        Some(request) = inbox.recv() => match request {
                            Request::Halt => {
                                control.halt.store(true, Ordering::SeqCst);
                                source_stop.store(true, Ordering::SeqCst);
                                return;
                            }
                            // The next barrier goes out as soon as this one is aligned.
                            Request::Trigger(reply) => {
                                let _ = reply.send(last_id + 1);
                                now = true;
                            }
                        },
                    }
                }
            }
        }
    }
}

/// Saves checkpoints as their sinks acknowledge them, in order.
async fn run_writer(
    mut rx: mpsc::Receiver<PendingCheckpoint>,
    storage: Arc<LocalStorage>,
    sinks: Vec<mpsc::Sender<SinkMessage>>,
    counters: Arc<Counters>,
    metrics: CheckpointMetrics,
) {
    while let Some(pending) = rx.recv().await {
        let id = pending.checkpoint.id.0;
        let snapshot_millis = pending.snapshot_time.as_millis() as u64;
        let mut acknowledged = true;
        for ack in pending.acks {
            match ack.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(checkpoint = id, %error, "checkpoint failed: a sink could not flush");
                    acknowledged = false;
                }
                Err(_) => {
                    tracing::error!(checkpoint = id, "checkpoint failed: a sink stopped");
                    acknowledged = false;
                }
            }
        }
        if !acknowledged {
            metrics.failed();
            continue;
        }
        let started = Instant::now();
        let storage = storage.clone();
        let checkpoint = pending.checkpoint;
        match tokio::task::spawn_blocking(move || storage.save(&checkpoint)).await {
            Ok(Ok(manifest)) => {
                tracing::info!(
                    checkpoint = id,
                    bytes = manifest.data_file_size,
                    millis = started.elapsed().as_millis() as u64,
                    snapshot_millis,
                    "checkpoint completed"
                );
                counters.set_last_checkpoint(id);
                metrics.completed(started.elapsed(), manifest.data_file_size);
                for sink in &sinks {
                    // A sink that is gone has failed, and said so itself.
                    let _ = sink.send(SinkMessage::Commit(id)).await;
                }
            }
            Ok(Err(error)) => {
                metrics.failed();
                tracing::error!(checkpoint = id, %error, "checkpoint failed");
            }
            Err(error) => {
                metrics.failed();
                tracing::error!(checkpoint = id, %error, "checkpoint writer panicked");
            }
        }
    }
}

fn open_source(plan: &SourcePlan, ingest: &IngestHub) -> Result<Box<dyn Source>> {
    Ok(plan
        .spec
        .kind
        .open(&plan.spec.name, plan.decoder.clone(), ingest)?)
}

/// Drives one source on its own thread.
struct SourceFeed {
    input: usize,
    tx: mpsc::Sender<(usize, Message)>,
    side: mpsc::Sender<Vec<SideRecord>>,
    counters: Arc<Counters>,
    trigger: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    batch_size: usize,
    fire_on_stop: bool,
    /// The source's rate limit, if any.
    limiter: Option<RateLimiter>,
    metrics: SourceMetrics,
    /// Where the source reports its watermarks (see [`crate::control`]).
    control: ControlHandle,
    /// Set by a halt for a restore: end without firing open windows.
    halt: Arc<AtomicBool>,
}

impl SourceFeed {
    fn send(&self, message: Message) -> bool {
        let started = Instant::now();
        let sent = self.tx.blocking_send((self.input, message)).is_ok();
        self.metrics.backpressured(started.elapsed());
        sent
    }

    fn run(
        mut self,
        mut source: Box<dyn Source>,
        watermark: WatermarkSpec,
        initial: Vec<PartitionState>,
    ) -> Result<()> {
        let partitions = source.partitions();
        let names: Vec<String> = source.positions().into_iter().map(|p| p.name).collect();
        let mut generators =
            vec![BoundedOutOfOrderness::new(watermark.out_of_orderness); partitions];
        let mut combiner = WatermarkCombiner::new(partitions, watermark.idle_timeout);
        // A restored partition starts at its checkpointed watermark.
        for state in &initial {
            if let Some(index) = names.iter().position(|name| *name == state.name) {
                if state.watermark > i64::MIN {
                    generators[index]
                        .observe(state.watermark.saturating_add(watermark.out_of_orderness));
                }
            }
        }
        let mut last_sent = i64::MIN;
        let mut last_barrier = 0;
        let mut last_bytes = 0u64;
        // The rate limiter's clock: time since the source started.
        let clock = Instant::now();
        let states = |source: &dyn Source, generators: &[BoundedOutOfOrderness]| {
            source
                .positions()
                .into_iter()
                .zip(generators)
                .map(|(position, generator)| PartitionState {
                    name: position.name,
                    offset: position.offset,
                    line: position.line,
                    watermark: generator.current(),
                })
                .collect::<Vec<_>>()
        };
        loop {
            // A barrier first, so that a stop's final barrier goes out before the end.
            let wanted = self.trigger.load(Ordering::SeqCst);
            if wanted > last_barrier {
                last_barrier = wanted;
                let partitions = states(source.as_ref(), &generators);
                if !self.send(Message::Barrier {
                    id: wanted,
                    partitions,
                }) {
                    return Ok(());
                }
            }
            // A source holding acknowledged records (HTTP ingest) hands them on first.
            if self.stop.load(Ordering::SeqCst) && !source.drain_before_stop() {
                let partitions = states(source.as_ref(), &generators);
                self.control
                    .report_source(self.input, &names, &generators, &combiner, None, true);
                self.send(Message::End {
                    fire: self.fire_on_stop && !self.halt.load(Ordering::SeqCst),
                    partitions,
                });
                return Ok(());
            }
            let max = match &self.limiter {
                Some(limiter) => limiter.max_batch().min(self.batch_size),
                None => self.batch_size,
            };
            let mut events = Vec::with_capacity(max);
            let mut dead_letters = Vec::new();
            let reading = Instant::now();
            let poll = source.poll_batch(max, &mut events, &mut dead_letters)?;
            // A poll that found nothing waited for input rather than worked.
            if matches!(poll, Poll::Pending) {
                self.metrics.starved(reading.elapsed());
            } else {
                self.metrics.busy(reading.elapsed());
            }
            let now = now_millis();
            let records = (events.len() + dead_letters.len()) as u64;
            let bytes = source.bytes_read();
            if records > 0 {
                self.counters.add_read(records, 0);
                self.metrics.events_read(records);
                self.metrics.dead_letters(dead_letters.len() as u64);
            }
            self.metrics.bytes_read(bytes.saturating_sub(last_bytes));
            last_bytes = bytes;
            self.counters.set_bytes_read(bytes);
            if !dead_letters.is_empty() && self.side.blocking_send(dead_letters).is_err() {
                return Ok(());
            }
            let event_partition = match poll {
                Poll::Data { partition } if !events.is_empty() => Some(partition),
                _ => None,
            };
            match poll {
                Poll::Data { partition } => {
                    let every = watermark.every.unwrap_or(usize::MAX).max(1);
                    // One chunk per watermark update: the whole batch unless `every` is smaller
                    // (then the batch's own vector, not a copy).
                    let chunks = if events.is_empty() {
                        Vec::new()
                    } else if events.len() <= every {
                        vec![events]
                    } else {
                        let mut rest = events.into_iter();
                        std::iter::from_fn(|| {
                            let chunk: Vec<Event> = rest.by_ref().take(every).collect();
                            (!chunk.is_empty()).then_some(chunk)
                        })
                        .collect()
                    };
                    let mut rest = chunks.into_iter().peekable();
                    while let Some(mut chunk) = rest.next() {
                        let mut max_time = i64::MIN;
                        for event in &mut chunk {
                            event.processing_time = now;
                            max_time = max_time.max(event.event_time);
                        }
                        if let Some(generator) = generators.get_mut(partition) {
                            generator.observe(max_time);
                            combiner.update(partition, generator.current(), now);
                        }
                        if !self.send_events(chunk, clock) {
                            return Ok(());
                        }
                        if rest.peek().is_some() && !self.send_watermark(&combiner, &mut last_sent)
                        {
                            return Ok(());
                        }
                    }
                }
                Poll::Pending => {
                    combiner.check_idle(now);
                    std::thread::sleep(FOLLOW_POLL);
                }
                Poll::PartitionEnd { partition } => combiner.finish(partition),
                Poll::End => {
                    let partitions = states(source.as_ref(), &generators);
                    self.control.report_source(
                        self.input,
                        &names,
                        &generators,
                        &combiner,
                        None,
                        true,
                    );
                    self.send(Message::End {
                        fire: true,
                        partitions,
                    });
                    return Ok(());
                }
            }
            self.control.report_source(
                self.input,
                &names,
                &generators,
                &combiner,
                event_partition,
                false,
            );
            if !self.send_watermark(&combiner, &mut last_sent) {
                return Ok(());
            }
        }
    }

    /// Sends a batch of events, first waiting as long as the rate limit says; false if the
    /// chain is gone. In adaptive mode, how long the send was blocked by backpressure is the
    /// latency the limiter observes (see [`dataflow_connectors::ratelimit`]).
    fn send_events(&mut self, events: Vec<Event>, clock: Instant) -> bool {
        if self.limiter.is_none() {
            return self.send(Message::Events(events));
        }
        let count = events.len() as u64;
        let wait = self.limiter.as_mut().map_or(Duration::ZERO, |limiter| {
            limiter.acquire(count, clock.elapsed())
        });
        if !wait.is_zero() {
            let waited = self.wait(wait);
            self.counters.add_rate_limit_wait(waited);
            self.metrics.rate_limit_wait(waited);
        }
        let started = Instant::now();
        let sent = self.send(Message::Events(events));
        let blocked = started.elapsed();
        if let Some(limiter) = &mut self.limiter {
            limiter.observe(blocked, clock.elapsed());
        }
        sent
    }

    /// Sleeps for `wait`, in slices so that a stop cuts it short (the batch is then sent at
    /// once: it has been read, and the final barrier's positions are past it). Returns how long
    /// it slept.
    fn wait(&self, wait: Duration) -> Duration {
        let started = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let Some(left) = wait.checked_sub(started.elapsed()) else {
                break;
            };
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(RATE_WAIT_SLICE));
        }
        started.elapsed()
    }

    /// Sends the combined watermark if it advanced; false if the chain is gone.
    fn send_watermark(&self, combiner: &WatermarkCombiner, last_sent: &mut i64) -> bool {
        let current = combiner.current();
        if current > *last_sent && current != i64::MAX {
            *last_sent = current;
            return self.send(Message::Watermark(current));
        }
        true
    }
}

/// A checkpoint being aligned: the barriers that have arrived, and the messages held back
/// from the inputs that sent them.
struct Alignment {
    id: u64,
    arrived: Vec<Option<Vec<PartitionState>>>,
    held: Vec<VecDeque<Message>>,
}

/// The operator chain: operators fused in one task, as Flink chains them. With `parallelism`
/// above 1 the chain keeps the operators before the keyed window and hands their output to
/// [`Workers`], each a `Chain` of its own running the rest.
struct Chain {
    /// The parallel workers running the operators after these, if any.
    workers: Option<Workers>,
    operators: Vec<OperatorNode>,
    /// One handle per operator, in the same order.
    operator_metrics: Vec<OperatorMetrics>,
    sinks: Vec<mpsc::Sender<SinkMessage>>,
    side: mpsc::Sender<Vec<SideRecord>>,
    counters: Arc<Counters>,
    writer: Option<mpsc::Sender<PendingCheckpoint>>,
    aligned: watch::Sender<u64>,
    source_names: Vec<String>,
    fingerprint: String,
    last_watermark: i64,
    /// Whether a stop waits for the sources' ends even without checkpoints: an http source
    /// drains the events it already accepted first.
    drain_on_stop: bool,
}

/// What drives the operators next.
#[derive(Debug)]
enum Drive {
    Events(Vec<Event>),
    Watermark(i64),
    Tick(i64),
    Finish(bool),
}

impl Chain {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(usize, Message)>,
        inputs: usize,
        idle_timeout: Option<i64>,
        stop: StopHandle,
        fire_on_stop: bool,
    ) -> Result<()> {
        let mut combiner = WatermarkCombiner::new(inputs, idle_timeout);
        let mut ended = vec![false; inputs];
        let mut final_partitions: Vec<Vec<PartitionState>> = vec![Vec::new(); inputs];
        let mut fire = true;
        let mut alignment: Option<Alignment> = None;
        let mut replay: VecDeque<(usize, Message)> = VecDeque::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // With checkpoints the sources send a final barrier; an http source drains: wait for both.
        let wait_for_sources = self.writer.is_some() || self.drain_on_stop;
        let mut stop_deadline: Option<tokio::time::Instant> = None;
        loop {
            let waiting = Instant::now();
            let next = match replay.pop_front() {
                Some(message) => Some(message),
                None => {
                    let deadline = stop_deadline;
                    let next = tokio::select! {
                        message = rx.recv() => match message {
                            Some(message) => Some(message),
                            // Every source is gone without saying End: it failed; its error
                            // is reported by its task. Keep what the windows hold.
                            None => {
                                self.drive(Drive::Finish(false)).await?;
                                return Ok(());
                            }
                        },
                        _ = tick.tick() => {
                            let now = now_millis();
                            combiner.check_idle(now);
                            self.advance(combiner.current()).await?;
                            self.drive(Drive::Tick(now)).await?;
                            None
                        }
                        _ = stop.stopped(), if stop_deadline.is_none() => {
                            if !wait_for_sources {
                                self.drive(Drive::Finish(fire_on_stop)).await?;
                                return Ok(());
                            }
                            // The sources send their final barrier and end: wait for them, but
                            // not for one blocked in a read.
                            stop_deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
                            None
                        }
                        _ = async { if let Some(deadline) = deadline { tokio::time::sleep_until(deadline).await } }, if deadline.is_some() => {
                            tracing::warn!("a source did not end within the stop's grace period; stopping without it");
                            self.drive(Drive::Finish(fire_on_stop)).await?;
                            return Ok(());
                        }
                    };
                    self.starved(waiting.elapsed(), rx.len(), rx.max_capacity());
                    next
                }
            };
            let Some((input, message)) = next else {
                continue;
            };
            if let Some(aligning) = &mut alignment {
                if aligning.arrived[input].is_some() {
                    aligning.held[input].push_back(message);
                    continue;
                }
            }
            match message {
                Message::Events(events) => {
                    combiner.activity(input, now_millis());
                    self.drive(Drive::Events(events)).await?;
                }
                Message::Watermark(watermark) => {
                    combiner.update(input, watermark, now_millis());
                    self.advance(combiner.current()).await?;
                }
                Message::Barrier { id, partitions } => {
                    let current = alignment.as_ref().map(|a| a.id).unwrap_or(0);
                    if id < current {
                        continue;
                    }
                    if id > current {
                        if let Some(abandoned) = alignment.take() {
                            tracing::debug!(
                                checkpoint = abandoned.id,
                                newer = id,
                                "checkpoint abandoned for a newer one"
                            );
                            release(abandoned.held, &mut replay);
                        }
                        alignment = Some(Alignment {
                            id,
                            arrived: vec![None; inputs],
                            held: (0..inputs).map(|_| VecDeque::new()).collect(),
                        });
                    }
                    if let Some(aligning) = &mut alignment {
                        aligning.arrived[input] = Some(partitions);
                    }
                }
                Message::End {
                    fire: fire_input,
                    partitions,
                } => {
                    combiner.finish(input);
                    ended[input] = true;
                    final_partitions[input] = partitions;
                    fire &= fire_input;
                }
            }
            // An alignment completes when every input that has not ended sent its barrier.
            let complete = alignment.as_ref().is_some_and(|aligning| {
                (0..inputs).all(|i| ended[i] || aligning.arrived[i].is_some())
            });
            if complete {
                if let Some(aligning) = alignment.take() {
                    self.checkpoint(&aligning, &final_partitions).await?;
                    release(aligning.held, &mut replay);
                }
            }
            if ended.iter().all(|e| *e) && alignment.is_none() && replay.is_empty() {
                self.drive(Drive::Finish(fire)).await?;
                return Ok(());
            }
            if ended[input] {
                self.advance(combiner.current()).await?;
            }
        }
    }

    /// Counts `waited` as time every operator was starved for input, and the input queue's fill
    /// (`queued` of `capacity`) against the first.
    fn starved(&self, waited: Duration, queued: usize, capacity: usize) {
        for metrics in &self.operator_metrics {
            metrics.starved(waited);
        }
        if let Some(first) = self.operator_metrics.first() {
            first.set_queue_fill(queued, capacity);
        }
    }

    /// Drives the operators with the combined watermark if it advanced.
    async fn advance(&mut self, watermark: i64) -> Result<()> {
        if watermark > self.last_watermark && watermark != i64::MAX {
            self.last_watermark = watermark;
            self.counters.set_watermark(watermark);
            self.drive(Drive::Watermark(watermark)).await?;
        }
        Ok(())
    }

    /// Snapshots the operators for an aligned checkpoint, sends the sinks its barrier and the
    /// writer the checkpoint, and tells the coordinator.
    async fn checkpoint(
        &mut self,
        aligning: &Alignment,
        final_partitions: &[Vec<PartitionState>],
    ) -> Result<()> {
        let snapshot_started = Instant::now();
        let mut operators = Vec::new();
        for node in &self.operators {
            if let Some(OperatorSnapshot { key_count, state }) = node.operator.snapshot()? {
                operators.push(OperatorState {
                    name: node.info.name.to_string(),
                    kind: node.info.kind.to_string(),
                    key_count,
                    state,
                });
            }
        }
        if let Some(workers) = &mut self.workers {
            operators.extend(workers.snapshot().await?);
        }
        let sources = self
            .source_names
            .iter()
            .enumerate()
            .map(|(input, name)| SourceState {
                name: name.clone(),
                partitions: aligning.arrived[input]
                    .clone()
                    .unwrap_or_else(|| final_partitions[input].clone()),
            })
            .collect();
        let snapshot_time = snapshot_started.elapsed();
        let checkpoint = Checkpoint {
            id: CheckpointId(aligning.id),
            created_at_ms: now_millis(),
            pipeline_fingerprint: self.fingerprint.clone(),
            sources,
            operators,
            watermark: self.last_watermark,
        };
        let mut acks = Vec::new();
        for sink in &self.sinks {
            let (ack, acked) = oneshot::channel();
            if sink
                .send(SinkMessage::Barrier(aligning.id, ack))
                .await
                .is_err()
            {
                return Err(PipelineError::Runtime("a sink stopped".into()));
            }
            acks.push(acked);
        }
        if let Some(writer) = &self.writer {
            if writer
                .send(PendingCheckpoint {
                    checkpoint,
                    acks,
                    snapshot_time,
                })
                .await
                .is_err()
            {
                return Err(PipelineError::Runtime(
                    "the checkpoint writer stopped".into(),
                ));
            }
        }
        self.aligned.send_replace(aligning.id);
        Ok(())
    }

    /// Calls `control` on every operator in order (a watermark, a tick, the end), passing what
    /// each emits through the operators after it.
    fn each_operator(
        &mut self,
        side: &mut Vec<SideRecord>,
        results: &mut Vec<Event>,
        mut control: impl FnMut(&mut dyn dataflow_operators::Operator, &mut Output),
    ) -> Result<()> {
        for index in 0..self.operators.len() {
            let mut out = Output::default();
            let started = Instant::now();
            control(self.operators[index].operator.as_mut(), &mut out);
            let metrics = &self.operator_metrics[index];
            metrics.busy(started.elapsed());
            // What a watermark, a tick or the end makes an operator emit counts as sent too.
            let events = take_output(metrics, out, side)?;
            results.extend(push(
                &mut self.operators,
                &self.operator_metrics,
                index + 1,
                events,
                side,
            )?);
        }
        Ok(())
    }

    /// Runs one input through the operators from the first, forwarding what each emits to the
    /// ones after it, then hands results and side records on.
    async fn drive(&mut self, drive: Drive) -> Result<()> {
        let mut side = Vec::new();
        let mut results = Vec::new();
        // What the workers get after this chain's results, if there are workers.
        let forward = match drive {
            Drive::Events(events) => {
                results = push(
                    &mut self.operators,
                    &self.operator_metrics,
                    0,
                    events,
                    &mut side,
                )?;
                None
            }
            Drive::Watermark(watermark) => {
                let now = now_millis();
                for metrics in &self.operator_metrics {
                    metrics.set_watermark(watermark, now);
                }
                let mut forwarded = watermark;
                self.each_operator(&mut side, &mut results, |operator, out| {
                    forwarded = operator.on_watermark(forwarded, out);
                })?;
                Some(Drive::Watermark(forwarded))
            }
            Drive::Tick(now) => {
                self.each_operator(&mut side, &mut results, |operator, out| {
                    operator.on_tick(now, out)
                })?;
                Some(Drive::Tick(now))
            }
            Drive::Finish(fire) => {
                self.each_operator(&mut side, &mut results, |operator, out| {
                    operator.finish(fire, out)
                })?;
                Some(Drive::Finish(fire))
            }
        };
        let started = Instant::now();
        if !side.is_empty() && self.side.send(side).await.is_err() {
            return Err(PipelineError::Runtime(
                "the dead-letter writer stopped".into(),
            ));
        }
        if let Some(workers) = &mut self.workers {
            workers.route(results).await?;
            if let Some(control) = forward {
                workers.broadcast(control).await?;
            }
            self.blocked(started.elapsed());
            return Ok(());
        }
        if !results.is_empty() {
            self.counters.add_emitted(results.len() as u64);
            let results = Arc::new(results);
            for sink in &self.sinks {
                if sink
                    .send(SinkMessage::Events(results.clone()))
                    .await
                    .is_err()
                {
                    return Err(PipelineError::Runtime("a sink stopped".into()));
                }
            }
        }
        self.blocked(started.elapsed());
        Ok(())
    }

    /// The chain waited `waited` for room downstream: every operator of it did.
    fn blocked(&self, waited: Duration) {
        for metrics in &self.operator_metrics {
            metrics.backpressured(waited);
        }
    }

    /// Runs a worker: drives its operators with what the chain routes to it, and answers the
    /// chain's snapshot requests in order with the rest, until the end of input.
    async fn run_worker(mut self, mut rx: mpsc::Receiver<WorkerMessage>) -> Result<()> {
        loop {
            let waiting = Instant::now();
            let Some(message) = rx.recv().await else {
                // The chain is gone without an end of input: it failed and says why.
                return Ok(());
            };
            self.starved(waiting.elapsed(), rx.len(), rx.max_capacity());
            match message {
                WorkerMessage::Drive(drive) => {
                    let finish = matches!(drive, Drive::Finish(_));
                    self.drive(drive).await?;
                    if finish {
                        return Ok(());
                    }
                }
                WorkerMessage::Snapshot(reply) => {
                    let snapshots = self
                        .operators
                        .iter()
                        .map(|node| node.operator.snapshot().map_err(PipelineError::from))
                        .collect();
                    let _ = reply.send(snapshots);
                }
            }
        }
    }
}

/// The name of sink `index` in metrics and the backpressure report.
fn sink_stage(index: usize) -> String {
    format!("sinks[{index}]")
}

/// What a worker is sent, in stream order.
enum WorkerMessage {
    /// Events (of the keys it owns), a watermark, a tick or the end of input.
    Drive(Drive),
    /// A checkpoint barrier: reply with every operator's snapshot, taken after everything
    /// before it was processed and handed to the sinks.
    Snapshot(oneshot::Sender<Result<Vec<Option<OperatorSnapshot>>>>),
}

/// The parallel workers of a pipeline, seen from the chain that feeds them.
struct Workers {
    txs: Vec<mpsc::Sender<WorkerMessage>>,
    tasks: Vec<tokio::task::JoinHandle<Result<()>>>,
    /// One more instance of the workers' operators, holding no state: it merges their
    /// snapshots and names them.
    templates: Vec<OperatorNode>,
    /// Events go to the worker owning their key; otherwise (a stateless chain) batches go
    /// round robin.
    keyed: bool,
    next: usize,
}

impl Workers {
    async fn send(&mut self, worker: usize, message: WorkerMessage) -> Result<()> {
        if self.txs[worker].send(message).await.is_err() {
            return Err(PipelineError::Runtime(format!("worker {worker} stopped")));
        }
        Ok(())
    }

    /// Hands events to the workers: each to the worker owning its key (by
    /// `dataflow_window::key_partition`, the hash checkpoints are split by), so that every key's
    /// events reach one worker in stream order.
    async fn route(&mut self, events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let count = self.txs.len();
        if !self.keyed {
            let worker = self.next;
            self.next = (self.next + 1) % count;
            return self
                .send(worker, WorkerMessage::Drive(Drive::Events(events)))
                .await;
        }
        let share = events.len() / count + 1;
        let mut parts: Vec<Vec<Event>> = (0..count).map(|_| Vec::with_capacity(share)).collect();
        const NO_KEY: dataflow_event::Value = dataflow_event::Value::Null;
        for event in events {
            let worker =
                dataflow_window::key_partition(event.key.as_ref().unwrap_or(&NO_KEY), count);
            parts[worker].push(event);
        }
        for (worker, part) in parts.into_iter().enumerate() {
            if !part.is_empty() {
                self.send(worker, WorkerMessage::Drive(Drive::Events(part)))
                    .await?;
            }
        }
        Ok(())
    }

    /// Sends a watermark, tick or end of input to every worker; after an end of input, waits
    /// for the workers to finish.
    async fn broadcast(&mut self, control: Drive) -> Result<()> {
        let finish = matches!(control, Drive::Finish(_));
        for worker in 0..self.txs.len() {
            let copy = match &control {
                Drive::Watermark(watermark) => Drive::Watermark(*watermark),
                Drive::Tick(now) => Drive::Tick(*now),
                Drive::Finish(fire) => Drive::Finish(*fire),
                Drive::Events(_) => {
                    return Err(PipelineError::Runtime(
                        "events are routed to workers, not broadcast".into(),
                    ))
                }
            };
            self.send(worker, WorkerMessage::Drive(copy)).await?;
        }
        if finish {
            self.txs.clear();
            for task in self.tasks.drain(..) {
                task.await
                    .map_err(|error| PipelineError::Runtime(format!("worker failed: {error}")))??;
            }
        }
        Ok(())
    }

    /// Every worker's snapshot, merged into one state per operator: a checkpoint holds one
    /// logical state per operator whatever the number of workers.
    async fn snapshot(&mut self) -> Result<Vec<OperatorState>> {
        let mut replies = Vec::new();
        for worker in 0..self.txs.len() {
            let (reply, replied) = oneshot::channel();
            self.send(worker, WorkerMessage::Snapshot(reply)).await?;
            replies.push(replied);
        }
        let mut parts: Vec<Vec<OperatorSnapshot>> = vec![Vec::new(); self.templates.len()];
        for replied in replies {
            let snapshots = replied
                .await
                .map_err(|_| PipelineError::Runtime("a worker stopped".into()))??;
            for (index, snapshot) in snapshots.into_iter().enumerate() {
                if let Some(snapshot) = snapshot {
                    parts[index].push(snapshot);
                }
            }
        }
        let mut states = Vec::new();
        for (node, parts) in self.templates.iter().zip(parts) {
            if parts.is_empty() {
                continue;
            }
            let OperatorSnapshot { key_count, state } = node.operator.merge_snapshots(parts)?;
            states.push(OperatorState {
                name: node.info.name.to_string(),
                kind: node.info.kind.to_string(),
                key_count,
                state,
            });
        }
        Ok(states)
    }
}

/// Where workers send what they emit.
struct WorkerOutputs<'a> {
    sinks: &'a [mpsc::Sender<SinkMessage>],
    side: &'a mpsc::Sender<Vec<SideRecord>>,
    counters: &'a Arc<Counters>,
}

/// Which operators run in parallel workers, from `start` to the end, and whether by key (see
/// [`dataflow_operators::kind::parallel_part`]).
fn parallel_part(operators: &[OperatorNode]) -> Option<(usize, bool)> {
    let kinds: Vec<&OperatorKind> = operators.iter().map(|node| node.info.kind).collect();
    dataflow_operators::kind::parallel_part(&kinds)
}

/// Starts `plan.runtime.parallelism` workers for the parallel part of the plan, if it has one,
/// taking those operators out of `plan.operators`. Each worker builds its own instances with
/// the plan's operator factory; a restored state (already in `plan.operators`) is split among
/// them by key.
fn start_workers(
    plan: &mut Plan,
    metrics: &Metrics,
    outputs: WorkerOutputs<'_>,
    restored: bool,
    start_watermark: i64,
) -> Result<Option<Workers>> {
    let count = plan.runtime.parallelism;
    if count <= 1 {
        return Ok(None);
    }
    let Some((start, keyed)) = parallel_part(&plan.operators) else {
        tracing::warn!(
            parallelism = count,
            "this pipeline's state cannot be split by key (a keyed operator without key_by before it, a stateful operator that is not keyed, or a key changed between keyed operators): running one worker"
        );
        return Ok(None);
    };
    let templates = plan.operators.split_off(start);
    // The restored state of each operator, split by key among the workers.
    let mut parts: Vec<Option<Vec<Vec<u8>>>> = Vec::with_capacity(templates.len());
    for node in &templates {
        parts.push(match node.operator.snapshot()? {
            Some(snapshot) if restored => {
                Some(node.operator.split_snapshot(&snapshot.state, count)?)
            }
            _ => None,
        });
    }
    // The templates' state has been handed on: close their stores (a worker reopens one) and
    // rebuild them empty.
    drop(templates);
    let templates = plan.operator_factory.build().split_off(start);
    let mut instances: Vec<Vec<OperatorNode>> = (0..count)
        .map(|_| plan.operator_factory.build().split_off(start))
        .collect();
    if instances.iter().any(|nodes| nodes.len() != templates.len()) {
        return Err(PipelineError::Runtime(
            "the operator factory built another pipeline than the plan".into(),
        ));
    }
    for (worker, operators) in instances.iter_mut().enumerate() {
        for (index, node) in operators.iter_mut().enumerate() {
            node.operator.open(worker)?;
            if let Some(Some(parts)) = parts.get(index) {
                if let Some(part) = parts.get(worker) {
                    node.operator.restore(part)?;
                }
            }
        }
    }
    let mut txs = Vec::new();
    let mut tasks = Vec::new();
    for operators in instances {
        let operator_metrics: Vec<OperatorMetrics> = operators
            .iter()
            .map(|node| {
                let handle = metrics.operator(&plan.name, &node.info.name, node.info.kind.name);
                handle.set_instances(count);
                handle
            })
            .collect();
        let (tx, rx) = mpsc::channel(plan.runtime.channel_capacity);
        let worker = Chain {
            workers: None,
            operators,
            operator_metrics,
            sinks: outputs.sinks.to_vec(),
            side: outputs.side.clone(),
            counters: outputs.counters.clone(),
            writer: None,
            aligned: watch::channel(0).0,
            source_names: Vec::new(),
            fingerprint: String::new(),
            last_watermark: start_watermark,
            drain_on_stop: false,
        };
        txs.push(tx);
        tasks.push(tokio::spawn(worker.run_worker(rx)));
    }
    tracing::info!(workers = count, keyed, "parallel workers started");
    Ok(Some(Workers {
        txs,
        tasks,
        templates,
        keyed,
        next: 0,
    }))
}

/// Puts messages held back during an alignment in front of what is left to replay: they came
/// before anything of their input still waiting there.
fn release(held: Vec<VecDeque<Message>>, replay: &mut VecDeque<(usize, Message)>) {
    for (input, messages) in held.into_iter().enumerate().rev() {
        for message in messages.into_iter().rev() {
            replay.push_front((input, message));
        }
    }
}

/// Passes `events` through `operators[start..]`.
fn push(
    operators: &mut [OperatorNode],
    metrics: &[OperatorMetrics],
    start: usize,
    mut events: Vec<Event>,
    side: &mut Vec<SideRecord>,
) -> Result<Vec<Event>> {
    for (node, metrics) in operators.iter_mut().zip(metrics).skip(start) {
        if events.is_empty() {
            break;
        }
        let mut out = Output::default();
        let received = events.len() as u64;
        let started = Instant::now();
        node.operator.process(events, &mut out);
        metrics.observe_processing(started.elapsed());
        metrics.events_received(received);
        events = take_output(metrics, out, side)?;
    }
    Ok(events)
}

/// Takes what an operator emitted: the run fails if the operator failed; otherwise what it sent
/// and routed aside is counted, its side records join `side`, and its events are returned.
fn take_output(
    metrics: &OperatorMetrics,
    mut out: Output,
    side: &mut Vec<SideRecord>,
) -> Result<Vec<Event>> {
    if let Some(failure) = out.failure {
        return Err(failure.into());
    }
    metrics.events_sent(out.events.len() as u64);
    let late = out.side.iter().filter(|r| r.kind == SideKind::Late).count() as u64;
    metrics.late_events(late);
    metrics.dead_letters(out.side.len() as u64 - late);
    side.append(&mut out.side);
    Ok(out.events)
}

/// Counts how long each of `events` took from its source (its processing time) to `now`. Runs
/// of equal processing times, the rule within a batch, are counted at once.
fn record_latency(latency: &dataflow_metrics::Latency, events: &[Event], now: i64) {
    let mut run: Option<(i64, u64)> = None;
    for event in events {
        match &mut run {
            Some((time, count)) if *time == event.processing_time => *count += 1,
            _ => {
                if let Some((time, count)) = run {
                    latency.record(now - time, count);
                }
                run = Some((event.processing_time, 1));
            }
        }
    }
    if let Some((time, count)) = run {
        latency.record(now - time, count);
    }
}

/// Writes batches as they come; flushes whenever nothing more is queued, so a live pipeline's
/// results show at once while a busy one writes in large chunks; flushes and acknowledges at
/// every checkpoint barrier.
async fn run_sink(
    mut rx: mpsc::Receiver<SinkMessage>,
    mut sink: Box<dyn Sink>,
    metrics: OperatorMetrics,
    latency: Option<Arc<Counters>>,
) -> Result<()> {
    loop {
        let waiting = Instant::now();
        let Some(message) = rx.recv().await else {
            break;
        };
        metrics.starved(waiting.elapsed());
        metrics.set_queue_fill(rx.len(), rx.max_capacity());
        match message {
            SinkMessage::Events(events) => {
                let started = Instant::now();
                sink.write(&events).await?;
                if rx.is_empty() {
                    sink.flush().await?;
                }
                if let Some(counters) = &latency {
                    record_latency(counters.latency(), &events, now_millis());
                }
                metrics.observe_processing(started.elapsed());
                metrics.events_received(events.len() as u64);
            }
            SinkMessage::Commit(id) => sink.commit(id).await?,
            SinkMessage::Barrier(id, ack) => {
                let result = sink.prepare(id).await.map_err(PipelineError::from);
                let failed = result.is_err();
                let _ = ack.send(result);
                if failed {
                    return Err(PipelineError::Runtime(
                        "a sink failed to flush at a checkpoint".into(),
                    ));
                }
            }
        }
    }
    Ok(sink.finish().await?)
}

async fn run_side(
    mut rx: mpsc::Receiver<Vec<SideRecord>>,
    mut chain_done: oneshot::Receiver<()>,
    mut dead_letters: SideWriter,
    mut late: Option<SideWriter>,
    counters: Arc<Counters>,
) -> Result<()> {
    let mut draining = false;
    loop {
        let records = if draining {
            match rx.try_recv() {
                Ok(records) => records,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                records = rx.recv() => match records {
                    Some(records) => records,
                    None => break,
                },
                _ = &mut chain_done => {
                    // Everything a finished source sent is queued by now (it sends its dead
                    // letters before its end of input); take it and stop.
                    draining = true;
                    continue;
                }
            }
        };
        let (late_records, dead): (Vec<SideRecord>, Vec<SideRecord>) = records
            .into_iter()
            .partition(|record| record.kind == SideKind::Late);
        counters.add_dead_letters(dead.len() as u64);
        counters.add_late(late_records.len() as u64);
        dead_letters.write(&dead).await?;
        match &mut late {
            Some(writer) => writer.write(&late_records).await?,
            None => dead_letters.write(&late_records).await?,
        }
        if rx.is_empty() {
            dead_letters.flush().await?;
            if let Some(writer) = &mut late {
                writer.flush().await?;
            }
        }
    }
    dead_letters.flush().await?;
    if let Some(writer) = &mut late {
        writer.flush().await?;
    }
    Ok(())
}
