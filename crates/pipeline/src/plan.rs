//! Compiles a [`PipelineSpec`] into operators, checking every expression against the layout of
//! the stream it runs on. Every problem is collected with its place.

use std::path::PathBuf;
use std::sync::Arc;

use dataflow_connectors::ResultFormat;
use dataflow_event::json::Decoder;
use dataflow_event::{FieldType, Layout};
use dataflow_window::WindowConfig;

use crate::spec::{
    AlertSpec, ApiSpec, CheckpointSpec, ExprSpec, JoinInputSpec, JoinKindSpec, JoinSpec, MapSpec,
    OverSpec, PatternSpec, PipelineSpec, Place, Problem, RuntimeSpec, SinkSpec, SourceSpec,
    StateSpec, StepSpec, WindowSpec,
};
use crate::{PipelineError, Result};
use dataflow_expr::Expr;
use dataflow_operators::join::{
    Branches, IntervalJoin, Join, JoinInputs, Lane, Logic, LookupJoin, Side, WindowJoin,
};
use dataflow_operators::pattern::{self as cep, PatternDef, SelectDef, StageDef};
use dataflow_operators::OperatorNode;
use dataflow_operators::{Alert, Filter, KeyBy, Map, Over, Pattern, WindowAggregate};

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
    /// The sink of timed-out partial matches; `None` (or the dead-letter sink itself) sends
    /// them to the dead letters.
    pub timed_out: Option<SinkSpec>,
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
    problems.extend(crate::scale_out::problems(&spec));
    let operator_factory = operator_factory(&spec);
    let skip_metadata = skips_metadata(&spec.steps);
    // A join whose inputs each name a source reads each with its own schema; otherwise the
    // sources merge into one stream of one schema.
    let one_schema = !spec.joins;
    let (sources, input_layout) = plan_sources(spec.sources, skip_metadata, one_schema, problems);
    let mut steps = Steps::new(input_layout.clone(), spec.runtime.batch_size);
    let source_names: Vec<(&str, &Layout)> = sources
        .iter()
        .map(|source| (source.spec.name.as_str(), source.decoder.layout()))
        .collect();
    for (index, step) in spec.steps.into_iter().enumerate() {
        match step {
            StepSpec::Join(join) if index > 0 => Steps::refuse(
                problems,
                &join.place,
                "a join must be the first step (and a pipeline has one): the steps before it go in the `branches` it joins",
            ),
            StepSpec::Join(join) => steps.join(*join, &source_names, &spec.state, problems),
            StepSpec::Filter(expr) => steps.filter(expr, problems),
            StepSpec::KeyBy(expr) => steps.key_by(expr, problems),
            StepSpec::Map(map) => steps.map(map, problems),
            StepSpec::Window(window) => steps.window(window, &spec.state, problems),
            StepSpec::Pattern(pattern) => steps.pattern(pattern, &spec.state, problems),
            StepSpec::Alert(alert) => steps.alert(alert, &spec.state, problems),
            StepSpec::Over(over) => steps.over(over, &spec.state, problems),
        }
    }
    // Each sink's settings against the results it gets (a field its mapping or partitioning
    // names that they do not have...), and against the sinks before it.
    let results = ResultFormat {
        layout: steps.layout.clone(),
        write_time: !steps.windowed,
        fields: sources
            .first()
            .map(|source| source.spec.decoder.clone())
            .unwrap_or_default(),
        checkpoints: spec.checkpoint.is_some(),
        checkpoint_dir: spec.checkpoint.as_ref().map(|c| c.dir.clone()),
    };
    for (index, sink) in spec.sinks.iter().enumerate() {
        problems.extend(sink.kind.check_results(&results, &spec.sinks[..index]));
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
        timed_out: spec.timed_out,
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
    one_schema: bool,
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
            Some((first, first_name)) if one_schema && *first != layout => problems.push(Problem {
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
    /// How many results a window hands on at once: a batch.
    batch_size: usize,
}

impl Steps {
    fn new(layout: Layout, batch_size: usize) -> Steps {
        Steps {
            layout,
            operators: Vec::new(),
            key_type: None,
            windowed: false,
            batch_size,
        }
    }

    /// A filter, whose predicate must give a bool.
    fn filter(&mut self, expr: ExprSpec, problems: &mut Vec<Problem>) {
        let name: Arc<str> = Arc::from(expr.place.path.as_str());
        if let Some(filter) = self.compile_filter(&expr, problems) {
            self.operators.push(OperatorNode::new(name, filter));
        }
    }

    /// The filter of `expr` over the stream here, whose predicate must give a bool.
    fn compile_filter(&self, expr: &ExprSpec, problems: &mut Vec<Problem>) -> Option<Filter> {
        let name: Arc<str> = Arc::from(expr.place.path.as_str());
        let predicate = compile(expr, &self.layout, problems)?;
        if let Some(ty) = predicate.output_type() {
            if ty != FieldType::Bool {
                problems.push(Problem {
                    place: expr.place.clone(),
                    message: format!("a filter needs a bool expression, this one gives {ty}"),
                });
            }
        }
        Some(Filter::new(name, predicate, self.layout.clone()))
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
                operator.limit_emission(self.batch_size);
                if let Some((dir, cache_bytes, cache_keys)) = state_dir(state, &name) {
                    operator.keep_state_in(dir, cache_bytes, cache_keys);
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

/// Whether `name` can be written as a bare name in CEL: a letter or `_`, then letters,
/// digits and `_`.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Steps {
    /// A problem at `place`.
    fn refuse(problems: &mut Vec<Problem>, place: &Place, message: impl Into<String>) {
        problems.push(Problem {
            place: place.clone(),
            message: message.into(),
        });
    }

    /// A pattern step over the keyed stream: the stream is its results from here on, keyed
    /// as before. With sled state, it keeps its partial matches under the state directory.
    fn pattern(&mut self, pattern: PatternSpec, state: &StateSpec, problems: &mut Vec<Problem>) {
        let name: Arc<str> = Arc::from(pattern.place.path.as_str());
        let before = problems.len();
        if self.key_type.is_none() {
            Self::refuse(
                problems,
                &pattern.place,
                "a pattern step needs a `key_by` before it: patterns are matched per key",
            );
        }
        let positive_names: Vec<String> = pattern
            .stages
            .iter()
            .filter(|stage| !stage.negative)
            .map(|stage| stage.name.clone())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for stage in &pattern.stages {
            if !is_identifier(&stage.name) || stage.name == "payload" || stage.name == "event" {
                Self::refuse(
                    problems,
                    &stage.place,
                    format!(
                        "stage name `{}` must be a CEL identifier other than `payload` and `event`",
                        stage.name
                    ),
                );
            }
            if !seen.insert(stage.name.clone()) {
                Self::refuse(
                    problems,
                    &stage.place,
                    format!("stage name `{}` is used twice", stage.name),
                );
            }
        }
        // A name used twice is reported above (and the pattern is not built): for the checks
        // of the conditions the layout binds it once, in stage order.
        let mut distinct_names: Vec<String> = Vec::new();
        for name in &positive_names {
            if !distinct_names.contains(name) {
                distinct_names.push(name.clone());
            }
        }
        let bound_layout = match cep::binding_layout(&self.layout, &distinct_names) {
            Ok(layout) => Some(layout),
            Err(message) => {
                Self::refuse(problems, &pattern.place, message);
                None
            }
        };
        let mut stages = Vec::new();
        let mut earlier: Vec<&str> = Vec::new();
        for stage in &pattern.stages {
            let Some(layout) = &bound_layout else { break };
            let Some(condition) = compile(&stage.condition, layout, problems) else {
                continue;
            };
            if let Some(ty) = condition.output_type() {
                if ty != FieldType::Bool {
                    Self::refuse(
                        problems,
                        &stage.condition.place,
                        format!("a stage condition needs a bool expression, this one gives {ty}"),
                    );
                }
            }
            let referred: Vec<String> = condition
                .payload_fields()
                .into_iter()
                .filter(|field| positive_names.contains(field))
                .collect();
            for field in &referred {
                if !earlier.contains(&field.as_str()) && !condition.reads_whole_payload() {
                    Self::refuse(
                        problems,
                        &stage.condition.place,
                        format!(
                            "the condition of stage `{}` refers to stage `{field}`, which does not come before it: a condition may use only earlier stages",
                            stage.name
                        ),
                    );
                }
            }
            let bound = !referred.is_empty() || condition.reads_whole_payload();
            let condition = if bound {
                condition
            } else {
                match compile(&stage.condition, &self.layout, problems) {
                    Some(plain) => plain,
                    None => continue,
                }
            };
            if !stage.negative {
                earlier.push(&stage.name);
            }
            stages.push(StageDef {
                name: stage.name.clone(),
                condition,
                bound,
                min: stage.min,
                max: stage.max,
                greedy: stage.greedy,
                strict: stage.strict,
                negative: stage.negative,
            });
        }
        for (index, message) in cep::shape_problems(&stages_for_shape(&pattern), pattern.within) {
            let place = index
                .and_then(|index| pattern.stages.get(index))
                .map_or(&pattern.place, |stage| &stage.place);
            Self::refuse(problems, place, message);
        }
        let mut select = Vec::new();
        for field in &pattern.select {
            let Some(stage) = pattern
                .stages
                .iter()
                .find(|stage| stage.name == field.stage)
            else {
                Self::refuse(
                    problems,
                    &field.place,
                    format!(
                        "field `{}` reads stage `{}`, which the pattern does not have",
                        field.name, field.stage
                    ),
                );
                continue;
            };
            if stage.negative {
                Self::refuse(
                    problems,
                    &field.place,
                    format!(
                        "field `{}` reads the negative stage `{}`, which takes no events",
                        field.name, field.stage
                    ),
                );
                continue;
            }
            let input = match &field.input {
                Some(expr) => match compile(expr, &self.layout, problems) {
                    Some(input) => Some(input),
                    None => continue,
                },
                None => None,
            };
            select.push(SelectDef {
                name: field.name.clone(),
                aggregate: field.aggregate,
                stage: field.stage.clone(),
                input,
            });
        }
        if problems.len() > before || stages.len() != pattern.stages.len() {
            return;
        }
        let def = match PatternDef::new(
            stages,
            pattern.within,
            pattern.after_match,
            select,
            self.layout.clone(),
        ) {
            Ok(def) => def,
            Err(message) => return Self::refuse(problems, &pattern.place, message),
        };
        match Pattern::new(name.clone(), def, self.key_type.flatten()) {
            Ok((mut operator, output)) => {
                if let Some((dir, cache_bytes, cache_keys)) = state_dir(state, &name) {
                    operator.keep_state_in(dir, cache_bytes, cache_keys);
                }
                self.layout = output;
                self.windowed = true;
                self.operators.push(OperatorNode::new(name, operator));
            }
            Err(message) => Self::refuse(problems, &pattern.place, message),
        }
    }

    /// An alert step over the keyed stream: the stream is its results from here on. With sled
    /// state, it keeps its state under the state directory.
    fn alert(&mut self, alert: AlertSpec, state: &StateSpec, problems: &mut Vec<Problem>) {
        let name: Arc<str> = Arc::from(alert.place.path.as_str());
        if self.key_type.is_none() {
            Self::refuse(
                problems,
                &alert.place,
                "an alert step needs a `key_by` before it: alerts hold per key",
            );
            return;
        }
        let Some(condition) = compile(&alert.condition, &self.layout, problems) else {
            return;
        };
        if let Some(ty) = condition.output_type() {
            if ty != FieldType::Bool {
                return Self::refuse(
                    problems,
                    &alert.condition.place,
                    format!("an alert condition needs a bool expression, this one gives {ty}"),
                );
            }
        }
        match Alert::new(
            name.clone(),
            condition,
            alert.rule,
            self.key_type.flatten(),
            self.layout.clone(),
        ) {
            Ok((mut operator, output)) => {
                if let Some((dir, cache_bytes, cache_keys)) = state_dir(state, &name) {
                    operator.keep_state_in(dir, cache_bytes, cache_keys);
                }
                self.layout = output;
                self.windowed = true;
                self.operators.push(OperatorNode::new(name, operator));
            }
            Err(message) => Self::refuse(problems, &alert.place, message),
        }
    }

    /// An over step over the keyed stream: each event goes on with aggregates over its key's
    /// last rows appended, still keyed. With sled state, it keeps its state under the state
    /// directory.
    fn over(&mut self, over: OverSpec, state: &StateSpec, problems: &mut Vec<Problem>) {
        let name: Arc<str> = Arc::from(over.place.path.as_str());
        if self.key_type.is_none() {
            Self::refuse(
                problems,
                &over.place,
                "an over step needs a `key_by` before it: it aggregates each key's last rows",
            );
            return;
        }
        let mut aggregates = Vec::new();
        let mut failed = false;
        for aggregate in &over.aggregates {
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
        if failed {
            return;
        }
        match Over::new(name.clone(), over.rows, aggregates, self.layout.clone()) {
            Ok((mut operator, output)) => {
                if let Some((dir, cache_bytes, cache_keys)) = state_dir(state, &name) {
                    operator.keep_state_in(dir, cache_bytes, cache_keys);
                }
                self.layout = output;
                self.operators.push(OperatorNode::new(name, operator));
            }
            Err(message) => Self::refuse(problems, &over.place, message),
        }
    }
}

impl Steps {
    /// One input of a join: its steps over the sources' events, its key, and for a lookup
    /// join's table its delete condition; `None` when something does not fit (reported).
    fn join_input(
        &self,
        input: &JoinInputSpec,
        side: Side,
        join_path: &str,
        source_names: &[(&str, &Layout)],
        problems: &mut Vec<Problem>,
    ) -> Option<(Lane, Option<FieldType>)> {
        let before = problems.len();
        // An input reading one source starts from that source's layout.
        let layout = input
            .source
            .as_ref()
            .and_then(|name| source_names.iter().find(|(source, _)| source == name))
            .map_or(&self.layout, |(_, layout)| *layout);
        if input.source.is_none()
            && source_names
                .iter()
                .any(|(_, source_layout)| *source_layout != &self.layout)
        {
            Self::refuse(
                problems,
                &input.place,
                format!(
                    "join input `{}` takes the events of every source, whose schemas differ: name one source with `from`",
                    input.name
                ),
            );
        }
        let mut branch = Steps::new(layout.clone(), self.batch_size);
        // A first filter runs apart, on the batch both inputs share (see `Lane::filter`).
        let (filter, steps) = match input.steps.split_first() {
            Some((StepSpec::Filter(expr), rest)) => (branch.compile_filter(expr, problems), rest),
            _ => (None, input.steps.as_slice()),
        };
        for step in steps {
            match step {
                StepSpec::Filter(expr) => branch.filter(expr.clone(), problems),
                StepSpec::Map(map) => branch.map(map.clone(), problems),
                other => Self::refuse(
                    problems,
                    other.place(),
                    format!(
                        "branch `{}` of the join can take `filter` and `map` steps only: the join's `key` keys it, and keyed or windowed steps go after the join",
                        input.name
                    ),
                ),
            }
        }
        if branch.layout.schema().is_none() {
            Self::refuse(
                problems,
                &input.place,
                format!(
                    "join input `{}` has no schema: a join needs the fields of both inputs (give its source a `format.schema`)",
                    input.name
                ),
            );
        }
        let key = compile(&input.key, &branch.layout, problems);
        let delete = input
            .delete
            .as_ref()
            .map(|delete| compile(delete, &branch.layout, problems));
        if let Some(Some(delete)) = &delete {
            if let Some(ty) = delete.output_type() {
                if ty != FieldType::Bool {
                    Self::refuse(
                        problems,
                        &input
                            .delete
                            .as_ref()
                            .map_or(&input.place, |d| &d.place)
                            .clone(),
                        format!(
                            "a `delete` condition needs a bool expression, this one gives {ty}"
                        ),
                    );
                }
            }
        }
        let sources = match &input.source {
            None => None,
            Some(name) => match source_names.iter().position(|(source, _)| source == name) {
                Some(index) => Some(vec![index]),
                None => {
                    let names: Vec<&str> = source_names.iter().map(|(name, _)| *name).collect();
                    Self::refuse(
                        problems,
                        &input.source_place,
                        format!(
                            "branch `{}` reads source `{name}`, which the pipeline does not have (its sources: {})",
                            input.name,
                            names.join(", ")
                        ),
                    );
                    None
                }
            },
        };
        if problems.len() > before {
            return None;
        }
        let key = key?;
        let key_type = key.output_type();
        let side_name = if side == Side::Left { "left" } else { "right" };
        let key_name: Arc<str> = Arc::from(format!("{join_path}.{side_name}.key"));
        let mut steps = branch.operators;
        steps.push(OperatorNode::new(
            key_name.clone(),
            KeyBy::new(key_name, key, branch.layout.clone()),
        ));
        Some((
            Lane {
                side,
                sources,
                filter,
                steps,
                delete: delete.flatten(),
                layout: branch.layout,
                stage: Arc::from(format!("{join_path}.{side_name}.delete")),
            },
            key_type,
        ))
    }

    /// A join of two inputs, as the first step: a `branch` operator running both inputs' own
    /// steps, then the join. The stream is the join's results from here on, keyed by the join
    /// key.
    fn join(
        &mut self,
        join: JoinSpec,
        source_names: &[(&str, &Layout)],
        state: &StateSpec,
        problems: &mut Vec<Problem>,
    ) {
        let path = join.place.path.clone();
        let left = self.join_input(&join.left, Side::Left, &path, source_names, problems);
        let right = self.join_input(&join.right, Side::Right, &path, source_names, problems);
        let (Some((left, left_key)), Some((right, right_key))) = (left, right) else {
            return;
        };
        if let (Some(left_key), Some(right_key)) = (left_key, right_key) {
            let numbers = |ty: FieldType| matches!(ty, FieldType::Int | FieldType::Timestamp);
            if left_key != right_key && !(numbers(left_key) && numbers(right_key)) {
                return Self::refuse(
                    problems,
                    &join.place,
                    format!(
                        "the join's keys have different types: `{}` gives {left_key}, `{}` gives {right_key}, so no two rows could ever meet",
                        join.left.key.source, join.right.key.source
                    ),
                );
            }
        }
        let (Some(left_schema), Some(right_schema)) = (left.layout.schema(), right.layout.schema())
        else {
            return;
        };
        // A side is null in the results of the rows the other side's outer join keeps.
        let nullable_left = join.how.keeps_right();
        let nullable_right = join.how.keeps_left();
        let mut fields = Vec::new();
        for (schema, prefix, nullable) in [
            (left_schema, &join.left.prefix, nullable_left),
            (right_schema, &join.right.prefix, nullable_right),
        ] {
            for field in schema.fields() {
                fields.push(dataflow_event::Field {
                    name: format!("{prefix}{}", field.name),
                    ty: field.ty,
                    nullable: field.nullable || nullable,
                });
            }
        }
        if matches!(join.kind, JoinKindSpec::Window { .. }) {
            for name in ["window_start", "window_end"] {
                fields.push(dataflow_event::Field {
                    name: name.into(),
                    ty: FieldType::Timestamp,
                    nullable: false,
                });
            }
        }
        let schema = match dataflow_event::Schema::from_fields(fields) {
            Ok(schema) => schema,
            Err(error) => {
                return Self::refuse(
                    problems,
                    &join.place,
                    format!("the join's results cannot be laid out: {error} (give the inputs different `prefix`es)"),
                )
            }
        };
        let inputs = JoinInputs {
            left: left.layout.clone(),
            right: right.layout.clone(),
        };
        let key_type = left_key.or(right_key);
        let branch_name: Arc<str> = Arc::from(format!("{path}.inputs"));
        self.operators.push(OperatorNode::new(
            branch_name,
            Branches::new(vec![left, right]),
        ));
        let name: Arc<str> = Arc::from(path.as_str());
        let batch_size = self.batch_size;
        let state_dir = state_dir(state, &name);
        let node = match join.kind {
            JoinKindSpec::Interval { lower, upper } => {
                let logic = IntervalJoin {
                    lower,
                    upper,
                    how: join.how,
                };
                bounded_join(name, logic, inputs, batch_size, state_dir)
            }
            JoinKindSpec::Window { size, slide } => {
                let logic = WindowJoin {
                    size,
                    slide,
                    how: join.how,
                };
                bounded_join(name, logic, inputs, batch_size, state_dir)
            }
            JoinKindSpec::Lookup => bounded_join(
                name,
                LookupJoin { how: join.how },
                inputs,
                batch_size,
                state_dir,
            ),
        };
        self.operators.push(node);
        self.layout = Layout::Row(Arc::new(schema));
        self.key_type = Some(key_type);
    }
}

/// A join named `name` doing what `logic` does, handing on at most `batch_size` results (and
/// a key's whole) per call of a watermark or the end; its state in sled where `state_dir` says
/// (`state.backend: sled`), else in memory.
fn bounded_join<L: Logic + 'static>(
    name: Arc<str>,
    logic: L,
    inputs: JoinInputs,
    batch_size: usize,
    state_dir: Option<(PathBuf, u64, usize)>,
) -> OperatorNode {
    let mut join = Join::new(name.clone(), logic, inputs);
    join.limit_emission(batch_size);
    if let Some((dir, cache_bytes, cache_keys)) = state_dir {
        join.keep_state_in(dir, cache_bytes, cache_keys);
    }
    OperatorNode::new(name, join)
}

/// The stages of `pattern` with placeholder conditions, for the shape rules (which read only
/// quantifiers, contiguity and negation): so that they are checked even when a condition does
/// not compile.
fn stages_for_shape(pattern: &PatternSpec) -> Vec<StageDef> {
    let Ok(placeholder) = Expr::compile("true", &Layout::Object) else {
        return Vec::new();
    };
    pattern
        .stages
        .iter()
        .map(|stage| StageDef {
            name: stage.name.clone(),
            condition: placeholder.clone(),
            bound: false,
            min: stage.min,
            max: stage.max,
            greedy: stage.greedy,
            strict: stage.strict,
            negative: stage.negative,
        })
        .collect()
}

/// Where `operator` keeps its state: a directory of its own under the state directory, with
/// sled state; `None` in memory.
fn state_dir(state: &StateSpec, operator: &str) -> Option<(PathBuf, u64, usize)> {
    match state {
        StateSpec::Sled {
            dir,
            cache_bytes,
            cache_keys,
        } => Some((
            dir.join(state_dir_name(operator)),
            *cache_bytes,
            *cache_keys,
        )),
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
        StepSpec::Pattern(pattern) => Box::new(
            pattern
                .stages
                .iter()
                .map(|stage| stage.condition.source.as_str())
                .chain(
                    pattern
                        .select
                        .iter()
                        .filter_map(|field| field.input.as_ref())
                        .map(|expr| expr.source.as_str()),
                ),
        ),
        StepSpec::Alert(alert) => Box::new(std::iter::once(alert.condition.source.as_str())),
        StepSpec::Over(over) => Box::new(
            over.aggregates
                .iter()
                .filter_map(|aggregate| aggregate.input.as_ref())
                .map(|expr| expr.source.as_str()),
        ),
        StepSpec::Join(join) => Box::new([&join.left, &join.right].into_iter().flat_map(|input| {
            input
                .steps
                .iter()
                .flat_map(step_sources)
                .chain(std::iter::once(input.key.source.as_str()))
                .chain(input.delete.iter().map(|delete| delete.source.as_str()))
        })),
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
