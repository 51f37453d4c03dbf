//! `map`: computes, renames, keeps or drops payload fields.

use std::sync::Arc;

use dataflow_event::{Event, Field, FieldType, Layout, Payload, Schema, Value};
use dataflow_expr::Expr;

use crate::kind::{KeyEffect, OperatorKind, Partitioning};
use crate::operator::{dead_letter, Operator, Output};

/// What every map is: stateless, and indifferent to how its input is partitioned.
pub const KIND: OperatorKind = OperatorKind {
    name: "map",
    stateful: false,
    input: Partitioning::Any,
    key: KeyEffect::Preserves,
    inspect: None,
};

/// Where a field of a map step's output row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Input(usize),
    Computed(usize),
}

/// Computes, renames, keeps and drops payload fields.
#[derive(Debug)]
pub struct Map {
    stage: Arc<str>,
    computed: Vec<(String, Expr)>,
    renames: Vec<(String, String)>,
    keep: Option<Vec<String>>,
    drop: Vec<String>,
    input_layout: Layout,
    /// For row layouts: how each output column is made. `None` for object layouts.
    columns: Option<Vec<Column>>,
    /// For row layouts: whether the output row is the input row with computed values appended,
    /// so the row can be extended in place instead of rebuilt.
    append_only: bool,
    scratch: Vec<Value>,
}

impl Map {
    /// A map step over `input_layout`; returns the operator and its output layout, or the name of
    /// a field it refers to that does not exist.
    pub fn new(
        stage: Arc<str>,
        computed: Vec<(String, Expr)>,
        renames: Vec<(String, String)>,
        keep: Option<Vec<String>>,
        drop: Vec<String>,
        input_layout: Layout,
    ) -> Result<(Map, Layout), String> {
        let (columns, output_layout, append_only) = match &input_layout {
            Layout::Object => (None, Layout::Object, false),
            Layout::Row(schema) => {
                // Work on (name, type, column) triples, then build the schema once.
                let mut fields: Vec<(Field, Column)> = schema
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(index, field)| (field.clone(), Column::Input(index)))
                    .collect();
                for (index, (name, expr)) in computed.iter().enumerate() {
                    let field = Field {
                        name: name.clone(),
                        ty: expr.output_type().unwrap_or(FieldType::Json),
                        nullable: true,
                    };
                    match fields
                        .iter_mut()
                        .find(|(existing, _)| existing.name == *name)
                    {
                        Some(slot) => *slot = (field, Column::Computed(index)),
                        None => fields.push((field, Column::Computed(index))),
                    }
                }
                for (old, new) in &renames {
                    if !fields.iter().any(|(field, _)| field.name == *old) {
                        return Err(format!("cannot rename `{old}`: no such field"));
                    }
                    // The renamed field replaces any field that already had the new name.
                    fields.retain(|(field, _)| field.name != *new);
                    for (field, _) in fields.iter_mut().filter(|(field, _)| field.name == *old) {
                        field.name = new.clone();
                    }
                }
                if let Some(keep) = &keep {
                    for name in keep {
                        if !fields.iter().any(|(field, _)| field.name == *name) {
                            return Err(format!("cannot keep `{name}`: no such field"));
                        }
                    }
                    fields.retain(|(field, _)| keep.contains(&field.name));
                }
                for name in &drop {
                    if !fields.iter().any(|(field, _)| field.name == *name) {
                        return Err(format!("cannot drop `{name}`: no such field"));
                    }
                }
                fields.retain(|(field, _)| !drop.contains(&field.name));
                let columns: Vec<Column> = fields.iter().map(|(_, column)| *column).collect();
                let append_only =
                    columns
                        .iter()
                        .enumerate()
                        .all(|(position, column)| match column {
                            Column::Input(index) => *index == position,
                            Column::Computed(_) => position >= schema.len(),
                        })
                        && columns.len() >= schema.len();
                let schema = Schema::from_fields(fields.into_iter().map(|(field, _)| field))
                    .map_err(|error| error.to_string())?;
                (Some(columns), Layout::Row(Arc::new(schema)), append_only)
            }
        };
        Ok((
            Map {
                stage,
                computed,
                renames,
                keep,
                drop,
                input_layout,
                columns,
                append_only,
                scratch: Vec::new(),
            },
            output_layout,
        ))
    }

    fn apply(&mut self, event: &mut Event) -> Result<(), String> {
        self.scratch.clear();
        for (_, expr) in &self.computed {
            self.scratch
                .push(expr.eval(event).map_err(|error| error.to_string())?);
        }
        match (&mut event.payload, &self.columns) {
            (Payload::Row(row), Some(columns)) => {
                if self.append_only {
                    for column in &columns[row.len()..] {
                        if let Column::Computed(index) = column {
                            row.push(std::mem::take(&mut self.scratch[*index]));
                        }
                    }
                } else {
                    let mut output = Vec::with_capacity(columns.len());
                    for column in columns {
                        output.push(match column {
                            Column::Input(index) => row.get(*index).cloned().unwrap_or_default(),
                            Column::Computed(index) => std::mem::take(&mut self.scratch[*index]),
                        });
                    }
                    *row = output;
                }
            }
            (Payload::Object(map), _) => {
                for ((name, _), value) in self.computed.iter().zip(self.scratch.drain(..)) {
                    map.insert(name.clone(), value);
                }
                for (old, new) in &self.renames {
                    if let Some(value) = map.remove(old) {
                        map.insert(new.clone(), value);
                    }
                }
                if let Some(keep) = &self.keep {
                    map.retain(|name, _| keep.contains(name));
                }
                for name in &self.drop {
                    map.remove(name);
                }
            }
            (Payload::Row(_), None) => {
                return Err("a row payload reached a map step planned for objects".into())
            }
        }
        Ok(())
    }
}

impl Operator for Map {
    fn kind(&self) -> &'static OperatorKind {
        &KIND
    }

    fn process(&mut self, mut batch: Vec<Event>, out: &mut Output) {
        batch.retain_mut(|event| match self.apply(event) {
            Ok(()) => true,
            Err(reason) => {
                out.side
                    .push(dead_letter(&self.stage, event, &self.input_layout, reason));
                false
            }
        });
        out.events.append(&mut batch);
    }
}
