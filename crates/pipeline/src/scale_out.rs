//! Scale-out across processes on a Kafka consumer group (the Kafka Streams model).
//!
//! A pipeline whose one source is `type: kafka` with `scale_out: true` runs as a task manager:
//! every processor started with the same config joins the source's consumer group through one
//! [`GroupMember`] (subscribed to the topics, reading nothing), and the group's assignment says
//! which input partitions this process owns. For each owned partition it runs one **task**: an
//! instance of the pipeline whose source reads that partition only, with
//!
//! - its checkpoints in `<checkpoint.dir>/tasks/<topic>-<partition>/` (a directory all processes
//!   reach), claimed when the task starts (`LocalStorage::claim`: a previous owner still running
//!   can save there no more; its task then fails alone, the process goes on), then restored from
//!   the latest good one;
//! - for an exactly-once kafka sink, the transactional id `<transactional_id>-<topic>-<partition>`
//!   (its spool in the task's directory), so that the next owner fences the previous one;
//! - `file` sinks (results, dead letters, late events) written to `<stem>-<topic>-<partition>.<ext>`
//!   and `parts` sinks to `<dir>/<topic>-<partition>/`: each task writes its own;
//! - the pipeline name `<name>[<topic>/<partition>]` in its metrics, in one registry shared by
//!   the tasks of the process (so `/metrics` has one series per task and no two collide);
//! - `on_stop: keep`: a stopped task leaves its open windows in its last checkpoint, where the
//!   partition's next owner finds them.
//!
//! When partitions are revoked (a process joins or leaves), their tasks stop with a final
//! checkpoint (and, exactly once, its transaction committed) before the revoke returns to the
//! group; assigned partitions start tasks. A task's watermark is its partition's. Keyed state is
//! kept per partition, so a key's events must all be in one partition: keyed by the record
//! key, or by what the source's `partitioned_by` says the producer partitioned by; any other
//! `key_by` splits the pipeline at a repartition topic ([`repartition`]), which the processor
//! creates at start and its member subscribes to beside the input: a task per partition of
//! either, its kind following from the topic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use dataflow_api::{OperatorStatus, PipelineStatus, TaskStatus, Watermarks};
use dataflow_connectors::kafka::{
    GroupMember, KafkaSourceSettings, RebalanceListener, TaskPartition,
};
use dataflow_connectors::{SinkKind, SinkSpec, SourceKind};
use dataflow_metrics::{Metrics, RunSummary};
use tokio::task::JoinHandle;

use crate::control::ControlHandle;
use crate::runtime::{Pipeline, RestoreMode, RestoreOptions, StopHandle};
use crate::spec::{OnStop, PipelineSpec, Place, Problem};
use crate::{PipelineError, Result};

pub mod repartition;

use repartition::{Counts, Split};

/// How often the member is polled (heartbeats and rebalances are served in the poll).
const MEMBER_POLL: Duration = Duration::from_millis(100);

/// Whether `spec` asks for scale-out: a kafka source with `scale_out: true`.
pub fn is_scale_out(spec: &PipelineSpec) -> bool {
    spec.sources
        .iter()
        .any(|source| matches!(&source.kind, SourceKind::Kafka(k) if k.scale_out))
}

/// What a scale-out config must also have: one source (the kafka one) and checkpoints (the
/// state of a partition travels through them).
pub fn problems(spec: &PipelineSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(source) = spec
        .sources
        .iter()
        .find(|source| matches!(&source.kind, SourceKind::Kafka(k) if k.scale_out))
    else {
        return problems;
    };
    let place = Place {
        path: format!("{}.scale_out", source.place.path),
        ..source.place.clone()
    };
    if spec.sources.len() > 1 {
        problems.push(Problem {
            place: place.clone(),
            message: "`scale_out` needs the kafka source to be the pipeline's only source".into(),
        });
    }
    problems.extend(repartition::problems(spec));
    if spec.checkpoint.is_none() {
        problems.push(Problem {
            place,
            message: "`scale_out` needs `checkpoint:` in a directory every processor reaches: \
                      a partition's state moves through its checkpoints"
                .into(),
        });
    }
    problems
}

/// The scale-out source of `spec`: its name and settings.
fn scale_out_source(spec: &PipelineSpec) -> Result<(String, KafkaSourceSettings)> {
    spec.sources
        .iter()
        .find_map(|source| match &source.kind {
            SourceKind::Kafka(settings) if settings.scale_out => {
                Some((source.name.clone(), (**settings).clone()))
            }
            _ => None,
        })
        .ok_or_else(|| PipelineError::Runtime("no kafka source with `scale_out: true`".into()))
}

/// `path` with `-<suffix>` before its extension.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{suffix}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{suffix}"),
    };
    path.with_file_name(name)
}

/// A sink of one task: files and part directories of its own, and its own name where a sink
/// keeps progress by checkpoint (the kafka sink's transactional id, the postgres sink's `id`
/// in its staging and progress tables), since each task counts its own checkpoints. A redis
/// sink is shared as written (last write wins per key, and co-partitioned tasks write other
/// keys).
fn task_sink(sink: &mut SinkSpec, suffix: &str) {
    match &mut sink.kind {
        SinkKind::File { path } => *path = suffixed(path, suffix),
        SinkKind::Parts { dir } => *dir = dir.join(suffix),
        SinkKind::Parquet(settings) => settings.dir = settings.dir.join(suffix),
        SinkKind::Postgres(settings) => settings.id = format!("{}-{suffix}", settings.id),
        SinkKind::Kafka(settings) if settings.exactly_once => {
            let base = settings
                .transactional_id
                .clone()
                .unwrap_or_else(|| format!("dataflow-{}", settings.topic));
            settings.transactional_id = Some(format!("{base}-{suffix}"));
        }
        _ => {}
    }
}

/// The spec of the task of partition `task`, from the config's `template`.
pub fn task_spec(template: &PipelineSpec, task: TaskPartition) -> PipelineSpec {
    let mut spec = template.clone();
    let suffix = format!("{}-{}", task.topic, task.partition);
    let partition = task.name();
    spec.name = format!("{}[{partition}]", template.name);
    for source in &mut spec.sources {
        if let SourceKind::Kafka(settings) = &mut source.kind {
            settings.task = Some(task.clone());
        }
    }
    if let Some(checkpoint) = &mut spec.checkpoint {
        checkpoint.dir = checkpoint.dir.join("tasks").join(&suffix);
    }
    for sink in &mut spec.sinks {
        task_sink(sink, &suffix);
    }
    task_sink(&mut spec.dead_letters, &suffix);
    for side in [&mut spec.late_events, &mut spec.timed_out]
        .into_iter()
        .flatten()
    {
        task_sink(side, &suffix);
    }
    spec.runtime.on_stop = OnStop::Keep;
    spec.api = None;
    spec
}

/// Creates the repartition topic of `split` (if it does not exist) with as many partitions as
/// the input topic has: the counts of both.
async fn make_topic(settings: &KafkaSourceSettings, split: &Split) -> Result<Counts> {
    use dataflow_connectors::kafka_repartition::{create_topic, topic_partitions};
    let count = |topic: String| {
        let brokers = settings.brokers.clone();
        let properties = settings.properties.clone();
        async move {
            // A topic just made may take a moment to show in the metadata.
            let mut tries = 0;
            loop {
                let (b, p, t) = (brokers.clone(), properties.clone(), topic.clone());
                let found = tokio::task::spawn_blocking(move || topic_partitions(&b, &p, &t))
                    .await
                    .map_err(|e| PipelineError::Runtime(format!("topic lookup: {e}")))?;
                match found {
                    Ok(count) => return Ok::<usize, PipelineError>(count),
                    Err(_) if tries < 50 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
    };
    let upstream = count(split.input.clone()).await?;
    create_topic(
        &settings.brokers,
        &settings.properties,
        &split.topic,
        upstream,
    )
    .await?;
    let partitions = count(split.topic.clone()).await?;
    if partitions != upstream {
        tracing::warn!(topic = %split.topic, partitions, input = upstream,
            "the repartition topic exists with another number of partitions than the input: used as it is");
    }
    tracing::info!(topic = %split.topic, partitions, "scale-out: repartition topic ready");
    Ok(Counts {
        upstream,
        partitions,
    })
}

/// One running task.
struct Task {
    stop: StopHandle,
    control: ControlHandle,
    done: JoinHandle<Result<RunSummary>>,
}

/// What the manager, its member's rebalance callbacks and its status share.
struct Shared {
    template: PipelineSpec,
    source: String,
    settings: KafkaSourceSettings,
    /// Where the pipeline splits at a repartition topic, if it does.
    split: Option<Split>,
    /// The partition counts of the input and repartition topics, once the topic is made.
    counts: OnceLock<Counts>,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Handle,
    member: OnceLock<Arc<GroupMember>>,
    tasks: Mutex<BTreeMap<(String, i32), Task>>,
    /// The first failure (a task that failed, or could not start): the processor stops.
    failure: Mutex<Option<String>>,
    /// Wakes the manager: a stop was asked or a task failed.
    wake: tokio::sync::Notify,
    stopping: AtomicBool,
    started: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn fail(&self, reason: String) {
        tracing::error!(%reason, "scale-out: a task failed; the processor stops");
        lock(&self.failure).get_or_insert(reason);
        self.wake.notify_one();
    }

    /// A task ended with `error`: the processor stops, unless the task was fenced (another
    /// process claimed its checkpoint directory: the partition is that process's now, and
    /// this one hears so at its next poll of the group); then only the task ends.
    fn task_failed(&self, partition: &str, error: &PipelineError) {
        if matches!(error, PipelineError::Fenced(_)) {
            tracing::error!(%partition, %error,
                "scale-out: task fenced: another process owns its partition now; the task stops, the processor goes on");
            return;
        }
        self.fail(format!("task {partition}: {error}"));
    }

    fn start_task(self: &Arc<Self>, topic: &str, partition: i32) -> Result<()> {
        let member = self
            .member
            .get()
            .ok_or_else(|| PipelineError::Runtime("the group member is not set".into()))?
            .clone();
        let counts = self.counts.get().copied();
        let task = TaskPartition {
            topic: topic.to_string(),
            partition,
            member,
            role: repartition::role(self.split.as_ref(), counts, topic),
        };
        let spec = task_spec(&self.template, task.clone());
        let spec = match (&self.split, counts) {
            (Some(split), Some(_)) if topic == split.topic => {
                repartition::downstream_spec(spec, split)
            }
            (Some(split), Some(counts)) => repartition::upstream_spec(spec, split, counts, &task),
            _ => spec,
        };
        let plan = crate::plan::plan(spec)?;
        let pipeline = Pipeline::with_metrics(plan, self.metrics.clone())
            .with_restore(RestoreOptions {
                mode: RestoreMode::Latest,
                allow_non_restored_state: false,
            })
            .claiming_checkpoints();
        let stop = pipeline.stop_handle();
        let control = pipeline.control();
        let weak = Arc::downgrade(self);
        let name = format!("{topic}/{partition}");
        tracing::info!(partition = %name, "scale-out: task starting");
        let done = self.runtime.spawn(async move {
            let result = pipeline.run().await;
            if let (Err(error), Some(shared)) = (&result, weak.upgrade()) {
                shared.task_failed(&name, error);
            }
            result
        });
        lock(&self.tasks).insert(
            (topic.to_string(), partition),
            Task {
                stop,
                control,
                done,
            },
        );
        Ok(())
    }

    /// Stops the tasks of `partitions` (each with its final checkpoint) and waits for them.
    /// Called on the member's thread (never a runtime thread): it blocks.
    fn stop_tasks(&self, partitions: &[(String, i32)]) {
        let stopping: Vec<((String, i32), Task)> = {
            let mut tasks = lock(&self.tasks);
            partitions
                .iter()
                .filter_map(|key| tasks.remove(key).map(|task| (key.clone(), task)))
                .collect()
        };
        for (_, task) in &stopping {
            task.stop.stop();
        }
        for ((topic, partition), task) in stopping {
            match self.runtime.block_on(task.done) {
                Ok(Ok(_)) => {
                    tracing::info!(partition = %format!("{topic}/{partition}"), "scale-out: task stopped")
                }
                Ok(Err(error)) => self.task_failed(&format!("{topic}/{partition}"), &error),
                Err(error) => self.fail(format!("task {topic}/{partition}: {error}")),
            }
        }
    }
}

/// The rebalance callbacks, holding the manager weakly (the member lives in it).
struct Listener(Weak<Shared>);

impl RebalanceListener for Listener {
    fn revoked(&self, partitions: &[(String, i32)]) {
        if let Some(shared) = self.0.upgrade() {
            shared.stop_tasks(partitions);
        }
    }

    fn assigned(&self, partitions: &[(String, i32)]) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        for (topic, partition) in partitions {
            if lock(&shared.tasks).contains_key(&(topic.clone(), *partition)) {
                continue;
            }
            if let Err(error) = shared.start_task(topic, *partition) {
                shared.fail(format!("task {topic}/{partition} cannot start: {error}"));
            }
        }
    }
}

/// A scale-out processor: a group member and one task per owned partition (see the module's
/// documentation). Cloning shares it.
#[derive(Clone)]
pub struct ScaleOut {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ScaleOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScaleOut")
            .field("pipeline", &self.shared.template.name)
            .finish_non_exhaustive()
    }
}

impl ScaleOut {
    /// A task manager for `spec` (checked: [`problems`] found none), whose tasks run on
    /// `runtime` and share `metrics`.
    pub fn new(
        spec: PipelineSpec,
        runtime: tokio::runtime::Handle,
        metrics: Arc<Metrics>,
    ) -> Result<ScaleOut> {
        let problems = problems(&spec);
        if !problems.is_empty() {
            return Err(PipelineError::InvalidConfig(problems));
        }
        let (source, settings) = scale_out_source(&spec)?;
        let split = repartition::split(&spec);
        Ok(ScaleOut {
            shared: Arc::new(Shared {
                template: spec,
                source,
                settings,
                split,
                counts: OnceLock::new(),
                metrics,
                runtime,
                member: OnceLock::new(),
                tasks: Mutex::new(BTreeMap::new()),
                failure: Mutex::new(None),
                wake: tokio::sync::Notify::new(),
                stopping: AtomicBool::new(false),
                started: Instant::now(),
            }),
        })
    }

    /// Asks the processor to stop: its tasks stop at a checkpoint and it leaves the group.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    /// Joins the group and runs tasks for the partitions it assigns, until [`ScaleOut::stop`]
    /// or a task fails (the error).
    pub async fn run(&self) -> Result<()> {
        let shared = self.shared.clone();
        let mut settings = shared.settings.clone();
        if let Some(split) = &shared.split {
            let counts = make_topic(&settings, split).await?;
            let _ = shared.counts.set(counts);
            settings.topics = dataflow_connectors::kafka::Topics::Names(vec![
                split.input.clone(),
                split.topic.clone(),
            ]);
        }
        let listener = Arc::new(Listener(Arc::downgrade(&shared)));
        let member = Arc::new(GroupMember::join(&shared.source, &settings, listener)?);
        let _ = shared.member.set(member.clone());
        let poller = {
            let shared = shared.clone();
            let member = member.clone();
            std::thread::Builder::new()
                .name("kafka-group".into())
                .spawn(move || {
                    while !shared.stopping.load(Ordering::SeqCst) {
                        member.poll(MEMBER_POLL);
                    }
                })
                .map_err(|e| PipelineError::Io {
                    context: "cannot start the group member's thread".into(),
                    cause: e,
                })?
        };
        loop {
            if shared.stopping.load(Ordering::SeqCst) || lock(&shared.failure).is_some() {
                break;
            }
            shared.wake.notified().await;
        }
        shared.stopping.store(true, Ordering::SeqCst);
        // The member's thread ends after its current poll (and any rebalance in it).
        let _ = tokio::task::spawn_blocking(move || poller.join()).await;
        // Every task stops at a checkpoint, then the member leaves: the group gives the
        // partitions to the other processes, which restore those checkpoints.
        // (On a thread of its own: it blocks on the tasks' ends.)
        let owned: Vec<(String, i32)> = lock(&shared.tasks).keys().cloned().collect();
        let stopper = shared.clone();
        let (left_tx, left_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("kafka-group-leave".into())
            .spawn(move || {
                stopper.stop_tasks(&owned);
                member.leave();
                let _ = left_tx.send(());
            })
            .map_err(|e| PipelineError::Io {
                context: "cannot start the thread that leaves the group".into(),
                cause: e,
            })?;
        let _ = left_rx.await;
        let failure = lock(&shared.failure).take();
        match failure {
            Some(reason) => Err(PipelineError::Runtime(reason)),
            None => Ok(()),
        }
    }

    /// The partitions this process owns now, `topic/partition`, sorted.
    pub fn owned(&self) -> Vec<String> {
        lock(&self.shared.tasks)
            .keys()
            .map(|(topic, partition)| format!("{topic}/{partition}"))
            .collect()
    }

    /// What the processor does: sums over its tasks, and each task.
    pub fn status(&self) -> PipelineStatus {
        let controls: Vec<(String, ControlHandle)> = lock(&self.shared.tasks)
            .iter()
            .map(|((topic, partition), task)| {
                (format!("{topic}/{partition}"), task.control.clone())
            })
            .collect();
        let mut status = PipelineStatus {
            pipeline: self.shared.template.name.clone(),
            state: if lock(&self.shared.failure).is_some() {
                "failed"
            } else if self.shared.stopping.load(Ordering::SeqCst) {
                "stopped"
            } else {
                "running"
            }
            .into(),
            uptime_ms: self.shared.started.elapsed().as_millis() as u64,
            events_read: 0,
            events_emitted: 0,
            late_events: 0,
            dead_letters: 0,
            watermark: i64::MIN,
            last_checkpoint: None,
            restored_from: None,
            restores: 0,
            operators: Vec::new(),
            error: lock(&self.shared.failure).clone(),
            tasks: Vec::new(),
        };
        let mut operators: BTreeMap<String, OperatorStatus> = BTreeMap::new();
        let mut order = Vec::new();
        let mut watermark: Option<i64> = None;
        for (partition, control) in controls {
            let task = control.status();
            status.events_read += task.events_read;
            status.events_emitted += task.events_emitted;
            status.late_events += task.late_events;
            status.dead_letters += task.dead_letters;
            watermark = Some(watermark.map_or(task.watermark, |w| w.min(task.watermark)));
            for operator in task.operators {
                match operators.get_mut(&operator.name) {
                    Some(sum) => {
                        sum.events_in += operator.events_in;
                        sum.events_out += operator.events_out;
                    }
                    None => {
                        order.push(operator.name.clone());
                        operators.insert(operator.name.clone(), operator);
                    }
                }
            }
            status.tasks.push(TaskStatus {
                partition,
                state: task.state,
                events_read: task.events_read,
                events_emitted: task.events_emitted,
                watermark: task.watermark,
                last_checkpoint: task.last_checkpoint,
                restored_from: task.restored_from,
            });
        }
        status.watermark = watermark.unwrap_or(i64::MIN);
        status.operators = order
            .into_iter()
            .filter_map(|name| operators.remove(&name))
            .collect();
        status
    }

    /// The watermarks of the tasks' sources, one entry per task (named `<source>[<partition>]`),
    /// and the combined watermark, the least of the tasks'.
    pub fn watermarks(&self) -> Watermarks {
        let controls: Vec<(String, ControlHandle)> = lock(&self.shared.tasks)
            .iter()
            .map(|((topic, partition), task)| {
                (format!("{topic}/{partition}"), task.control.clone())
            })
            .collect();
        let mut all = Watermarks {
            watermark: i64::MIN,
            holding_back: None,
            sources: Vec::new(),
            operators: Vec::new(),
            now_ms: dataflow_event::time::now_millis(),
        };
        let mut least: Option<(i64, String)> = None;
        for (partition, control) in controls {
            let task = control.watermarks();
            if least.as_ref().is_none_or(|(w, _)| task.watermark < *w) {
                least = Some((task.watermark, partition.clone()));
            }
            if all.operators.is_empty() {
                all.operators = task.operators;
            }
            for mut source in task.sources {
                source.name = format!("{}[{partition}]", source.name);
                all.sources.push(source);
            }
        }
        if let Some((watermark, partition)) = least {
            all.watermark = watermark;
            all.holding_back = Some(format!("{}[{partition}]", self.shared.source));
        }
        all
    }

    /// Ok while no task failed; the failure otherwise.
    pub fn ready(&self) -> std::result::Result<(), String> {
        match lock(&self.shared.failure).clone() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflow_connectors::kafka_repartition::TaskRole;

    const SOURCE: &str = "  - name: bids\n    type: kafka\n    brokers: 127.0.0.1:9\n    topics: [bids]\n    scale_out: true\n    format: { schema: { auction: int } }\n";

    fn problems_of(text: &str) -> Vec<String> {
        match crate::config::parse_and_plan(text, Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(PipelineError::InvalidConfig(problems)) => problems
                .into_iter()
                .map(|p| format!("{}:{}: {}", p.place.path, p.place.line, p.message))
                .collect(),
            Err(other) => vec![other.to_string()],
        }
    }

    #[test]
    fn scale_out_needs_checkpoints_and_one_source() {
        let text = format!(
            "name: j\nsources:\n{SOURCE}  - {{ name: more, type: stdin, format: {{ schema: {{ auction: int }} }} }}\nsinks: [{{ type: stdout }}]\n"
        );
        assert_eq!(
            problems_of(&text),
            [
                "sources[0].scale_out:3: `scale_out` needs the kafka source to be the pipeline's only source",
                "sources[0].scale_out:3: `scale_out` needs `checkpoint:` in a directory every processor reaches: a partition's state moves through its checkpoints",
            ]
        );
        let text = format!(
            "name: j\nsources:\n{SOURCE}sinks: [{{ type: stdout }}]\ncheckpoint: {{ dir: c }}\n"
        );
        assert_eq!(problems_of(&text), Vec::<String>::new());
    }

    #[test]
    fn a_task_gets_its_partition_directory_transactional_id_and_files() {
        let text = format!(
            "name: j\nsources:\n{SOURCE}sinks:\n  - {{ type: kafka, brokers: 127.0.0.1:9, topic: out, exactly_once: true, transactional_id: t }}\n  - {{ type: file, path: out/r.jsonl }}\n  - {{ type: postgres, url: 'host=127.0.0.1 dbname=test', table: totals }}\n  - {{ type: parquet, path: out/pq }}\ndead_letters: {{ type: file, path: out/dead.jsonl }}\ncheckpoint: {{ dir: c }}\nruntime: {{ on_stop: fire }}\n"
        );
        let spec = crate::config::parse(&text, Path::new("base")).expect("config");
        let listener = Arc::new(NoListener);
        // A member is only created here, never polled: no broker is reached.
        let settings = match &spec.sources[0].kind {
            SourceKind::Kafka(settings) => (**settings).clone(),
            _ => unreachable!("a kafka source"),
        };
        let member = Arc::new(GroupMember::join("bids", &settings, listener).expect("member"));
        let task = task_spec(
            &spec,
            TaskPartition {
                topic: "bids".into(),
                partition: 3,
                member,
                role: dataflow_connectors::kafka_repartition::TaskRole::Input { stamp: false },
            },
        );
        assert_eq!(task.name, "j[bids/3]");
        assert_eq!(
            task.checkpoint.as_ref().map(|c| c.dir.clone()),
            Some(Path::new("base/c/tasks/bids-3").to_path_buf())
        );
        assert_eq!(task.runtime.on_stop, OnStop::Keep);
        match &task.sinks[0].kind {
            SinkKind::Kafka(settings) => {
                assert_eq!(settings.transactional_id.as_deref(), Some("t-bids-3"))
            }
            _ => unreachable!("a kafka sink"),
        }
        assert_eq!(
            task.sinks[1].kind,
            SinkKind::File {
                path: Path::new("base/out/r-bids-3.jsonl").to_path_buf()
            }
        );
        match &task.sinks[2].kind {
            SinkKind::Postgres(settings) => assert_eq!(settings.id, "totals-bids-3"),
            _ => unreachable!("a postgres sink"),
        }
        match &task.sinks[3].kind {
            SinkKind::Parquet(settings) => {
                assert_eq!(settings.dir, Path::new("base/out/pq/bids-3"))
            }
            _ => unreachable!("a parquet sink"),
        }
        assert_eq!(
            task.dead_letters.kind,
            SinkKind::File {
                path: Path::new("base/out/dead-bids-3.jsonl").to_path_buf()
            }
        );
        match &task.sources[0].kind {
            SourceKind::Kafka(settings) => {
                assert_eq!(
                    settings.task.as_ref().map(TaskPartition::name).as_deref(),
                    Some("bids/3")
                )
            }
            _ => unreachable!("a kafka source"),
        }
    }

    #[test]
    fn check_says_what_a_repartitioning_key_by_cannot_have() {
        let source = "  - name: bids\n    type: kafka\n    brokers: 127.0.0.1:9\n    topics: [bids]\n    scale_out: true\n    partitioned_by: auction\n    format: { schema: { auction: int, bidder: int, price: int } }\n";
        let rest = "sinks: [{ type: stdout }]\ncheckpoint: { dir: c }\n";
        // Co-partitioned, on the record key, or repartitioned after filters: fine.
        for steps in [
            "  - key_by: auction\n",
            "  - key_by: event.key\n",
            "  - filter: price > 0\n  - key_by: bidder\n  - key_by: event.key\n",
        ] {
            let text = format!("name: j\nsources:\n{source}steps:\n{steps}{rest}");
            assert_eq!(problems_of(&text), Vec::<String>::new(), "{steps}");
        }
        let text = format!(
            "name: j\nsources:\n{source}steps:\n  - map: {{ keep: [bidder, price] }}\n  - key_by: bidder\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count }} }}\n  - key_by: n\n{rest}"
        );
        assert_eq!(
            problems_of(&text),
            [
                "steps[0].map:11: only filters may come before the `key_by` of steps[1], which repartitions (the repartition topic carries events as the source reads them); compute the key in the `key_by` itself",
                "steps[3].key_by:14: a scale-out pipeline may repartition once: this `key_by` needs a second repartition topic after the one of steps[1] (key by `event.key`, or by the source's `partitioned_by`, to keep the partitioning)",
            ]
        );
        let text = format!(
            "name: j\nsources:\n{}steps:\n  - key_by: bidder\n{rest}",
            source.replace("topics: [bids]", "topics: [bids, asks]")
        );
        assert_eq!(
            problems_of(&text),
            ["sources[0]:3: the `key_by` of steps[0] repartitions, which needs the source to read one topic (`topics: [name]`), not several or a pattern (or declare `partitioned_by: <expression>` if the producer partitioned by the key)"]
        );
    }

    #[test]
    fn a_repartitioned_pipeline_splits_into_upstream_and_downstream_tasks() {
        let text = format!(
            "name: j\nsources:\n{SOURCE}steps:\n  - filter: auction > 0\n  - key_by: auction * 2\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count }} }}\nsinks: [{{ type: file, path: out/r.jsonl }}]\ncheckpoint: {{ dir: c }}\n"
        );
        let spec = crate::config::parse(&text, Path::new("base")).expect("config");
        let split = repartition::split(&spec).expect("a split");
        assert_eq!(
            split,
            Split {
                at: 1,
                input: "bids".into(),
                topic: "dataflow-bids-step1-repartition".into(),
            }
        );
        let settings = match &spec.sources[0].kind {
            SourceKind::Kafka(settings) => (**settings).clone(),
            _ => unreachable!("a kafka source"),
        };
        let member =
            Arc::new(GroupMember::join("bids", &settings, Arc::new(NoListener)).expect("member"));
        let counts = Counts {
            upstream: 8,
            partitions: 8,
        };
        let role = repartition::role(Some(&split), Some(counts), "bids");
        assert_eq!(role, TaskRole::Input { stamp: true });
        let input = TaskPartition {
            topic: "bids".into(),
            partition: 2,
            member: member.clone(),
            role,
        };
        let up =
            repartition::upstream_spec(task_spec(&spec, input.clone()), &split, counts, &input);
        assert_eq!(up.steps.len(), 2);
        assert!(matches!(up.steps[1], crate::spec::StepSpec::KeyBy(_)));
        match &up.sinks[..] {
            [SinkSpec {
                kind: SinkKind::Repartition(sink),
                ..
            }] => {
                assert_eq!(
                    (sink.topic.as_str(), sink.partitions, sink.upstream),
                    ("dataflow-bids-step1-repartition", 8, 2)
                )
            }
            other => panic!("not one repartition sink: {other:?}"),
        }
        let role = repartition::role(Some(&split), Some(counts), &split.topic);
        assert_eq!(role, TaskRole::Repartition { upstream: 8 });
        let task = TaskPartition {
            topic: split.topic.clone(),
            partition: 5,
            member,
            role,
        };
        let down = repartition::downstream_spec(task_spec(&spec, task), &split);
        assert_eq!(down.steps.len(), 2);
        assert!(matches!(down.steps[0], crate::spec::StepSpec::KeyBy(_)));
        assert_eq!(
            down.checkpoint.as_ref().map(|c| c.dir.clone()),
            Some(Path::new("base/c/tasks/dataflow-bids-step1-repartition-5").to_path_buf())
        );
        assert_eq!(
            down.sinks[0].kind,
            SinkKind::File {
                path: Path::new("base/out/r-dataflow-bids-step1-repartition-5.jsonl").to_path_buf()
            }
        );
    }

    struct NoListener;

    impl RebalanceListener for NoListener {
        fn revoked(&self, _: &[(String, i32)]) {}
        fn assigned(&self, _: &[(String, i32)]) {}
    }

    #[test]
    fn a_file_gets_the_partition_before_its_extension() {
        assert_eq!(
            suffixed(Path::new("out/dead.jsonl"), "bids-3"),
            Path::new("out/dead-bids-3.jsonl")
        );
        assert_eq!(
            suffixed(Path::new("out/dead"), "bids-3"),
            Path::new("out/dead-bids-3")
        );
    }
}
