//! The window join: a left and a right row of the same key join when they fall in the same
//! tumbling or sliding window (`[start, start + size)`, a start at every multiple of `slide`).
//!
//! Each key keeps its open windows' rows of both sides; a window fires once the watermark
//! reaches its end: every pair of its left and right rows, then (outer joins) each row of a
//! side whose other side held nothing in that window, with nulls. A window is dropped when it
//! fires, so a key holds the rows of the windows still open, never more. Results carry the
//! window's `window_start` and `window_end` after the two sides' fields.

use std::collections::BTreeMap;

use dataflow_event::Value;
use serde::{Deserialize, Serialize};

use super::{Emit, JoinType, Logic, Row, Side};
use crate::kind::{KeyEffect, OperatorKind, Partitioning};

/// What every window join is: keyed state, keys kept.
pub const KIND: OperatorKind = OperatorKind {
    name: "window_join",
    stateful: true,
    input: Partitioning::ByKey,
    key: KeyEffect::Preserves,
    inspect: Some(super::inspect::<WindowState>),
};

/// The windows and type of a window join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowJoin {
    /// The length of a window (ms).
    pub size: i64,
    /// The distance between two windows' starts (ms): `size` for tumbling windows.
    pub slide: i64,
    /// Which unmatched rows are emitted.
    pub how: JoinType,
}

/// One window's rows of each side, in arrival order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pane {
    /// Left rows.
    pub left: Vec<Row>,
    /// Right rows.
    pub right: Vec<Row>,
}

/// One key's open windows, by start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    /// Its windows' rows, by window start.
    pub windows: BTreeMap<i64, Pane>,
}

impl WindowJoin {
    /// The starts of the windows holding `time`, latest first.
    fn starts(&self, time: i64) -> impl Iterator<Item = i64> + '_ {
        let slide = self.slide.max(1);
        let last = time - time.rem_euclid(slide);
        let size = self.size;
        (0..)
            .map(move |index: i64| last.saturating_sub(index.saturating_mul(slide)))
            .take_while(move |start| start.saturating_add(size) > time)
    }

    fn fire(&self, key: &Value, start: i64, pane: &Pane, emit: &mut Emit<'_>) {
        let end = start.saturating_add(self.size);
        let extra = [Value::Int(start), Value::Int(end)];
        for left in &pane.left {
            for right in &pane.right {
                emit.row(
                    key,
                    left.time.max(right.time),
                    Some(&left.values),
                    Some(&right.values),
                    &extra,
                );
            }
        }
        if pane.right.is_empty() {
            emit.unmatched_left(pane.left.len() as u64);
            if self.how.keeps_left() {
                for left in &pane.left {
                    emit.row(key, left.time, Some(&left.values), None, &extra);
                }
            }
        }
        if pane.left.is_empty() {
            emit.unmatched_right(pane.right.len() as u64);
            if self.how.keeps_right() {
                for right in &pane.right {
                    emit.row(key, right.time, None, Some(&right.values), &extra);
                }
            }
        }
    }
}

impl Logic for WindowJoin {
    type State = WindowState;

    fn kind(&self) -> &'static OperatorKind {
        &KIND
    }

    fn insert(
        &self,
        _key: &Value,
        state: &mut WindowState,
        side: Side,
        row: Row,
        watermark: i64,
        _emit: &mut Emit<'_>,
    ) {
        let starts: Vec<i64> = self
            .starts(row.time)
            // A window whose end the watermark reached has fired: the row is late for it.
            .filter(|start| start.saturating_add(self.size) > watermark)
            .collect();
        if let Some((&last, others)) = starts.split_first() {
            for start in others {
                let pane = state.windows.entry(*start).or_default();
                match side {
                    Side::Left => pane.left.push(row.clone()),
                    Side::Right | Side::RightDelete => pane.right.push(row.clone()),
                }
            }
            let pane = state.windows.entry(last).or_default();
            match side {
                Side::Left => pane.left.push(row),
                Side::Right | Side::RightDelete => pane.right.push(row),
            }
        }
    }

    fn advance(&self, key: &Value, state: &mut WindowState, watermark: i64, emit: &mut Emit<'_>) {
        while let Some(entry) = state.windows.first_entry() {
            if entry.key().saturating_add(self.size) > watermark {
                break;
            }
            let start = *entry.key();
            let pane = entry.remove();
            self.fire(key, start, &pane, emit);
        }
    }

    fn finish(&self, key: &Value, state: &mut WindowState, emit: &mut Emit<'_>) {
        for (start, pane) in std::mem::take(&mut state.windows) {
            self.fire(key, start, &pane, emit);
        }
    }

    fn due(&self, state: &WindowState) -> Option<i64> {
        state
            .windows
            .keys()
            .next()
            .map(|start| start.saturating_add(self.size))
    }

    fn due_after_insert(
        &self,
        _state: &WindowState,
        _side: Side,
        time: i64,
        previous: Option<i64>,
    ) -> Option<i64> {
        // The earliest window the row went into ends first.
        let due = self
            .starts(time)
            .last()
            .map(|start| start.saturating_add(self.size));
        match (due, previous) {
            (Some(due), Some(previous)) => Some(due.min(previous)),
            (due, previous) => due.or(previous),
        }
    }

    fn rows(&self, state: &WindowState) -> usize {
        state
            .windows
            .values()
            .map(|pane| pane.left.len() + pane.right.len())
            .sum()
    }

    fn holdback(&self) -> i64 {
        // A window fires once the watermark reaches its end: its results lie at most `size`
        // behind it.
        self.size
    }
}
