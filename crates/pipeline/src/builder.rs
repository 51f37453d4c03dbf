//! Building pipelines in Rust: the same pipelines as the YAML config, checked the same way.
//!
//! Settings that belong to a source (`schema`, `out_of_orderness_ms`, ...) apply to the source
//! added last; settings of a window (`allowed_lateness_ms`, `aggregate`) to the window added
//! last. Mistakes are collected and reported together by [`PipelineBuilder::build`].

use std::path::PathBuf;

use dataflow_event::json::DecoderConfig;
use dataflow_event::Schema;
use dataflow_window::WindowKind;

use crate::config::parse_aggregate;
use crate::plan::plan;
use crate::runtime::Pipeline;
use crate::spec::{
    AggregateSpec, CheckpointSpec, ExprSpec, MapSpec, PipelineSpec, Place, Problem, RateLimitSpec,
    RuntimeSpec, SinkSpec, SourceKind, SourceSpec, StepSpec, TimeDomain, WatermarkSpec, WindowSpec,
};
use crate::{PipelineError, Result};
use dataflow_connectors::generator::GeneratorConfig;

/// Builds a [`Pipeline`] step by step.
#[derive(Debug)]
pub struct PipelineBuilder {
    spec: PipelineSpec,
    problems: Vec<Problem>,
}

impl PipelineBuilder {
    /// A pipeline called `name`, with no source, step or sink yet. Dead letters go to
    /// `dead-letters.jsonl` in the working directory unless [`Self::dead_letters`] says otherwise.
    pub fn new(name: impl Into<String>) -> PipelineBuilder {
        PipelineBuilder {
            spec: PipelineSpec {
                name: name.into(),
                sources: Vec::new(),
                steps: Vec::new(),
                joins: false,
                sinks: Vec::new(),
                dead_letters: SinkSpec::file("dead-letters.jsonl"),
                late_events: None,
                timed_out: None,
                runtime: RuntimeSpec::default(),
                checkpoint: None,
                state: Default::default(),
                api: None,
            },
            problems: Vec::new(),
        }
    }

    /// Adds a source.
    pub fn source(mut self, source: SourceSpec) -> Self {
        self.spec.sources.push(source);
        self
    }

    /// Adds a JSON Lines file source with the default field names (`timestamp`, `type`, `id`).
    pub fn file_source(self, name: &str, path: impl Into<PathBuf>) -> Self {
        let index = self.spec.sources.len();
        self.source(SourceSpec {
            name: name.into(),
            kind: SourceKind::File {
                paths: vec![path.into()],
                follow: false,
            },
            decoder: DecoderConfig::default(),
            watermark: WatermarkSpec::default(),
            rate_limit: None,
            place: Place::path(format!("sources[{index}]")),
        })
    }

    /// Adds a generator source.
    pub fn generator_source(self, name: &str, config: GeneratorConfig) -> Self {
        let index = self.spec.sources.len();
        self.source(SourceSpec {
            name: name.into(),
            kind: SourceKind::Generator { config, rate: None },
            decoder: DecoderConfig::default(),
            watermark: WatermarkSpec::default(),
            rate_limit: None,
            place: Place::path(format!("sources[{index}]")),
        })
    }

    fn last_source(&mut self, setting: &str) -> Option<&mut SourceSpec> {
        if self.spec.sources.is_empty() {
            self.problems.push(Problem {
                place: Place::path(setting),
                message: format!("`{setting}` needs a source added before it"),
            });
        }
        self.spec.sources.last_mut()
    }

    /// Declares the payload schema of the last source.
    pub fn schema(mut self, schema: Schema) -> Self {
        if let Some(source) = self.last_source("schema") {
            source.decoder.schema = Some(schema);
        }
        self
    }

    /// Sets the decoder of the last source (field names and schema).
    pub fn decoder(mut self, decoder: DecoderConfig) -> Self {
        if let Some(source) = self.last_source("decoder") {
            source.decoder = decoder;
        }
        self
    }

    /// Sets the bounded out-of-orderness of the last source's watermark.
    pub fn out_of_orderness_ms(mut self, millis: i64) -> Self {
        if let Some(source) = self.last_source("out_of_orderness") {
            source.watermark.out_of_orderness = millis;
        }
        self
    }

    /// Updates the last source's watermark every `events` events instead of once per batch.
    pub fn watermark_every(mut self, events: usize) -> Self {
        if let Some(source) = self.last_source("watermark_every") {
            source.watermark.every = Some(events.max(1));
        }
        self
    }

    /// Sets after how long without events the last source stops holding the watermark back.
    pub fn idle_timeout_ms(mut self, millis: i64) -> Self {
        if let Some(source) = self.last_source("idle_timeout") {
            source.watermark.idle_timeout = Some(millis);
        }
        self
    }

    /// Limits the rate at which the last source sends events (see [`dataflow_connectors::ratelimit`]).
    pub fn rate_limit(mut self, rate_limit: RateLimitSpec) -> Self {
        if let Some(source) = self.last_source("rate_limit") {
            source.rate_limit = Some(rate_limit);
        }
        self
    }

    fn step_path(&self, kind: &str) -> String {
        format!("steps[{}].{kind}", self.spec.steps.len())
    }

    /// Keeps the events for which the CEL `predicate` is true.
    pub fn filter(mut self, predicate: &str) -> Self {
        let path = self.step_path("filter");
        self.spec
            .steps
            .push(StepSpec::Filter(ExprSpec::new(predicate, path)));
        self
    }

    /// Computes a payload field from a CEL expression (consecutive calls build one map step).
    pub fn map_field(mut self, name: &str, expression: &str) -> Self {
        let path = self.step_path("map");
        let expr = ExprSpec::new(expression, format!("{path}.fields.{name}"));
        match self.spec.steps.last_mut() {
            Some(StepSpec::Map(map)) => map.fields.push((name.into(), expr)),
            _ => self.spec.steps.push(StepSpec::Map(MapSpec {
                fields: vec![(name.into(), expr)],
                place: Place::path(path),
                ..MapSpec::default()
            })),
        }
        self
    }

    /// Adds a map step.
    pub fn map(mut self, map: MapSpec) -> Self {
        self.spec.steps.push(StepSpec::Map(map));
        self
    }

    /// Keys events by a CEL expression.
    pub fn key_by(mut self, key: &str) -> Self {
        let path = self.step_path("key_by");
        self.spec
            .steps
            .push(StepSpec::KeyBy(ExprSpec::new(key, path)));
        self
    }

    fn window(mut self, kind: WindowKind) -> Self {
        let path = self.step_path("window");
        self.spec.steps.push(StepSpec::Window(WindowSpec {
            kind,
            time: TimeDomain::Event,
            allowed_lateness: 0,
            aggregates: Vec::new(),
            place: Place::path(path),
        }));
        self
    }

    /// Adds tumbling event-time windows of `size` milliseconds.
    pub fn tumbling_ms(self, size: i64) -> Self {
        self.window(WindowKind::Tumbling { size })
    }

    /// Adds sliding event-time windows of `size` milliseconds every `slide` milliseconds.
    pub fn sliding_ms(self, size: i64, slide: i64) -> Self {
        self.window(WindowKind::Sliding { size, slide })
    }

    /// Adds session windows closed by `gap` milliseconds without events.
    pub fn session_ms(self, gap: i64) -> Self {
        self.window(WindowKind::Session { gap })
    }

    fn last_window(&mut self, setting: &str) -> Option<&mut WindowSpec> {
        match self.spec.steps.last_mut() {
            Some(StepSpec::Window(window)) => Some(window),
            _ => {
                self.problems.push(Problem {
                    place: Place::path(setting),
                    message: format!("`{setting}` needs a window step right before it"),
                });
                None
            }
        }
    }

    /// Makes the last window follow processing time instead of event time.
    pub fn processing_time(mut self) -> Self {
        if let Some(window) = self.last_window("processing_time") {
            window.time = TimeDomain::Processing;
        }
        self
    }

    /// Lets the last window accept late events for `millis` after it fired.
    pub fn allowed_lateness_ms(mut self, millis: i64) -> Self {
        if let Some(window) = self.last_window("allowed_lateness") {
            window.allowed_lateness = millis;
        }
        self
    }

    /// Adds an aggregate to the last window: `count`, `sum(price)`, `count_by(user_id)`, ...
    pub fn aggregate(mut self, name: &str, function: &str) -> Self {
        let parsed = parse_aggregate(function);
        let Some(window) = self.last_window("aggregate") else {
            return self;
        };
        let path = format!("{}.aggregates.{name}", window.place.path);
        match parsed {
            Ok((kind, input)) => window.aggregates.push(AggregateSpec {
                name: name.into(),
                kind,
                input: input.map(|source| ExprSpec::new(source, path)),
            }),
            Err(message) => self.problems.push(Problem {
                place: Place::path(path),
                message,
            }),
        }
        self
    }

    /// Adds a result sink.
    pub fn sink(mut self, sink: SinkSpec) -> Self {
        self.spec.sinks.push(sink);
        self
    }

    /// Sets the dead-letter sink.
    pub fn dead_letters(mut self, sink: SinkSpec) -> Self {
        self.spec.dead_letters = sink;
        self
    }

    /// Sends events beyond the allowed lateness to `sink` instead of the dead letters.
    pub fn late_events(mut self, sink: SinkSpec) -> Self {
        self.spec.late_events = Some(sink);
        self
    }

    /// Takes consistent checkpoints as `checkpoint` says.
    pub fn checkpoint(mut self, checkpoint: CheckpointSpec) -> Self {
        self.spec.checkpoint = Some(checkpoint);
        self
    }

    /// Keeps keyed operator state where `state` says (in memory by default).
    pub fn state(mut self, state: crate::spec::StateSpec) -> Self {
        self.spec.state = state;
        self
    }

    /// Runs the keyed part of the pipeline on `workers` workers (`parallelism`; 1 by default).
    pub fn parallelism(mut self, workers: usize) -> Self {
        self.spec.runtime.parallelism = workers.max(1);
        self
    }

    /// Sets the runtime settings, all of them: call [`PipelineBuilder::parallelism`] after it.
    pub fn runtime(mut self, runtime: RuntimeSpec) -> Self {
        self.spec.runtime = runtime;
        self
    }

    /// The specification built so far, or every problem found.
    pub fn spec(mut self) -> Result<PipelineSpec> {
        if self.spec.sources.is_empty() {
            self.problems.push(Problem {
                place: Place::path("sources"),
                message: "a pipeline needs at least one source".into(),
            });
        }
        if self.spec.sinks.is_empty() {
            self.problems.push(Problem {
                place: Place::path("sinks"),
                message: "a pipeline needs at least one sink".into(),
            });
        }
        if self.problems.is_empty() {
            Ok(self.spec)
        } else {
            Err(PipelineError::InvalidConfig(self.problems))
        }
    }

    /// Checks the pipeline and compiles it, ready to run.
    pub fn build(self) -> Result<Pipeline> {
        Ok(Pipeline::new(plan(self.spec()?)?))
    }
}
