//! The matching of one key's events against a pattern, event by event in time order: the
//! partial matches of every start, their priorities, timeouts and the after-match skip.
//!
//! Every event whose condition of the first stage holds starts a match. A start keeps its
//! partial matches ("threads") in priority order: where an event can be taken in two ways
//! (staying in a stage or moving on), both are followed, the preferred one first (greedy:
//! staying; reluctant: moving on). A thread that reaches a complete match records it behind
//! the threads it prefers (a greedy stage prefers going on taking events) and cuts every thread
//! after it. A start is resolved when no thread is left before its recorded match, or when
//! `within` runs out: its match then is the first recorded one, and without one it times out,
//! reporting its most preferred thread. Results leave in the order of their starts.

use std::collections::VecDeque;

use dataflow_event::{Event, Payload, Value};
use serde::{Deserialize, Serialize};

use super::{AfterMatch, Aggregate, PatternDef};

/// The partial match of one thread: where it is, what it took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Thread {
    /// The positive stage taking events now.
    pub(crate) stage: usize,
    /// Events taken by each positive stage.
    pub(crate) counts: Vec<u32>,
    /// The payload of each positive stage's first event (null before it has one).
    pub(crate) bindings: Vec<Value>,
    /// The selected fields so far.
    pub(crate) selected: Vec<Accumulator>,
    pub(crate) first_time: i64,
    pub(crate) last_time: i64,
    /// The sequence number (within the key) of the last event taken.
    pub(crate) last_seq: u64,
    /// Whether an event was skipped since the last one taken: a strict stage can then take
    /// no more events.
    pub(crate) gap: bool,
}

/// One selected field being computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Accumulator {
    First(Option<Value>),
    Last(Option<Value>),
    Count(u64),
    Sum(Option<Value>),
}

impl Accumulator {
    pub(crate) fn value(&self) -> Value {
        match self {
            Accumulator::First(value) | Accumulator::Last(value) | Accumulator::Sum(value) => {
                value.clone().unwrap_or(Value::Null)
            }
            Accumulator::Count(count) => Value::Int(i64::try_from(*count).unwrap_or(i64::MAX)),
        }
    }
}

/// A thread, or a complete match a thread recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Entry {
    Running(Thread),
    Complete(Thread),
}

/// Every partial match from one start event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Start {
    seq: u64,
    time: i64,
    entries: Vec<Entry>,
    outcome: Option<Outcome>,
}

/// How a start ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Outcome {
    Matched(Thread),
    TimedOut(Thread),
    Failed,
}

/// A key's matching state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyMatches {
    /// The sequence number the next event of the key gets.
    next_seq: u64,
    /// Starts in order; the first is never resolved (resolved ones leave at once).
    starts: VecDeque<Start>,
}

/// What matching a key produced.
#[derive(Debug)]
pub(crate) enum Found {
    /// A complete match.
    Match(Thread),
    /// A partial match whose `within` ran out at `deadline` (or the input ended).
    TimedOut {
        thread: Thread,
        deadline: Option<i64>,
    },
    /// An event on which a condition or a selected field failed to evaluate (once per event).
    Failed { event: Event, reason: String },
}

/// Evaluates the pattern's expressions on events, with the threads' bindings.
pub(crate) struct Eval<'a> {
    pub(crate) def: &'a PatternDef,
    /// Set once an evaluation failed on the current event (it is reported once).
    failure: Option<String>,
}

impl<'a> Eval<'a> {
    pub(crate) fn new(def: &'a PatternDef) -> Eval<'a> {
        Eval { def, failure: None }
    }

    /// Whether `condition` (of stage `index` among all stages) holds on `event` for a thread
    /// with `bindings`. A failure counts as false and is remembered.
    fn holds(&mut self, index: usize, event: &Event, bindings: &[Value]) -> bool {
        let Some(stage) = self.def.stages.get(index) else {
            return false;
        };
        let result = if stage.bound {
            let bound = bind(event, bindings, &self.def.positive_names);
            stage.condition.eval_bool(&bound)
        } else {
            stage.condition.eval_bool(event)
        };
        match result {
            Ok(holds) => holds,
            Err(error) => {
                if self.failure.is_none() {
                    self.failure = Some(format!("stage `{}`: {error}", stage.name));
                }
                false
            }
        }
    }

    /// `thread` with `event` (number `seq`) taken by positive stage `stage`.
    fn take(&mut self, thread: &Thread, stage: usize, event: &Event, seq: u64) -> Thread {
        let mut next = thread.clone();
        if next.counts.iter().all(|count| *count == 0) {
            next.first_time = event.event_time;
        }
        if stage != next.stage {
            next.stage = stage;
        }
        if let Some(count) = next.counts.get_mut(stage) {
            if *count == 0 {
                if let Some(binding) = next.bindings.get_mut(stage) {
                    *binding = payload_map(event, &self.def.input_layout);
                }
            }
            *count += 1;
        }
        next.last_time = event.event_time;
        next.last_seq = seq;
        next.gap = false;
        for (select, accumulator) in self.def.select.iter().zip(next.selected.iter_mut()) {
            if select.stage != stage {
                continue;
            }
            let value = match &select.input {
                Some(expr) => match expr.eval(event) {
                    Ok(value) => value,
                    Err(error) => {
                        if self.failure.is_none() {
                            self.failure = Some(format!("field `{}`: {error}", select.name));
                        }
                        Value::Null
                    }
                },
                None => Value::Null,
            };
            match accumulator {
                Accumulator::First(first) => {
                    if first.is_none() {
                        *first = Some(value);
                    }
                }
                Accumulator::Last(last) => *last = Some(value),
                Accumulator::Count(count) => *count += 1,
                Accumulator::Sum(sum) => match add(sum.take(), value) {
                    Ok(total) => *sum = Some(total),
                    Err(message) => {
                        if self.failure.is_none() {
                            self.failure = Some(format!("field `{}`: {message}", select.name));
                        }
                    }
                },
            }
        }
        next
    }
}

/// `a + b` for a sum: ints add (checked), floats add, an int and a float give a float; nulls
/// are skipped.
fn add(a: Option<Value>, b: Value) -> Result<Value, String> {
    Ok(match (a.unwrap_or(Value::Null), b) {
        (Value::Null, b) => b,
        (a, Value::Null) => a,
        (Value::Int(a), Value::Int(b)) => Value::Int(
            a.checked_add(b)
                .ok_or_else(|| "the sum overflows an int".to_string())?,
        ),
        (a, b) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => Value::Float(a + b),
            _ => {
                return Err(format!(
                    "cannot sum a {} and a {}",
                    a.type_name(),
                    b.type_name()
                ))
            }
        },
    })
}

/// The payload of `event` as a map (what a stage name stands for in later conditions).
fn payload_map(event: &Event, layout: &dataflow_event::Layout) -> Value {
    match (&event.payload, layout.schema()) {
        (Payload::Object(map), _) => Value::Map(std::sync::Arc::new(map.clone())),
        (Payload::Row(row), Some(schema)) => Value::Map(std::sync::Arc::new(
            schema
                .fields()
                .iter()
                .zip(row)
                .map(|(field, value)| (field.name.clone(), value.clone()))
                .collect(),
        )),
        (Payload::Row(_), None) => Value::Null,
    }
}

/// `event` with every positive stage's binding added to its payload under the stage's name:
/// what a condition referring to earlier stages is compiled for (see `binding_layout`).
pub(crate) fn bind(event: &Event, bindings: &[Value], names: &[String]) -> Event {
    let payload = match &event.payload {
        Payload::Row(row) => {
            let mut extended = Vec::with_capacity(row.len() + bindings.len());
            extended.extend(row.iter().cloned());
            extended.extend(bindings.iter().cloned());
            Payload::Row(extended)
        }
        Payload::Object(map) => {
            let mut extended = map.clone();
            for (name, binding) in names.iter().zip(bindings) {
                extended.insert(name.clone(), binding.clone());
            }
            Payload::Object(extended)
        }
    };
    Event {
        id: event.id.clone(),
        kind: event.kind.clone(),
        event_time: event.event_time,
        processing_time: event.processing_time,
        headers: event.headers.clone(),
        key: event.key.clone(),
        payload,
    }
}

impl PatternDef {
    /// The positive stages that may take the event after one of stage `stage`, in order:
    /// the next, and past it as long as the stages passed are optional.
    fn next_stages(&self, stage: usize) -> impl Iterator<Item = usize> + '_ {
        let mut open = true;
        (stage + 1..self.positives.len()).take_while(move |&next| {
            let take = open;
            open = self
                .positive(next)
                .is_some_and(|definition| definition.min == 0);
            take
        })
    }

    fn positive(&self, stage: usize) -> Option<&super::StageDef> {
        self.positives
            .get(stage)
            .and_then(|&index| self.stages.get(index))
    }

    /// Whether `thread` is a complete match: its stage has its minimum and every later stage
    /// is optional.
    fn complete(&self, thread: &Thread) -> bool {
        let count = thread.counts.get(thread.stage).copied().unwrap_or(0);
        self.positive(thread.stage)
            .is_some_and(|stage| count >= stage.min)
            && (thread.stage + 1..self.positives.len())
                .all(|later| self.positive(later).is_some_and(|stage| stage.min == 0))
    }

    /// Whether `thread` could still take an event.
    fn extendable(&self, thread: &Thread) -> bool {
        let count = thread.counts.get(thread.stage).copied().unwrap_or(0);
        let below_max = self
            .positive(thread.stage)
            .is_some_and(|stage| stage.max.is_none_or(|max| count < max));
        below_max || self.next_stages(thread.stage).next().is_some()
    }

    fn deadline(&self, start_time: i64) -> Option<i64> {
        self.within.map(|within| start_time.saturating_add(within))
    }

    /// A thread before the first event.
    fn empty_thread(&self) -> Thread {
        Thread {
            stage: 0,
            counts: vec![0; self.positives.len()],
            bindings: vec![Value::Null; self.positives.len()],
            selected: self
                .select
                .iter()
                .map(|select| match select.aggregate {
                    Aggregate::First => Accumulator::First(None),
                    Aggregate::Last => Accumulator::Last(None),
                    Aggregate::Count => Accumulator::Count(0),
                    Aggregate::Sum => Accumulator::Sum(None),
                })
                .collect(),
            first_time: 0,
            last_time: 0,
            last_seq: 0,
            gap: false,
        }
    }
}

/// The entries `thread` leads to on `event`, in priority order, and whether the last one is a
/// complete match (which cuts every entry after it).
fn step(eval: &mut Eval<'_>, thread: &Thread, event: &Event, seq: u64) -> (Vec<Entry>, bool) {
    let def = eval.def;
    let Some(&stage_index) = def.positives.get(thread.stage) else {
        return (Vec::new(), false);
    };
    let Some(stage) = def.stages.get(stage_index) else {
        return (Vec::new(), false);
    };
    let count = thread.counts.get(thread.stage).copied().unwrap_or(0);
    // A strict stage takes an event only right after the last one taken.
    let allowed = |strict: bool| !(strict && thread.gap);
    let below_max = stage.max.is_none_or(|max| count < max);
    let can_stay = below_max && allowed(stage.strict);
    let at_min = count >= stage.min;
    let stay = can_stay && eval.holds(stage_index, event, &thread.bindings);
    let mut moves: Vec<usize> = Vec::new();
    if at_min {
        for next in def.next_stages(thread.stage).collect::<Vec<_>>() {
            let Some(next_stage) = def.positive(next) else {
                continue;
            };
            if !allowed(next_stage.strict) {
                continue;
            }
            if let Some(&next_index) = def.positives.get(next) {
                if eval.holds(next_index, event, &thread.bindings) {
                    moves.push(next);
                }
            }
        }
    }
    let mut order: Vec<usize> = Vec::new();
    if stage.greedy {
        if stay {
            order.push(thread.stage);
        }
        order.extend(&moves);
    } else {
        order.extend(&moves);
        if stay {
            order.push(thread.stage);
        }
    }
    if order.is_empty() {
        // The event is not taken: a negative stage after this one ends the thread, and so
        // does having no stage left that may take a later event (strict contiguity); else the
        // event is skipped (relaxed contiguity).
        if at_min {
            let negatives = def
                .negatives_after
                .get(thread.stage)
                .cloned()
                .unwrap_or_default();
            if negatives
                .iter()
                .any(|&negative| eval.holds(negative, event, &thread.bindings))
            {
                return (Vec::new(), false);
            }
        }
        let stay_later = below_max && !stage.strict;
        let move_later = at_min
            && def
                .next_stages(thread.stage)
                .any(|next| def.positive(next).is_some_and(|stage| !stage.strict));
        if !stay_later && !move_later {
            return (Vec::new(), false);
        }
        let mut skipped = thread.clone();
        skipped.gap = true;
        return (vec![Entry::Running(skipped)], false);
    }
    let mut entries = Vec::new();
    for target in order {
        let next = eval.take(thread, target, event, seq);
        if def.complete(&next) {
            let greedy = def.positive(next.stage).is_some_and(|stage| stage.greedy);
            if greedy && def.extendable(&next) {
                entries.push(Entry::Running(next.clone()));
            }
            entries.push(Entry::Complete(next));
            return (entries, true);
        }
        entries.push(Entry::Running(next));
    }
    (entries, false)
}

impl KeyMatches {
    /// The deadline of the earliest unresolved start, if the pattern has `within`.
    pub(crate) fn deadline(&self, def: &PatternDef) -> Option<i64> {
        self.starts
            .front()
            .and_then(|start| def.deadline(start.time))
    }

    /// The number of starts with partial matches.
    pub(crate) fn start_count(&self) -> usize {
        self.starts.len()
    }

    /// Whether the key holds no partial match.
    pub(crate) fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Takes the key's next event (in time order).
    pub(crate) fn event(&mut self, def: &PatternDef, event: Event, found: &mut Vec<Found>) {
        self.expire(def, event.event_time, false, found);
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut eval = Eval::new(def);
        for start in self
            .starts
            .iter_mut()
            .filter(|start| start.outcome.is_none())
        {
            let mut entries = Vec::with_capacity(start.entries.len());
            for entry in std::mem::take(&mut start.entries) {
                match entry {
                    Entry::Complete(thread) => {
                        entries.push(Entry::Complete(thread));
                        break;
                    }
                    Entry::Running(thread) => {
                        let (next, cut) = step(&mut eval, &thread, &event, seq);
                        for candidate in next {
                            // Two equal threads have the same future: the first one is kept.
                            if !entries.contains(&candidate) {
                                entries.push(candidate);
                            }
                        }
                        if cut {
                            break;
                        }
                    }
                }
            }
            start.entries = entries;
            settle(start);
        }
        // The event may start a match of its own (most events do not: their condition of the
        // first stage is checked before a thread is built).
        let starts = def
            .positives
            .first()
            .is_some_and(|&first| eval.holds(first, &event, &def.no_bindings));
        let (entries, _) = if starts {
            step(&mut eval, &def.empty_thread(), &event, seq)
        } else {
            (Vec::new(), false)
        };
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|entry| matches!(entry, Entry::Running(t) | Entry::Complete(t) if t.counts.first().is_some_and(|c| *c > 0)))
            .collect();
        if !entries.is_empty() {
            let mut start = Start {
                seq,
                time: event.event_time,
                entries,
                outcome: None,
            };
            settle(&mut start);
            self.starts.push_back(start);
        }
        if let Some(reason) = eval.failure {
            found.push(Found::Failed { event, reason });
        }
        self.flush(def, found);
    }

    /// Event time has reached `now` (`end`: the input ended): starts whose `within` ran out
    /// are resolved.
    pub(crate) fn expire(&mut self, def: &PatternDef, now: i64, end: bool, found: &mut Vec<Found>) {
        for start in self
            .starts
            .iter_mut()
            .filter(|start| start.outcome.is_none())
        {
            let deadline = def.deadline(start.time);
            let due = end || deadline.is_some_and(|deadline| deadline <= now);
            if !due {
                // Later starts have later deadlines.
                break;
            }
            let complete = start.entries.iter().find_map(|entry| match entry {
                Entry::Complete(thread) => Some(thread.clone()),
                Entry::Running(_) => None,
            });
            let first_running = start.entries.iter().find_map(|entry| match entry {
                Entry::Running(thread) => Some(thread.clone()),
                Entry::Complete(_) => None,
            });
            start.outcome = Some(match (complete, first_running) {
                (Some(thread), _) => Outcome::Matched(thread),
                (None, Some(thread)) => Outcome::TimedOut(thread),
                (None, None) => Outcome::Failed,
            });
            start.entries.clear();
        }
        self.flush(def, found);
    }

    /// Hands on the outcomes of the resolved starts at the front, in start order.
    fn flush(&mut self, def: &PatternDef, found: &mut Vec<Found>) {
        while self
            .starts
            .front()
            .is_some_and(|start| start.outcome.is_some())
        {
            let Some(start) = self.starts.pop_front() else {
                break;
            };
            match start.outcome {
                Some(Outcome::Matched(thread)) => {
                    if def.after_match == AfterMatch::SkipPastLast {
                        let last = thread.last_seq;
                        self.starts.retain(|later| later.seq > last);
                    }
                    found.push(Found::Match(thread));
                }
                Some(Outcome::TimedOut(thread)) => found.push(Found::TimedOut {
                    thread,
                    deadline: def.deadline(start.time),
                }),
                Some(Outcome::Failed) | None => {}
            }
        }
    }
}

/// Resolves `start` once no thread is left before its recorded match.
fn settle(start: &mut Start) {
    match start.entries.first() {
        None => start.outcome = Some(Outcome::Failed),
        Some(Entry::Complete(thread)) => {
            start.outcome = Some(Outcome::Matched(thread.clone()));
            start.entries.clear();
        }
        Some(Entry::Running(_)) => {}
    }
}
