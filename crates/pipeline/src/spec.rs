//! Typed pipeline specifications: what the YAML config and the Rust builder both produce, and
//! what [`crate::plan`] compiles into running operators.

use std::fmt;
use std::path::PathBuf;

use dataflow_event::json::DecoderConfig;
use dataflow_window::{AggregateKind, WindowKind};

pub use dataflow_connectors::config::{Place, Problem};
pub use dataflow_connectors::ratelimit::{AdaptiveSpec, RateLimitSpec};
pub use dataflow_connectors::registry::{SinkKind, SinkSpec, SourceKind};
pub use dataflow_operators::TimeDomain;

/// A CEL expression with the place it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprSpec {
    /// The CEL source.
    pub source: String,
    /// Where it was written.
    pub place: Place,
}

impl ExprSpec {
    /// An expression written in code.
    pub fn new(source: impl Into<String>, path: impl Into<String>) -> ExprSpec {
        ExprSpec {
            source: source.into(),
            place: Place::path(path),
        }
    }
}

/// A whole pipeline.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    /// The pipeline's name, used in logs and metrics.
    pub name: String,
    /// Its sources; their events are merged into one stream.
    pub sources: Vec<SourceSpec>,
    /// The steps applied in order.
    pub steps: Vec<StepSpec>,
    /// Whether a join or a branch was written (even one refused): join inputs read their
    /// sources by name, so sources need not share one schema (the join checks its inputs).
    pub joins: bool,
    /// Where results go; each sink receives every result.
    pub sinks: Vec<SinkSpec>,
    /// Where records that failed to decode or evaluate go, with their reason.
    pub dead_letters: SinkSpec,
    /// Where events beyond the allowed lateness go; `None` sends them to the dead letters.
    pub late_events: Option<SinkSpec>,
    /// Where timed-out partial matches of `pattern` steps go; `None` sends them to the dead
    /// letters.
    pub timed_out: Option<SinkSpec>,
    /// Runtime settings.
    pub runtime: RuntimeSpec,
    /// Periodic checkpoints, if any.
    pub checkpoint: Option<CheckpointSpec>,
    /// Where keyed operator state is kept.
    pub state: StateSpec,
    /// The HTTP API the processor serves, if any.
    pub api: Option<ApiSpec>,
}

/// The processor's HTTP API.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiSpec {
    /// Where to listen, `127.0.0.1:8080` by default.
    pub listen: std::net::SocketAddr,
    /// The bearer token protected routes require. Never logged.
    pub token: Option<String>,
    /// The limits on its connections (`max_connections`, `header_timeout`, `idle_timeout`,
    /// `max_header_bytes`, `max_requests_per_connection`).
    pub limits: dataflow_api::ServeLimits,
}

impl fmt::Debug for ApiSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSpec")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("limits", &self.limits)
            .finish()
    }
}

/// Where keyed operator state (window accumulators, sessions and timers) is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StateSpec {
    /// In memory, as objects: the default, and the fastest.
    #[default]
    Memory,
    /// In sled databases under `dir`, one per operator, for state larger than memory. A cache
    /// rebuilt from the restored checkpoint at every start: the checkpoint is the truth.
    Sled {
        /// The directory holding one sled directory per operator.
        dir: PathBuf,
        /// The cap of each sled store's page cache, in bytes
        /// ([`dataflow_state::DEFAULT_CACHE_BYTES`] unless configured).
        cache_bytes: u64,
        /// The most keys each stateful operator caches as objects
        /// ([`dataflow_operators::window::DEFAULT_CACHE_KEYS`] unless configured).
        cache_keys: usize,
    },
}

/// Periodic, consistent checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSpec {
    /// The directory holding one directory per checkpoint.
    pub dir: PathBuf,
    /// Time between two checkpoints, in milliseconds.
    pub interval: i64,
    /// How many complete checkpoints to keep.
    pub retain: usize,
}

/// Runtime settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeSpec {
    /// Events per batch handed between stages.
    pub batch_size: usize,
    /// Batches a channel between two stages holds before the sender waits.
    pub channel_capacity: usize,
    /// What a stop by signal does with open windows.
    pub on_stop: OnStop,
    /// Workers for the keyed part of the pipeline (the top-level `parallelism` key).
    pub parallelism: usize,
    /// Run the operator chain on the source's thread when the pipeline has one worker and one
    /// source that never waits in a read (a file, the generator): no batch crosses threads
    /// between reading and the operators (`runtime.fuse_source`, on by default).
    pub fuse_source: bool,
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        RuntimeSpec {
            batch_size: 1024,
            channel_capacity: 16,
            on_stop: OnStop::Fire,
            parallelism: 1,
            fuse_source: true,
        }
    }
}

/// What a stop by signal (Ctrl-C) does with windows that are still open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnStop {
    /// Fire every open window, as at the end of a bounded input.
    #[default]
    Fire,
    /// Emit nothing more; open windows are left to the next checkpoint.
    Keep,
}

/// A source of events.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// Its name, used in dead letters, logs and metrics.
    pub name: String,
    /// What it reads.
    pub kind: SourceKind,
    /// How records are decoded.
    pub decoder: DecoderConfig,
    /// How its watermark is generated.
    pub watermark: WatermarkSpec,
    /// How fast it may send events; `None` is as fast as the pipeline takes them.
    pub rate_limit: Option<RateLimitSpec>,
    /// Where it was written.
    pub place: Place,
}

/// Watermark generation for a source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// How far behind the largest event time seen the watermark stays, in milliseconds.
    pub out_of_orderness: i64,
    /// After this long without events (ms), a partition or source stops holding the watermark.
    pub idle_timeout: Option<i64>,
    /// How many events between watermark updates; `None` is once per batch. `Some(1)` judges
    /// lateness record by record, as Kafka Streams does, at the cost of a message per event.
    pub every: Option<usize>,
}

/// One step of a pipeline.
#[derive(Clone, Debug)]
pub enum StepSpec {
    /// Keep the events for which the predicate is true.
    Filter(ExprSpec),
    /// Compute, rename, keep or drop payload fields.
    Map(MapSpec),
    /// Set each event's key.
    KeyBy(ExprSpec),
    /// Aggregate in windows.
    Window(WindowSpec),
    /// Match a sequence of stages per key.
    Pattern(PatternSpec),
    /// Tell when a condition starts and stops holding per key.
    Alert(AlertSpec),
    /// Aggregate each key's last N events, per event.
    Over(OverSpec),
    /// Join two inputs (the first step of a pipeline that has one).
    Join(Box<JoinSpec>),
}

impl StepSpec {
    /// Where the step was written.
    pub fn place(&self) -> &Place {
        match self {
            StepSpec::Filter(expr) | StepSpec::KeyBy(expr) => &expr.place,
            StepSpec::Map(map) => &map.place,
            StepSpec::Window(window) => &window.place,
            StepSpec::Pattern(pattern) => &pattern.place,
            StepSpec::Alert(alert) => &alert.place,
            StepSpec::Over(over) => &over.place,
            StepSpec::Join(join) => &join.place,
        }
    }
}

pub use dataflow_operators::join::JoinType;

/// A join step: two inputs, each with its own steps and key, joined by key in event time.
#[derive(Clone, Debug)]
pub struct JoinSpec {
    /// Interval, window or lookup, with its bounds.
    pub kind: JoinKindSpec,
    /// Which unmatched rows are emitted (lookup joins: inner or left only).
    pub how: JoinType,
    /// The left input (the stream of a lookup join).
    pub left: JoinInputSpec,
    /// The right input (the table of a lookup join).
    pub right: JoinInputSpec,
    /// Where it was written.
    pub place: Place,
}

/// What kind of join, with its bounds (milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKindSpec {
    /// `right.time ∈ [left.time + lower, left.time + upper]`.
    Interval {
        /// The lower bound, may be negative.
        lower: i64,
        /// The upper bound, at least `lower`.
        upper: i64,
    },
    /// Both in the same window of `size`, one starting every `slide` (`size`: tumbling).
    Window {
        /// The window's length.
        size: i64,
        /// The distance between window starts.
        slide: i64,
    },
    /// The left stream against the right changelog's version as of each event's time.
    Lookup,
}

/// One input of a join: a named branch (or a source), its steps and the join key.
#[derive(Clone, Debug)]
pub struct JoinInputSpec {
    /// The branch or source it names.
    pub name: String,
    /// The source whose events it takes (`None`: every source).
    pub source: Option<String>,
    /// Where that source was named (a branch's `from`, or the input itself).
    pub source_place: Place,
    /// Its steps before the join (filters and maps).
    pub steps: Vec<StepSpec>,
    /// The join key, over the input's events after its steps.
    pub key: ExprSpec,
    /// What its fields are prefixed with in the results.
    pub prefix: String,
    /// The table of a lookup join: the rows that delete their key.
    pub delete: Option<ExprSpec>,
    /// Where it was written.
    pub place: Place,
}

pub use dataflow_operators::pattern::{AfterMatch, Aggregate as PatternAggregate};

/// A pattern step (complex event processing), after a `key_by`.
#[derive(Clone, Debug)]
pub struct PatternSpec {
    /// The stages, in order.
    pub stages: Vec<PatternStageSpec>,
    /// The longest time from the first to the last matched event (ms); `None`: no limit.
    pub within: Option<i64>,
    /// What happens after a match.
    pub after_match: AfterMatch,
    /// The fields of each result, in order.
    pub select: Vec<PatternSelectSpec>,
    /// Where it was written.
    pub place: Place,
}

/// One stage of a pattern step.
#[derive(Clone, Debug)]
pub struct PatternStageSpec {
    /// Its name, which later conditions use for its first event.
    pub name: String,
    /// When an event belongs to it.
    pub condition: ExprSpec,
    /// The fewest events it takes (0: optional).
    pub min: u32,
    /// The most events it takes; `None`: no limit.
    pub max: Option<u32>,
    /// Whether it takes as many events as it can.
    pub greedy: bool,
    /// Strict contiguity: its events must follow the previous matched event directly.
    pub strict: bool,
    /// A negative stage ("not followed by").
    pub negative: bool,
    /// Where it was written.
    pub place: Place,
}

/// One selected field of a pattern step: `first(stage.expr)`, `last(...)`, `sum(...)`,
/// `count(stage)`.
#[derive(Clone, Debug)]
pub struct PatternSelectSpec {
    /// The output field.
    pub name: String,
    /// What it computes.
    pub aggregate: PatternAggregate,
    /// The stage whose events it reads.
    pub stage: String,
    /// What it reads of each event (none for `count`).
    pub input: Option<ExprSpec>,
    /// Where it was written.
    pub place: Place,
}

/// An alert step: a condition that holds for a while, per key.
#[derive(Clone, Debug)]
pub struct AlertSpec {
    /// The condition.
    pub condition: ExprSpec,
    /// When the alert holds.
    pub rule: AlertRule,
    /// Where it was written.
    pub place: Place,
}

pub use dataflow_operators::alert::AlertRule;

/// An over step: for each event of a key, in event-time order, the event with aggregates over
/// the key's last `rows` events (itself included).
#[derive(Clone, Debug)]
pub struct OverSpec {
    /// How many of the key's events the aggregates cover, at least 1.
    pub rows: usize,
    /// The aggregates, appended to each event in this order.
    pub aggregates: Vec<AggregateSpec>,
    /// Where it was written.
    pub place: Place,
}

/// A map step. Applied in this order: computed fields, renames, then keep or drop.
#[derive(Clone, Debug, Default)]
pub struct MapSpec {
    /// Fields to compute: name and expression (evaluated on the input event).
    pub fields: Vec<(String, ExprSpec)>,
    /// Fields to rename: old name, new name.
    pub rename: Vec<(String, String)>,
    /// When set, keep only these fields.
    pub keep: Option<Vec<String>>,
    /// Fields to remove.
    pub drop: Vec<String>,
    /// Where it was written.
    pub place: Place,
}

/// A window aggregate step.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    /// Tumbling, sliding or session.
    pub kind: WindowKind,
    /// Event or processing time.
    pub time: TimeDomain,
    /// How long after firing a window still accepts late events (ms).
    pub allowed_lateness: i64,
    /// The aggregates, in output order.
    pub aggregates: Vec<AggregateSpec>,
    /// Where it was written.
    pub place: Place,
}

/// One aggregate of a window step.
#[derive(Clone, Debug)]
pub struct AggregateSpec {
    /// The output field.
    pub name: String,
    /// The function.
    pub kind: AggregateKind,
    /// Its input (none for `count`).
    pub input: Option<ExprSpec>,
}
