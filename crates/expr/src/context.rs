//! What both evaluators share: the context an expression runs against (the event, its payload
//! split by layout), the values they pass around, and why an evaluation failed. The native
//! evaluator (`eval`) and the interpreter bridge (`interp`) both build on this module, so that
//! neither needs the other's internals.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use dataflow_event::{Event, Schema, Value};

/// Why an evaluation failed. One word wide, so that results travel in registers.
#[derive(Debug)]
pub(super) enum Fault {
    /// A data-dependent error, reported to the user. (Boxed for a thin pointer: errors are
    /// rare, results small.)
    #[allow(clippy::box_collection)]
    Message(Box<String>),
    /// A sub-expression run by the interpreter gave a value with no exact [`Value`] form (a
    /// `uint`, `bytes`, a type...): the whole expression must run in the interpreter instead.
    Unrepresentable,
}

impl Fault {
    pub fn msg(message: impl Into<String>) -> Fault {
        Fault::Message(Box::new(message.into()))
    }
}

/// The value of a node: a borrowed [`Value`], a scalar, or a computed value. Two words wide,
/// so that results travel in registers rather than through memory.
#[derive(Debug)]
pub(super) enum Val<'a> {
    Ref(&'a Value),
    Bool(bool),
    Int(i64),
    Float(f64),
    Own(Box<Value>),
}

impl<'a> Val<'a> {
    pub fn of(value: Value) -> Val<'a> {
        match value {
            Value::Null => Val::Ref(&NULL),
            Value::Bool(b) => Val::Bool(b),
            Value::Int(i) => Val::Int(i),
            Value::Float(f) => Val::Float(f),
            other => Val::Own(Box::new(other)),
        }
    }

    /// The value, borrowed where it can be.
    #[inline]
    pub fn view(&self) -> Cow<'_, Value> {
        match self {
            Val::Ref(value) => Cow::Borrowed(value),
            Val::Bool(b) => Cow::Owned(Value::Bool(*b)),
            Val::Int(i) => Cow::Owned(Value::Int(*i)),
            Val::Float(f) => Cow::Owned(Value::Float(*f)),
            Val::Own(value) => Cow::Borrowed(value),
        }
    }

    pub fn into_value(self) -> Value {
        match self {
            Val::Ref(value) => value.clone(),
            Val::Bool(b) => Value::Bool(b),
            Val::Int(i) => Value::Int(i),
            Val::Float(f) => Value::Float(f),
            Val::Own(value) => *value,
        }
    }
}

/// The result of evaluating a node.
pub(super) type Eval<'a> = Result<Val<'a>, Fault>;

/// What a node is evaluated against: the event, with its payload already split by layout.
#[derive(Clone, Copy)]
pub(super) struct Cx<'a> {
    pub event: &'a Event,
    /// The row of a [`dataflow_event::Payload::Row`] (empty for object payloads).
    pub row: &'a [Value],
    /// The map of a [`dataflow_event::Payload::Object`].
    pub object: Option<&'a BTreeMap<String, Value>>,
    /// The schema of a row layout.
    pub schema: Option<&'a Schema>,
}

/// An attribute of the event itself: `event.NAME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attr {
    Type,
    Id,
    Time,
    ProcessingTime,
    Key,
    Headers,
}

impl Attr {
    pub const ALL: [(&'static str, Attr); 6] = [
        ("type", Attr::Type),
        ("id", Attr::Id),
        ("time", Attr::Time),
        ("processing_time", Attr::ProcessingTime),
        ("key", Attr::Key),
        ("headers", Attr::Headers),
    ];

    pub fn named(name: &str) -> Option<Attr> {
        Attr::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, attr)| *attr)
    }

    pub fn value(self, event: &Event) -> Val<'_> {
        let text = |text: &Option<Arc<str>>| match text {
            Some(text) => Val::Own(Box::new(Value::Str(text.clone()))),
            None => Val::Ref(&NULL),
        };
        match self {
            Attr::Type => text(&event.kind),
            Attr::Id => text(&event.id),
            Attr::Time => Val::Int(event.event_time),
            Attr::ProcessingTime => Val::Int(event.processing_time),
            Attr::Key => Val::Ref(event.key.as_ref().unwrap_or(&NULL)),
            Attr::Headers => {
                let mut map = BTreeMap::new();
                for (name, value) in event.headers.iter().flat_map(|headers| headers.iter()) {
                    map.insert(name.to_string(), Value::Str(value.clone()));
                }
                Val::Own(Box::new(Value::Map(Arc::new(map))))
            }
        }
    }
}

pub(super) static NULL: Value = Value::Null;

/// The event as the map `event` names.
pub(super) fn event_map(event: &Event) -> Value {
    let map = Attr::ALL
        .iter()
        .map(|(name, attr)| (name.to_string(), attr.value(event).into_value()))
        .collect();
    Value::Map(Arc::new(map))
}

/// The payload as the map `payload` names: for a row, every field of the schema.
pub(super) fn payload_map(cx: &Cx<'_>) -> Value {
    match (cx.object, cx.schema) {
        (Some(object), _) => Value::Map(Arc::new(object.clone())),
        (None, Some(schema)) => Value::Map(Arc::new(
            schema
                .fields()
                .iter()
                .zip(cx.row)
                .map(|(field, value)| (field.name.clone(), value.clone()))
                .collect(),
        )),
        (None, None) => Value::Map(Arc::default()),
    }
}
