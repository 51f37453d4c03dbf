//! Sliding windows combined incrementally: the running state of one key's panes.
//!
//! A key's sliding windows fire in order of their start, and each window is the panes whose
//! starts fall in `[start, end)`. [`Running`] keeps the combination of the panes of the window
//! fired last and moves it to the next window by adding the panes that entered and removing
//! those that left, so that the cost of a fired window does not grow with `size / slide`
//! (windows of fewer than `INCREMENTAL_PANES` panes merge their panes instead):
//!
//! - `count`, `count_distinct` and `count_by` are invertible: panes are added and subtracted
//!   (`count_distinct` keeps, per value, the number of panes holding it). Integer arithmetic, so
//!   results are exact.
//! - `sum`, `avg`, `min`, `max`, `first` and `last` use two stacks: a front stack of suffix
//!   combinations of the oldest panes, and one combination of the newer panes behind it. A
//!   window's value merges the two; evicting pops the front, and when the front is empty the
//!   window's panes are folded into a new front. Each pane is merged a constant number of times
//!   on average. Sums are not subtracted: a float sum that is subtracted drifts, and an int sum
//!   turns to a float on overflow by the order of additions. Int sums stay exact; float sums
//!   are added in another grouping than a left-to-right merge of the panes, so they can differ
//!   from it in the last bits.
//!
//! The running state is derived: it is not part of snapshots or stored keys, and is rebuilt
//! from the panes when it is missing (after a restore, or when a store reads the key back) or
//! when a late event changed a pane it covers.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflow_event::Value;
use rustc_hash::FxHashMap;

use crate::aggregate::Accumulator;
use crate::states::Slice;
use crate::AggregateKind;

/// An invertible aggregate over the panes of the current window.
#[derive(Clone, Debug)]
enum Inverse {
    Count(i128),
    /// The number of panes in which each value occurs.
    CountDistinct(FxHashMap<Value, u64>),
    /// Counts by each value's text, as the result shows them: texts are made when a pane
    /// enters or leaves, not for every result.
    CountBy(BTreeMap<String, i64>),
}

impl Inverse {
    fn new(kind: AggregateKind) -> Option<Inverse> {
        match kind {
            AggregateKind::Count => Some(Inverse::Count(0)),
            AggregateKind::CountDistinct => Some(Inverse::CountDistinct(FxHashMap::default())),
            AggregateKind::CountBy => Some(Inverse::CountBy(BTreeMap::new())),
            _ => None,
        }
    }

    fn add(&mut self, pane: &Accumulator) {
        match (self, pane) {
            (Inverse::Count(total), Accumulator::Count(count)) => *total += i128::from(*count),
            (Inverse::CountDistinct(panes), Accumulator::CountDistinct(seen)) => {
                for value in seen {
                    match panes.get_mut(value) {
                        Some(count) => *count += 1,
                        None => {
                            panes.insert(value.clone(), 1);
                        }
                    }
                }
            }
            (Inverse::CountBy(totals), Accumulator::CountBy(counts)) => {
                for (value, count) in counts {
                    let total = totals.entry(value.to_key_string()).or_insert(0);
                    *total = total.saturating_add(*count);
                }
            }
            _ => {}
        }
    }

    fn subtract(&mut self, pane: &Accumulator) {
        match (self, pane) {
            (Inverse::Count(total), Accumulator::Count(count)) => *total -= i128::from(*count),
            (Inverse::CountDistinct(panes), Accumulator::CountDistinct(seen)) => {
                for value in seen {
                    if let Some(count) = panes.get_mut(value) {
                        *count -= 1;
                        if *count == 0 {
                            panes.remove(value);
                        }
                    }
                }
            }
            (Inverse::CountBy(totals), Accumulator::CountBy(counts)) => {
                for (value, count) in counts {
                    let text = value.to_key_string();
                    if let Some(total) = totals.get_mut(&text) {
                        *total -= count;
                        if *total <= 0 {
                            totals.remove(&text);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn value(&self) -> Value {
        match self {
            // Pane counts saturate, as a merge of them does.
            Inverse::Count(total) => Value::Int(i64::try_from(*total).unwrap_or(i64::MAX)),
            Inverse::CountDistinct(panes) => {
                Value::Int(i64::try_from(panes.len()).unwrap_or(i64::MAX))
            }
            Inverse::CountBy(totals) => Value::Map(Arc::new(
                totals
                    .iter()
                    .map(|(text, count)| (text.clone(), Value::Int(*count)))
                    .collect(),
            )),
        }
    }
}

/// How the aggregate at one position of the config is combined.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// At this index of `Running::inverse`.
    Inverse(usize),
    /// At this index of the accumulators of the stacks.
    Stacked(usize),
}

/// The combination of the panes of one key whose starts fall in `[low, high)`.
#[derive(Clone, Debug)]
pub(crate) struct Running {
    low: i64,
    high: i64,
    /// One per aggregate of the config.
    slots: Box<[Slot]>,
    inverse: Vec<Inverse>,
    /// The config positions of the stacked aggregates, in order.
    stacked: Box<[usize]>,
    /// Oldest pane last: each pane's start with the merge of it and every newer pane of the
    /// front, for the stacked aggregates. Its panes start in `[low, middle)`.
    front: Vec<(i64, Box<[Accumulator]>)>,
    /// The merge of the panes starting in `[middle, high)`, for the stacked aggregates.
    back: Box<[Accumulator]>,
    middle: i64,
}

impl Running {
    /// Covers no pane, at `at`.
    pub(crate) fn new(aggregates: &[AggregateKind], at: i64) -> Running {
        let mut slots = Vec::with_capacity(aggregates.len());
        let mut inverse = Vec::new();
        let mut stacked = Vec::new();
        for (position, kind) in aggregates.iter().enumerate() {
            match Inverse::new(*kind) {
                Some(aggregate) => {
                    slots.push(Slot::Inverse(inverse.len()));
                    inverse.push(aggregate);
                }
                None => {
                    slots.push(Slot::Stacked(stacked.len()));
                    stacked.push(position);
                }
            }
        }
        let back = stacked
            .iter()
            .map(|position| Accumulator::new(aggregates[*position]))
            .collect();
        Running {
            low: at,
            high: at,
            slots: slots.into_boxed_slice(),
            inverse,
            stacked: stacked.into_boxed_slice(),
            front: Vec::new(),
            back,
            middle: at,
        }
    }

    /// The end of the panes covered: panes starting at or after it are not.
    pub(crate) fn high(&self) -> i64 {
        self.high
    }

    fn reset(&mut self, aggregates: &[AggregateKind], at: i64) {
        *self = Running::new(aggregates, at);
    }

    /// The values of the window `[start, end)` over `panes` (sorted by start), or `None` if no
    /// pane holds data. Windows asked in order of start cost amortised O(1) merges each; a
    /// window before the last one asked rebuilds the state.
    pub(crate) fn window(
        &mut self,
        aggregates: &[AggregateKind],
        panes: &[Slice],
        start: i64,
        end: i64,
    ) -> Option<Vec<Value>> {
        if start < self.low || end < self.high || start >= self.high {
            self.reset(aggregates, start);
        }
        self.extend(panes, end);
        self.evict(aggregates, panes, start);
        let low = panes.partition_point(|pane| pane.start < start);
        let high = panes.partition_point(|pane| pane.start < end);
        if low >= high {
            return None;
        }
        Some(self.values())
    }

    /// Adds the panes starting in `[high, end)`.
    fn extend(&mut self, panes: &[Slice], end: i64) {
        if end <= self.high {
            return;
        }
        let from = panes.partition_point(|pane| pane.start < self.high);
        let to = panes.partition_point(|pane| pane.start < end);
        for pane in &panes[from..to] {
            for (slot, accumulator) in self.slots.iter().zip(pane.accumulators.iter()) {
                match *slot {
                    Slot::Inverse(index) => self.inverse[index].add(accumulator),
                    Slot::Stacked(index) => self.back[index].merge(accumulator),
                }
            }
        }
        self.high = end;
    }

    /// Removes the panes starting before `low`. They must still be in `panes`: the caller
    /// evicts panes before it drops them.
    pub(crate) fn evict(&mut self, aggregates: &[AggregateKind], panes: &[Slice], low: i64) {
        if low <= self.low {
            return;
        }
        if low >= self.high {
            self.reset(aggregates, low);
            return;
        }
        if !self.inverse.is_empty() {
            let from = panes.partition_point(|pane| pane.start < self.low);
            let to = panes.partition_point(|pane| pane.start < low);
            for pane in &panes[from..to] {
                for (slot, accumulator) in self.slots.iter().zip(pane.accumulators.iter()) {
                    if let Slot::Inverse(index) = *slot {
                        self.inverse[index].subtract(accumulator);
                    }
                }
            }
        }
        self.low = low;
        if self.stacked.is_empty() {
            return;
        }
        while self.front.last().is_some_and(|(start, _)| *start < low) {
            self.front.pop();
        }
        if self.front.is_empty() && self.middle < low {
            // The back holds evicted panes: fold the window's panes into a new front, newest
            // first, and start an empty back.
            let from = panes.partition_point(|pane| pane.start < low);
            let to = panes.partition_point(|pane| pane.start < self.high);
            for pane in panes[from..to].iter().rev() {
                let mut merged: Box<[Accumulator]> = self
                    .stacked
                    .iter()
                    .filter_map(|position| pane.accumulators.get(*position).cloned())
                    .collect();
                if let Some((_, newer)) = self.front.last() {
                    for (accumulator, newer) in merged.iter_mut().zip(newer.iter()) {
                        accumulator.merge(newer);
                    }
                }
                self.front.push((pane.start, merged));
            }
            for accumulator in self.back.iter_mut() {
                *accumulator = Accumulator::new(accumulator.kind());
            }
            self.middle = self.high;
        }
    }

    fn values(&self) -> Vec<Value> {
        let oldest = self.front.last().map(|(_, accumulators)| accumulators);
        self.slots
            .iter()
            .map(|slot| match *slot {
                Slot::Inverse(index) => self.inverse[index].value(),
                Slot::Stacked(index) => match oldest {
                    Some(oldest) => oldest[index].merged_value(&self.back[index]),
                    None => self.back[index].value(),
                },
            })
            .collect()
    }
}
