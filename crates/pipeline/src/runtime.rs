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
//! capacities times the batch size.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflow_event::time::now_millis;
use dataflow_event::Event;
use dataflow_metrics::{Counters, RunSummary};
use dataflow_window::{BoundedOutOfOrderness, WatermarkCombiner};
use tokio::sync::{mpsc, Notify};

use crate::generator::Generator;
use crate::operator::{OperatorNode, Output, SideKind, SideRecord};
use crate::plan::{Plan, SourcePlan};
use crate::sink::{JsonLinesSink, SideWriter, Sink};
use crate::source::{FileSource, GeneratorSource, Poll, Source, StdinSource};
use crate::spec::{OnStop, SourceKind, WatermarkSpec};
use crate::{PipelineError, Result};

/// What travels from the sources to the operator chain, in order.
#[derive(Debug)]
pub enum Message {
    /// A batch of events.
    Events(Vec<Event>),
    /// The source's watermark advanced.
    Watermark(i64),
    /// The source has ended. `fire` tells whether open windows should fire (end of a bounded
    /// input) or be kept (a stop that leaves them to a checkpoint).
    End {
        /// Fire open windows.
        fire: bool,
    },
}

/// Asks a running pipeline to stop cleanly. Cloning shares the request.
#[derive(Clone, Debug, Default)]
pub struct StopHandle {
    stopped: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl StopHandle {
    /// Requests a stop: sources stop reading, and open windows fire or are kept as configured.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// A pipeline ready to run.
#[derive(Debug)]
pub struct Pipeline {
    plan: Plan,
    counters: Arc<Counters>,
    stop: StopHandle,
}

/// How often the chain checks idle inputs and advances processing time.
const TICK: Duration = Duration::from_millis(100);
/// How long a followed file waits before looking for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

impl Pipeline {
    /// A pipeline for a checked plan.
    pub fn new(plan: Plan) -> Pipeline {
        Pipeline {
            plan,
            counters: Arc::new(Counters::default()),
            stop: StopHandle::default(),
        }
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
        let mut total = 0;
        for source in &self.plan.sources {
            match &source.spec.kind {
                SourceKind::File {
                    paths,
                    follow: false,
                } => {
                    for path in paths {
                        total += std::fs::metadata(path).ok()?.len();
                    }
                }
                _ => return None,
            }
        }
        Some(total)
    }

    /// Runs to the end of the input, or until stopped. Must be called within a multi-threaded
    /// tokio runtime.
    pub async fn run(self) -> Result<RunSummary> {
        let started = Instant::now();
        let Pipeline {
            plan,
            counters,
            stop,
        } = self;
        let capacity = plan.runtime.channel_capacity;
        let batch_size = plan.runtime.batch_size;

        // Open every sink and source before anything runs, so a bad path fails the run at once.
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        for spec in &plan.sinks {
            sinks.push(Box::new(
                JsonLinesSink::open(spec, plan.output_layout.clone(), !plan.output_is_windowed)
                    .await?,
            ));
        }
        let dead_letters = SideWriter::open(&plan.dead_letters, "dead letters").await?;
        let late = match &plan.late_events {
            Some(spec) if *spec != plan.dead_letters => {
                Some(SideWriter::open(spec, "late events").await?)
            }
            _ => None,
        };
        let mut sources = Vec::new();
        for source in &plan.sources {
            sources.push((open_source(source)?, source.spec.watermark));
        }

        let (side_tx, side_rx) = mpsc::channel::<Vec<SideRecord>>(capacity);
        let (chain_done, chain_done_rx) = tokio::sync::oneshot::channel::<()>();
        let side_task = tokio::spawn(run_side(
            side_rx,
            chain_done_rx,
            dead_letters,
            late,
            counters.clone(),
        ));
        let mut sink_txs = Vec::new();
        let mut sink_tasks = Vec::new();
        for sink in sinks {
            let (tx, rx) = mpsc::channel::<Arc<Vec<Event>>>(capacity);
            sink_txs.push(tx);
            sink_tasks.push(tokio::spawn(run_sink(rx, sink)));
        }

        let (chain_tx, chain_rx) = mpsc::channel::<(usize, Message)>(capacity);
        let inputs = sources.len();
        let idle_timeout = sources.iter().filter_map(|(_, w)| w.idle_timeout).min();
        let fire_on_stop = plan.runtime.on_stop == OnStop::Fire;
        let mut source_tasks = Vec::new();
        for (input, (source, watermark)) in sources.into_iter().enumerate() {
            let feed = SourceFeed {
                input,
                tx: chain_tx.clone(),
                side: side_tx.clone(),
                counters: counters.clone(),
                stop: stop.clone(),
                batch_size,
                fire_on_stop,
            };
            source_tasks.push(tokio::task::spawn_blocking(move || {
                feed.run(source, watermark)
            }));
        }
        drop(chain_tx);

        let chain = Chain {
            operators: plan.operators,
            sinks: sink_txs,
            side: side_tx,
            counters: counters.clone(),
        };
        let chain_result = chain
            .run(chain_rx, inputs, idle_timeout, stop.clone(), fire_on_stop)
            .await;
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

fn open_source(plan: &SourcePlan) -> Result<Box<dyn Source>> {
    let spec = &plan.spec;
    Ok(match &spec.kind {
        SourceKind::File { paths, follow } => Box::new(FileSource::open(
            &spec.name,
            paths,
            plan.decoder.clone(),
            *follow,
        )?),
        SourceKind::Stdin => {
            tracing::warn!(source = %spec.name, "standard input cannot be replayed: a restart cannot resume it");
            Box::new(StdinSource::new(&spec.name, plan.decoder.clone()))
        }
        SourceKind::Generator { config, rate } => {
            let generator = Generator::new(config.clone())?;
            Box::new(GeneratorSource::new(generator, *rate))
        }
    })
}

/// Drives one source on its own thread.
struct SourceFeed {
    input: usize,
    tx: mpsc::Sender<(usize, Message)>,
    side: mpsc::Sender<Vec<SideRecord>>,
    counters: Arc<Counters>,
    stop: StopHandle,
    batch_size: usize,
    fire_on_stop: bool,
}

impl SourceFeed {
    fn send(&self, message: Message) -> bool {
        self.tx.blocking_send((self.input, message)).is_ok()
    }

    fn run(self, mut source: Box<dyn Source>, watermark: WatermarkSpec) -> Result<()> {
        let partitions = source.partitions();
        let mut generators =
            vec![BoundedOutOfOrderness::new(watermark.out_of_orderness); partitions];
        let mut combiner = WatermarkCombiner::new(partitions, watermark.idle_timeout);
        let mut last_sent = i64::MIN;
        loop {
            if self.stop.is_stopped() {
                self.send(Message::End {
                    fire: self.fire_on_stop,
                });
                return Ok(());
            }
            let mut events = Vec::with_capacity(self.batch_size);
            let mut dead_letters = Vec::new();
            let poll = source.poll_batch(self.batch_size, &mut events, &mut dead_letters)?;
            let now = now_millis();
            let records = (events.len() + dead_letters.len()) as u64;
            if records > 0 {
                self.counters.add_read(records, 0);
            }
            self.counters.set_bytes_read(source.bytes_read());
            if !dead_letters.is_empty() && self.side.blocking_send(dead_letters).is_err() {
                return Ok(());
            }
            match poll {
                Poll::Data { partition } => {
                    let every = watermark.every.unwrap_or(usize::MAX);
                    let mut rest = events.into_iter().peekable();
                    // One chunk per watermark update: the whole batch unless `every` is smaller.
                    while rest.peek().is_some() {
                        let mut chunk: Vec<Event> = rest.by_ref().take(every).collect();
                        let mut max_time = i64::MIN;
                        for event in &mut chunk {
                            event.processing_time = now;
                            max_time = max_time.max(event.event_time);
                        }
                        if let Some(generator) = generators.get_mut(partition) {
                            generator.observe(max_time);
                            combiner.update(partition, generator.current(), now);
                        }
                        if !self.send(Message::Events(chunk)) {
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
                    self.send(Message::End { fire: true });
                    return Ok(());
                }
            }
            if !self.send_watermark(&combiner, &mut last_sent) {
                return Ok(());
            }
        }
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

/// The operator chain: operators fused in one task, as Flink chains them.
struct Chain {
    operators: Vec<OperatorNode>,
    sinks: Vec<mpsc::Sender<Arc<Vec<Event>>>>,
    side: mpsc::Sender<Vec<SideRecord>>,
    counters: Arc<Counters>,
}

/// What drives the operators next.
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
        let mut ended = 0;
        let mut fire = true;
        let mut last_watermark = i64::MIN;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let drive = tokio::select! {
                message = rx.recv() => match message {
                    Some((input, Message::Events(events))) => {
                        combiner.activity(input, now_millis());
                        Drive::Events(events)
                    }
                    Some((input, Message::Watermark(watermark))) => {
                        combiner.update(input, watermark, now_millis());
                        Drive::Watermark(combiner.current())
                    }
                    Some((input, Message::End { fire: fire_input })) => {
                        combiner.finish(input);
                        ended += 1;
                        fire &= fire_input;
                        if ended == inputs {
                            Drive::Finish(fire)
                        } else {
                            Drive::Watermark(combiner.current())
                        }
                    }
                    // Every source is gone without saying End: it failed; its error is reported
                    // by its task. Keep what the windows hold.
                    None => Drive::Finish(false),
                },
                _ = tick.tick() => {
                    let now = now_millis();
                    combiner.check_idle(now);
                    let watermark = combiner.current();
                    if watermark > last_watermark && watermark != i64::MAX {
                        self.drive(Drive::Watermark(watermark)).await?;
                        last_watermark = watermark;
                    }
                    Drive::Tick(now)
                }
                _ = stop.notify.notified() => Drive::Finish(fire_on_stop),
            };
            match drive {
                Drive::Watermark(watermark)
                    if watermark <= last_watermark || watermark == i64::MAX => {}
                Drive::Watermark(watermark) => {
                    last_watermark = watermark;
                    self.counters.set_watermark(watermark);
                    self.drive(Drive::Watermark(watermark)).await?;
                }
                Drive::Finish(fire) => {
                    self.drive(Drive::Finish(fire)).await?;
                    return Ok(());
                }
                other => self.drive(other).await?,
            }
        }
    }

    /// Runs one input through the operators from the first, forwarding what each emits to the
    /// ones after it, then hands results and side records on.
    async fn drive(&mut self, drive: Drive) -> Result<()> {
        let mut side = Vec::new();
        let mut results = Vec::new();
        match drive {
            Drive::Events(events) => {
                results = push(&mut self.operators, 0, events, &mut side);
            }
            Drive::Watermark(mut watermark) => {
                for index in 0..self.operators.len() {
                    let mut out = Output::default();
                    watermark = self.operators[index]
                        .operator
                        .on_watermark(watermark, &mut out);
                    side.append(&mut out.side);
                    results.extend(push(&mut self.operators, index + 1, out.events, &mut side));
                }
            }
            Drive::Tick(now) => {
                for index in 0..self.operators.len() {
                    let mut out = Output::default();
                    self.operators[index].operator.on_tick(now, &mut out);
                    side.append(&mut out.side);
                    results.extend(push(&mut self.operators, index + 1, out.events, &mut side));
                }
            }
            Drive::Finish(fire) => {
                for index in 0..self.operators.len() {
                    let mut out = Output::default();
                    self.operators[index].operator.finish(fire, &mut out);
                    side.append(&mut out.side);
                    results.extend(push(&mut self.operators, index + 1, out.events, &mut side));
                }
            }
        }
        if !side.is_empty() && self.side.send(side).await.is_err() {
            return Err(PipelineError::Runtime(
                "the dead-letter writer stopped".into(),
            ));
        }
        if !results.is_empty() {
            self.counters.add_emitted(results.len() as u64);
            let results = Arc::new(results);
            for sink in &self.sinks {
                if sink.send(results.clone()).await.is_err() {
                    return Err(PipelineError::Runtime("a sink stopped".into()));
                }
            }
        }
        Ok(())
    }
}

/// Passes `events` through `operators[start..]`.
fn push(
    operators: &mut [OperatorNode],
    start: usize,
    mut events: Vec<Event>,
    side: &mut Vec<SideRecord>,
) -> Vec<Event> {
    for node in operators.iter_mut().skip(start) {
        if events.is_empty() {
            break;
        }
        let mut out = Output::default();
        node.operator.process(events, &mut out);
        side.append(&mut out.side);
        events = out.events;
    }
    events
}

/// Writes batches as they come; flushes whenever nothing more is queued, so a live pipeline's
/// results show at once while a busy one writes in large chunks.
async fn run_sink(mut rx: mpsc::Receiver<Arc<Vec<Event>>>, mut sink: Box<dyn Sink>) -> Result<()> {
    while let Some(events) = rx.recv().await {
        sink.write(&events).await?;
        if rx.is_empty() {
            sink.flush().await?;
        }
    }
    sink.flush().await
}

async fn run_side(
    mut rx: mpsc::Receiver<Vec<SideRecord>>,
    mut chain_done: tokio::sync::oneshot::Receiver<()>,
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
