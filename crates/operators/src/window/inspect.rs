//! Readable views of operator state in a checkpoint, for people: keys as JSON values, each
//! key's open windows with their aggregates' current values.
//!
//! A window operator's state is `(dataflow_window::WindowSnapshot, watermark)` encoded with
//! `dataflow_checkpoint::encode_state` (see `WindowAggregate::snapshot`); this module decodes it
//! the same way and reads the snapshot through [`WindowSnapshot::keys`], the window crate's typed
//! view (aggregate results computed by the accumulators' own code), so the stored format stays
//! the window crate's alone. Used by the processor's API (online) and by `admin --dir`
//! (offline).
//!
//! ```
//! use dataflow_operators::kind::decode_state;
//! use dataflow_operators::window::key_from_text;
//! assert_eq!(key_from_text("42"), serde_json::json!(42));
//! assert_eq!(key_from_text("u01"), serde_json::json!("u01"));
//! assert!(decode_state("filter", &[]).is_err());
//! ```

use dataflow_window::{SnapshotKey, WindowSnapshot};
use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::Result;

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
    let (snapshot, watermark): (WindowSnapshot, i64) =
        dataflow_checkpoint::decode_state(state).map_err(super::checkpoint_error)?;
    Ok(OperatorView {
        watermark,
        keys: snapshot.keys().map(|key| key_view(&key)).collect(),
    })
}

/// One key as JSON: `{"windows": [{start, end, fired, aggregates: [{aggregate, value}]}]}`.
fn key_view(key: &SnapshotKey<'_>) -> KeyView {
    let windows: Vec<Json> = key
        .windows
        .iter()
        .map(|window| {
            let aggregates: Vec<Json> = window
                .results
                .iter()
                .map(|(aggregate, value)| {
                    json!({
                        "aggregate": aggregate.name(),
                        "value": value.to_json(),
                    })
                })
                .collect();
            json!({
                "start": window.start,
                "end": window.end,
                "fired": window.fired,
                "aggregates": aggregates,
            })
        })
        .collect();
    KeyView {
        key: key.key.to_json(),
        value: json!({ "windows": windows }),
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
    fn a_window_state_reads_as_windows_with_every_aggregate_result() {
        use dataflow_event::Value;
        use dataflow_window::{AggregateKind, KeyedWindows, WindowConfig, WindowKind};

        let config = WindowConfig {
            kind: WindowKind::Tumbling { size: 10 },
            allowed_lateness: 0,
            aggregates: AggregateKind::ALL.to_vec(),
        };
        let mut windows = KeyedWindows::new(config).expect("valid config");
        let mut out = Vec::new();
        for (key, timestamp, input) in [
            ("u2", 12, Value::Int(5)),
            ("u1", 3, Value::Int(2)),
            ("u1", 1, Value::Float(1.5)),
            ("u1", 4, Value::Null),
        ] {
            let inputs = vec![input; AggregateKind::ALL.len()];
            windows
                .add(&Value::str(key), timestamp, &inputs, &mut out)
                .expect("admitted");
        }
        let snapshot = windows.snapshot().expect("snapshot");
        let state = dataflow_checkpoint::encode_state(&(snapshot, 7_i64)).expect("encodes");
        let view = decode_snapshot(&state).expect("decodes");
        let names = AggregateKind::ALL.map(AggregateKind::name);
        let aggregates = |values: [Json; 12]| -> Json {
            names
                .iter()
                .zip(values)
                .map(|(name, value)| json!({"aggregate": name, "value": value}))
                .collect()
        };
        assert_eq!(view.watermark, 7);
        assert_eq!(
            view.keys,
            vec![
                KeyView {
                    key: json!("u1"),
                    value: json!({"windows": [{
                        "start": 0, "end": 10, "fired": false,
                        "aggregates": aggregates([
                            json!(3), json!(3.5), json!(1.5), json!(2), json!(1.75),
                            json!(2), json!(1.5), json!(2), json!({"1.5": 1, "2": 1}),
                            json!([2]), json!([1.5]), json!([2, 1.5]),
                        ]),
                    }]}),
                },
                KeyView {
                    key: json!("u2"),
                    value: json!({"windows": [{
                        "start": 10, "end": 20, "fired": false,
                        "aggregates": aggregates([
                            json!(1), json!(5), json!(5), json!(5), json!(5.0),
                            json!(1), json!(5), json!(5), json!({"5": 1}),
                            json!([5]), json!([5]), json!([5]),
                        ]),
                    }]}),
                },
            ]
        );
    }

    #[test]
    fn garbage_state_is_an_error_not_a_panic() {
        assert!(decode_snapshot(b"not a snapshot").is_err());
        assert!(decode_snapshot(&[]).is_err());
    }
}
