//! `key_by`: sets each event's key from a CEL expression.

use std::sync::Arc;

use dataflow_event::{Event, Layout};
use dataflow_expr::Expr;

use crate::kind::{KeyEffect, OperatorKind, Partitioning};
use crate::operator::{dead_letter, Operator, Output};

/// What every key-by is: stateless. Its output is what keyed operators partition on, but its
/// own input may be partitioned any way.
pub const KIND: OperatorKind = OperatorKind {
    name: "key_by",
    stateful: false,
    input: Partitioning::Any,
    key: KeyEffect::Sets,
    inspect: None,
};

/// Sets each event's key from a CEL expression.
#[derive(Debug)]
pub struct KeyBy {
    stage: Arc<str>,
    key: Expr,
    layout: Layout,
}

impl KeyBy {
    /// A key-by step over events of `layout`.
    pub fn new(stage: Arc<str>, key: Expr, layout: Layout) -> KeyBy {
        KeyBy { stage, key, layout }
    }
}

impl Operator for KeyBy {
    fn kind(&self) -> &'static OperatorKind {
        &KIND
    }

    fn process(&mut self, mut batch: Vec<Event>, out: &mut Output) {
        batch.retain_mut(|event| match self.key.eval(event) {
            Ok(key) => {
                event.key = Some(key);
                true
            }
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
        out.events.append(&mut batch);
    }
}
