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
use super::stop::{Failure, Reading, StopHandle, TriggerTimes, STOP_GRACE};
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

/// Where the chain is in its inputs: their watermarks, which have ended, the checkpoint being
/// aligned and the messages it held back, to be replayed once it completes.
pub(super) struct Inputs {
    count: usize,
    combiner: WatermarkCombiner,
    ended: Vec<bool>,
    final_partitions: Vec<Vec<PartitionState>>,
    /// Whether every input that ended asked for open windows to fire.
    fire: bool,
    alignment: Option<Alignment>,
    replay: VecDeque<(usize, Message)>,
}

impl Inputs {
    pub(super) fn new(count: usize, idle_timeout: Option<i64>) -> Inputs {
        Inputs {
            count,
            combiner: WatermarkCombiner::new(count, idle_timeout),
            ended: vec![false; count],
            final_partitions: vec![Vec::new(); count],
            fire: true,
            alignment: None,
            replay: VecDeque::new(),
        }
    }
}

/// Whether the chain goes on after a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    Continue,
    /// Every input ended and the operators finished: the chain is done.
    Done,
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
        let mut state = Inputs::new(inputs, idle_timeout);
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
            let next = match state.replay.pop_front() {
                Some(message) => Some(message),
                None => {
                    let deadline = stop_deadline;
                    let next = tokio::select! {
                        message = rx.recv() => match message {
                            Some(message) => Some(message),
                            // Every source is gone without saying End: one failed and reported
                            // why (or the run was stopped without them).
                            None => return self.inputs_gone(&failure).await,
                        },
                        _ = failure.failed() => {
                            return Err(PipelineError::Stopped("the operator chain".into()));
                        }
                        _ = tick.tick() => {
                            self.tick(&mut state).await?;
                            if stop_deadline.is_some()
                                && rx.is_empty()
                                && state.alignment.is_none()
                                && self.reading.all_blocked(&state.ended)
                            {
                                let waiting_for = state.ended.iter().filter(|e| !**e).count();
                                tracing::info!(sources = waiting_for, "stopping without the sources blocked in a read");
                                self.finish(state.fire && fire_on_stop).await?;
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
                            self.finish(state.fire && fire_on_stop).await?;
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
            if self.receive(&mut state, input, message).await? == Next::Done {
                return Ok(());
            }
        }
    }

    /// Every source is gone without saying End: one failed and reported why (or the run was
    /// stopped without them). Ends the operators without firing unless the run failed.
    pub(super) async fn inputs_gone(&mut self, failure: &Failure) -> Result<()> {
        if failure.reason().is_some() {
            return Err(PipelineError::Stopped("the operator chain".into()));
        }
        self.drive(Drive::Finish(false)).await
    }

    /// What the chain does every [`TICK`]: checks idle inputs and advances processing time.
    pub(super) async fn tick(&mut self, state: &mut Inputs) -> Result<()> {
        let now = now_millis();
        state.combiner.check_idle(now);
        self.advance(state.combiner.current()).await?;
        self.drive(Drive::Tick(now)).await
    }

    /// Takes one message of input `input`: holds it back while that input's barrier waits for
    /// the others', drives the operators with it, completes an alignment, and finishes the
    /// operators once every input has ended (then [`Next::Done`]). Messages released by a
    /// completed alignment wait in the state's replay queue for the caller to pass in first.
    pub(super) async fn receive(
        &mut self,
        state: &mut Inputs,
        input: usize,
        message: Message,
    ) -> Result<Next> {
        let inputs = state.count;
        if let Some(aligning) = &mut state.alignment {
            if aligning.arrived[input].is_some() {
                aligning.held[input].push_back(message);
                return Ok(Next::Continue);
            }
        }
        match message {
            Message::Events(events) => {
                state.combiner.activity(input, now_millis());
                self.drive(Drive::Input(input, events)).await?;
            }
            Message::Watermark(watermark) => {
                state.combiner.update(input, watermark, now_millis());
                self.advance(state.combiner.current()).await?;
            }
            Message::Barrier { id, partitions } => {
                let current = state.alignment.as_ref().map(|a| a.id).unwrap_or(0);
                if id < current {
                    return Ok(Next::Continue);
                }
                if id > current {
                    if let Some(abandoned) = state.alignment.take() {
                        tracing::debug!(
                            checkpoint = abandoned.id,
                            newer = id,
                            "checkpoint abandoned for a newer one"
                        );
                        release(abandoned.held, &mut state.replay);
                    }
                    state.alignment = Some(Alignment {
                        id,
                        arrived: vec![None; inputs],
                        held: (0..inputs).map(|_| VecDeque::new()).collect(),
                        started: Instant::now(),
                    });
                }
                if let Some(aligning) = &mut state.alignment {
                    aligning.arrived[input] = Some(partitions);
                }
            }
            Message::End {
                fire: fire_input,
                partitions,
            } => {
                state.combiner.finish(input);
                state.ended[input] = true;
                state.final_partitions[input] = partitions;
                state.fire &= fire_input;
            }
        }
        // An alignment completes when every input that has not ended sent its barrier.
        let complete = state.alignment.as_ref().is_some_and(|aligning| {
            (0..inputs).all(|i| state.ended[i] || aligning.arrived[i].is_some())
        });
        if complete {
            if let Some(aligning) = state.alignment.take() {
                self.checkpoint(&aligning, &state.final_partitions).await?;
                release(aligning.held, &mut state.replay);
            }
        }
        if state.ended.iter().all(|e| *e) && state.alignment.is_none() && state.replay.is_empty() {
            self.finish(state.fire).await?;
            return Ok(Next::Done);
        }
        if state.ended[input] {
            self.advance(state.combiner.current()).await?;
        }
        Ok(Next::Continue)
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
            // Without workers, the results of the watermark went out in the drive: a sink
            // that wants the watermark gets it after them. (A repartition sink's chain, the
            // steps up to a key_by, has no workers.)
            if self.workers.is_none() {
                self.downstream.send_watermark(watermark).await?;
            }
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
        // Room in the writer's queue first, then the snapshot: a snapshot taken while the queue
        // is full would wait there holding its states (with a million keys, tens of
        // megabytes) beside the one queued and the one being written.
        let permit = match &self.writer {
            Some(writer) => Some(
                writer
                    .reserve()
                    .await
                    .map_err(|_| PipelineError::Stopped("the checkpoint writer".into()))?,
            ),
            None => None,
        };
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
        if let Some(permit) = permit {
            permit.send(PendingCheckpoint {
                checkpoint,
                acks,
                snapshot_time,
                triggered: self.asked_at.take(aligning.id).unwrap_or(aligning.started),
            });
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

/// The chain run on its one source's thread (`runtime.fuse_source`): the source hands each
/// message straight to [`Fused::deliver`] instead of a channel, so batches are processed,
/// and their events freed, on the thread that decoded them. The chain's async parts (sends to
/// the sinks and the checkpoint writer) run there through the runtime's handle; ticks come
/// from the source's loop ([`Fused::idle`]), failures of other tasks are looked at after every
/// message. Only for a source that never blocks in a read, so that ticks and stops are seen.
pub(super) struct Fused {
    chain: Chain,
    state: Inputs,
    handle: tokio::runtime::Handle,
    failure: Failure,
    last_tick: Instant,
    /// When the chain last went back to waiting for its source.
    waiting_since: Instant,
    /// How the chain ended, once it has.
    outcome: Option<Result<()>>,
}

impl Fused {
    pub(super) fn new(
        chain: Chain,
        idle_timeout: Option<i64>,
        handle: tokio::runtime::Handle,
    ) -> Fused {
        let failure = chain.downstream.failure.clone();
        Fused {
            chain,
            state: Inputs::new(1, idle_timeout),
            handle,
            failure,
            last_tick: Instant::now(),
            waiting_since: Instant::now(),
            outcome: None,
        }
    }

    /// Runs the chain over one message of the source (and what an alignment it completed
    /// released); false once the chain is done or failed: the source then stops.
    pub(super) fn deliver(&mut self, message: Message) -> bool {
        if self.outcome.is_some() {
            return false;
        }
        self.chain
            .operators
            .starved(self.waiting_since.elapsed(), 0, 1);
        let Fused {
            chain,
            state,
            handle,
            last_tick,
            ..
        } = self;
        let result = handle.block_on(async {
            let mut next = chain.receive(state, 0, message).await?;
            while next == Next::Continue {
                let Some((input, message)) = state.replay.pop_front() else {
                    break;
                };
                next = chain.receive(state, input, message).await?;
            }
            if next == Next::Continue && last_tick.elapsed() >= TICK {
                *last_tick = Instant::now();
                chain.tick(state).await?;
            }
            Ok(next)
        });
        self.waiting_since = Instant::now();
        self.settle(result)
    }

    /// The source found nothing to read: ticks the chain when one is due; false once the
    /// chain is done or failed.
    pub(super) fn idle(&mut self) -> bool {
        if self.outcome.is_some() {
            return false;
        }
        if self.last_tick.elapsed() < TICK {
            return self.settle(Ok(Next::Continue));
        }
        self.last_tick = Instant::now();
        let Fused {
            chain,
            state,
            handle,
            ..
        } = self;
        let result = handle.block_on(chain.tick(state)).map(|()| Next::Continue);
        self.settle(result)
    }

    fn settle(&mut self, result: Result<Next>) -> bool {
        match result {
            Ok(Next::Continue) if self.failure.reason().is_some() => {
                self.outcome = Some(Err(PipelineError::Stopped("the operator chain".into())));
                false
            }
            Ok(Next::Continue) => true,
            Ok(Next::Done) => {
                self.outcome = Some(Ok(()));
                false
            }
            Err(error) => {
                self.outcome = Some(Err(error));
                false
            }
        }
    }

    /// The chain's end, once the source has returned: how it ended, or, when the source
    /// stopped without its End (it failed), as when every source of a threaded chain is gone.
    pub(super) fn end(&mut self) -> Result<()> {
        match self.outcome.take() {
            Some(outcome) => outcome,
            None => {
                let Fused {
                    chain,
                    handle,
                    failure,
                    ..
                } = self;
                handle.block_on(chain.inputs_gone(failure))
            }
        }
    }
}
