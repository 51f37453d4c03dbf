//! `branch`: the two inputs of a join, as the first operator of a chain. Each input (a lane)
//! takes the batches of the sources it names (or of every source), runs its own steps on them
//! (filters, maps, and the `key_by` of the join key, each compiled against the lane's layout),
//! and hands on what they keep wrapped with the lane's side ([`super::tag`]). The join after it
//! unwraps them. It keeps no state, so it runs in the chain and its output is routed by key
//! to parallel workers like any keyed stream.

use std::sync::Arc;

use dataflow_event::{Event, Layout};
use dataflow_expr::Expr;

use super::{tag, Side};
use crate::filter::Filter;
use crate::kind::{KeyEffect, OperatorKind, Partitioning};
use crate::operator::{dead_letter, Operator, OperatorNode, Output};

/// What every branch is: stateless, and it sets its events' keys (the join key).
pub const KIND: OperatorKind = OperatorKind {
    name: "branch",
    stateful: false,
    input: Partitioning::Any,
    key: KeyEffect::Sets,
    inspect: None,
};

/// One input of a join.
#[derive(Debug)]
pub struct Lane {
    /// Its side of the join.
    pub side: Side,
    /// The sources (their indexes in the pipeline) whose events it takes; `None`: every one.
    pub sources: Option<Vec<usize>>,
    /// Its first step when it is a filter: run on the batch it shares with the other input, so
    /// that only the events it keeps are copied.
    pub filter: Option<Filter>,
    /// Its (other) steps, in order; the last sets the join key. Stateless operators only.
    pub steps: Vec<OperatorNode>,
    /// For the table of a lookup join: the condition that makes a row a delete of its key,
    /// compiled against `layout`.
    pub delete: Option<Expr>,
    /// The layout of its events after its steps.
    pub layout: Layout,
    /// Its name, for the dead letters of `delete`.
    pub stage: Arc<str>,
}

/// The two inputs of a join, run on every batch from the sources.
#[derive(Debug)]
pub struct Branches {
    lanes: Vec<Lane>,
}

impl Branches {
    /// The inputs `lanes` (a left and a right one).
    pub fn new(lanes: Vec<Lane>) -> Branches {
        Branches { lanes }
    }
}

impl Operator for Branches {
    fn kind(&self) -> &'static OperatorKind {
        &KIND
    }

    fn process(&mut self, batch: Vec<Event>, out: &mut Output) {
        self.route(None, batch, out);
    }

    fn process_input(&mut self, input: usize, batch: Vec<Event>, out: &mut Output) {
        self.route(Some(input), batch, out);
    }
}

impl Branches {
    fn route(&mut self, input: Option<usize>, batch: Vec<Event>, out: &mut Output) {
        let taking: Vec<usize> = (0..self.lanes.len())
            .filter(|&lane| match (&self.lanes[lane].sources, input) {
                (None, _) => true,
                (Some(sources), Some(input)) => sources.contains(&input),
                (Some(_), None) => false,
            })
            .collect();
        let mut batch = Some(batch);
        for (position, &index) in taking.iter().enumerate() {
            let lane = &mut self.lanes[index];
            let last = position + 1 == taking.len();
            // The last lane to take the batch takes it whole; the others take a copy of what
            // their first filter keeps.
            let mut events = match (lane.filter.as_mut(), last) {
                (Some(filter), false) => filter.select(batch.as_deref().unwrap_or_default(), out),
                (Some(filter), true) => {
                    let mut kept = Output::default();
                    filter.process(batch.take().unwrap_or_default(), &mut kept);
                    out.side.append(&mut kept.side);
                    kept.events
                }
                (None, false) => batch.clone().unwrap_or_default(),
                (None, true) => batch.take().unwrap_or_default(),
            };
            for node in &mut lane.steps {
                if events.is_empty() {
                    break;
                }
                let mut step = Output::default();
                node.operator.process(events, &mut step);
                out.side.append(&mut step.side);
                if out.failure.is_none() {
                    out.failure = step.failure.take();
                }
                events = step.events;
            }
            for event in events {
                let side = match &lane.delete {
                    None => lane.side,
                    Some(delete) => match delete.eval_bool(&event) {
                        Ok(true) => Side::RightDelete,
                        Ok(false) => lane.side,
                        Err(error) => {
                            out.side.push(dead_letter(
                                &lane.stage,
                                &event,
                                &lane.layout,
                                error.to_string(),
                            ));
                            continue;
                        }
                    },
                };
                out.events.push(tag(side, event));
            }
        }
    }
}
