use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Value;

/// Event headers: string pairs carried beside the payload (trace ids, origin). Most events have
/// none, so they are boxed to keep [`Event`] small.
pub type Headers = Vec<(Arc<str>, Arc<str>)>;

/// The body of an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Typed values laid out by the stream's [`crate::Schema`].
    Row(Vec<Value>),
    /// A generic JSON object, for sources without a schema.
    Object(BTreeMap<String, Value>),
}

impl Payload {
    /// The values of a row payload.
    pub fn as_row(&self) -> Option<&[Value]> {
        match self {
            Payload::Row(values) => Some(values),
            Payload::Object(_) => None,
        }
    }

    /// The map of an object payload.
    pub fn as_object(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Payload::Row(_) => None,
            Payload::Object(map) => Some(map),
        }
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Object(BTreeMap::new())
    }
}

/// One record flowing through a pipeline.
///
/// Times are epoch milliseconds. `key` is set by a `key_by` step and read by keyed operators.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The record's id, if its source gives one.
    pub id: Option<Arc<str>>,
    /// The record's type (`user_click`), if its source gives one.
    pub kind: Option<Arc<str>>,
    /// When the event happened, by its own clock.
    pub event_time: i64,
    /// When this process first saw the event.
    pub processing_time: i64,
    /// Optional headers.
    pub headers: Option<Box<Headers>>,
    /// The key set by `key_by`, if any.
    pub key: Option<Value>,
    /// The body.
    pub payload: Payload,
}

impl Event {
    /// An event with a row payload and no id, type, headers or key.
    pub fn row(event_time: i64, values: Vec<Value>) -> Event {
        Event {
            event_time,
            processing_time: event_time,
            payload: Payload::Row(values),
            ..Event::default()
        }
    }

    /// An event with an object payload and no id, type, headers or key.
    pub fn object(event_time: i64, fields: BTreeMap<String, Value>) -> Event {
        Event {
            event_time,
            processing_time: event_time,
            payload: Payload::Object(fields),
            ..Event::default()
        }
    }
}
