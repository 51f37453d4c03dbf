//! The output tasks: one per result sink, and one for the side outputs (dead letters and late
//! events), each behind a bounded channel; and [`Downstream`], the senders the chain and the
//! workers hand their results and side records to.

use std::sync::Arc;
use std::time::Instant;

use dataflow_connectors::side::SideWriter;
use dataflow_connectors::sink::{OpenMode, ResultFormat, Sink};
use dataflow_connectors::ConnectorError;
use dataflow_event::json::DecoderConfig;
use dataflow_event::side::SideData;
use dataflow_event::time::now_millis;
use dataflow_event::{Event, Layout};
use dataflow_metrics::{Counters, Metrics, OperatorMetrics};
use dataflow_operators::{SideKind, SideRecord};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::messages::SinkMessage;
use super::stop::Failure;
use crate::plan::Plan;
use crate::spec::SinkSpec;
use crate::{PipelineError, Result};

/// The name of sink `index` in metrics and the backpressure report.
pub(super) fn sink_stage(index: usize) -> String {
    format!("sinks[{index}]")
}

/// The name of sink `index` of type `type_name` in errors: `sinks[0] (parts)`.
pub(super) fn sink_name(index: usize, type_name: &str) -> String {
    format!("{} ({type_name})", sink_stage(index))
}

/// Where operators send what they emit: the result sinks and the side output.
#[derive(Clone)]
pub(super) struct Downstream {
    pub(super) sinks: Vec<mpsc::Sender<SinkMessage>>,
    /// The sinks' names in errors, in the order of `sinks`.
    pub(super) sink_names: Vec<String>,
    pub(super) side: mpsc::Sender<Vec<SideRecord>>,
    pub(super) counters: Arc<Counters>,
    /// Where every task reports the run's first failure.
    pub(super) failure: Failure,
    /// The sinks that are sent watermarks (`SinkKind::wants_watermarks`), by index.
    pub(super) watermark_sinks: Vec<usize>,
}

impl Downstream {
    /// Hands dead letters and late events to the side output.
    pub(super) async fn send_side(&self, side: Vec<SideRecord>) -> Result<()> {
        if !side.is_empty() && self.side.send(side).await.is_err() {
            // It reported why.
            return Err(PipelineError::Stopped("the dead-letter writer".into()));
        }
        Ok(())
    }

    /// Hands results to every sink, counting them as emitted.
    pub(super) async fn send_results(&self, results: Vec<Event>) -> Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        self.counters.add_emitted(results.len() as u64);
        let results = Arc::new(results);
        for (index, sink) in self.sinks.iter().enumerate() {
            if sink
                .send(SinkMessage::Events(results.clone()))
                .await
                .is_err()
            {
                return Err(self.sink_gone(index));
            }
        }
        Ok(())
    }

    /// Hands the watermark to the sinks that want it, after the results sent before it.
    pub(super) async fn send_watermark(&self, watermark: i64) -> Result<()> {
        for &index in &self.watermark_sinks {
            if self.sinks[index]
                .send(SinkMessage::Watermark(watermark))
                .await
                .is_err()
            {
                return Err(self.sink_gone(index));
            }
        }
        Ok(())
    }

    /// The error of a send to sink `index` that found it gone: it failed and reported why.
    pub(super) fn sink_gone(&self, index: usize) -> PipelineError {
        let name = self.sink_names.get(index).map_or("a sink", String::as_str);
        PipelineError::Stopped(format!("sink {name}"))
    }
}

/// The running output tasks of a run.
pub(super) struct OutputTasks {
    /// Where results and side records go.
    pub(super) downstream: Downstream,
    pub(super) sink_tasks: Vec<JoinHandle<Result<()>>>,
    pub(super) side_task: JoinHandle<Result<()>>,
    /// Tells the side task the chain is done: it drains what is queued and ends.
    pub(super) chain_done: oneshot::Sender<()>,
}

/// What of a plan the outputs are opened from (borrowed apart: a `&Plan` held across an await
/// would keep the run's future from being `Send`, its operators not being `Sync`).
pub(super) struct OutputSpecs<'a> {
    pipeline: &'a str,
    sinks: &'a [SinkSpec],
    dead_letters: &'a SinkSpec,
    late_events: Option<&'a SinkSpec>,
    timed_out: Option<&'a SinkSpec>,
    layout: &'a Layout,
    windowed: bool,
    /// The first source's decoder settings: results carry its metadata field names.
    fields: Option<&'a DecoderConfig>,
    capacity: usize,
    checkpoints: bool,
    checkpoint_dir: Option<&'a std::path::Path>,
}

impl<'a> OutputSpecs<'a> {
    /// The outputs of `plan`.
    pub(super) fn of(plan: &'a Plan) -> OutputSpecs<'a> {
        OutputSpecs {
            pipeline: &plan.name,
            sinks: &plan.sinks,
            dead_letters: &plan.dead_letters,
            late_events: plan.late_events.as_ref(),
            timed_out: plan.timed_out.as_ref(),
            layout: &plan.output_layout,
            windowed: plan.output_is_windowed,
            fields: plan.sources.first().map(|source| &source.spec.decoder),
            capacity: plan.runtime.channel_capacity,
            checkpoints: plan.checkpoint.is_some(),
            checkpoint_dir: plan.checkpoint.as_ref().map(|c| c.dir.as_path()),
        }
    }
}

/// Opens the side outputs and the sinks of a plan, and starts a task for each. A run resumed
/// from checkpoint `restored` keeps what earlier runs wrote to its file outputs (what they wrote
/// after the checkpoint is written again: at least once); a run from the start writes them
/// anew. Sinks recover to the restored checkpoint: exactly-once sinks drop what it does not
/// cover.
pub(super) async fn start_outputs(
    plan: OutputSpecs<'_>,
    restored: Option<u64>,
    counters: &Arc<Counters>,
    metrics: &Metrics,
    failure: &Failure,
) -> Result<OutputTasks> {
    let mode = if restored.is_some() {
        OpenMode::Append
    } else {
        OpenMode::Truncate
    };
    let dead_letters = SideWriter::open(plan.dead_letters, "dead letters", mode).await?;
    let late = match plan.late_events {
        Some(spec) if spec != plan.dead_letters => {
            Some(SideWriter::open(spec, "late events", mode).await?)
        }
        _ => None,
    };
    let timed_out = match plan.timed_out {
        Some(spec) if spec != plan.dead_letters => {
            Some(SideWriter::open(spec, "timed-out matches", mode).await?)
        }
        _ => None,
    };
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let mut names = Vec::new();
    for (index, spec) in plan.sinks.iter().enumerate() {
        let format = ResultFormat {
            layout: plan.layout.clone(),
            write_time: !plan.windowed,
            fields: plan.fields.cloned().unwrap_or_default(),
            checkpoints: plan.checkpoints,
            checkpoint_dir: plan.checkpoint_dir.map(std::path::Path::to_path_buf),
        };
        let name = sink_name(index, spec.kind.type_name());
        let sink =
            spec.open(format, restored, mode)
                .await
                .map_err(|cause| PipelineError::Sink {
                    sink: name.clone(),
                    cause,
                })?;
        sinks.push(sink);
        names.push(name);
    }

    let capacity = plan.capacity;
    let (side_tx, side_rx) = mpsc::channel::<Vec<SideRecord>>(capacity);
    let (chain_done, chain_done_rx) = oneshot::channel::<()>();
    let side_task = {
        let failure = failure.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut rx = side_rx;
            let writers = SideWriters {
                dead_letters,
                late,
                timed_out,
            };
            let result = run_side(&mut rx, chain_done_rx, writers, counters).await;
            // Reported before the channel closes, so that the senders' errors come second.
            result.map_err(|error| failure.report(error, "the dead-letter writer"))
        })
    };
    let mut sink_txs = Vec::new();
    let mut sink_tasks = Vec::new();
    for (index, (mut sink, name)) in sinks.into_iter().zip(names.iter().cloned()).enumerate() {
        let (tx, rx) = mpsc::channel::<SinkMessage>(capacity);
        sink_txs.push(tx);
        let sink_metrics = metrics.operator(plan.pipeline, &sink_stage(index), "sink");
        sink.count_retries(sink_metrics.store_retries());
        // The first sink measures how long results took to reach it.
        let latency = (index == 0).then(|| counters.clone());
        let failure = failure.clone();
        let rejected = Rejects {
            side: side_tx.clone(),
            stage: Arc::from(sink_stage(index)),
            layout: plan.layout.clone(),
        };
        sink_tasks.push(tokio::spawn(async move {
            let mut rx = rx;
            let result = run_sink(&mut rx, sink, sink_metrics, latency, rejected).await;
            result.map_err(|cause| {
                let what = format!("sink {name}");
                failure.report(PipelineError::Sink { sink: name, cause }, &what)
            })
        }));
    }
    Ok(OutputTasks {
        downstream: Downstream {
            sinks: sink_txs,
            sink_names: names,
            side: side_tx,
            counters: counters.clone(),
            failure: failure.clone(),
            watermark_sinks: plan
                .sinks
                .iter()
                .enumerate()
                .filter(|(_, spec)| spec.kind.wants_watermarks())
                .map(|(index, _)| index)
                .collect(),
        },
        sink_tasks,
        side_task,
        chain_done,
    })
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

/// Where a sink's rejected results go: dead letters of the sink's stage.
struct Rejects {
    side: mpsc::Sender<Vec<SideRecord>>,
    stage: Arc<str>,
    layout: Layout,
}

impl Rejects {
    /// Hands what `sink` rejected so far to the side output.
    async fn send(&self, sink: &mut dyn Sink) -> std::result::Result<(), ConnectorError> {
        let rejected = sink.take_rejected();
        if rejected.is_empty() {
            return Ok(());
        }
        let records = rejected
            .into_iter()
            .map(|rejected| SideRecord {
                kind: SideKind::DeadLetter,
                stage: self.stage.clone(),
                reason: rejected.reason,
                line: None,
                record: SideData::event(&rejected.event, &self.layout),
            })
            .collect();
        self.side.send(records).await.map_err(|_| {
            // The side task reported why it is gone.
            ConnectorError::Runtime("the dead-letter writer stopped".into())
        })
    }
}

/// Writes batches as they come; flushes whenever nothing more is queued, so a live pipeline's
/// results show at once while a busy one writes in large chunks; flushes and acknowledges at
/// every checkpoint barrier.
/// Returns the sink's own error: the caller names the sink.
async fn run_sink(
    rx: &mut mpsc::Receiver<SinkMessage>,
    mut sink: Box<dyn Sink>,
    metrics: OperatorMetrics,
    latency: Option<Arc<Counters>>,
    rejects: Rejects,
) -> std::result::Result<(), ConnectorError> {
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
                rejects.send(sink.as_mut()).await?;
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
            SinkMessage::Watermark(watermark) => sink.watermark(watermark).await?,
            SinkMessage::Barrier(id, ack) => {
                if let Err(error) = sink.prepare(id).await {
                    // The writer logs the checkpoint as failed; the run ends with the error.
                    let _ = ack.send(Err(PipelineError::Runtime(error.to_string())));
                    return Err(error);
                }
                let _ = ack.send(Ok(()));
            }
        }
    }
    sink.finish().await?;
    rejects.send(sink.as_mut()).await
}

/// Where side records are written: late events and timed-out matches go to the dead letters
/// unless they have writers of their own.
struct SideWriters {
    dead_letters: SideWriter,
    late: Option<SideWriter>,
    timed_out: Option<SideWriter>,
}

/// Writes dead letters, late events and timed-out matches as they come, until every sender is
/// gone or, once the chain is done, nothing more is queued.
async fn run_side(
    rx: &mut mpsc::Receiver<Vec<SideRecord>>,
    mut chain_done: oneshot::Receiver<()>,
    writers: SideWriters,
    counters: Arc<Counters>,
) -> Result<()> {
    let SideWriters {
        mut dead_letters,
        mut late,
        mut timed_out,
    } = writers;
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
        let (timed_out_records, dead): (Vec<SideRecord>, Vec<SideRecord>) = dead
            .into_iter()
            .partition(|record| record.kind == SideKind::TimedOut);
        counters.add_dead_letters(dead.len() as u64);
        counters.add_late(late_records.len() as u64);
        dead_letters.write(&dead).await?;
        match &mut late {
            Some(writer) => writer.write(&late_records).await?,
            None => dead_letters.write(&late_records).await?,
        }
        match &mut timed_out {
            Some(writer) => writer.write(&timed_out_records).await?,
            None => dead_letters.write(&timed_out_records).await?,
        }
        if rx.is_empty() {
            dead_letters.flush().await?;
            for writer in [&mut late, &mut timed_out].into_iter().flatten() {
                writer.flush().await?;
            }
        }
    }
    dead_letters.flush().await?;
    for writer in [&mut late, &mut timed_out].into_iter().flatten() {
        writer.flush().await?;
    }
    Ok(())
}
