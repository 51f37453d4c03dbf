//! Watermark generation and combination.

use serde::{Deserialize, Serialize};

/// A watermark that trails the largest event time seen by a fixed bound: events may arrive out
/// of order by up to `bound` milliseconds without being late.
///
/// ```
/// use dataflow_window::BoundedOutOfOrderness;
///
/// let mut generator = BoundedOutOfOrderness::new(5);
/// assert_eq!(generator.current(), i64::MIN);
/// generator.observe(100);
/// generator.observe(90);
/// assert_eq!(generator.current(), 95);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundedOutOfOrderness {
    /// Never negative.
    bound: i64,
    max_timestamp: Option<i64>,
}

impl BoundedOutOfOrderness {
    /// A generator allowing `bound` milliseconds of disorder; a negative bound counts as 0.
    pub fn new(bound: i64) -> BoundedOutOfOrderness {
        BoundedOutOfOrderness {
            bound: bound.max(0),
            max_timestamp: None,
        }
    }

    /// Takes an event time into account.
    pub fn observe(&mut self, timestamp: i64) {
        self.max_timestamp = Some(
            self.max_timestamp
                .map_or(timestamp, |max| max.max(timestamp)),
        );
    }

    /// `max_timestamp_seen - bound`, or `i64::MIN` before any event.
    pub fn current(&self) -> i64 {
        self.max_timestamp
            .map_or(i64::MIN, |max| max.saturating_sub(self.bound))
    }
}

/// The state of one input of a [`WatermarkCombiner`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Input {
    /// Monotonic.
    watermark: i64,
    /// The time of the input's last update or data, if any.
    last_activity: Option<i64>,
    idle: bool,
    /// Terminal: a finished input is never active again.
    finished: bool,
}

impl Input {
    fn is_active(&self) -> bool {
        !self.idle && !self.finished
    }
}

/// Combines the watermarks of several inputs (source partitions, or an operator's upstream
/// inputs) into the minimum over the active ones.
///
/// An input that shows no activity for longer than the idle timeout becomes idle and stops
/// holding the watermark back; it resumes with its next data or watermark. A finished input never
/// holds it back. The combined watermark never goes down: a resumed input that is behind holds
/// it where it is until it catches up. Times (`now`) are processing times in milliseconds given
/// by the caller.
///
/// Input indexes at or above the number of inputs are ignored.
///
/// ```
/// use dataflow_window::WatermarkCombiner;
///
/// let mut combiner = WatermarkCombiner::new(2, Some(1_000));
/// combiner.update(0, 500, 0);
/// combiner.update(1, 300, 0);
/// assert_eq!(combiner.current(), 300);
/// assert_eq!(combiner.holding_back(), Some(1));
/// combiner.update(0, 800, 1_500);
/// combiner.check_idle(1_500); // input 1 has been silent for 1.5 s
/// assert!(combiner.is_idle(1));
/// assert_eq!(combiner.current(), 800);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatermarkCombiner {
    inputs: Vec<Input>,
    /// Never negative.
    idle_timeout: Option<i64>,
    /// The first `now` seen: inputs without activity count their silence from it.
    started: Option<i64>,
    /// Monotonic.
    current: i64,
}

impl WatermarkCombiner {
    /// A combiner of `inputs` inputs, all active at `i64::MIN`. With `idle_timeout`, inputs
    /// without activity for longer become idle at [`WatermarkCombiner::check_idle`]; a negative
    /// timeout counts as 0. With no inputs, the watermark is `i64::MAX` (nothing holds it back).
    pub fn new(inputs: usize, idle_timeout: Option<i64>) -> WatermarkCombiner {
        let input = Input {
            watermark: i64::MIN,
            last_activity: None,
            idle: false,
            finished: false,
        };
        let mut combiner = WatermarkCombiner {
            inputs: vec![input; inputs],
            idle_timeout: idle_timeout.map(|timeout| timeout.max(0)),
            started: None,
            current: i64::MIN,
        };
        combiner.recompute();
        combiner
    }

    fn note_time(&mut self, now: i64) {
        self.started.get_or_insert(now);
    }

    /// Adds an input that appeared at `now` (a partition added to a topic while running): its
    /// index is the number of inputs before it. It is active at `i64::MIN`, so it holds the
    /// combined watermark where it is (never lower) until it speaks or, silent for longer than
    /// the idle timeout counted from `now`, goes idle.
    pub fn add_input(&mut self, now: i64) -> usize {
        self.note_time(now);
        self.inputs.push(Input {
            watermark: i64::MIN,
            last_activity: Some(now),
            idle: false,
            finished: false,
        });
        self.recompute();
        self.inputs.len() - 1
    }

    /// Records that `input` advanced its watermark (a lower one is ignored). This counts as
    /// activity: an idle input resumes.
    pub fn update(&mut self, input: usize, watermark: i64, now: i64) {
        if let Some(state) = self.inputs.get_mut(input) {
            state.watermark = state.watermark.max(watermark);
        }
        self.activity(input, now);
    }

    /// Records that `input` produced data at `now`: an idle input resumes and holds the
    /// watermark back again.
    pub fn activity(&mut self, input: usize, now: i64) {
        self.note_time(now);
        if let Some(state) = self.inputs.get_mut(input) {
            if !state.finished {
                state.last_activity = Some(now);
                state.idle = false;
            }
        }
        self.recompute();
    }

    /// Records that `input` ended: it no longer holds the watermark back.
    pub fn finish(&mut self, input: usize) {
        if let Some(state) = self.inputs.get_mut(input) {
            state.finished = true;
        }
        self.recompute();
    }

    /// Marks idle the inputs without activity for longer than the idle timeout (since the first
    /// time seen, for inputs that had none). Does nothing without an idle timeout.
    pub fn check_idle(&mut self, now: i64) {
        self.note_time(now);
        let Some(timeout) = self.idle_timeout else {
            return;
        };
        let started = self.started.unwrap_or(now);
        for state in &mut self.inputs {
            let last = state.last_activity.unwrap_or(started);
            if state.is_active() && now.saturating_sub(last) > timeout {
                state.idle = true;
            }
        }
        self.recompute();
    }

    fn recompute(&mut self) {
        if self.inputs.iter().all(|state| state.finished) {
            self.current = i64::MAX;
            return;
        }
        let active_min = self
            .inputs
            .iter()
            .filter(|state| state.is_active())
            .map(|state| state.watermark)
            .min();
        if let Some(min) = active_min {
            self.current = self.current.max(min);
        }
    }

    /// The combined watermark: the largest of its previous value and the minimum over the active
    /// inputs. It does not advance while every unfinished input is idle, and is `i64::MAX` once
    /// every input is finished.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// Whether `input` is idle (false for unknown inputs).
    pub fn is_idle(&self, input: usize) -> bool {
        self.inputs.get(input).is_some_and(|state| state.idle)
    }

    /// The active input with the lowest watermark (the lowest index among equals), if any input
    /// is active.
    pub fn holding_back(&self) -> Option<usize> {
        self.inputs
            .iter()
            .enumerate()
            .filter(|(_, state)| state.is_active())
            .min_by_key(|(index, state)| (state.watermark, *index))
            .map(|(index, _)| index)
    }

    /// The watermark of `input` (`i64::MIN` for unknown inputs).
    pub fn input_watermark(&self, input: usize) -> i64 {
        self.inputs
            .get(input)
            .map_or(i64::MIN, |state| state.watermark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_out_of_orderness_trails_the_maximum() {
        let mut generator = BoundedOutOfOrderness::new(10);
        assert_eq!(generator.current(), i64::MIN);
        generator.observe(5);
        assert_eq!(generator.current(), -5);
        generator.observe(30);
        generator.observe(20);
        assert_eq!(generator.current(), 20);
        generator.observe(i64::MIN);
        assert_eq!(generator.current(), 20);
        let mut negative = BoundedOutOfOrderness::new(-3);
        negative.observe(7);
        assert_eq!(negative.current(), 7);
    }

    #[test]
    fn combiner_takes_the_minimum_and_never_goes_down() {
        let mut combiner = WatermarkCombiner::new(3, None);
        assert_eq!(combiner.current(), i64::MIN);
        combiner.update(0, 10, 0);
        combiner.update(1, 20, 0);
        assert_eq!(combiner.current(), i64::MIN);
        assert_eq!(combiner.holding_back(), Some(2));
        combiner.update(2, 15, 0);
        assert_eq!(combiner.current(), 10);
        assert_eq!(combiner.holding_back(), Some(0));
        combiner.update(0, 5, 0);
        assert_eq!(combiner.input_watermark(0), 10);
        combiner.update(0, 30, 0);
        assert_eq!(combiner.current(), 15);
        assert_eq!(combiner.holding_back(), Some(2));
    }

    #[test]
    fn combiner_without_timeout_never_idles() {
        let mut combiner = WatermarkCombiner::new(2, None);
        combiner.update(0, 100, 0);
        combiner.check_idle(1_000_000);
        assert!(!combiner.is_idle(1));
        assert_eq!(combiner.current(), i64::MIN);
    }

    #[test]
    fn idle_inputs_stop_holding_back_and_resume() {
        let mut combiner = WatermarkCombiner::new(2, Some(100));
        combiner.update(0, 10, 0);
        combiner.update(1, 5, 0);
        assert_eq!(combiner.current(), 5);
        combiner.update(0, 50, 100);
        combiner.check_idle(100);
        assert!(!combiner.is_idle(1), "silent for exactly the timeout");
        combiner.check_idle(101);
        assert!(combiner.is_idle(1));
        assert!(!combiner.is_idle(0));
        assert_eq!(combiner.current(), 50);
        assert_eq!(combiner.holding_back(), Some(0));
        // Resumes behind the combined watermark: holds it where it is.
        combiner.activity(1, 120);
        assert!(!combiner.is_idle(1));
        combiner.update(0, 80, 120);
        assert_eq!(combiner.current(), 50);
        assert_eq!(combiner.holding_back(), Some(1));
        combiner.update(1, 60, 130);
        assert_eq!(combiner.current(), 60);
        combiner.update(1, 90, 140);
        assert_eq!(combiner.current(), 80);
    }

    #[test]
    fn silent_inputs_count_from_the_first_time_seen() {
        let mut combiner = WatermarkCombiner::new(2, Some(100));
        combiner.update(0, 10, 1_000);
        combiner.check_idle(1_050);
        assert!(!combiner.is_idle(1));
        combiner.check_idle(1_101);
        assert!(combiner.is_idle(1));
        assert!(combiner.is_idle(0), "input 0 was silent too");
        assert_eq!(combiner.current(), i64::MIN, "all idle: no advance");
        combiner.update(0, 20, 1_200);
        assert_eq!(combiner.current(), 20);
    }

    #[test]
    fn all_idle_does_not_advance() {
        let mut combiner = WatermarkCombiner::new(2, Some(10));
        combiner.update(0, 10, 0);
        combiner.update(1, 20, 0);
        combiner.check_idle(100);
        assert!(combiner.is_idle(0) && combiner.is_idle(1));
        assert_eq!(combiner.current(), 10);
        assert_eq!(combiner.holding_back(), None);
    }

    #[test]
    fn an_added_input_holds_the_watermark_until_it_speaks_or_idles() {
        let mut combiner = WatermarkCombiner::new(1, Some(100));
        combiner.update(0, 50, 0);
        assert_eq!(combiner.current(), 50);
        assert_eq!(combiner.add_input(1_000), 1);
        assert_eq!(combiner.current(), 50, "never goes down");
        combiner.update(0, 80, 1_050);
        assert_eq!(combiner.current(), 50, "the new input holds it back");
        assert_eq!(combiner.holding_back(), Some(1));
        // Its silence counts from when it was added, not from the first time seen.
        combiner.check_idle(1_100);
        assert!(!combiner.is_idle(1));
        combiner.update(0, 90, 1_101);
        combiner.check_idle(1_101);
        assert!(combiner.is_idle(1));
        assert_eq!(combiner.current(), 90);
        // It resumes behind: holds the watermark where it is until it catches up.
        combiner.update(1, 70, 1_200);
        combiner.update(0, 120, 1_200);
        assert_eq!(combiner.current(), 90);
        combiner.update(1, 110, 1_210);
        assert_eq!(combiner.current(), 110);
        assert_eq!(combiner.input_watermark(1), 110);
    }

    #[test]
    fn finished_inputs_release_the_watermark() {
        let mut combiner = WatermarkCombiner::new(2, None);
        combiner.update(0, 10, 0);
        combiner.update(1, 20, 0);
        combiner.finish(0);
        assert_eq!(combiner.current(), 20);
        combiner.activity(0, 5);
        assert_eq!(combiner.holding_back(), Some(1));
        combiner.finish(1);
        assert_eq!(combiner.current(), i64::MAX);
        assert_eq!(WatermarkCombiner::new(0, None).current(), i64::MAX);
    }

    #[test]
    fn unknown_inputs_are_ignored() {
        let mut combiner = WatermarkCombiner::new(1, Some(10));
        combiner.update(3, 100, 0);
        combiner.activity(3, 0);
        combiner.finish(3);
        assert_eq!(combiner.current(), i64::MIN);
        assert!(!combiner.is_idle(3));
        assert_eq!(combiner.input_watermark(3), i64::MIN);
    }
}
