//! `filter`: keeps the events for which a CEL predicate is true.

use std::sync::Arc;

use dataflow_event::{Event, Layout};
use dataflow_expr::Expr;

use crate::kind::{KeyEffect, OperatorKind, Partitioning};
use crate::operator::{dead_letter, Operator, Output};

/// What every filter is: stateless, and indifferent to how its input is partitioned.
pub const KIND: OperatorKind = OperatorKind {
    name: "filter",
    stateful: false,
    input: Partitioning::Any,
    key: KeyEffect::Preserves,
    inspect: None,
};

/// Keeps the events for which a CEL predicate is true. An event on which the predicate fails
/// (a missing field, a type mismatch) goes to the dead letters.
#[derive(Debug)]
pub struct Filter {
    stage: Arc<str>,
    predicate: Expr,
    layout: Layout,
}

impl Filter {
    /// A filter named `stage` over events of `layout`.
    pub fn new(stage: Arc<str>, predicate: Expr, layout: Layout) -> Filter {
        Filter {
            stage,
            predicate,
            layout,
        }
    }
}

impl Filter {
    /// Copies of the events of `events` for which the predicate is true: what `process` keeps,
    /// without taking the batch (an event on which it fails goes to the dead letters).
    pub fn select(&self, events: &[Event], out: &mut Output) -> Vec<Event> {
        events
            .iter()
            .filter(|event| match self.predicate.eval_bool(event) {
                Ok(keep) => keep,
                Err(error) => {
                    out.side.push(dead_letter(
                        &self.stage,
                        event,
                        &self.layout,
                        error.to_string(),
                    ));
                    false
                }
            })
            .cloned()
            .collect()
    }
}

impl Operator for Filter {
    fn kind(&self) -> &'static OperatorKind {
        &KIND
    }

    fn process(&mut self, mut batch: Vec<Event>, out: &mut Output) {
        batch.retain(|event| match self.predicate.eval_bool(event) {
            Ok(keep) => keep,
            Err(error) => {
                out.side.push(dead_letter(
                    &self.stage,
                    event,
                    &self.layout,
                    error.to_string(),
                ));
                false
            }
        });
        if out.events.is_empty() {
            out.events = batch;
        } else {
            out.events.append(&mut batch);
        }
    }
}
