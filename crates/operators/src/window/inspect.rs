//! Readable views of operator state in a checkpoint, for people: keys as JSON values, each
//! key's open windows with their aggregates' current values.
//!
//! A window operator's state is `(dataflow_window::WindowSnapshot, watermark)` encoded with
//! `dataflow_checkpoint::encode_state` (see `WindowAggregate::snapshot`); this module decodes it
//! the same way and reads the snapshot through its serde form, so the format stays the window
//! crate's. Used by the processor's API (online) and by `admin --dir` (offline).
//!
//! ```
//! use dataflow_operators::kind::decode_state;
//! use dataflow_operators::window::key_from_text;
//! assert_eq!(key_from_text("42"), serde_json::json!(42));
//! assert_eq!(key_from_text("u01"), serde_json::json!("u01"));
//! assert!(decode_state("filter", &[]).is_err());
//! ```

use dataflow_event::Value;
use dataflow_window::WindowSnapshot;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::{OperatorError, Result};

/// One key of an operator's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyView {
    /// The key, as JSON.
    pub key: Json,
    /// Its state: for a window operator, `{"windows": [{start, end, fired, aggregates}]}`.
    pub value: Json,
}

/// An operator's whole state, keys in the snapshot's (sorted) order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperatorView {
    /// The operator's watermark when the checkpoint was taken.
    pub watermark: i64,
    /// Every key.
    pub keys: Vec<KeyView>,
}

/// A key typed on a command line or in a query: JSON if it parses (`42`, `"u01"`, `[1,2]`),
/// otherwise the text itself as a string.
pub fn key_from_text(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_string()))
}

/// Decodes the state of a window operator (what `WindowAggregate::snapshot` writes).
pub fn decode_snapshot(state: &[u8]) -> Result<OperatorView> {
    let (snapshot, watermark): (WindowSnapshot, i64) = dataflow_checkpoint::decode_state(state)
        .map_err(|error| OperatorError::Checkpoint(error.to_string()))?;
    let serialized = serde_json::to_value(&snapshot)
        .map_err(|error| OperatorError::Checkpoint(format!("cannot read window state: {error}")))?;
    let view: SnapshotView = serde_json::from_value(serialized)
        .map_err(|error| OperatorError::Checkpoint(format!("cannot read window state: {error}")))?;
    let keys = view
        .keys
        .into_iter()
        .map(|key| KeyView {
            key: key.key.to_json(),
            value: json!({
                "windows": key
                    .slices
                    .into_iter()
                    .map(|slice| {
                        let aggregates: Vec<Json> = slice
                            .accumulators
                            .into_iter()
                            .enumerate()
                            .map(|(index, accumulator)| {
                                json!({
                                    "aggregate": view.aggregates.get(index).cloned().unwrap_or(Json::Null),
                                    "value": accumulator.readable(),
                                })
                            })
                            .collect();
                        json!({
                            "start": slice.start,
                            "end": slice.end,
                            "fired": slice.fired,
                            "aggregates": aggregates,
                        })
                    })
                    .collect::<Vec<_>>()
            }),
        })
        .collect();
    Ok(OperatorView { watermark, keys })
}

/// The serde form of `WindowSnapshot`, read back from JSON (unknown fields are ignored).
#[derive(Deserialize)]
struct SnapshotView {
    aggregates: Vec<Json>,
    keys: Vec<KeySnapshotView>,
}

#[derive(Deserialize)]
struct KeySnapshotView {
    key: Value,
    slices: Vec<SliceView>,
}

#[derive(Deserialize)]
struct SliceView {
    start: i64,
    end: i64,
    fired: bool,
    accumulators: Vec<AccumulatorView>,
}

#[derive(Deserialize)]
enum TotalView {
    Empty,
    Int(i64),
    Float(f64),
}

impl TotalView {
    fn readable(&self) -> Json {
        match self {
            TotalView::Empty => Json::Null,
            TotalView::Int(sum) => json!(sum),
            TotalView::Float(sum) => json!(sum),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            TotalView::Empty => None,
            TotalView::Int(sum) => Some(*sum as f64),
            TotalView::Float(sum) => Some(*sum),
        }
    }
}

#[derive(Deserialize)]
struct StampedView {
    value: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum AccumulatorView {
    Count(i64),
    Sum(TotalView),
    Min(Option<Value>),
    Max(Option<Value>),
    Avg { sum: TotalView, count: i64 },
    CountDistinct(Vec<Value>),
    First(Option<StampedView>),
    Last(Option<StampedView>),
    CountBy(Vec<(Value, i64)>),
}

impl AccumulatorView {
    fn readable(&self) -> Json {
        match self {
            AccumulatorView::Count(count) => json!(count),
            AccumulatorView::Sum(total) => total.readable(),
            AccumulatorView::Min(value) | AccumulatorView::Max(value) => {
                value.as_ref().map(Value::to_json).unwrap_or(Json::Null)
            }
            AccumulatorView::Avg { sum, count } => match (sum.as_f64(), *count) {
                (Some(sum), count) if count > 0 => json!(sum / count as f64),
                _ => Json::Null,
            },
            AccumulatorView::CountDistinct(values) => json!(values.len()),
            AccumulatorView::First(stamped) | AccumulatorView::Last(stamped) => stamped
                .as_ref()
                .map(|s| s.value.to_json())
                .unwrap_or(Json::Null),
            AccumulatorView::CountBy(pairs) => {
                let mut map = serde_json::Map::new();
                for (value, count) in pairs {
                    let name = match value {
                        Value::Str(text) => text.to_string(),
                        other => other.to_json().to_string(),
                    };
                    map.insert(name, json!(count));
                }
                Json::Object(map)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keys_are_json_or_strings() {
        assert_eq!(key_from_text("\"a b\""), json!("a b"));
        assert_eq!(key_from_text("a b"), json!("a b"));
        assert_eq!(key_from_text("[1, \"x\"]"), json!([1, "x"]));
    }

    #[test]
    fn garbage_state_is_an_error_not_a_panic() {
        assert!(decode_snapshot(b"not a snapshot").is_err());
        assert!(decode_snapshot(&[]).is_err());
    }
}
