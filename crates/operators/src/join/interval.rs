//! The interval join: a left row `a` and a right row `b` of the same key join when
//! `b.time ∈ [a.time + lower, a.time + upper]`.
//!
//! A pair is emitted as soon as its second row arrives. A left row can meet no future right row
//! once the watermark `W` passes `a.time + upper` (future rows have times `>= W`), and a right
//! row none once `W` passes `b.time - lower`: there they are dropped, so a key holds only the
//! rows of the last `upper` (left) and `-lower` (right) milliseconds before the watermark, and
//! what arrived after it. A row dropped without ever having met a partner is counted as
//! unmatched, and emitted with nulls for the other side when the join is outer on its side:
//! once the watermark proves it can no longer match, or at the end of input.

use std::collections::VecDeque;

use dataflow_event::Value;
use serde::{Deserialize, Serialize};

use super::{Emit, JoinType, Logic, Row, Side};
use crate::kind::{KeyEffect, OperatorKind, Partitioning};

/// What every interval join is: keyed state, keys kept.
pub const KIND: OperatorKind = OperatorKind {
    name: "interval_join",
    stateful: true,
    input: Partitioning::ByKey,
    key: KeyEffect::Preserves,
    inspect: Some(super::inspect::<IntervalState>),
};

/// The bounds and type of an interval join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalJoin {
    /// The earliest right time, relative to the left row's (ms, may be negative).
    pub lower: i64,
    /// The latest right time, relative to the left row's (ms), at least `lower`.
    pub upper: i64,
    /// Which unmatched rows are emitted.
    pub how: JoinType,
}

/// A row and whether it met a partner yet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The row.
    pub row: Row,
    /// Whether it joined at least one row of the other side.
    pub matched: bool,
}

/// One key's rows of each side, each side sorted by time (equal times in arrival order): so a
/// row meets the rows of the other side in its range by a binary search, and the rows the
/// watermark passed leave from the front.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IntervalState {
    /// Left rows that may still meet a right row.
    pub left: VecDeque<Held>,
    /// Right rows that may still meet a left row.
    pub right: VecDeque<Held>,
}

/// Puts `held` into `rows` (sorted by time) after the rows of its time or before.
fn insert_sorted(rows: &mut VecDeque<Held>, held: Held) {
    let at = rows.partition_point(|other| other.row.time <= held.row.time);
    rows.insert(at, held);
}

/// The rows of `rows` (sorted by time) from `from` to `to`, both included.
fn in_range(rows: &mut VecDeque<Held>, from: i64, to: i64) -> impl Iterator<Item = &mut Held> {
    let start = rows.partition_point(|other| other.row.time < from);
    let end = rows.partition_point(|other| other.row.time <= to);
    rows.range_mut(start..end.max(start))
}

impl IntervalJoin {
    /// The watermark past which a left row at `time` can meet no future right row.
    fn left_expiry(&self, time: i64) -> i64 {
        time.saturating_add(self.upper)
    }

    /// The watermark past which a right row at `time` can meet no future left row.
    fn right_expiry(&self, time: i64) -> i64 {
        time.saturating_sub(self.lower)
    }

    /// Drops the rows at the front of each side (sorted by time) for which `gone_left` and
    /// `gone_right` hold, emitting or counting the unmatched ones.
    fn drop_rows(
        &self,
        key: &Value,
        state: &mut IntervalState,
        gone_left: impl Fn(&Held) -> bool,
        gone_right: impl Fn(&Held) -> bool,
        emit: &mut Emit<'_>,
    ) {
        while let Some(held) = state.left.front() {
            if !gone_left(held) {
                break;
            }
            let Some(held) = state.left.pop_front() else {
                break;
            };
            if !held.matched {
                emit.unmatched_left(1);
                if self.how.keeps_left() {
                    emit.row(key, held.row.time, Some(&held.row.values), None, &[]);
                }
            }
        }
        while let Some(held) = state.right.front() {
            if !gone_right(held) {
                break;
            }
            let Some(held) = state.right.pop_front() else {
                break;
            };
            if !held.matched {
                emit.unmatched_right(1);
                if self.how.keeps_right() {
                    emit.row(key, held.row.time, None, Some(&held.row.values), &[]);
                }
            }
        }
    }
}

impl Logic for IntervalJoin {
    type State = IntervalState;

    fn kind(&self) -> &'static OperatorKind {
        &KIND
    }

    fn insert(
        &self,
        key: &Value,
        state: &mut IntervalState,
        side: Side,
        row: Row,
        _watermark: i64,
        emit: &mut Emit<'_>,
    ) {
        let mut matched = false;
        match side {
            Side::Left => {
                let from = row.time.saturating_add(self.lower);
                let to = row.time.saturating_add(self.upper);
                for other in in_range(&mut state.right, from, to) {
                    matched = true;
                    other.matched = true;
                    emit.row(
                        key,
                        row.time.max(other.row.time),
                        Some(&row.values),
                        Some(&other.row.values),
                        &[],
                    );
                }
                insert_sorted(&mut state.left, Held { row, matched });
            }
            Side::Right | Side::RightDelete => {
                // `a.time + lower <= b.time <= a.time + upper`.
                let from = row.time.saturating_sub(self.upper);
                let to = row.time.saturating_sub(self.lower);
                for other in in_range(&mut state.left, from, to) {
                    matched = true;
                    other.matched = true;
                    emit.row(
                        key,
                        row.time.max(other.row.time),
                        Some(&other.row.values),
                        Some(&row.values),
                        &[],
                    );
                }
                insert_sorted(&mut state.right, Held { row, matched });
            }
        }
    }

    fn advance(&self, key: &Value, state: &mut IntervalState, watermark: i64, emit: &mut Emit<'_>) {
        self.drop_rows(
            key,
            state,
            |held| self.left_expiry(held.row.time) < watermark,
            |held| self.right_expiry(held.row.time) < watermark,
            emit,
        );
    }

    fn finish(&self, key: &Value, state: &mut IntervalState, emit: &mut Emit<'_>) {
        self.drop_rows(key, state, |_| true, |_| true, emit);
    }

    fn due(&self, state: &IntervalState) -> Option<i64> {
        let left = state
            .left
            .iter()
            .map(|held| self.left_expiry(held.row.time));
        let right = state
            .right
            .iter()
            .map(|held| self.right_expiry(held.row.time));
        left.chain(right)
            .min()
            .map(|expiry| expiry.saturating_add(1))
    }

    fn due_after_insert(
        &self,
        _state: &IntervalState,
        side: Side,
        time: i64,
        previous: Option<i64>,
    ) -> Option<i64> {
        let expiry = match side {
            Side::Left => self.left_expiry(time),
            Side::Right | Side::RightDelete => self.right_expiry(time),
        };
        let due = expiry.saturating_add(1);
        Some(previous.map_or(due, |previous| previous.min(due)))
    }

    fn rows(&self, state: &IntervalState) -> usize {
        state.left.len() + state.right.len()
    }

    fn holdback(&self) -> i64 {
        // Unmatched rows are emitted once the watermark passes their expiry: a left row is at
        // most `upper` behind it, a right row at most `-lower`.
        let mut holdback = 0;
        if self.how.keeps_left() {
            holdback = holdback.max(self.upper);
        }
        if self.how.keeps_right() {
            holdback = holdback.max(self.lower.saturating_neg());
        }
        holdback
    }
}
