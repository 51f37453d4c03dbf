//! Compiles a [`PipelineSpec`] into operators, checking every expression against the layout of
//! the stream it runs on. Every problem is collected with its place.

use std::path::PathBuf;
use std::sync::Arc;

use dataflow_event::json::Decoder;
use dataflow_event::{FieldType, Layout};
use dataflow_window::WindowConfig;

use crate::spec::{
    ApiSpec, CheckpointSpec, ExprSpec, MapSpec, PipelineSpec, Place, Problem, RuntimeSpec,
    SinkSpec, SourceSpec, StateSpec, StepSpec, WindowSpec,
};
use crate::{PipelineError, Result};
use dataflow_expr::Expr;
use dataflow_operators::OperatorNode;
use dataflow_operators::{Filter, KeyBy, Map, WindowAggregate};

/// A source ready to open: its spec and the decoder for its records.
#[derive(Debug)]
pub struct SourcePlan {
    /// What it reads.
    pub spec: SourceSpec,
    /// How its records are decoded (also gives the payload layout).
    pub decoder: Arc<Decoder>,
}

/// Builds a fresh copy of a plan's operators, from its spec: parallel workers each get their
/// own instances this way (operators are not cloned, so any operator can be run in parallel).
#[derive(Clone)]
pub struct OperatorFactory(Arc<dyn Fn() -> Vec<OperatorNode> + Send + Sync>);

impl OperatorFactory {
    /// A factory whose `build` calls `build`: for plans whose operators are not all of the spec.
    pub fn new(build: impl Fn() -> Vec<OperatorNode> + Send + Sync + 'static) -> OperatorFactory {
        OperatorFactory(Arc::new(build))
    }

    /// New instances of every operator of the plan, in order, with empty state.
    pub fn build(&self) -> Vec<OperatorNode> {
        (self.0)()
    }
}

impl std::fmt::Debug for OperatorFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorFactory")
    }
}

/// A checked pipeline: every expression compiled, every layout known. Nothing has been opened.
#[derive(Debug)]
pub struct Plan {
    /// The pipeline's name.
    pub name: String,
    /// The sources, merged into one stream.
    pub sources: Vec<SourcePlan>,
    /// The layout of the sources' events.
    pub input_layout: Layout,
    /// The operators in order.
    pub operators: Vec<OperatorNode>,
    /// Builds more instances of `operators` (for parallel workers).
    pub operator_factory: OperatorFactory,
    /// The layout of the events that reach the sinks.
    pub output_layout: Layout,
    /// Whether the output events are window results (they carry their time in their fields).
    pub output_is_windowed: bool,
    /// Result sinks.
    pub sinks: Vec<SinkSpec>,
    /// The dead-letter sink.
    pub dead_letters: SinkSpec,
    /// The late-events sink; `None` (or the dead-letter sink itself) sends late events to the
    /// dead letters.
    pub late_events: Option<SinkSpec>,
    /// Runtime settings.
    pub runtime: RuntimeSpec,
    /// Periodic checkpoints, if any.
    pub checkpoint: Option<CheckpointSpec>,
    /// Where keyed operator state is kept.
    pub state: StateSpec,
    /// The HTTP API to serve, if any.
    pub api: Option<ApiSpec>,
}

impl Plan {
    /// A fingerprint of the pipeline's shape: its sources and its operators, by name and kind.
    /// A checkpoint of another shape does not restore without being told to.
    pub fn fingerprint(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for source in &self.sources {
            parts.push(format!("source {}", source.spec.name));
        }
        for node in &self.operators {
            parts.push(format!("{} {}", node.info.kind, node.info.name));
        }
        dataflow_checkpoint::fingerprint(parts.iter().map(String::as_str))
    }
}

/// Checks and compiles `spec`.
pub fn plan(spec: PipelineSpec) -> Result<Plan> {
    let mut problems = Vec::new();
    let plan = plan_collecting(spec, &mut problems);
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(PipelineError::InvalidConfig(problems))
    }
}

/// Compiles `spec` as far as it can, adding every problem to `problems`. The plan is only
/// usable when no problem was added.
pub(crate) fn plan_collecting(spec: PipelineSpec, problems: &mut Vec<Problem>) -> Plan {
    let operator_factory = operator_factory(&spec);
    let skip_metadata = skips_metadata(&spec.steps);
    let (sources, input_layout) = plan_sources(spec.sources, skip_metadata, problems);
    let mut steps = Steps::new(input_layout.clone());
    for step in spec.steps {
        match step {
            StepSpec::Filter(expr) => steps.filter(expr, problems),
            StepSpec::KeyBy(expr) => steps.key_by(expr, problems),
            StepSpec::Map(map) => steps.map(map, problems),
            StepSpec::Window(window) => steps.window(window, &spec.state, problems),
        }
    }
    Plan {
        name: spec.name,
        sources,
        input_layout,
        operators: steps.operators,
        operator_factory,
        output_layout: steps.layout,
        output_is_windowed: steps.windowed,
        sinks: spec.sinks,
        dead_letters: spec.dead_letters,
        late_events: spec.late_events,
        runtime: spec.runtime,
        checkpoint: spec.checkpoint,
        state: spec.state,
        api: spec.api,
    }
}

/// Builds the operators of `spec` again, for parallel workers.
fn operator_factory(spec: &PipelineSpec) -> OperatorFactory {
    let factory_spec = spec.clone();
    OperatorFactory(Arc::new(move || {
        // The spec planned without problems once, so it plans the same operators again.
        plan_collecting(factory_spec.clone(), &mut Vec::new()).operators
    }))
}

/// Whether the sources can skip reading an event's type and id, which costs two allocations
/// per record: they can when nothing can see them, results being window results (which carry
/// neither) and no expression mentioning `event`. Dead letters of such a pipeline lack them too.
fn skips_metadata(steps: &[StepSpec]) -> bool {
    let has_window = steps.iter().any(|step| matches!(step, StepSpec::Window(_)));
    let mentions_event = steps
        .iter()
        .any(|step| step_sources(step).any(|source| source.contains("event")));
    has_window && !mentions_event
}

/// Plans every source with its decoder, checking its rate limit and generator settings, and
/// that all share one schema; returns them and the layout of their events.
fn plan_sources(
    specs: Vec<SourceSpec>,
    skip_metadata: bool,
    problems: &mut Vec<Problem>,
) -> (Vec<SourcePlan>, Layout) {
    let mut sources = Vec::new();
    let mut input_layout: Option<(Layout, String)> = None;
    for mut source in specs {
        if skip_metadata {
            source.decoder.type_field = None;
            source.decoder.id_field = None;
        }
        if let Some(rate_limit) = &source.rate_limit {
            for message in rate_limit.problems() {
                problems.push(Problem {
                    place: Place {
                        path: format!("{}.rate_limit", source.place.path),
                        ..source.place.clone()
                    },
                    message,
                });
            }
        }
        let decoder = source_decoder(&source, problems);
        let layout = decoder.layout().clone();
        match &input_layout {
            None => input_layout = Some((layout, source.name.clone())),
            Some((first, first_name)) if *first != layout => problems.push(Problem {
                place: source.place.clone(),
                message: format!(
                    "source `{}` has another schema than source `{first_name}`: merged sources must share one schema",
                    source.name
                ),
            }),
            Some(_) => {}
        }
        sources.push(SourcePlan {
            spec: source,
            decoder: Arc::new(decoder),
        });
    }
    let input_layout = input_layout
        .map(|(layout, _)| layout)
        .unwrap_or(Layout::Object);
    (sources, input_layout)
}

/// The decoder of `source`'s records; its connector checks its settings as a whole too.
fn source_decoder(source: &SourceSpec, problems: &mut Vec<Problem>) -> Decoder {
    if let Err(error) = source.kind.check() {
        problems.push(Problem {
            place: source.place.clone(),
            message: error.to_string(),
        });
    }
    Decoder::new(source.kind.decoder_config(&source.decoder))
}

/// Compiles `expr` against `layout`, or adds why not to `problems`.
fn compile(expr: &ExprSpec, layout: &Layout, problems: &mut Vec<Problem>) -> Option<Expr> {
    match Expr::compile(&expr.source, layout) {
        Ok(compiled) => Some(compiled),
        Err(error) => {
            problems.push(Problem {
                place: expr.place.clone(),
                message: error.to_string(),
            });
            None
        }
    }
}

/// The steps planned so far, and the stream after them.
struct Steps {
    /// The layout of the events after the last step.
    layout: Layout,
    operators: Vec<OperatorNode>,
    /// The type of the key set by the last `key_by` (`Some(None)`: of unknown type), `None`
    /// when the stream is not keyed.
    key_type: Option<Option<FieldType>>,
    /// Whether a window ran: the events are window results.
    windowed: bool,
}

impl Steps {
    fn new(layout: Layout) -> Steps {
        Steps {
            layout,
            operators: Vec::new(),
            key_type: None,
            windowed: false,
        }
    }

    /// A filter, whose predicate must give a bool.
    fn filter(&mut self, expr: ExprSpec, problems: &mut Vec<Problem>) {
        let name: Arc<str> = Arc::from(expr.place.path.as_str());
        let Some(predicate) = compile(&expr, &self.layout, problems) else {
            return;
        };
        if let Some(ty) = predicate.output_type() {
            if ty != FieldType::Bool {
                problems.push(Problem {
                    place: expr.place.clone(),
                    message: format!("a filter needs a bool expression, this one gives {ty}"),
                });
            }
        }
        self.operators.push(OperatorNode::new(
            name.clone(),
            Filter::new(name, predicate, self.layout.clone()),
        ));
    }

    /// A key_by: the stream is keyed from here on.
    fn key_by(&mut self, expr: ExprSpec, problems: &mut Vec<Problem>) {
        let name: Arc<str> = Arc::from(expr.place.path.as_str());
        if let Some(key) = compile(&expr, &self.layout, problems) {
            self.key_type = Some(key.output_type());
            self.operators.push(OperatorNode::new(
                name.clone(),
                KeyBy::new(name, key, self.layout.clone()),
            ));
        }
    }

    /// A map: the stream has its output layout from here on.
    fn map(&mut self, map: MapSpec, problems: &mut Vec<Problem>) {
        let name: Arc<str> = Arc::from(map.place.path.as_str());
        let computed: Vec<(String, Expr)> = map
            .fields
            .iter()
            .filter_map(|(field, expr)| {
                compile(expr, &self.layout, problems).map(|e| (field.clone(), e))
            })
            .collect();
        if computed.len() != map.fields.len() {
            return;
        }
        match Map::new(
            name.clone(),
            computed,
            map.rename,
            map.keep,
            map.drop,
            self.layout.clone(),
        ) {
            Ok((operator, output)) => {
                self.layout = output;
                self.operators.push(OperatorNode::new(name, operator));
            }
            Err(message) => problems.push(Problem {
                place: map.place.clone(),
                message,
            }),
        }
    }

    /// A window over the stream (keyed if a key_by came before): the stream is its results
    /// from here on, not keyed. With sled state, it keeps its state under the state directory.
    fn window(&mut self, window: WindowSpec, state: &StateSpec, problems: &mut Vec<Problem>) {
        let name: Arc<str> = Arc::from(window.place.path.as_str());
        let mut aggregates = Vec::new();
        let mut failed = false;
        for aggregate in &window.aggregates {
            let input = match &aggregate.input {
                Some(expr) => match compile(expr, &self.layout, problems) {
                    Some(compiled) => Some(compiled),
                    None => {
                        failed = true;
                        continue;
                    }
                },
                None => None,
            };
            aggregates.push((aggregate.name.clone(), aggregate.kind, input));
        }
        let config = WindowConfig {
            kind: window.kind,
            allowed_lateness: window.allowed_lateness,
            aggregates: window.aggregates.iter().map(|a| a.kind).collect(),
        };
        if let Err(error) = config.validate() {
            problems.push(Problem {
                place: window.place.clone(),
                message: error.to_string(),
            });
            return;
        }
        if failed {
            return;
        }
        let keyed = self.key_type.is_some();
        match WindowAggregate::new(
            name.clone(),
            config,
            aggregates,
            window.time,
            keyed,
            self.key_type.flatten(),
            self.layout.clone(),
        ) {
            Ok((mut operator, output)) => {
                if let Some((dir, cache_bytes)) = state_dir(state, &name) {
                    operator.keep_state_in(dir, cache_bytes);
                }
                self.layout = output;
                self.windowed = true;
                self.key_type = None;
                self.operators.push(OperatorNode::new(name, operator));
            }
            Err(message) => problems.push(Problem {
                place: window.place.clone(),
                message,
            }),
        }
    }
}

/// Where `operator` keeps its state: a directory of its own under the state directory, with
/// sled state; `None` in memory.
fn state_dir(state: &StateSpec, operator: &str) -> Option<(PathBuf, u64)> {
    match state {
        StateSpec::Sled { dir, cache_bytes } => {
            Some((dir.join(state_dir_name(operator)), *cache_bytes))
        }
        _ => None,
    }
}

/// The CEL sources of a step's expressions.
fn step_sources(step: &StepSpec) -> Box<dyn Iterator<Item = &str> + '_> {
    match step {
        StepSpec::Filter(expr) | StepSpec::KeyBy(expr) => {
            Box::new(std::iter::once(expr.source.as_str()))
        }
        StepSpec::Map(map) => Box::new(map.fields.iter().map(|(_, expr)| expr.source.as_str())),
        StepSpec::Window(window) => Box::new(
            window
                .aggregates
                .iter()
                .filter_map(|a| a.input.as_ref())
                .map(|expr| expr.source.as_str()),
        ),
    }
}

/// Formats problems one per line, as `processor check` prints them.
pub fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| problem.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The directory of an operator's state under the state directory: its name with anything but
/// letters, digits, `.`, `-` and `_` replaced, so `steps[1].window` keeps its state in
/// `steps_1_.window`.
fn state_dir_name(operator: &str) -> String {
    operator
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
