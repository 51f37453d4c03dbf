//! The operator chain: the operators fused in one task, as Flink chains them, fed by every
//! source. It combines the sources' watermarks, aligns checkpoint barriers (holding back the
//! inputs whose barrier has arrived), snapshots the operators and hands the checkpoint to the
//! writer; with parallel workers it keeps the operators before them and feeds them its output.

use std::collections::VecDeque;
use std::time::Instant;

use dataflow_checkpoint::{
    CheckpointId, PartitionState, SourceState, StreamedCheckpoint, StreamedOperator,
};
use dataflow_event::time::now_millis;
use dataflow_operators::StreamedSnapshot;
use dataflow_window::WatermarkCombiner;
use tokio::sync::{mpsc, oneshot, watch};

use super::driver::Operators;
use super::messages::{Drive, Message, PendingCheckpoint, SinkMessage};
use super::outputs::Downstream;
use super::stop::{Reading, StopHandle, TriggerTimes, STOP_GRACE};
use super::workers::Workers;
use super::TICK;
use crate::{PipelineError, Result};

/// A checkpoint being aligned: the barriers that have arrived, and the messages held back
/// from the inputs that sent them.
struct Alignment {
    id: u64,
    arrived: Vec<Option<Vec<PartitionState>>>,
    held: Vec<VecDeque<Message>>,
    /// When its first barrier reached the chain.
    started: Instant,
}

/// The operator chain. With `parallelism` above 1 the chain keeps the operators before the
/// keyed part and hands their output to [`Workers`] running the rest.
pub(super) struct Chain {
    /// The parallel workers running the operators after these, if any.
    pub(super) workers: Option<Workers>,
    pub(super) operators: Operators,
    pub(super) downstream: Downstream,
    /// Where aligned checkpoints go; `None` without checkpoints.
    pub(super) writer: Option<mpsc::Sender<PendingCheckpoint>>,
    /// Tells the coordinator the id of the last aligned checkpoint.
    pub(super) aligned: watch::Sender<u64>,
    /// The sources' names, in input order.
    pub(super) source_names: Vec<String>,
    /// The pipeline's fingerprint, written into its checkpoints.
    pub(super) fingerprint: String,
    /// The last combined watermark the operators were driven with.
    pub(super) last_watermark: i64,
    /// Which sources are blocked in a read, and since when (a stop does not wait for them).
    pub(super) reading: Reading,
    /// When the coordinator asked for each barrier.
    pub(super) asked_at: TriggerTimes,
}

impl Chain {
    pub(super) async fn run(
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
        let failure = self.downstream.failure.clone();
        // A stop waits for every source's end: each sends what it has read (and its final
        // barrier, with checkpoints; an http source drains what it accepted) before it, so
        // nothing read is left in the channel. Only a source blocked in a read (stdin) is not
        // waited for: it holds nothing it has read.
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
                            // Every source is gone without saying End: one failed and reported
                            // why (or the run was stopped without them).
                            None => {
                                if failure.reason().is_some() {
                                    return Err(PipelineError::Stopped("the operator chain".into()));
                                }
                                self.drive(Drive::Finish(false)).await?;
                                return Ok(());
                            }
                        },
                        _ = failure.failed() => {
                            return Err(PipelineError::Stopped("the operator chain".into()));
                        }
                        _ = tick.tick() => {
                            let now = now_millis();
                            combiner.check_idle(now);
                            self.advance(combiner.current()).await?;
                            self.drive(Drive::Tick(now)).await?;
                            if stop_deadline.is_some()
                                && rx.is_empty()
                                && alignment.is_none()
                                && self.reading.all_blocked(&ended)
                            {
                                let waiting_for = ended.iter().filter(|e| !**e).count();
                                tracing::info!(sources = waiting_for, "stopping without the sources blocked in a read");
                                self.finish(fire && fire_on_stop).await?;
                                return Ok(());
                            }
                            None
                        }
                        _ = stop.stopped(), if stop_deadline.is_none() => {
                            stop_deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
                            None
                        }
                        _ = async { if let Some(deadline) = deadline { tokio::time::sleep_until(deadline).await } }, if deadline.is_some() => {
                            tracing::warn!("a source did not end within the stop's grace period; stopping without it");
                            self.finish(fire && fire_on_stop).await?;
                            return Ok(());
                        }
                    };
                    self.operators
                        .starved(waiting.elapsed(), rx.len(), rx.max_capacity());
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
                    self.drive(Drive::Input(input, events)).await?;
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
                            started: Instant::now(),
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
                self.finish(fire).await?;
                return Ok(());
            }
            if ended[input] {
                self.advance(combiner.current()).await?;
            }
        }
    }

    /// Ends the operators, firing their open windows or not. A stop that keeps them without
    /// checkpoints (`on_stop: keep`, no `checkpoint:`) has nowhere to keep them: says how many
    /// keys' open windows are dropped (their events were read, and counted as read).
    async fn finish(&mut self, fire: bool) -> Result<()> {
        if !fire && self.writer.is_none() {
            let mut keys: u64 = self
                .operators
                .snapshots()?
                .iter()
                .flatten()
                .map(|snapshot| snapshot.key_count)
                .sum();
            if let Some(workers) = &mut self.workers {
                keys += workers
                    .snapshot()
                    .await?
                    .iter()
                    .map(|state| state.key_count)
                    .sum::<u64>();
            }
            if keys > 0 {
                tracing::warn!(
                    keys,
                    "stopped with `on_stop: keep` and no checkpoints: the open windows of these keys are dropped without results"
                );
            }
        }
        self.drive(Drive::Finish(fire)).await
    }

    /// Drives the operators with the combined watermark if it advanced.
    async fn advance(&mut self, watermark: i64) -> Result<()> {
        if watermark > self.last_watermark && watermark != i64::MAX {
            self.last_watermark = watermark;
            self.downstream.counters.set_watermark(watermark);
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
        for node in self.operators.nodes() {
            // Streamed: the writer writes each state into the checkpoint file where the
            // operator left it, never gathered in one buffer.
            if let Some(StreamedSnapshot { key_count, state }) =
                node.operator.snapshot_streamed()?
            {
                operators.push(StreamedOperator {
                    name: node.info.name.to_string(),
                    kind: node.info.kind.to_string(),
                    key_count,
                    state,
                });
            }
        }
        if let Some(workers) = &mut self.workers {
            operators.extend(
                workers
                    .snapshot()
                    .await?
                    .into_iter()
                    .map(|op| StreamedOperator {
                        name: op.name,
                        kind: op.kind,
                        key_count: op.key_count,
                        state: Box::new(op.state),
                    }),
            );
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
        let checkpoint = StreamedCheckpoint {
            id: CheckpointId(aligning.id),
            created_at_ms: now_millis(),
            pipeline_fingerprint: self.fingerprint.clone(),
            sources,
            operators,
            watermark: self.last_watermark,
        };
        let mut acks = Vec::new();
        for (index, sink) in self.downstream.sinks.iter().enumerate() {
            let (ack, acked) = oneshot::channel();
            if sink
                .send(SinkMessage::Barrier(aligning.id, ack))
                .await
                .is_err()
            {
                return Err(self.downstream.sink_gone(index));
            }
            acks.push(acked);
        }
        if let Some(writer) = &self.writer {
            if writer
                .send(PendingCheckpoint {
                    checkpoint,
                    acks,
                    snapshot_time,
                    triggered: self.asked_at.take(aligning.id).unwrap_or(aligning.started),
                })
                .await
                .is_err()
            {
                return Err(PipelineError::Stopped("the checkpoint writer".into()));
            }
        }
        self.aligned.send_replace(aligning.id);
        Ok(())
    }

    /// Drives the operators, then hands side records on, and results to the workers (with
    /// what drives them next) or to the sinks; a control that leaves an operator with more to
    /// emit goes on batch by batch, each handed on (waiting for room) before the next.
    async fn drive(&mut self, drive: Drive) -> Result<()> {
        let mut driven = self.operators.drive(drive)?;
        loop {
            let started = Instant::now();
            self.downstream.send_side(driven.side).await?;
            match &mut self.workers {
                Some(workers) => {
                    workers.route(driven.results).await?;
                    if let Some(control) = driven.forward {
                        workers.broadcast(control).await?;
                    }
                }
                None => self.downstream.send_results(driven.results).await?,
            }
            self.operators.blocked(started.elapsed());
            if !self.operators.pending() {
                return Ok(());
            }
            driven = self.operators.resume()?;
        }
    }
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
