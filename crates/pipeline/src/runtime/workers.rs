//! The parallel workers: the part of the chain from the first keyed operator on, run
//! `parallelism` times over disjoint keys. The chain routes events to the worker owning their
//! key and broadcasts watermarks, ticks and the end; at a checkpoint it merges the workers'
//! snapshots into one state per operator, and a restore splits that state among them by key.

use dataflow_checkpoint::OperatorState;
use dataflow_event::Event;
use dataflow_metrics::{Metrics, OperatorMetrics};
use dataflow_operators::{OperatorInfo, OperatorKind, OperatorNode, OperatorSnapshot};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

use super::driver::Operators;
use super::messages::{Drive, WorkerMessage};
use super::outputs::Downstream;
use crate::plan::Plan;
use crate::{PipelineError, Result};

/// The parallel workers of a pipeline, seen from the chain that feeds them.
pub(super) struct Workers {
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
            // It reported why.
            return Err(PipelineError::Stopped(format!("worker {worker}")));
        }
        Ok(())
    }

    /// Hands events to the workers: each to the worker owning its key (by
    /// `dataflow_window::key_partition`, the hash checkpoints are split by), so that every key's
    /// events reach one worker in stream order.
    pub(super) async fn route(&mut self, events: Vec<Event>) -> Result<()> {
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
    pub(super) async fn broadcast(&mut self, control: Drive) -> Result<()> {
        let finish = matches!(control, Drive::Finish(_));
        for worker in 0..self.txs.len() {
            let copy = match &control {
                Drive::Watermark(watermark) => Drive::Watermark(*watermark),
                Drive::Tick(now) => Drive::Tick(*now),
                Drive::Finish(fire) => Drive::Finish(*fire),
                Drive::Events(_) | Drive::Input(..) => {
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
    pub(super) async fn snapshot(&mut self) -> Result<Vec<OperatorState>> {
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
                .map_err(|_| PipelineError::Stopped("a worker".into()))??;
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
pub(super) fn start_workers(
    plan: &mut Plan,
    metrics: &Metrics,
    downstream: &Downstream,
    restored: bool,
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
    // Workers build their operators with the factory: it must build what the plan holds.
    let planned: Vec<OperatorInfo> = templates.iter().map(|node| node.info.clone()).collect();
    let same = |nodes: &[OperatorNode]| {
        nodes.len() == planned.len()
            && nodes
                .iter()
                .zip(&planned)
                .all(|(built, planned)| built.info == *planned)
    };
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
    // The parallel part of a new chain from the factory (empty if it builds too few).
    let build = || {
        let mut nodes = plan.operator_factory.build();
        nodes.drain(..start.min(nodes.len()));
        nodes
    };
    let templates = build();
    let mut instances: Vec<Vec<OperatorNode>> = (0..count).map(|_| build()).collect();
    if !same(&templates) || !instances.iter().all(|nodes| same(nodes)) {
        return Err(PipelineError::Runtime(
            "the operator factory builds other operators than the plan holds".into(),
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
    for (index, operators) in instances.into_iter().enumerate() {
        let operator_metrics: Vec<OperatorMetrics> = operators
            .iter()
            .map(|node| {
                let handle = metrics.operator(&plan.name, &node.info.name, node.info.kind.name);
                handle.set_instances(count);
                handle
            })
            .collect();
        let (tx, rx) = mpsc::channel(plan.runtime.channel_capacity);
        let worker = Worker {
            operators: Operators::new(operators, operator_metrics),
            downstream: downstream.clone(),
        };
        txs.push(tx);
        let failure = downstream.failure.clone();
        tasks.push(tokio::spawn(async move {
            let mut rx = rx;
            let result = worker.run(&mut rx).await;
            // Reported before the channel closes, so that the chain's error comes second.
            result.map_err(|error| failure.report(error, &format!("worker {index}")))
        }));
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

/// One parallel worker: its own instances of the operators of the parallel part, feeding the
/// sinks directly.
struct Worker {
    operators: Operators,
    downstream: Downstream,
}

impl Worker {
    /// Drives the operators with what the chain routes to it, and answers the chain's snapshot
    /// requests in order with the rest, until the end of input.
    async fn run(mut self, rx: &mut mpsc::Receiver<WorkerMessage>) -> Result<()> {
        loop {
            let waiting = Instant::now();
            let Some(message) = rx.recv().await else {
                // The chain is gone without an end of input: it failed and says why.
                return Ok(());
            };
            self.operators
                .starved(waiting.elapsed(), rx.len(), rx.max_capacity());
            match message {
                WorkerMessage::Drive(drive) => {
                    let finish = matches!(drive, Drive::Finish(_));
                    self.drive(drive).await?;
                    if finish {
                        return Ok(());
                    }
                }
                WorkerMessage::Snapshot(reply) => {
                    let _ = reply.send(self.operators.snapshots());
                }
            }
        }
    }

    /// Drives the operators and hands what they emit to the sinks and the side output, batch by
    /// batch while an operator has more to emit.
    async fn drive(&mut self, drive: Drive) -> Result<()> {
        let mut driven = self.operators.drive(drive)?;
        loop {
            let started = Instant::now();
            self.downstream.send_side(driven.side).await?;
            self.downstream.send_results(driven.results).await?;
            self.operators.blocked(started.elapsed());
            if !self.operators.pending() {
                return Ok(());
            }
            driven = self.operators.resume()?;
        }
    }
}
