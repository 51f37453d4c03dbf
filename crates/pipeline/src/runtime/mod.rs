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
//! With one worker and one source that never waits in a read (`runtime.fuse_source`, on by
//! default), the chain runs on that source's thread instead of a task of its own
//! (`chain::Fused`): the source hands it each message directly, so a batch is decoded,
//! processed and freed on one thread. Everything else (barriers, checkpoints, sinks) is the same.
//!
//! Checkpoints are aligned by barriers. Every interval the coordinator asks the sources for
//! barrier `n`; each source sends it in band after the batch it was reading, with its
//! partitions' positions and watermarks. The chain holds back the messages of an input whose
//! barrier has arrived until every live input's has, then snapshots the operators, asks the
//! sinks to flush, and hands the checkpoint to the writer, which saves it once every sink has
//! acknowledged. A newer barrier arriving during an alignment abandons the older checkpoint.

mod chain;
mod coordinator;
mod driver;
mod messages;
mod outputs;
pub(crate) mod restore;
mod source_feed;
mod stop;
mod workers;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflow_checkpoint::{FileSystem, PartitionState};
use dataflow_connectors::http::{IngestHub, IngestQueue};
use dataflow_connectors::ratelimit::RateLimiter;
use dataflow_metrics::{Backpressure, Counters, Metrics, RunSummary};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::control::ControlHandle;
use crate::plan::Plan;
use crate::spec::OnStop;
use crate::{PipelineError, Result};

use chain::{Chain, Fused};
use driver::Operators;
use outputs::{sink_stage, OutputSpecs, OutputTasks};
use restore::Start;
use source_feed::{FeedContext, FeedOut, OpenedSource, SourceFeed};
use stop::{Failure, Reading, SourceSignals};
use writer::WriterTask;

pub use messages::Message;
pub use restore::{RestoreMode, RestoreOptions};
pub use stop::StopHandle;

/// How often the chain checks idle inputs and advances processing time.
const TICK: Duration = Duration::from_millis(100);

/// A pipeline ready to run.
#[derive(Debug)]
pub struct Pipeline {
    plan: Plan,
    counters: Arc<Counters>,
    metrics: Arc<Metrics>,
    stop: StopHandle,
    restore: RestoreOptions,
    checkpoint_fs: Option<Arc<dyn FileSystem>>,
    /// Whether the run claims its checkpoint directory before restoring (a scale-out task).
    claim_checkpoints: bool,
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

impl Pipeline {
    /// A pipeline for a checked plan.
    pub fn new(plan: Plan) -> Pipeline {
        Pipeline::with_metrics(plan, Arc::new(Metrics::new()))
    }

    /// A pipeline for a checked plan whose metrics go to `metrics`, a registry shared with
    /// other pipelines of the process (the tasks of a scale-out processor, each under a
    /// pipeline name of its own).
    pub fn with_metrics(plan: Plan, metrics: Arc<Metrics>) -> Pipeline {
        let counters = Arc::new(Counters::default());
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
            claim_checkpoints: false,
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

    /// Claims the checkpoint directory before restoring from it
    /// (`dataflow_checkpoint::LocalStorage::claim`): the run becomes the directory's owner, and
    /// once another run claims it after this one, this run's next save is refused and the run
    /// fails with [`PipelineError::Fenced`]. For the tasks of a scale-out processor, whose
    /// directory a partition's next owner takes over.
    pub fn claiming_checkpoints(mut self) -> Pipeline {
        self.claim_checkpoints = true;
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
            let claim_checkpoints = pipeline.claim_checkpoints;
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
                        claim_checkpoints,
                        control: control.clone(),
                        replan: Some(replan),
                        ingest,
                    };
                }
                (result, restart, _) => {
                    if restart.is_some() {
                        control.restart_abandoned("it was stopped before the restore");
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
            claim_checkpoints,
            control,
            replan: _,
            ingest,
        } = self;
        control.run_starting(&plan);
        let fingerprint = plan.fingerprint();

        // Open every source and sink before anything runs, so a bad path fails the run at once.
        let mut sources = source_feed::open_sources(&plan, &ingest)?;
        // Operators open their state stores before a restore fills them.
        for node in &mut plan.operators {
            node.operator.open(0)?;
        }
        let start = restore::restore_on_start(
            &mut plan,
            restore,
            checkpoint_fs,
            claim_checkpoints,
            &metrics,
            &mut sources,
            &control,
        )?;
        let failure = Failure::default();
        let reading = Reading::new(plan.sources.len());
        let OutputTasks {
            downstream,
            sink_tasks,
            side_task,
            chain_done,
        } = outputs::start_outputs(
            OutputSpecs::of(&plan),
            start.restored,
            &counters,
            &metrics,
            &failure,
        )
        .await?;
        let saved = Arc::new(std::sync::atomic::AtomicU64::new(start.last_id));
        let (writer_tx, writer_task) = match &start.storage {
            Some(storage) => {
                let WriterTask { tx, task } = writer::start_writer(
                    storage.clone(),
                    downstream.sinks.clone(),
                    counters.clone(),
                    metrics.checkpoints(&plan.name),
                    saved.clone(),
                    failure.clone(),
                );
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        let (coordinator, signals, aligned) =
            start_coordinator(&plan, &start, &stop, &control, saved);
        let feed = FeedContext {
            side: downstream.side.clone(),
            counters: counters.clone(),
            signals: signals.clone(),
            batch_size: plan.runtime.batch_size,
            fire_on_stop: plan.runtime.on_stop == OnStop::Fire,
            control: control.clone(),
            reading: reading.clone(),
            failure: failure.clone(),
        };
        let workers =
            workers::start_workers(&mut plan, &metrics, &downstream, start.restored.is_some())?;
        let fuse = fuses(&plan, &sources, workers.is_some());
        let chain = Chain {
            workers,
            operators: chain_operators(&mut plan, &metrics),
            downstream,
            writer: writer_tx,
            aligned,
            source_names: plan.sources.iter().map(|s| s.spec.name.clone()).collect(),
            fingerprint,
            last_watermark: start.watermark,
            reading,
            asked_at: signals.asked_at.clone(),
        };
        let (chain_result, source_tasks) = if fuse {
            tracing::debug!("the operator chain runs on its source's thread");
            control.run_started(start.restored);
            run_fused(chain, &plan, sources, start.initial, feed, &metrics).await
        } else {
            let (chain_rx, source_tasks) =
                start_sources(&plan, sources, start.initial, feed, &metrics);
            control.run_started(start.restored);
            let chain_result = run_chain(chain, &plan, chain_rx, &stop).await;
            (chain_result, source_tasks)
        };
        coordinator.abort();
        let chain_result =
            chain_result.map_err(|error| failure.report(error, "the operator chain"));
        if let Some(reason) = failure.reason() {
            // The run failed: say so at once (ingest refused, status and readiness failed), and
            // have the sources end without firing; nothing waits for them.
            control.run_failing(&reason);
            ingest.fail(&reason);
            signals
                .halt
                .store(true, std::sync::atomic::Ordering::SeqCst);
            signals
                .stop
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let failed = failure.reason().is_some();
        let finished = finish(
            chain_result,
            RunTasks {
                sink_tasks,
                writer_task,
                chain_done,
                side_task,
                source_tasks,
            },
            stop.is_stopped() || failed,
        )
        .await;
        // The run's error is the first failure's (the task where it started), if any.
        if let Some(error) = failure.take() {
            return Err(error);
        }
        finished?;
        Ok(counters.summary(started.elapsed()))
    }
}

/// Starts the checkpoint coordinator of a run. It asks the sources for barriers through the
/// returned signals; on a stop it asks for a final one (when checkpointing) and only then tells
/// the sources to stop. The chain tells it through the returned sender which checkpoint it
/// aligned last.
fn start_coordinator(
    plan: &Plan,
    start: &Start,
    stop: &StopHandle,
    control: &ControlHandle,
    saved: Arc<std::sync::atomic::AtomicU64>,
) -> (JoinHandle<()>, SourceSignals, watch::Sender<u64>) {
    let signals = SourceSignals {
        saved,
        ..SourceSignals::default()
    };
    control.run_starts_after(start.last_id);
    let (aligned_tx, aligned_rx) = watch::channel(start.last_id);
    let coordinator = tokio::spawn(coordinator::coordinate(
        plan.checkpoint.as_ref().map(|c| c.interval),
        start.last_id,
        signals.clone(),
        aligned_rx,
        stop.clone(),
        control.inbox(),
    ));
    (coordinator, signals, aligned_tx)
}

/// The chain's input, which every source thread feeds, and those threads.
type SourceTasks = (
    mpsc::Receiver<(usize, Message)>,
    Vec<JoinHandle<Result<()>>>,
);

/// Starts a thread for every source, from its restored partitions (`initial`), all feeding
/// the returned channel.
fn start_sources(
    plan: &Plan,
    sources: Vec<OpenedSource>,
    initial: Vec<Vec<PartitionState>>,
    context: FeedContext,
    metrics: &Metrics,
) -> SourceTasks {
    let (tx, rx) = mpsc::channel::<(usize, Message)>(plan.runtime.channel_capacity);
    let mut tasks = Vec::new();
    for (input, (opened, initial)) in sources.into_iter().zip(initial).enumerate() {
        let OpenedSource {
            source,
            watermark,
            limiter,
        } = opened;
        let source_metrics = metrics.source(&plan.name, &plan.sources[input].spec.name);
        let feed = SourceFeed::new(
            &context,
            FeedOut::Channel(tx.clone()),
            input,
            limiter,
            source_metrics,
        );
        tasks.push(tokio::task::spawn_blocking(move || {
            feed.run(source, watermark, initial)
        }));
    }
    (rx, tasks)
}

/// Whether the chain runs on its source's thread: `runtime.fuse_source` is on, there are no
/// parallel workers, and the one source has no rate limit (it waits on its thread) and never
/// waits in a read (ticks and stops are then seen between its reads).
fn fuses(plan: &Plan, sources: &[OpenedSource], workers: bool) -> bool {
    plan.runtime.fuse_source
        && !workers
        && matches!(sources, [only] if only.limiter.is_none() && only.source.reads_without_waiting())
}

/// Runs the one source with the chain fused into its thread (see [`chain::Fused`]) to the
/// end; the chain's result, and the source's as a task for [`finish`] to collect. (Not an
/// `async fn`: the future must not hold the `&Plan`, whose operators are not `Sync`.)
fn run_fused(
    chain: Chain,
    plan: &Plan,
    mut sources: Vec<OpenedSource>,
    initial: Vec<Vec<PartitionState>>,
    context: FeedContext,
    metrics: &Metrics,
) -> impl std::future::Future<Output = (Result<()>, Vec<JoinHandle<Result<()>>>)> + Send {
    let idle_timeout = plan
        .sources
        .iter()
        .filter_map(|s| s.spec.watermark.idle_timeout)
        .min();
    let source_metrics = metrics.source(&plan.name, &plan.sources[0].spec.name);
    let parts = sources.pop().zip(initial.into_iter().next());
    async move {
        let Some((opened, initial)) = parts else {
            let error = PipelineError::Runtime("a fused chain needs its source".into());
            return (Err(error), Vec::new());
        };
        let OpenedSource {
            source,
            watermark,
            limiter,
        } = opened;
        let fused = Fused::new(chain, idle_timeout, tokio::runtime::Handle::current());
        let feed = SourceFeed::new(
            &context,
            FeedOut::Fused(Box::new(fused)),
            0,
            limiter,
            source_metrics,
        );
        let joined =
            tokio::task::spawn_blocking(move || feed.run_fused(source, watermark, initial)).await;
        match joined {
            Ok((source_result, chain_result)) => (
                chain_result,
                vec![tokio::spawn(async move { source_result })],
            ),
            Err(error) => (
                Err(PipelineError::Runtime(format!(
                    "the source and operator chain thread failed: {error}"
                ))),
                Vec::new(),
            ),
        }
    }
}

/// The operators left in `plan` (those before the parallel workers, or all of them), taken out
/// for the chain with their metrics.
fn chain_operators(plan: &mut Plan, metrics: &Metrics) -> Operators {
    let operator_metrics = plan
        .operators
        .iter()
        .map(|node| metrics.operator(&plan.name, &node.info.name, node.info.kind.name))
        .collect();
    Operators::new(std::mem::take(&mut plan.operators), operator_metrics)
}

/// Runs the chain over the sources' messages until the end of input or a stop. (Not an
/// `async fn`: the future must not hold the `&Plan`, whose operators are not `Sync`.)
fn run_chain(
    chain: Chain,
    plan: &Plan,
    rx: mpsc::Receiver<(usize, Message)>,
    stop: &StopHandle,
) -> impl std::future::Future<Output = Result<()>> + Send {
    let inputs = plan.sources.len();
    let idle_timeout = plan
        .sources
        .iter()
        .filter_map(|s| s.spec.watermark.idle_timeout)
        .min();
    let fire_on_stop = plan.runtime.on_stop == OnStop::Fire;
    chain.run(rx, inputs, idle_timeout, stop.clone(), fire_on_stop)
}

/// The tasks of a run left to wait for once the chain is done.
struct RunTasks {
    sink_tasks: Vec<JoinHandle<Result<()>>>,
    writer_task: Option<JoinHandle<()>>,
    /// Tells the side task that everything but the sources is done.
    chain_done: tokio::sync::oneshot::Sender<()>,
    side_task: JoinHandle<Result<()>>,
    source_tasks: Vec<JoinHandle<Result<()>>>,
}

/// Waits for the sinks, the checkpoint writer, the side output and (unless the run was
/// `stopped` or failed) the sources to end; the run's error is the chain's, or else the first
/// of theirs.
async fn finish(chain_result: Result<()>, tasks: RunTasks, stopped: bool) -> Result<()> {
    let mut first_error = chain_result.err();
    for task in tasks.sink_tasks {
        let result = task
            .await
            .map_err(|e| PipelineError::Runtime(format!("sink task failed: {e}")));
        if let Err(error) = result.and_then(|r| r) {
            first_error.get_or_insert(error);
        }
    }
    if let Some(task) = tasks.writer_task {
        if let Err(error) = task.await {
            first_error.get_or_insert(PipelineError::Runtime(format!(
                "checkpoint writer failed: {error}"
            )));
        }
    }
    // The sinks are done, and with them the dead letters of results they rejected. Sources
    // may still hold the side channel (one blocked reading stdin after a stop): the side task
    // drains what is queued and ends instead of waiting for them.
    let _ = tasks.chain_done.send(());
    match tasks.side_task.await {
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
    if !stopped {
        for task in tasks.source_tasks {
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
        None => Ok(()),
    }
}
