//! Accumulators: the incremental state of one aggregate over one window, pane or session.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dataflow_event::Value;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::{AggregateKind, Result, WindowError};

/// Checks an event's aggregate inputs against the config before anything is changed: one input
/// per aggregate, and numbers (or nulls) for the numeric aggregates.
pub(crate) fn check_inputs(aggregates: &[AggregateKind], inputs: &[Value]) -> Result<()> {
    if inputs.len() != aggregates.len() {
        return Err(WindowError::InputCount {
            expected: aggregates.len(),
            found: inputs.len(),
        });
    }
    for (index, (kind, input)) in aggregates.iter().zip(inputs).enumerate() {
        if kind.is_numeric() && !matches!(input, Value::Null | Value::Int(_) | Value::Float(_)) {
            return Err(WindowError::NotNumeric {
                aggregate: index,
                found: input.type_name(),
            });
        }
    }
    Ok(())
}

/// A running sum: an int while every addend is an int and the sum fits, a float from then on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) enum Total {
    /// Nothing added yet.
    #[default]
    Empty,
    /// The exact sum of ints.
    Int(i64),
    /// The sum once a float was added or an int sum overflowed.
    Float(f64),
}

impl Total {
    fn add_int(&mut self, addend: i64) {
        *self = match *self {
            Total::Empty => Total::Int(addend),
            Total::Int(sum) => sum
                .checked_add(addend)
                .map_or(Total::Float(sum as f64 + addend as f64), Total::Int),
            Total::Float(sum) => Total::Float(sum + addend as f64),
        };
    }

    fn add_float(&mut self, addend: f64) {
        *self = match *self {
            Total::Empty => Total::Float(addend),
            Total::Int(sum) => Total::Float(sum as f64 + addend),
            Total::Float(sum) => Total::Float(sum + addend),
        };
    }

    /// Adds a number; other values are ignored (inputs are checked beforehand).
    fn add(&mut self, value: &Value) {
        match value {
            Value::Int(addend) => self.add_int(*addend),
            Value::Float(addend) => self.add_float(*addend),
            _ => {}
        }
    }

    fn merge(&mut self, other: Total) {
        match other {
            Total::Empty => {}
            Total::Int(addend) => self.add_int(addend),
            Total::Float(addend) => self.add_float(addend),
        }
    }

    fn as_f64(self) -> Option<f64> {
        match self {
            Total::Empty => None,
            Total::Int(sum) => Some(sum as f64),
            Total::Float(sum) => Some(sum),
        }
    }

    fn to_value(self) -> Value {
        match self {
            Total::Empty => Value::Null,
            Total::Int(sum) => Value::Int(sum),
            Total::Float(sum) => Value::Float(sum),
        }
    }
}

/// An input of `first` or `last` with what orders it: its event time, then its arrival.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stamped {
    timestamp: i64,
    /// The arrival number of the event, unique per operator, so that ties on the timestamp are
    /// broken the same way however panes and sessions are merged.
    seq: u64,
    value: Value,
}

impl Stamped {
    fn order(&self) -> (i64, u64) {
        (self.timestamp, self.seq)
    }
}

/// The order of `min` and `max`: numbers numerically (an int before an equal float), other
/// values by [`Value`]'s order, in which numbers sit between booleans and strings.
fn extreme_order(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y).then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

/// Keeps in `slot` whichever of it and `candidate` comes first by `wanted`.
fn keep_extreme(slot: &mut Option<Value>, candidate: &Value, wanted: Ordering) {
    let better = match slot {
        None => true,
        Some(current) => extreme_order(candidate, current) == wanted,
    };
    if better {
        *slot = Some(candidate.clone());
    }
}

/// Keeps in `slot` whichever of it and the candidate ordered by `order` comes first by
/// `wanted`; the candidate is only built when it is kept.
fn keep_stamped(
    slot: &mut Option<Stamped>,
    order: (i64, u64),
    wanted: Ordering,
    candidate: impl FnOnce() -> Stamped,
) {
    let better = match slot {
        None => true,
        Some(current) => order.cmp(&current.order()) == wanted,
    };
    if better {
        *slot = Some(candidate());
    }
}

/// An extreme value of `arg_max` or `arg_min` and every argument tied for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ties {
    value: Value,
    /// Never empty.
    arguments: BTreeSet<Value>,
}

/// The value and the argument of an `arg_max` or `arg_min` input: a list `[value, argument]`,
/// or any other value standing for both.
fn value_and_argument(input: &Value) -> (&Value, &Value) {
    match input {
        Value::List(pair) if pair.len() == 2 => (&pair[0], &pair[1]),
        other => (other, other),
    }
}

/// Brings `slot` to the extreme (by `wanted`) of itself and `value` with `arguments`: a more
/// extreme value replaces the ties, an equal one adds its arguments.
fn keep_ties<'a>(
    slot: &mut Option<Ties>,
    value: &Value,
    arguments: impl IntoIterator<Item = &'a Value>,
    wanted: Ordering,
) {
    let order = slot
        .as_ref()
        .map_or(wanted, |ties| extreme_order(value, &ties.value));
    if order == wanted {
        *slot = Some(Ties {
            value: value.clone(),
            arguments: arguments.into_iter().cloned().collect(),
        });
    } else if order == Ordering::Equal {
        if let Some(ties) = slot {
            for argument in arguments {
                if !ties.arguments.contains(argument) {
                    ties.arguments.insert(argument.clone());
                }
            }
        }
    }
}

/// Puts `candidate` in its place in `top`, the at most `k` largest values from the largest
/// down, if it belongs there.
fn keep_top(top: &mut Vec<Value>, k: u32, candidate: &Value) {
    let k = usize::try_from(k).unwrap_or(usize::MAX);
    if top.len() >= k
        && top
            .last()
            .is_none_or(|last| extreme_order(candidate, last) != Ordering::Greater)
    {
        return;
    }
    let at = top.partition_point(|value| extreme_order(value, candidate) != Ordering::Less);
    top.insert(at, candidate.clone());
    top.truncate(k);
}

/// The result of `arg_max` or `arg_min`: the tied arguments in order, or an empty list.
fn ties_value(ties: &Option<Ties>) -> Value {
    Value::List(Arc::new(ties.as_ref().map_or_else(Vec::new, |ties| {
        ties.arguments.iter().cloned().collect()
    })))
}

/// The result of `count_by` over `counts` of values: a map from each value's text to its count.
pub(crate) fn count_by_value<'a>(counts: impl Iterator<Item = (&'a Value, &'a i64)>) -> Value {
    let mut by_text: BTreeMap<String, i64> = BTreeMap::new();
    for (value, count) in counts {
        // Different values can share a text (`1` and `"1"`): their counts add up.
        let total = by_text.entry(value.to_key_string()).or_insert(0);
        *total = total.saturating_add(*count);
    }
    Value::Map(Arc::new(
        by_text
            .into_iter()
            .map(|(text, count)| (text, Value::Int(count)))
            .collect(),
    ))
}

/// The state of one aggregate over one window, pane or session.
#[derive(Clone, Debug)]
pub(crate) enum Accumulator {
    Count(i64),
    Sum(Total),
    Min(Option<Value>),
    Max(Option<Value>),
    Avg {
        sum: Total,
        count: i64,
    },
    CountDistinct(FxHashSet<Value>),
    First(Option<Stamped>),
    Last(Option<Stamped>),
    /// Counts per input value; values are turned into strings only when the result is built.
    CountBy(FxHashMap<Value, i64>),
    ArgMax(Option<Ties>),
    ArgMin(Option<Ties>),
    /// The at most `k` largest inputs, from the largest down.
    TopK {
        k: u32,
        top: Vec<Value>,
    },
}

impl Accumulator {
    /// An accumulator that has seen nothing.
    pub(crate) fn new(kind: AggregateKind) -> Accumulator {
        match kind {
            AggregateKind::Count => Accumulator::Count(0),
            AggregateKind::Sum => Accumulator::Sum(Total::Empty),
            AggregateKind::Min => Accumulator::Min(None),
            AggregateKind::Max => Accumulator::Max(None),
            AggregateKind::Avg => Accumulator::Avg {
                sum: Total::Empty,
                count: 0,
            },
            AggregateKind::CountDistinct => Accumulator::CountDistinct(FxHashSet::default()),
            AggregateKind::First => Accumulator::First(None),
            AggregateKind::Last => Accumulator::Last(None),
            AggregateKind::CountBy => Accumulator::CountBy(FxHashMap::default()),
            AggregateKind::ArgMax => Accumulator::ArgMax(None),
            AggregateKind::ArgMin => Accumulator::ArgMin(None),
            AggregateKind::TopK { k } => Accumulator::TopK { k, top: Vec::new() },
        }
    }

    /// One accumulator per aggregate.
    pub(crate) fn new_set(aggregates: &[AggregateKind]) -> Box<[Accumulator]> {
        aggregates
            .iter()
            .map(|kind| Accumulator::new(*kind))
            .collect()
    }

    /// The aggregate this accumulator computes.
    pub(crate) fn kind(&self) -> AggregateKind {
        match self {
            Accumulator::Count(_) => AggregateKind::Count,
            Accumulator::Sum(_) => AggregateKind::Sum,
            Accumulator::Min(_) => AggregateKind::Min,
            Accumulator::Max(_) => AggregateKind::Max,
            Accumulator::Avg { .. } => AggregateKind::Avg,
            Accumulator::CountDistinct(_) => AggregateKind::CountDistinct,
            Accumulator::First(_) => AggregateKind::First,
            Accumulator::Last(_) => AggregateKind::Last,
            Accumulator::CountBy(_) => AggregateKind::CountBy,
            Accumulator::ArgMax(_) => AggregateKind::ArgMax,
            Accumulator::ArgMin(_) => AggregateKind::ArgMin,
            Accumulator::TopK { k, .. } => AggregateKind::TopK { k: *k },
        }
    }

    /// Adds one event's input. The input must have passed [`check_inputs`]; `seq` is the event's
    /// arrival number.
    pub(crate) fn add(&mut self, input: &Value, timestamp: i64, seq: u64) {
        if let Accumulator::Count(count) = self {
            *count = count.saturating_add(1);
            return;
        }
        if input.is_null() {
            return;
        }
        match self {
            Accumulator::Count(_) => {}
            Accumulator::Sum(sum) => sum.add(input),
            Accumulator::Min(min) => keep_extreme(min, input, Ordering::Less),
            Accumulator::Max(max) => keep_extreme(max, input, Ordering::Greater),
            Accumulator::Avg { sum, count } => {
                sum.add(input);
                *count = count.saturating_add(1);
            }
            Accumulator::CountDistinct(seen) => {
                if !seen.contains(input) {
                    seen.insert(input.clone());
                }
            }
            Accumulator::First(first) => {
                keep_stamped(first, (timestamp, seq), Ordering::Less, || Stamped {
                    timestamp,
                    seq,
                    value: input.clone(),
                });
            }
            Accumulator::Last(last) => {
                keep_stamped(last, (timestamp, seq), Ordering::Greater, || Stamped {
                    timestamp,
                    seq,
                    value: input.clone(),
                });
            }
            Accumulator::CountBy(counts) => match counts.get_mut(input) {
                Some(count) => *count = count.saturating_add(1),
                None => {
                    counts.insert(input.clone(), 1);
                }
            },
            Accumulator::ArgMax(ties) => {
                let (value, argument) = value_and_argument(input);
                if !value.is_null() {
                    keep_ties(ties, value, [argument], Ordering::Greater);
                }
            }
            Accumulator::ArgMin(ties) => {
                let (value, argument) = value_and_argument(input);
                if !value.is_null() {
                    keep_ties(ties, value, [argument], Ordering::Less);
                }
            }
            Accumulator::TopK { k, top } => keep_top(top, *k, input),
        }
    }

    /// Adds everything `other` has seen. Accumulators of different aggregates are left as they
    /// are (callers only merge accumulators of the same position in the same config).
    pub(crate) fn merge(&mut self, other: &Accumulator) {
        #[cfg(test)]
        tests::MERGES.with(|merges| merges.set(merges.get() + 1));
        match (self, other) {
            (Accumulator::Count(count), Accumulator::Count(more)) => {
                *count = count.saturating_add(*more);
            }
            (Accumulator::Sum(sum), Accumulator::Sum(more)) => sum.merge(*more),
            (Accumulator::Min(min), Accumulator::Min(Some(more))) => {
                keep_extreme(min, more, Ordering::Less);
            }
            (Accumulator::Max(max), Accumulator::Max(Some(more))) => {
                keep_extreme(max, more, Ordering::Greater);
            }
            (
                Accumulator::Avg { sum, count },
                Accumulator::Avg {
                    sum: more_sum,
                    count: more_count,
                },
            ) => {
                sum.merge(*more_sum);
                *count = count.saturating_add(*more_count);
            }
            (Accumulator::CountDistinct(seen), Accumulator::CountDistinct(more)) => {
                for value in more {
                    if !seen.contains(value) {
                        seen.insert(value.clone());
                    }
                }
            }
            (Accumulator::First(first), Accumulator::First(Some(more))) => {
                keep_stamped(first, more.order(), Ordering::Less, || more.clone());
            }
            (Accumulator::Last(last), Accumulator::Last(Some(more))) => {
                keep_stamped(last, more.order(), Ordering::Greater, || more.clone());
            }
            (Accumulator::CountBy(counts), Accumulator::CountBy(more)) => {
                for (value, more) in more {
                    match counts.get_mut(value) {
                        Some(count) => *count = count.saturating_add(*more),
                        None => {
                            counts.insert(value.clone(), *more);
                        }
                    }
                }
            }
            (Accumulator::ArgMax(ties), Accumulator::ArgMax(Some(more))) => {
                keep_ties(ties, &more.value, &more.arguments, Ordering::Greater);
            }
            (Accumulator::ArgMin(ties), Accumulator::ArgMin(Some(more))) => {
                keep_ties(ties, &more.value, &more.arguments, Ordering::Less);
            }
            (Accumulator::TopK { k, top }, Accumulator::TopK { top: more, .. }) => {
                for value in more {
                    keep_top(top, *k, value);
                }
            }
            _ => {}
        }
    }

    /// Like [`Accumulator::merge`], consuming `other` so that sets and maps are moved, not
    /// copied.
    pub(crate) fn absorb(&mut self, other: Accumulator) {
        match (self, other) {
            (Accumulator::CountDistinct(seen), Accumulator::CountDistinct(mut more)) => {
                if more.len() > seen.len() {
                    std::mem::swap(seen, &mut more);
                }
                seen.extend(more);
            }
            (Accumulator::CountBy(counts), Accumulator::CountBy(mut more)) => {
                if more.len() > counts.len() {
                    std::mem::swap(counts, &mut more);
                }
                for (value, more) in more {
                    let count = counts.entry(value).or_insert(0);
                    *count = count.saturating_add(more);
                }
            }
            (this, other) => this.merge(&other),
        }
    }

    /// The aggregate's current value.
    pub(crate) fn value(&self) -> Value {
        match self {
            Accumulator::Count(count) => Value::Int(*count),
            Accumulator::Sum(sum) => sum.to_value(),
            Accumulator::Min(extreme) | Accumulator::Max(extreme) => {
                extreme.clone().unwrap_or(Value::Null)
            }
            Accumulator::Avg { sum, count } => match sum.as_f64() {
                Some(sum) if *count > 0 => Value::Float(sum / *count as f64),
                _ => Value::Null,
            },
            Accumulator::CountDistinct(seen) => {
                Value::Int(i64::try_from(seen.len()).unwrap_or(i64::MAX))
            }
            Accumulator::First(stamped) | Accumulator::Last(stamped) => stamped
                .as_ref()
                .map_or(Value::Null, |stamped| stamped.value.clone()),
            Accumulator::CountBy(counts) => count_by_value(counts.iter()),
            Accumulator::ArgMax(ties) | Accumulator::ArgMin(ties) => ties_value(ties),
            Accumulator::TopK { top, .. } => Value::List(Arc::new(top.clone())),
        }
    }

    /// The value of this accumulator merged with `other` ([`Accumulator::merge`], then
    /// [`Accumulator::value`]) without building the merge: what a sliding window's two stacks
    /// give at every slide, so extremes, firsts and lasts only pick one of the two.
    pub(crate) fn merged_value(&self, other: &Accumulator) -> Value {
        fn pick<T>(
            this: &Option<T>,
            other: &Option<T>,
            replaces: impl FnOnce(&T, &T) -> bool,
        ) -> Option<T>
        where
            T: Clone,
        {
            match (this, other) {
                (Some(this), Some(other)) if replaces(other, this) => Some(other.clone()),
                (Some(this), _) => Some(this.clone()),
                (None, other) => other.clone(),
            }
        }
        match (self, other) {
            (Accumulator::Count(count), Accumulator::Count(more)) => {
                Value::Int(count.saturating_add(*more))
            }
            (Accumulator::Min(min), Accumulator::Min(more)) => pick(min, more, |more, min| {
                extreme_order(more, min) == Ordering::Less
            })
            .unwrap_or(Value::Null),
            (Accumulator::Max(max), Accumulator::Max(more)) => pick(max, more, |more, max| {
                extreme_order(more, max) == Ordering::Greater
            })
            .unwrap_or(Value::Null),
            (Accumulator::First(first), Accumulator::First(more)) => {
                let first = first.as_ref().map(|first| (first.order(), first));
                let more = more.as_ref().map(|more| (more.order(), more));
                pick(&first, &more, |more, first| more.0 < first.0)
                    .map_or(Value::Null, |(_, stamped)| stamped.value.clone())
            }
            (Accumulator::Last(last), Accumulator::Last(more)) => {
                let last = last.as_ref().map(|last| (last.order(), last));
                let more = more.as_ref().map(|more| (more.order(), more));
                pick(&last, &more, |more, last| more.0 > last.0)
                    .map_or(Value::Null, |(_, stamped)| stamped.value.clone())
            }
            (this, other) => {
                let mut merged = this.clone();
                merged.merge(other);
                merged.value()
            }
        }
    }

    /// The accumulator in a deterministic, serializable form.
    pub(crate) fn snapshot(&self) -> AccumulatorSnapshot {
        match self {
            Accumulator::Count(count) => AccumulatorSnapshot::Count(*count),
            Accumulator::Sum(sum) => AccumulatorSnapshot::Sum(*sum),
            Accumulator::Min(min) => AccumulatorSnapshot::Min(min.clone()),
            Accumulator::Max(max) => AccumulatorSnapshot::Max(max.clone()),
            Accumulator::Avg { sum, count } => AccumulatorSnapshot::Avg {
                sum: *sum,
                count: *count,
            },
            Accumulator::CountDistinct(seen) => {
                let mut values: Vec<Value> = seen.iter().cloned().collect();
                values.sort_unstable();
                AccumulatorSnapshot::CountDistinct(values)
            }
            Accumulator::First(first) => AccumulatorSnapshot::First(first.clone()),
            Accumulator::Last(last) => AccumulatorSnapshot::Last(last.clone()),
            Accumulator::CountBy(counts) => {
                let mut pairs: Vec<(Value, i64)> = counts
                    .iter()
                    .map(|(value, count)| (value.clone(), *count))
                    .collect();
                pairs.sort_unstable();
                AccumulatorSnapshot::CountBy(pairs)
            }
            Accumulator::ArgMax(ties) => AccumulatorSnapshot::ArgMax(ties.clone()),
            Accumulator::ArgMin(ties) => AccumulatorSnapshot::ArgMin(ties.clone()),
            Accumulator::TopK { k, top } => AccumulatorSnapshot::TopK {
                k: *k,
                top: top.clone(),
            },
        }
    }
}

/// The serializable form of an [`Accumulator`]; sets and maps are sorted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AccumulatorSnapshot {
    Count(i64),
    Sum(Total),
    Min(Option<Value>),
    Max(Option<Value>),
    Avg { sum: Total, count: i64 },
    CountDistinct(Vec<Value>),
    First(Option<Stamped>),
    Last(Option<Stamped>),
    CountBy(Vec<(Value, i64)>),
    ArgMax(Option<Ties>),
    ArgMin(Option<Ties>),
    TopK { k: u32, top: Vec<Value> },
}

impl AccumulatorSnapshot {
    /// The accumulator this snapshot was taken of.
    pub(crate) fn restore(self) -> Accumulator {
        match self {
            AccumulatorSnapshot::Count(count) => Accumulator::Count(count),
            AccumulatorSnapshot::Sum(sum) => Accumulator::Sum(sum),
            AccumulatorSnapshot::Min(min) => Accumulator::Min(min),
            AccumulatorSnapshot::Max(max) => Accumulator::Max(max),
            AccumulatorSnapshot::Avg { sum, count } => Accumulator::Avg { sum, count },
            AccumulatorSnapshot::CountDistinct(values) => {
                Accumulator::CountDistinct(values.into_iter().collect())
            }
            AccumulatorSnapshot::First(first) => Accumulator::First(first),
            AccumulatorSnapshot::Last(last) => Accumulator::Last(last),
            AccumulatorSnapshot::CountBy(pairs) => {
                let mut counts = FxHashMap::default();
                for (value, count) in pairs {
                    let total: &mut i64 = counts.entry(value).or_insert(0);
                    *total = total.saturating_add(count);
                }
                Accumulator::CountBy(counts)
            }
            AccumulatorSnapshot::ArgMax(ties) => Accumulator::ArgMax(ties),
            AccumulatorSnapshot::ArgMin(ties) => Accumulator::ArgMin(ties),
            AccumulatorSnapshot::TopK { k, top } => Accumulator::TopK { k, top },
        }
    }

    /// The current result of the aggregate, as [`Accumulator::value`] computes it.
    pub(crate) fn value(&self) -> Value {
        self.clone().restore().value()
    }

    /// The largest arrival number this snapshot holds, if any.
    pub(crate) fn max_seq(&self) -> Option<u64> {
        match self {
            AccumulatorSnapshot::First(Some(stamped))
            | AccumulatorSnapshot::Last(Some(stamped)) => Some(stamped.seq),
            _ => None,
        }
    }
}

/// Computes `aggregates` from scratch over `rows`, each one event's inputs (one per aggregate,
/// checked as [`check_aggregate_inputs`] does) and its timestamp, in arrival order: what a
/// window holding exactly these events would give. Used where the set of events changes in
/// ways accumulators cannot follow (an OVER step's last N rows).
pub fn aggregate_rows<'a>(
    aggregates: &[AggregateKind],
    rows: impl IntoIterator<Item = (&'a [Value], i64)>,
) -> Vec<Value> {
    let mut accumulators = Accumulator::new_set(aggregates);
    for (seq, (inputs, timestamp)) in rows.into_iter().enumerate() {
        for (accumulator, input) in accumulators.iter_mut().zip(inputs) {
            accumulator.add(input, timestamp, seq as u64);
        }
    }
    accumulators.iter().map(Accumulator::value).collect()
}

/// Checks one event's aggregate inputs: one per aggregate, and numbers (or nulls) for the
/// numeric aggregates.
pub fn check_aggregate_inputs(aggregates: &[AggregateKind], inputs: &[Value]) -> Result<()> {
    check_inputs(aggregates, inputs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// The number of [`Accumulator::merge`] calls on this thread, for tests of their cost.
        pub(crate) static MERGES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Feeds `(timestamp, input)` pairs, arrival numbers in order, and gives the value.
    fn run(kind: AggregateKind, inputs: &[(i64, Value)]) -> Value {
        let mut accumulator = Accumulator::new(kind);
        for (seq, (timestamp, input)) in inputs.iter().enumerate() {
            accumulator.add(input, *timestamp, seq as u64);
        }
        accumulator.value()
    }

    fn at_zero(values: &[Value]) -> Vec<(i64, Value)> {
        values.iter().map(|value| (0, value.clone())).collect()
    }

    #[test]
    fn count_counts_every_event_including_nulls() {
        let inputs = at_zero(&[Value::Null, Value::Int(3), Value::str("x")]);
        assert_eq!(run(AggregateKind::Count, &inputs), Value::Int(3));
    }

    #[test]
    fn sum_stays_int_until_a_float_or_an_overflow() {
        let ints = at_zero(&[Value::Int(2), Value::Null, Value::Int(-5)]);
        assert_eq!(run(AggregateKind::Sum, &ints), Value::Int(-3));
        let mixed = at_zero(&[Value::Int(2), Value::Float(0.5)]);
        assert_eq!(run(AggregateKind::Sum, &mixed), Value::Float(2.5));
        let overflow = at_zero(&[Value::Int(i64::MAX), Value::Int(1), Value::Int(1)]);
        assert_eq!(
            run(AggregateKind::Sum, &overflow),
            Value::Float(i64::MAX as f64 + 2.0)
        );
        assert_eq!(
            run(AggregateKind::Sum, &at_zero(&[Value::Null])),
            Value::Null
        );
    }

    #[test]
    fn avg_is_a_float_or_null() {
        let inputs = at_zero(&[Value::Int(1), Value::Null, Value::Float(2.0), Value::Int(6)]);
        assert_eq!(run(AggregateKind::Avg, &inputs), Value::Float(3.0));
        assert_eq!(run(AggregateKind::Avg, &[]), Value::Null);
    }

    #[test]
    fn min_and_max_compare_numbers_numerically() {
        let inputs = at_zero(&[
            Value::Int(3),
            Value::Float(2.5),
            Value::Null,
            Value::Int(10),
        ]);
        assert_eq!(run(AggregateKind::Min, &inputs), Value::Float(2.5));
        assert_eq!(run(AggregateKind::Max, &inputs), Value::Int(10));
        // An int comes before an equal float, whatever the arrival order.
        let tie = at_zero(&[Value::Float(1.0), Value::Int(1)]);
        assert_eq!(run(AggregateKind::Min, &tie), Value::Int(1));
        assert_eq!(run(AggregateKind::Max, &tie), Value::Float(1.0));
        let strings = at_zero(&[Value::str("b"), Value::str("a"), Value::str("c")]);
        assert_eq!(run(AggregateKind::Min, &strings), Value::str("a"));
        assert_eq!(run(AggregateKind::Max, &strings), Value::str("c"));
        assert_eq!(
            run(AggregateKind::Max, &at_zero(&[Value::Null])),
            Value::Null
        );
    }

    #[test]
    fn count_distinct_ignores_nulls() {
        let inputs = at_zero(&[
            Value::Int(1),
            Value::Int(1),
            Value::Float(1.0),
            Value::Null,
            Value::str("1"),
        ]);
        assert_eq!(run(AggregateKind::CountDistinct, &inputs), Value::Int(3));
        assert_eq!(run(AggregateKind::CountDistinct, &[]), Value::Int(0));
    }

    #[test]
    fn count_by_counts_per_key_string() {
        let inputs = at_zero(&[
            Value::str("a"),
            Value::Int(1),
            Value::str("1"),
            Value::Null,
            Value::str("a"),
        ]);
        let expected: BTreeMap<String, Value> = [
            ("1".to_string(), Value::Int(2)),
            ("a".to_string(), Value::Int(2)),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            run(AggregateKind::CountBy, &inputs),
            Value::Map(Arc::new(expected))
        );
        assert_eq!(
            run(AggregateKind::CountBy, &[]),
            Value::Map(Arc::new(BTreeMap::new()))
        );
    }

    fn pair(value: Value, argument: &str) -> Value {
        Value::List(Arc::new(vec![value, Value::str(argument)]))
    }

    fn list(values: &[Value]) -> Value {
        Value::List(Arc::new(values.to_vec()))
    }

    #[test]
    fn arg_max_and_arg_min_give_every_tied_argument() {
        let inputs = at_zero(&[
            pair(Value::Int(3), "b"),
            pair(Value::Int(7), "x"),
            pair(Value::Null, "ignored"),
            pair(Value::Int(7), "a"),
            pair(Value::Float(7.0), "float"),
            pair(Value::Int(1), "low"),
            pair(Value::Int(7), "x"),
            pair(Value::Int(1), "also low"),
        ]);
        assert_eq!(
            run(AggregateKind::ArgMax, &inputs),
            list(&[Value::str("float")])
        );
        assert_eq!(
            run(AggregateKind::ArgMax, &inputs[..4]),
            list(&[Value::str("a"), Value::str("x")])
        );
        assert_eq!(
            run(AggregateKind::ArgMin, &inputs),
            list(&[Value::str("also low"), Value::str("low")])
        );
        // An input that is not a pair is its own argument.
        let plain = at_zero(&[Value::Int(2), Value::Int(5), Value::Int(5), Value::str("s")]);
        assert_eq!(run(AggregateKind::ArgMin, &plain), list(&[Value::Int(2)]));
        assert_eq!(run(AggregateKind::ArgMax, &plain), list(&[Value::str("s")]));
        assert_eq!(run(AggregateKind::ArgMax, &[]), list(&[]));
        assert_eq!(
            run(AggregateKind::ArgMin, &at_zero(&[Value::Null])),
            list(&[])
        );
    }

    #[test]
    fn top_k_keeps_the_largest_inputs_in_descending_order() {
        let inputs = at_zero(&[
            Value::Int(4),
            Value::Null,
            Value::Int(9),
            Value::Float(4.0),
            Value::Int(1),
            Value::Int(9),
            Value::Int(4),
        ]);
        let top = |k| run(AggregateKind::TopK { k }, &inputs);
        assert_eq!(top(1), list(&[Value::Int(9)]));
        assert_eq!(top(2), list(&[Value::Int(9), Value::Int(9)]));
        assert_eq!(
            top(3),
            list(&[Value::Int(9), Value::Int(9), Value::Float(4.0)])
        );
        assert_eq!(
            top(10),
            list(&[
                Value::Int(9),
                Value::Int(9),
                Value::Float(4.0),
                Value::Int(4),
                Value::Int(4),
                Value::Int(1)
            ])
        );
        assert_eq!(run(AggregateKind::TopK { k: 2 }, &[]), list(&[]));
    }

    #[test]
    fn first_and_last_follow_timestamps_then_arrival() {
        let inputs = vec![
            (5, Value::str("b")),
            (3, Value::str("a")),
            (3, Value::str("a2")),
            (9, Value::str("c")),
            (9, Value::str("c2")),
            (1, Value::Null),
        ];
        assert_eq!(run(AggregateKind::First, &inputs), Value::str("a"));
        assert_eq!(run(AggregateKind::Last, &inputs), Value::str("c2"));
        assert_eq!(run(AggregateKind::First, &[(1, Value::Null)]), Value::Null);
    }

    #[test]
    fn merging_splits_gives_the_sequential_result() {
        let inputs: Vec<(i64, Value)> = vec![
            (4, Value::Int(3)),
            (1, Value::Null),
            (2, Value::Float(1.5)),
            (4, Value::Int(7)),
            (0, Value::Int(3)),
            (9, Value::Float(-2.0)),
        ];
        for kind in AggregateKind::ALL {
            let expected = run(kind, &inputs);
            for split in 0..=inputs.len() {
                let mut left = Accumulator::new(kind);
                let mut right = Accumulator::new(kind);
                for (seq, (timestamp, input)) in inputs.iter().enumerate() {
                    let side = if seq < split { &mut left } else { &mut right };
                    side.add(input, *timestamp, seq as u64);
                }
                let mut merged = right.clone();
                merged.merge(&left);
                assert_eq!(merged.value(), expected, "{kind:?} merge at {split}");
                left.absorb(right);
                assert_eq!(left.value(), expected, "{kind:?} absorb at {split}");
                assert_eq!(left.kind(), kind);
                let restored = left.snapshot().restore();
                assert_eq!(restored.value(), expected, "{kind:?} snapshot");
                assert_eq!(restored.snapshot(), left.snapshot());
            }
        }
    }

    #[test]
    fn inputs_are_checked_before_anything_changes() {
        let aggregates = [AggregateKind::Count, AggregateKind::Avg];
        assert_eq!(
            check_inputs(&aggregates, &[Value::Null]),
            Err(WindowError::InputCount {
                expected: 2,
                found: 1
            })
        );
        let error = check_inputs(&aggregates, &[Value::str("x"), Value::str("y")]);
        assert_eq!(
            error,
            Err(WindowError::NotNumeric {
                aggregate: 1,
                found: "string"
            })
        );
        assert_eq!(
            error.unwrap_err().to_string(),
            "aggregate 1 needs a number, found string"
        );
        assert_eq!(
            check_inputs(&aggregates, &[Value::str("x"), Value::Null]),
            Ok(())
        );
    }
}
