//! Events, typed values, schemas and the JSON Lines codec of dataflow.
//!
//! Everything that flows through a pipeline is an [`Event`]: an optional id and type, an event
//! time and a processing time in epoch milliseconds, optional headers, an optional key set by
//! `key_by`, and a [`Payload`]. A payload is either a [`Payload::Row`] of typed [`Value`]s laid
//! out by a [`Schema`] known when the pipeline is built (fast: fields are read by index), or a
//! generic JSON object ([`Payload::Object`]) when the source declares no schema.
//!
//! The [`json`] module decodes JSON Lines into events, reading only the fields a schema names,
//! and encodes events back to JSON Lines.
//!
//! ```
//! use dataflow_event::json::{Decoder, DecoderConfig};
//! use dataflow_event::{FieldType, Schema, Value};
//!
//! let schema = Schema::new([("user_id", FieldType::String), ("amount", FieldType::Int)]).unwrap();
//! let decoder = Decoder::new(DecoderConfig { schema: Some(schema), ..DecoderConfig::default() });
//! let line = br#"{"timestamp": 1700000000000, "type": "user_click", "user_id": "u1", "amount": 3, "x": [1]}"#;
//! let event = decoder.decode(line, 0).unwrap();
//! assert_eq!(event.event_time, 1_700_000_000_000);
//! assert_eq!(event.kind.as_deref(), Some("user_click"));
//! assert_eq!(event.payload.as_row().unwrap()[1], Value::Int(3));
//! ```
#![forbid(unsafe_code)]

mod error;
mod event;
mod intern;
pub mod json;
mod schema;
pub mod side;
pub mod time;
mod value;

pub use error::{EventError, Result};
pub use event::{Event, Headers, Payload};
pub use schema::{Field, FieldType, Layout, Schema};
pub use value::Value;
