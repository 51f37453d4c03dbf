//! Compiles a [`PipelineSpec`] into operators, checking every expression against the layout of
//! the stream it runs on. Every problem is collected with its place.

use std::sync::Arc;

use dataflow_event::json::Decoder;
use dataflow_event::{FieldType, Layout};
use dataflow_window::WindowConfig;

use crate::spec::{
    ApiSpec, CheckpointSpec, ExprSpec, PipelineSpec, Place, Problem, RuntimeSpec, SinkSpec,
    SourceKind, SourceSpec, StateSpec, StepSpec,
};
use crate::{PipelineError, Result};
use dataflow_connectors::generator::Generator;
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
    /// The late-events sink, if not the dead letters.
    pub late_events: Option<SinkSpec>,
    /// Runtime settings.
    pub runtime: RuntimeSpec,
    /// Periodic checkpoints, if any.
    pub checkpoint: Option<CheckpointSpec>,
    /// The HTTP API to serve, if any.
    /// Where keyed operator state is kept.
    pub state: StateSpec,
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
    let factory_spec = spec.clone();
    let operator_factory = OperatorFactory(Arc::new(move || {
        // The spec planned without problems once, so it plans the same operators again.
        plan_collecting(factory_spec.clone(), &mut Vec::new()).operators
    }));
    let mut sources = Vec::new();
    let mut input_layout: Option<(Layout, String)> = None;
    // Reading an event's type and id costs two allocations per record. They are skipped when
    // nothing can see them: results are window results (which carry neither) and no
    // expression mentions `event`. Dead letters of such a pipeline lack them too.
    let has_window = spec
        .steps
        .iter()
        .any(|step| matches!(step, StepSpec::Window(_)));
    let mentions_event = spec
        .steps
        .iter()
        .any(|step| step_sources(step).any(|source| source.contains("event")));
    let skip_metadata = has_window && !mentions_event;
    for mut source in spec.sources {
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
        let decoder = match &source.kind {
            SourceKind::Generator { config, .. } => {
                if let Err(error) = Generator::new(config.clone()) {
                    problems.push(Problem {
                        place: source.place.clone(),
                        message: error.to_string(),
                    });
                }
                // Generated events are rows of the profile's schema, stamped with event times.
                let mut decoder = source.decoder.clone();
                decoder.schema = Some(Generator::schema(config.profile));
                Decoder::new(decoder)
            }
            _ => Decoder::new(source.decoder.clone()),
        };
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

    let mut layout = input_layout.clone();
    let mut operators = Vec::new();
    let mut key_type: Option<Option<FieldType>> = None;
    let mut windowed = false;
    let compile = |expr: &ExprSpec, layout: &Layout, problems: &mut Vec<Problem>| -> Option<Expr> {
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
    };
    for step in spec.steps {
        match step {
            StepSpec::Filter(expr) => {
                let name: Arc<str> = Arc::from(expr.place.path.as_str());
                if let Some(predicate) = compile(&expr, &layout, problems) {
                    if let Some(ty) = predicate.output_type() {
                        if ty != FieldType::Bool {
                            problems.push(Problem {
                                place: expr.place.clone(),
                                message: format!(
                                    "a filter needs a bool expression, this one gives {ty}"
                                ),
                            });
                        }
                    }
                    operators.push(OperatorNode::new(
                        name.clone(),
                        Filter::new(name, predicate, layout.clone()),
                    ));
                }
            }
            StepSpec::KeyBy(expr) => {
                let name: Arc<str> = Arc::from(expr.place.path.as_str());
                if let Some(key) = compile(&expr, &layout, problems) {
                    key_type = Some(key.output_type());
                    operators.push(OperatorNode::new(
                        name.clone(),
                        KeyBy::new(name, key, layout.clone()),
                    ));
                }
            }
            StepSpec::Map(map) => {
                let name: Arc<str> = Arc::from(map.place.path.as_str());
                let computed: Vec<(String, Expr)> = map
                    .fields
                    .iter()
                    .filter_map(|(field, expr)| {
                        compile(expr, &layout, problems).map(|e| (field.clone(), e))
                    })
                    .collect();
                if computed.len() != map.fields.len() {
                    continue;
                }
                match Map::new(
                    name.clone(),
                    computed,
                    map.rename,
                    map.keep,
                    map.drop,
                    layout.clone(),
                ) {
                    Ok((operator, output)) => {
                        layout = output;
                        operators.push(OperatorNode::new(name, operator));
                    }
                    Err(message) => problems.push(Problem {
                        place: map.place.clone(),
                        message,
                    }),
                }
            }
            StepSpec::Window(window) => {
                let name: Arc<str> = Arc::from(window.place.path.as_str());
                let mut aggregates = Vec::new();
                let mut failed = false;
                for aggregate in &window.aggregates {
                    let input = match &aggregate.input {
                        Some(expr) => match compile(expr, &layout, problems) {
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
                    continue;
                }
                if failed {
                    continue;
                }
                let keyed = key_type.is_some();
                match WindowAggregate::new(
                    name.clone(),
                    config,
                    aggregates,
                    window.time,
                    keyed,
                    key_type.flatten(),
                    layout.clone(),
                ) {
                    Ok((mut operator, output)) => {
                        if let StateSpec::Sled { dir } = &spec.state {
                            operator.keep_state_in(dir.join(state_dir_name(&name)));
                        }
                        layout = output;
                        windowed = true;
                        key_type = None;
                        operators.push(OperatorNode::new(name, operator));
                    }
                    Err(message) => problems.push(Problem {
                        place: window.place.clone(),
                        message,
                    }),
                }
            }
        }
    }
    Plan {
        name: spec.name,
        sources,
        input_layout,
        operators,
        operator_factory,
        output_layout: layout,
        output_is_windowed: windowed,
        sinks: spec.sinks,
        dead_letters: spec.dead_letters,
        late_events: spec.late_events,
        runtime: spec.runtime,
        checkpoint: spec.checkpoint,
        state: spec.state,
        api: spec.api,
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
