//! Where a pipeline's time goes: for each stage (source, operator, sink), how long it was busy,
//! blocked on its output (backpressured) and waiting for input (starved), and from those the
//! stage most likely holding the pipeline back.
//!
//! Each stage has a [`StageClock`] that the thread running it adds to with relaxed atomics.
//! [`Backpressure::report`] turns the clocks into shares of the interval since the previous
//! report: a pure-data [`BackpressureReport`] that an HTTP route or a CLI prints as it is.
//!
//! ```
//! use dataflow_metrics::backpressure::{bottleneck, StageShare};
//!
//! let stage = |name: &str, busy: f64, backpressured: f64| StageShare {
//!     pipeline: "p".into(),
//!     stage: name.into(),
//!     kind: "x".into(),
//!     instances: 1,
//!     busy,
//!     backpressured,
//!     starved: 1.0 - busy - backpressured,
//! };
//! // The source waits on the window, the window is busy: the window holds it back.
//! let stages = [stage("source", 0.1, 0.9), stage("window", 0.95, 0.0), stage("sink", 0.2, 0.0)];
//! assert_eq!(bottleneck(&stages), Some(1));
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Cumulative times of one stage, added to by whoever runs it (every instance of it).
#[derive(Debug, Default)]
pub struct StageClock {
    busy: AtomicU64,
    backpressured: AtomicU64,
    starved: AtomicU64,
    instances: AtomicU64,
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl StageClock {
    /// The stage worked for `took`.
    pub fn busy(&self, took: Duration) {
        self.busy.fetch_add(nanos(took), Ordering::Relaxed);
    }

    /// The stage waited `waited` for room in a full output channel.
    pub fn backpressured(&self, waited: Duration) {
        self.backpressured
            .fetch_add(nanos(waited), Ordering::Relaxed);
    }

    /// The stage waited `waited` for input.
    pub fn starved(&self, waited: Duration) {
        self.starved.fetch_add(nanos(waited), Ordering::Relaxed);
    }

    /// How many parallel instances run the stage (1 unless set); its shares are of the
    /// instances' total time.
    pub fn set_instances(&self, instances: usize) {
        self.instances
            .store(instances.max(1) as u64, Ordering::Relaxed);
    }

    fn sample(&self) -> [u64; 3] {
        [
            self.busy.load(Ordering::Relaxed),
            self.backpressured.load(Ordering::Relaxed),
            self.starved.load(Ordering::Relaxed),
        ]
    }

    fn instances(&self) -> usize {
        self.instances.load(Ordering::Relaxed).max(1) as usize
    }
}

/// One stage's shares of an interval, each between 0 and 1; the rest of the time (up to 1) it
/// was neither measured busy nor waiting (scheduling, control messages).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageShare {
    /// The pipeline.
    pub pipeline: String,
    /// The stage: a source's name, an operator's name (`steps[2].window`), or `sink[0]`.
    pub stage: String,
    /// `source`, an operator kind (`filter`, `map`, `key_by`, `window`), or `sink`.
    pub kind: String,
    /// Parallel instances of the stage.
    pub instances: usize,
    /// Share of the time spent working.
    pub busy: f64,
    /// Share of the time blocked on a full output channel.
    pub backpressured: f64,
    /// Share of the time waiting for input.
    pub starved: f64,
}

/// Where a pipeline's time went over the last interval, stage by stage in pipeline order
/// (sources, operators, sinks), and the stage most likely holding it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackpressureReport {
    /// The length of the interval, in seconds.
    pub interval_seconds: f64,
    /// Every stage, in pipeline order.
    pub stages: Vec<StageShare>,
    /// The name of the stage most likely holding the pipeline back, if one is: see
    /// [`bottleneck`].
    pub bottleneck: Option<String>,
}

/// A stage this busy or more, and not waiting on its output, limits the pipeline's rate.
pub const BUSY_THRESHOLD: f64 = 0.5;
/// A stage blocked on its output for this share or more is held back by what follows it.
pub const BACKPRESSURED_THRESHOLD: f64 = 0.1;

/// The index of the stage most likely holding the pipeline back: among the stages that are
/// not backpressured themselves (below [`BACKPRESSURED_THRESHOLD`]) and busy at least
/// [`BUSY_THRESHOLD`] of the time, the busiest; ties go to the most upstream. A stage blocked on
/// its output is not the cause, whatever follows it is; a pipeline where no stage is that busy
/// is limited by its input, and has no bottleneck.
pub fn bottleneck(stages: &[StageShare]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, stage) in stages.iter().enumerate() {
        if stage.backpressured >= BACKPRESSURED_THRESHOLD || stage.busy < BUSY_THRESHOLD {
            continue;
        }
        if best.is_none_or(|b| stage.busy > stages[b].busy) {
            best = Some(index);
        }
    }
    best
}

#[derive(Debug)]
struct Registered {
    pipeline: String,
    stage: String,
    kind: String,
    clock: Arc<StageClock>,
}

#[derive(Debug)]
struct Inner {
    stages: Vec<Registered>,
    /// The stages' times at the start of the current interval.
    baseline: (Instant, BTreeMap<usize, [u64; 3]>),
}

/// The stages of every pipeline of a process and their clocks. Cloning shares them.
#[derive(Clone, Debug)]
pub struct Backpressure {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Backpressure {
    fn default() -> Self {
        Backpressure {
            inner: Arc::new(Mutex::new(Inner {
                stages: Vec::new(),
                baseline: (Instant::now(), BTreeMap::new()),
            })),
        }
    }
}

/// The shortest interval a report covers: a report asked for sooner covers the interval of the
/// previous one up to now.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

impl Backpressure {
    /// The clock of `stage` (of `kind`) in `pipeline`, registered on first use; stages are
    /// reported in the order they were first registered.
    pub fn stage(&self, pipeline: &str, stage: &str, kind: &str) -> Arc<StageClock> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = inner
            .stages
            .iter()
            .find(|s| s.pipeline == pipeline && s.stage == stage && s.kind == kind)
        {
            return found.clock.clone();
        }
        let clock = Arc::new(StageClock::default());
        inner.stages.push(Registered {
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
            kind: kind.to_owned(),
            clock: clock.clone(),
        });
        clock
    }

    /// The shares of every stage since the previous report (or since the start, for the first);
    /// a report within [`MIN_INTERVAL`] of the previous one extends the previous interval.
    pub fn report(&self) -> BackpressureReport {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (since, baseline) = &inner.baseline;
        let interval = now.duration_since(*since);
        let seconds = interval.as_secs_f64();
        let stages: Vec<StageShare> = inner
            .stages
            .iter()
            .enumerate()
            .map(|(index, registered)| {
                let current = registered.clock.sample();
                let before = baseline.get(&index).copied().unwrap_or([0; 3]);
                let instances = registered.clock.instances();
                let share = |i: usize| {
                    let spent = current[i].saturating_sub(before[i]) as f64 / 1e9;
                    if seconds > 0.0 {
                        (spent / (seconds * instances as f64)).clamp(0.0, 1.0)
                    } else {
                        0.0
                    }
                };
                StageShare {
                    pipeline: registered.pipeline.clone(),
                    stage: registered.stage.clone(),
                    kind: registered.kind.clone(),
                    instances,
                    busy: share(0),
                    backpressured: share(1),
                    starved: share(2),
                }
            })
            .collect();
        if interval >= MIN_INTERVAL {
            let samples = inner
                .stages
                .iter()
                .enumerate()
                .map(|(index, registered)| (index, registered.clock.sample()))
                .collect();
            inner.baseline = (now, samples);
        }
        let bottleneck = bottleneck(&stages).map(|index| stages[index].stage.clone());
        BackpressureReport {
            interval_seconds: seconds,
            stages,
            bottleneck,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(stage: &str, busy: f64, backpressured: f64, starved: f64) -> StageShare {
        StageShare {
            pipeline: "p".into(),
            stage: stage.into(),
            kind: "k".into(),
            instances: 1,
            busy,
            backpressured,
            starved,
        }
    }

    #[test]
    fn a_slow_sink_holds_back_everything_before_it() {
        let stages = [
            share("source", 0.05, 0.93, 0.0),
            share("filter", 0.01, 0.9, 0.05),
            share("window", 0.02, 0.9, 0.05),
            share("sink[0]", 0.98, 0.0, 0.01),
        ];
        assert_eq!(bottleneck(&stages), Some(3));
    }

    #[test]
    fn a_busy_source_that_is_never_blocked_is_the_bottleneck() {
        // W2 today: the source decodes all the time, the operators wait for it.
        let stages = [
            share("source", 0.97, 0.02, 0.0),
            share("key_by", 0.1, 0.0, 0.85),
            share("window", 0.3, 0.0, 0.65),
            share("sink[0]", 0.01, 0.0, 0.99),
        ];
        assert_eq!(bottleneck(&stages), Some(0));
    }

    #[test]
    fn the_busiest_unblocked_stage_wins_and_ties_go_upstream() {
        let stages = [
            share("source", 0.6, 0.3, 0.0),
            share("map", 0.7, 0.0, 0.2),
            share("window", 0.9, 0.0, 0.1),
            share("sink[0]", 0.9, 0.0, 0.1),
        ];
        assert_eq!(bottleneck(&stages), Some(2));
    }

    #[test]
    fn an_idle_pipeline_has_no_bottleneck() {
        let stages = [
            share("source", 0.1, 0.0, 0.9),
            share("window", 0.05, 0.0, 0.95),
        ];
        assert_eq!(bottleneck(&stages), None);
        assert_eq!(bottleneck(&[]), None);
    }

    #[test]
    fn reports_shares_of_the_interval_per_instance() {
        let backpressure = Backpressure::default();
        let source = backpressure.stage("p", "bids", "source");
        let window = backpressure.stage("p", "steps[1].window", "window");
        assert!(Arc::ptr_eq(
            &window,
            &backpressure.stage("p", "steps[1].window", "window")
        ));
        window.set_instances(2);
        // Far more time than has passed: shares are capped at 1.
        source.busy(Duration::from_secs(3600));
        window.starved(Duration::from_secs(3600));
        let report = backpressure.report();
        let names: Vec<&str> = report.stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["bids", "steps[1].window"]);
        assert_eq!(report.stages[0].busy, 1.0);
        assert_eq!(report.stages[1].instances, 2);
        assert_eq!(report.stages[1].starved, 1.0);
        assert_eq!(report.stages[1].busy, 0.0);
        assert_eq!(report.bottleneck.as_deref(), Some("bids"));
    }
}
