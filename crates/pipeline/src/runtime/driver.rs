//! Driving a run of operators in order, the piece the chain and the parallel workers share:
//! events through every operator, watermarks, ticks and the end through each in turn, with
//! each operator's metrics counted once per batch.

use std::time::{Duration, Instant};

use dataflow_event::time::now_millis;
use dataflow_event::Event;
use dataflow_metrics::OperatorMetrics;
use dataflow_operators::{OperatorNode, OperatorSnapshot, Output, SideKind, SideRecord};

use super::messages::Drive;
use crate::{PipelineError, Result};

/// Operators fused in one task, each with its metrics.
pub(super) struct Operators {
    nodes: Vec<OperatorNode>,
    /// One handle per operator, in the same order.
    metrics: Vec<OperatorMetrics>,
    /// A control that stopped at an operator with more to emit ([`Operator::pending`]): where
    /// [`Operators::resume`] goes on.
    ///
    /// [`Operator::pending`]: dataflow_operators::Operator::pending
    resume: Option<Resume>,
}

/// A control part way through the operators.
#[derive(Clone, Copy, Debug)]
struct Resume {
    /// The operator to call again.
    index: usize,
    /// The control, as that operator is given it (a watermark as the operators before it
    /// forwarded it).
    control: Control,
}

/// What reaches every operator in turn, as opposed to events.
#[derive(Clone, Copy, Debug)]
enum Control {
    Watermark(i64),
    Tick(i64),
    Finish(bool),
}

impl Control {
    fn drive(self) -> Drive {
        match self {
            Control::Watermark(watermark) => Drive::Watermark(watermark),
            Control::Tick(now) => Drive::Tick(now),
            Control::Finish(fire) => Drive::Finish(fire),
        }
    }
}

/// What one [`Drive`] made the operators emit.
pub(super) struct Driven {
    /// What the last operator emitted.
    pub(super) results: Vec<Event>,
    /// Dead letters and late events, from every operator.
    pub(super) side: Vec<SideRecord>,
    /// What the operators after these (parallel workers) are to be driven with once they
    /// have `results`: `None` for events (they are the results), and while a control is
    /// pending (it is forwarded once it went through every operator).
    pub(super) forward: Option<Drive>,
}

impl Operators {
    pub(super) fn new(nodes: Vec<OperatorNode>, metrics: Vec<OperatorMetrics>) -> Operators {
        Operators {
            nodes,
            metrics,
            resume: None,
        }
    }

    /// Whether the last drive stopped at an operator with more to emit: the caller hands on
    /// what it got and calls [`Operators::resume`], before driving anything else.
    pub(super) fn pending(&self) -> bool {
        self.resume.is_some()
    }

    /// The operators, in order.
    pub(super) fn nodes(&self) -> &[OperatorNode] {
        &self.nodes
    }

    /// Every operator's snapshot, in order (`None` for an operator without state).
    pub(super) fn snapshots(&self) -> Result<Vec<Option<OperatorSnapshot>>> {
        self.nodes
            .iter()
            .map(|node| node.operator.snapshot().map_err(PipelineError::from))
            .collect()
    }

    /// Runs one input through the operators from the first, forwarding what each emits to the
    /// ones after it. A control stops at an operator that has more to emit than one batch
    /// ([`Operators::pending`]).
    pub(super) fn drive(&mut self, drive: Drive) -> Result<Driven> {
        debug_assert!(self.resume.is_none(), "driven while a control is pending");
        let control = match drive {
            Drive::Events(events) => {
                let mut side = Vec::new();
                let results = self.push(0, events, &mut side, None)?;
                return Ok(Driven {
                    results,
                    side,
                    forward: None,
                });
            }
            Drive::Input(input, events) => {
                let mut side = Vec::new();
                let results = self.push(0, events, &mut side, Some(input))?;
                return Ok(Driven {
                    results,
                    side,
                    forward: None,
                });
            }
            Drive::Watermark(watermark) => {
                let now = now_millis();
                for metrics in &self.metrics {
                    metrics.set_watermark(watermark, now);
                }
                Control::Watermark(watermark)
            }
            Drive::Tick(now) => Control::Tick(now),
            Drive::Finish(fire) => Control::Finish(fire),
        };
        self.control_from(0, control)
    }

    /// Goes on with the control that stopped at an operator with more to emit: calls it again,
    /// and once it has emitted everything, the operators after it.
    pub(super) fn resume(&mut self) -> Result<Driven> {
        match self.resume.take() {
            Some(Resume { index, control }) => self.control_from(index, control),
            None => Ok(Driven {
                results: Vec::new(),
                side: Vec::new(),
                forward: None,
            }),
        }
    }

    /// Counts `waited` as time every operator was starved for input, and the input queue's fill
    /// (`queued` of `capacity`) against the first.
    pub(super) fn starved(&self, waited: Duration, queued: usize, capacity: usize) {
        for metrics in &self.metrics {
            metrics.starved(waited);
        }
        if let Some(first) = self.metrics.first() {
            first.set_queue_fill(queued, capacity);
        }
    }

    /// The operators waited `waited` for room downstream: every one of them did.
    pub(super) fn blocked(&self, waited: Duration) {
        for metrics in &self.metrics {
            metrics.backpressured(waited);
        }
    }

    /// Passes `events` through the operators from `start` on; the first of them is told the
    /// source they came from, when `input` says.
    fn push(
        &mut self,
        start: usize,
        mut events: Vec<Event>,
        side: &mut Vec<SideRecord>,
        mut input: Option<usize>,
    ) -> Result<Vec<Event>> {
        for (node, metrics) in self.nodes.iter_mut().zip(&self.metrics).skip(start) {
            if events.is_empty() {
                break;
            }
            let mut out = Output::default();
            let received = events.len() as u64;
            let started = Instant::now();
            match input.take() {
                Some(input) => node.operator.process_input(input, events, &mut out),
                None => node.operator.process(events, &mut out),
            }
            metrics.observe_processing(started.elapsed());
            metrics.events_received(received);
            events = take_output(metrics, out, side)?;
        }
        Ok(events)
    }

    /// Passes `control` (a watermark, a tick, the end) to the operators from `start` on, in
    /// order, passing what each emits through the operators after it. Stops after an operator
    /// that is left with more to emit, to be resumed there.
    fn control_from(&mut self, start: usize, mut control: Control) -> Result<Driven> {
        let mut side = Vec::new();
        let mut results = Vec::new();
        for index in start..self.nodes.len() {
            let mut out = Output::default();
            let started = Instant::now();
            let operator = self.nodes[index].operator.as_mut();
            let next = match control {
                Control::Watermark(watermark) => {
                    Control::Watermark(operator.on_watermark(watermark, &mut out))
                }
                Control::Tick(now) => {
                    operator.on_tick(now, &mut out);
                    control
                }
                Control::Finish(fire) => {
                    operator.finish(fire, &mut out);
                    control
                }
            };
            let pending = operator.pending();
            let metrics = &self.metrics[index];
            metrics.busy(started.elapsed());
            // What a watermark, a tick or the end makes an operator emit counts as sent too.
            let events = take_output(metrics, out, &mut side)?;
            results.extend(self.push(index + 1, events, &mut side, None)?);
            if pending {
                self.resume = Some(Resume { index, control });
                return Ok(Driven {
                    results,
                    side,
                    forward: None,
                });
            }
            control = next;
        }
        Ok(Driven {
            results,
            side,
            forward: Some(control.drive()),
        })
    }
}

/// Takes what an operator emitted: the run fails if the operator failed (one error); otherwise
/// what it sent and routed aside is counted, its side records join `side`, and its events are
/// returned. Every dead letter of an operator is an event it failed to evaluate, so each also
/// counts as an error.
fn take_output(
    metrics: &OperatorMetrics,
    mut out: Output,
    side: &mut Vec<SideRecord>,
) -> Result<Vec<Event>> {
    if let Some(failure) = out.failure {
        metrics.errors(1);
        return Err(failure.into());
    }
    metrics.events_sent(out.events.len() as u64);
    let late = out.side.iter().filter(|r| r.kind == SideKind::Late).count() as u64;
    let timed_out = out
        .side
        .iter()
        .filter(|r| r.kind == SideKind::TimedOut)
        .count() as u64;
    let dead = out.side.len() as u64 - late - timed_out;
    metrics.late_events(late);
    metrics.timed_out(timed_out);
    metrics.unmatched(out.unmatched);
    metrics.dead_letters(dead);
    metrics.errors(dead);
    side.append(&mut out.side);
    Ok(out.events)
}
