//! The lookup (temporal) join: the right input is a changelog (each row an upsert of its key,
//! or a delete when its input's `delete` condition holds), kept per key as its versions; each
//! left event joins the version of its key as of its own time: the latest version whose time
//! is at most the event's (of equal times, the one that arrived last).
//!
//! A left event waits until the watermark passes its time, so that every version before it
//! has arrived (versions are disordered within the watermark bound like any input), then is
//! joined and emitted at its own time. Inner: an event whose key has no version then (or a
//! deleted one) is dropped and counted unmatched; left outer: it is emitted with nulls and
//! counted. A key keeps the latest version before the watermark and those after it: the
//! versions back to the watermark, no more.

use dataflow_event::Value;
use serde::{Deserialize, Serialize};

use super::{Emit, JoinType, Logic, Row, Side};
use crate::kind::{KeyEffect, OperatorKind, Partitioning};

/// What every lookup join is: keyed state, keys kept.
pub const KIND: OperatorKind = OperatorKind {
    name: "lookup_join",
    stateful: true,
    input: Partitioning::ByKey,
    key: KeyEffect::Preserves,
    inspect: Some(super::inspect::<LookupState>),
};

/// The type of a lookup join: `Inner` or `Left` (the plan refuses the others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupJoin {
    /// Whether events without a version are emitted with nulls (`Left`) or dropped.
    pub how: JoinType,
}

/// A version of a key's table row: its values, or `None` for a delete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// When it took effect.
    pub time: i64,
    /// Its place in the arrival order.
    pub seq: u64,
    /// The row, or `None` when the key was deleted.
    pub values: Option<Vec<Value>>,
}

/// One key's table versions (by time, then arrival) and the events waiting for the watermark
/// (by time, then arrival).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LookupState {
    /// The versions back to the watermark.
    pub versions: Vec<Version>,
    /// Left events not yet passed by the watermark.
    pub waiting: Vec<Row>,
}

impl LookupJoin {
    fn emit_waiting(&self, key: &Value, state: &LookupState, row: &Row, emit: &mut Emit<'_>) {
        let index = state
            .versions
            .partition_point(|version| version.time <= row.time);
        let current = index
            .checked_sub(1)
            .and_then(|index| state.versions[index].values.as_deref());
        match current {
            Some(values) => emit.row(key, row.time, Some(&row.values), Some(values), &[]),
            None => {
                emit.unmatched_left(1);
                if self.how.keeps_left() {
                    emit.row(key, row.time, Some(&row.values), None, &[]);
                }
            }
        }
    }
}

impl Logic for LookupJoin {
    type State = LookupState;

    fn kind(&self) -> &'static OperatorKind {
        &KIND
    }

    fn insert(
        &self,
        _key: &Value,
        state: &mut LookupState,
        side: Side,
        row: Row,
        _watermark: i64,
        _emit: &mut Emit<'_>,
    ) {
        match side {
            Side::Left => {
                let at = state.waiting.partition_point(|held| held.time <= row.time);
                state.waiting.insert(at, row);
            }
            Side::Right | Side::RightDelete => {
                let at = state
                    .versions
                    .partition_point(|version| version.time <= row.time);
                state.versions.insert(
                    at,
                    Version {
                        time: row.time,
                        seq: row.seq,
                        values: (side == Side::Right).then_some(row.values),
                    },
                );
            }
        }
    }

    fn advance(&self, key: &Value, state: &mut LookupState, watermark: i64, emit: &mut Emit<'_>) {
        let ready = state.waiting.partition_point(|row| row.time < watermark);
        for row in state.waiting.drain(..ready).collect::<Vec<_>>() {
            self.emit_waiting(key, state, &row, emit);
        }
        // Every event to come is at or after the watermark: of the versions before it only the
        // latest can still be the one as of an event's time.
        let before = state
            .versions
            .partition_point(|version| version.time < watermark);
        if before > 1 {
            state.versions.drain(..before - 1);
        }
        if state
            .versions
            .first()
            .is_some_and(|version| version.time < watermark && version.values.is_none())
        {
            state.versions.remove(0);
        }
    }

    fn finish(&self, key: &Value, state: &mut LookupState, emit: &mut Emit<'_>) {
        for row in std::mem::take(&mut state.waiting) {
            self.emit_waiting(key, state, &row, emit);
        }
        state.versions.clear();
    }

    fn due(&self, state: &LookupState) -> Option<i64> {
        let event = state.waiting.first().map(|row| row.time.saturating_add(1));
        // The first version becomes obsolete once the watermark passes the second; a delete
        // once the watermark passes it.
        let obsolete = match state.versions.as_slice() {
            [] => None,
            [first, ..] if first.values.is_none() => Some(first.time.saturating_add(1)),
            [_, second, ..] => Some(second.time.saturating_add(1)),
            [_] => None,
        };
        match (event, obsolete) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn rows(&self, state: &LookupState) -> usize {
        state.versions.len() + state.waiting.len()
    }

    fn holdback(&self) -> i64 {
        // Events are emitted at their own time, which was not behind the watermark forwarded
        // before they arrived.
        0
    }
}
