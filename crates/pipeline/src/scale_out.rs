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
//! kept per input partition, so a key's events must all be in one partition (the co-partitioned
//! case: keyed by the record key, or by a field the producer partitioned by).

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

/// A sink of one task: files and part directories of its own.
fn task_sink(sink: &mut SinkSpec, suffix: &str) {
    match &mut sink.kind {
        SinkKind::File { path } => *path = suffixed(path, suffix),
        SinkKind::Parts { dir } => *dir = dir.join(suffix),
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
        let spec = task_spec(
            &self.template,
            TaskPartition {
                topic: topic.to_string(),
                partition,
                member,
            },
        );
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
        Ok(ScaleOut {
            shared: Arc::new(Shared {
                template: spec,
                source,
                settings,
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
        let listener = Arc::new(Listener(Arc::downgrade(&shared)));
        let member = Arc::new(GroupMember::join(
            &shared.source,
            &shared.settings,
            listener,
        )?);
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
            "name: j\nsources:\n{SOURCE}sinks:\n  - {{ type: kafka, brokers: 127.0.0.1:9, topic: out, exactly_once: true, transactional_id: t }}\n  - {{ type: file, path: out/r.jsonl }}\ndead_letters: {{ type: file, path: out/dead.jsonl }}\ncheckpoint: {{ dir: c }}\nruntime: {{ on_stop: fire }}\n"
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
