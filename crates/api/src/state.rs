//! Operator state as JSON, and the queries on it shared by the server and `admin --dir`: one
//! key, a page of keys, and what changed between two checkpoints.

use dataflow_checkpoint::{Checkpoint, Manifest, ManifestDiff};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::StateDecoder;

/// The most keys one page holds.
pub const MAX_PAGE: usize = 1000;

/// One key and its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    /// The key.
    pub key: Json,
    /// Its state (for a window operator: its open windows and their aggregates).
    pub value: Json,
}

/// The answer to a key lookup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateValue {
    /// The checkpoint.
    pub checkpoint: u64,
    /// The operator.
    pub operator: String,
    /// The key.
    pub key: Json,
    /// Its state.
    pub value: Json,
}

/// A page of keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyPage {
    /// The checkpoint.
    pub checkpoint: u64,
    /// The operator.
    pub operator: String,
    /// Keys in the operator's state.
    pub total: usize,
    /// Where this page starts.
    pub offset: usize,
    /// The keys, in the state's order.
    pub keys: Vec<Json>,
    /// The offset of the next page, if any.
    pub next_offset: Option<usize>,
}

/// What changed in one operator's keys between two checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorKeyDiff {
    /// The operator.
    pub operator: String,
    /// Keys only in the newer checkpoint.
    pub added: Vec<Json>,
    /// Keys only in the older checkpoint.
    pub removed: Vec<Json>,
    /// Keys in both whose state differs.
    pub changed: Vec<Json>,
    /// Why the keys could not be compared, if so.
    pub error: Option<String>,
}

/// What changed between two checkpoints: positions, watermarks and sizes from the manifests,
/// and key by key for every operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointDiff {
    /// From the manifests.
    pub summary: ManifestDiff,
    /// Per operator.
    pub keys: Vec<OperatorKeyDiff>,
}

/// Why a state query failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateError {
    /// The checkpoint holds no state for this operator.
    UnknownOperator(String),
    /// The key is not in the operator's state.
    UnknownKey(String),
    /// The state cannot be decoded.
    Undecodable(String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::UnknownOperator(message)
            | StateError::UnknownKey(message)
            | StateError::Undecodable(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for StateError {}

/// A key typed on a command line or in a query: JSON if it parses (`42`, `"u01"`), otherwise
/// the text itself as a string (`u01`).
pub fn parse_key(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_string()))
}

/// Every key of `operator` in `checkpoint`.
pub fn operator_keys(
    checkpoint: &Checkpoint,
    operator: &str,
    decoder: &dyn StateDecoder,
) -> Result<Vec<KeyState>, StateError> {
    let state = checkpoint
        .operators
        .iter()
        .find(|o| o.name == operator)
        .ok_or_else(|| {
            let names: Vec<&str> = checkpoint
                .operators
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            StateError::UnknownOperator(format!(
                "checkpoint {} holds no state for operator `{operator}` (it has: {})",
                checkpoint.id,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })?;
    decoder
        .decode(&state.kind, &state.state)
        .map_err(|message| StateError::Undecodable(format!("operator `{operator}`: {message}")))
}

/// The state of `key` of `operator` in `checkpoint`.
pub fn lookup(
    checkpoint: &Checkpoint,
    operator: &str,
    key: &Json,
    decoder: &dyn StateDecoder,
) -> Result<StateValue, StateError> {
    let keys = operator_keys(checkpoint, operator, decoder)?;
    let found = keys.into_iter().find(|k| k.key == *key).ok_or_else(|| {
        StateError::UnknownKey(format!(
            "operator `{operator}` holds no key {key} in checkpoint {}",
            checkpoint.id
        ))
    })?;
    Ok(StateValue {
        checkpoint: checkpoint.id.0,
        operator: operator.to_string(),
        key: found.key,
        value: found.value,
    })
}

/// A page of the keys of `operator` in `checkpoint` (`limit` is capped at [`MAX_PAGE`]).
pub fn page(
    checkpoint: &Checkpoint,
    operator: &str,
    offset: usize,
    limit: usize,
    decoder: &dyn StateDecoder,
) -> Result<KeyPage, StateError> {
    let keys = operator_keys(checkpoint, operator, decoder)?;
    let total = keys.len();
    let limit = limit.clamp(1, MAX_PAGE);
    let page: Vec<Json> = keys
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|k| k.key)
        .collect();
    let end = offset.saturating_add(page.len());
    Ok(KeyPage {
        checkpoint: checkpoint.id.0,
        operator: operator.to_string(),
        total,
        offset,
        keys: page,
        next_offset: (end < total).then_some(end),
    })
}

/// What changed from `older` to `newer` (with their manifests).
pub fn diff(
    older: (&Checkpoint, &Manifest),
    newer: (&Checkpoint, &Manifest),
    decoder: &dyn StateDecoder,
) -> CheckpointDiff {
    let summary = older.1.diff(newer.1);
    let keys = summary
        .operators
        .iter()
        .map(|operator| {
            let name = &operator.name;
            let side = |checkpoint: &Checkpoint| -> Result<Vec<KeyState>, StateError> {
                match checkpoint.operators.iter().any(|o| o.name == *name) {
                    true => operator_keys(checkpoint, name, decoder),
                    false => Ok(Vec::new()),
                }
            };
            match (side(older.0), side(newer.0)) {
                (Ok(a), Ok(b)) => diff_keys(name, &a, &b),
                (Err(error), _) | (_, Err(error)) => OperatorKeyDiff {
                    operator: name.clone(),
                    added: Vec::new(),
                    removed: Vec::new(),
                    changed: Vec::new(),
                    error: Some(error.to_string()),
                },
            }
        })
        .collect();
    CheckpointDiff { summary, keys }
}

/// Keys added, removed and changed from `older` to `newer`.
pub fn diff_keys(operator: &str, older: &[KeyState], newer: &[KeyState]) -> OperatorKeyDiff {
    let key_text = |k: &KeyState| k.key.to_string();
    let old: std::collections::HashMap<String, &KeyState> =
        older.iter().map(|k| (key_text(k), k)).collect();
    let new: std::collections::HashMap<String, &KeyState> =
        newer.iter().map(|k| (key_text(k), k)).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for key in newer {
        match old.get(&key_text(key)) {
            None => added.push(key.key.clone()),
            Some(before) if before.value != key.value => changed.push(key.key.clone()),
            Some(_) => {}
        }
    }
    let removed = older
        .iter()
        .filter(|k| !new.contains_key(&key_text(k)))
        .map(|k| k.key.clone())
        .collect();
    OperatorKeyDiff {
        operator: operator.to_string(),
        added,
        removed,
        changed,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: Json, v: Json) -> KeyState {
        KeyState { key: k, value: v }
    }

    #[test]
    fn diff_keys_matches_a_map_model() {
        let older = [
            key(json!("a"), json!(1)),
            key(json!("b"), json!(2)),
            key(json!(3), json!(3)),
        ];
        let newer = [
            key(json!("b"), json!(20)),
            key(json!(3), json!(3)),
            key(json!("d"), json!(4)),
        ];
        let diff = diff_keys("w", &older, &newer);
        assert_eq!(diff.added, vec![json!("d")]);
        assert_eq!(diff.removed, vec![json!("a")]);
        assert_eq!(diff.changed, vec![json!("b")]);
    }
}
