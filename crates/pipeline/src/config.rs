//! The YAML pipeline config: its file format, and its translation into a [`PipelineSpec`].
//!
//! Every key is documented in `docs/configuration.md`. Unknown keys are refused. Problems are
//! collected, each with its line, column and path, rather than stopping at the first; only a
//! file that is not valid YAML, or whose shape serde cannot read at all, stops at one problem.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dataflow_event::json::{DecoderConfig, TimeFormat};
use dataflow_event::{Field, FieldType, Schema};
use dataflow_window::{AggregateKind, WindowKind};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

use dataflow_connectors::config::{check_path, PathUse, Setting, SettingValue, Settings};
use dataflow_connectors::registry::{self, ConnectorType};

use crate::plan::{plan_collecting, Plan};
use crate::spec::{
    AdaptiveSpec, AfterMatch, AggregateSpec, AlertRule, AlertSpec, ApiSpec, CheckpointSpec,
    ExprSpec, JoinInputSpec, JoinKindSpec, JoinSpec, JoinType, MapSpec, OnStop, OverSpec,
    PatternAggregate, PatternSelectSpec, PatternSpec, PatternStageSpec, PipelineSpec, Place,
    Problem, RateLimitSpec, RuntimeSpec, SinkSpec, SourceKind, SourceSpec, StateSpec, StepSpec,
    TimeDomain, WatermarkSpec, WindowSpec,
};
use crate::{PipelineError, Result};

/// Reads and checks a config file. Relative paths in it are taken from the file's directory.
pub fn load(path: &Path) -> Result<PipelineSpec> {
    let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Io {
        context: format!("cannot read config {}", path.display()),
        cause: source,
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &base)
}

/// Reads a config file, checks it and compiles it into a plan, listing every problem of the
/// config and of its expressions together.
pub fn load_plan(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Io {
        context: format!("cannot read config {}", path.display()),
        cause: source,
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_and_plan(&text, &base)
}

/// Checks config text and compiles it into a plan, listing every problem together.
pub fn parse_and_plan(text: &str, base: &Path) -> Result<Plan> {
    let (spec, mut problems) = parse_collecting(text, base)?;
    let plan = plan_collecting(spec, &mut problems);
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(PipelineError::InvalidConfig(in_order(problems)))
    }
}

/// Parses and checks config text; relative paths are resolved against `base`.
pub fn parse(text: &str, base: &Path) -> Result<PipelineSpec> {
    let (spec, problems) = parse_collecting(text, base)?;
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(PipelineError::InvalidConfig(in_order(problems)))
    }
}

/// `problems` in the order of their places in the config, each once (the same file named
/// twice in `paths` is one problem).
fn in_order(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|problem| (problem.place.line, problem.place.column));
    let mut unique: Vec<Problem> = Vec::with_capacity(problems.len());
    for problem in problems {
        if !unique.contains(&problem) {
            unique.push(problem);
        }
    }
    unique
}

/// Parses config text, collecting the problems of its values. Only YAML that cannot be read
/// into the config's shape at all is an error at once.
fn parse_collecting(text: &str, base: &Path) -> Result<(PipelineSpec, Vec<Problem>)> {
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|error| {
        let place = match error.location() {
            Some(location) => Place {
                path: "config".into(),
                line: location.line(),
                column: location.column(),
            },
            None => Place::path("config"),
        };
        PipelineError::InvalidConfig(vec![Problem {
            place,
            message: first_line(&error.to_string()),
        }])
    })?;
    let mut checker = Checker {
        problems: Vec::new(),
        base: base.to_path_buf(),
        source_names: Vec::new(),
        branches: Vec::new(),
    };
    let spec = checker.pipeline(raw);
    Ok((spec, checker.problems))
}

/// The first line of a YAML error, without the `error: line N column M:` prefix that the
/// problem's place already gives.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    let line = line.strip_prefix("error:").unwrap_or(line).trim_start();
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, message)) if position.contains("column") => message.to_string(),
        _ => line.to_string(),
    }
}

/// The most workers `parallelism` may ask for.
pub const MAX_PARALLELISM: usize = 256;

/// The largest `state.cache_mb`: 1 TiB of sled page cache per store.
const MAX_CACHE_MB: i64 = 1 << 20;

/// The largest `state.cache_keys`.
const MAX_CACHE_KEYS: i64 = 1 << 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: Option<String>,
    sources: Spanned<Vec<Spanned<RawSource>>>,
    #[serde(default)]
    branches: OrderedMap<Spanned<RawBranch>>,
    #[serde(default)]
    steps: Vec<RawStep>,
    sinks: Spanned<Vec<Spanned<RawSink>>>,
    dead_letters: Option<Spanned<RawSink>>,
    late_events: Option<Spanned<RawSink>>,
    timed_out: Option<Spanned<RawSink>>,
    parallelism: Option<Spanned<i64>>,
    #[serde(default)]
    runtime: RawRuntime,
    checkpoint: Option<Spanned<RawCheckpoint>>,
    state: Option<Spanned<RawState>>,
    api: Option<Spanned<RawApi>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    backend: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    cache_mb: Option<Spanned<i64>>,
    cache_keys: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<String>>,
    token: Option<String>,
    token_env: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    header_timeout: Option<Spanned<DurationText>>,
    idle_timeout: Option<Spanned<DurationText>>,
    max_header_bytes: Option<Spanned<i64>>,
    max_requests_per_connection: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    dir: Spanned<String>,
    interval: Option<Spanned<DurationText>>,
    retain: Option<Spanned<i64>>,
}

/// A source as written: the keys every source has, and the rest for its connector.
#[derive(Debug)]
struct RawSource {
    name: Spanned<String>,
    kind: Spanned<String>,
    format: RawFormat,
    watermark: RawWatermark,
    rate_limit: Option<Spanned<RawRateLimit>>,
    /// The connector's own keys (`path`, `queue`, `profile`...), checked by its connector.
    settings: Vec<Setting>,
}

/// The value of `key`, which none of the keys every source (or sink) has took: a setting for
/// its connector, with the line and column of its value (its path is set by `Settings`, once
/// the source's place is known); or, when no connector of `types` takes it, the error serde
/// gives an unknown field, at the key's place, naming every key there is.
fn connector_setting<'de, A: MapAccess<'de>, K>(
    key: &Spanned<String>,
    map: &mut A,
    types: &'static [ConnectorType<K>],
    common: &'static KnownKeys,
) -> std::result::Result<Setting, A::Error> {
    if !registry::takes_key(types, &key.value) {
        let known = common.known.get_or_init(|| {
            let mut known: Vec<&'static str> = common.common.to_vec();
            for name in types.iter().flat_map(|t| t.keys.iter()) {
                if !known.contains(name) {
                    known.push(name);
                }
            }
            known
        });
        return Err(de::Error::unknown_field(&key.value, known.as_slice()));
    }
    let value: Spanned<RawValue> = map.next_value()?;
    Ok(Setting {
        key: key.value.clone(),
        place: Place {
            path: String::new(),
            line: value.referenced.line(),
            column: value.referenced.column(),
        },
        value: value.value.0,
    })
}

/// The keys every source (or sink) has, and, once an unknown key asks, those and every
/// connector's keys.
struct KnownKeys {
    common: &'static [&'static str],
    known: OnceLock<Vec<&'static str>>,
}

/// The keys every source has; a source's connector takes the others.
static SOURCE_KEYS: KnownKeys = KnownKeys {
    common: &["name", "type", "format", "watermark", "rate_limit"],
    known: OnceLock::new(),
};

/// The keys every sink has; a sink's connector takes the others.
static SINK_KEYS: KnownKeys = KnownKeys {
    common: &["type", "time_format"],
    known: OnceLock::new(),
};

impl<'de> Deserialize<'de> for RawSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct SourceVisitor;
        impl<'de> Visitor<'de> for SourceVisitor {
            type Value = RawSource;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a source: a mapping with `name` and `type`")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawSource, A::Error> {
                let (mut name, mut kind, mut format, mut watermark, mut rate_limit) =
                    (None, None, None, None, None);
                let mut settings = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    match key.value.as_str() {
                        "name" => name = Some(map.next_value()?),
                        "type" => kind = Some(map.next_value()?),
                        "format" => format = Some(map.next_value()?),
                        "watermark" => watermark = Some(map.next_value()?),
                        "rate_limit" => rate_limit = Some(map.next_value()?),
                        _ => settings.push(connector_setting(
                            &key,
                            &mut map,
                            &registry::SOURCES,
                            &SOURCE_KEYS,
                        )?),
                    }
                }
                Ok(RawSource {
                    name: name.ok_or_else(|| de::Error::missing_field("name"))?,
                    kind: kind.ok_or_else(|| de::Error::missing_field("type"))?,
                    format: format.unwrap_or_default(),
                    watermark: watermark.unwrap_or_default(),
                    rate_limit,
                    settings,
                })
            }
        }
        deserializer.deserialize_map(SourceVisitor)
    }
}

/// Any YAML value, for a connector to type.
#[derive(Debug)]
struct RawValue(SettingValue);

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = RawValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<RawValue, E> {
                Ok(RawValue(SettingValue::Null))
            }
            fn visit_none<E: de::Error>(self) -> std::result::Result<RawValue, E> {
                Ok(RawValue(SettingValue::Null))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<RawValue, E> {
                Ok(RawValue(SettingValue::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<RawValue, E> {
                Ok(RawValue(SettingValue::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<RawValue, E> {
                match i64::try_from(v) {
                    Ok(v) => Ok(RawValue(SettingValue::Int(v))),
                    Err(_) => Ok(RawValue(SettingValue::Float(v as f64))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<RawValue, E> {
                Ok(RawValue(SettingValue::Float(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RawValue, E> {
                Ok(RawValue(SettingValue::Str(v.to_string())))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<RawValue, A::Error> {
                let mut items = Vec::new();
                while let Some(RawValue(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawValue(SettingValue::Seq(items)))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawValue, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, RawValue(value))) = map.next_entry::<String, RawValue>()? {
                    entries.push((key, value));
                }
                Ok(RawValue(SettingValue::Map(entries)))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    events_per_second: Spanned<i64>,
    burst: Option<Spanned<i64>>,
    adaptive: Option<Spanned<RawAdaptive>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdaptive {
    target_latency: Option<Spanned<DurationText>>,
    min: Spanned<i64>,
    max: Spanned<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFormat {
    #[serde(default, deserialize_with = "present")]
    time_field: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    type_field: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    id_field: Option<Option<String>>,
    key_field: Option<String>,
    schema: Option<OrderedMap<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatermark {
    out_of_orderness: Option<Spanned<DurationText>>,
    idle_timeout: Option<Spanned<DurationText>>,
    every: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawStep {
    Filter(Spanned<String>),
    Map(Box<Spanned<RawMap>>),
    KeyBy(Spanned<String>),
    Window(Box<Spanned<RawWindow>>),
    Pattern(Box<Spanned<RawPattern>>),
    Alert(Box<Spanned<RawAlert>>),
    Over(Box<Spanned<RawOver>>),
    Join(Box<Spanned<RawJoin>>),
}

/// A named input of a join: the events of a source (or of every source) through steps of its
/// own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBranch {
    from: Option<Spanned<String>>,
    #[serde(default)]
    steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJoin {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    how: Option<Spanned<String>>,
    left: Spanned<RawJoinInput>,
    right: Spanned<RawJoinInput>,
    lower: Option<Spanned<DurationText>>,
    upper: Option<Spanned<DurationText>>,
    size: Option<Spanned<DurationText>>,
    slide: Option<Spanned<DurationText>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJoinInput {
    input: Spanned<String>,
    key: Spanned<String>,
    prefix: Option<Spanned<String>>,
    delete: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    stages: Spanned<Vec<Spanned<RawStage>>>,
    within: Option<Spanned<DurationText>>,
    after_match: Option<Spanned<String>>,
    #[serde(default)]
    select: OrderedMap<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Spanned<String>,
    #[serde(rename = "where")]
    condition: Spanned<String>,
    times: Option<Spanned<i64>>,
    min: Option<Spanned<i64>>,
    max: Option<Spanned<i64>>,
    optional: Option<Spanned<bool>>,
    greedy: Option<Spanned<bool>>,
    contiguity: Option<Spanned<String>>,
    negative: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    condition: Spanned<String>,
    #[serde(rename = "for")]
    duration: Option<Spanned<DurationText>>,
    count: Option<Spanned<i64>>,
    within: Option<Spanned<DurationText>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOver {
    rows: Spanned<i64>,
    aggregates: Spanned<OrderedMap<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    #[serde(default)]
    fields: OrderedMap<Spanned<String>>,
    #[serde(default)]
    rename: OrderedMap<String>,
    keep: Option<Vec<String>>,
    #[serde(default)]
    drop: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    size: Option<Spanned<DurationText>>,
    slide: Option<Spanned<DurationText>>,
    gap: Option<Spanned<DurationText>>,
    time: Option<Spanned<String>>,
    allowed_lateness: Option<Spanned<DurationText>>,
    aggregates: Spanned<OrderedMap<Spanned<String>>>,
}

/// A sink as written: its type, its time format, and the rest for its connector.
#[derive(Debug)]
struct RawSink {
    kind: Spanned<String>,
    time_format: Option<Spanned<String>>,
    /// The connector's own keys (`path`), checked by its connector.
    settings: Vec<Setting>,
}

impl<'de> Deserialize<'de> for RawSink {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct SinkVisitor;
        impl<'de> Visitor<'de> for SinkVisitor {
            type Value = RawSink;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sink: a mapping with `type`")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawSink, A::Error> {
                let (mut kind, mut time_format) = (None, None);
                let mut settings = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    match key.value.as_str() {
                        "type" => kind = Some(map.next_value()?),
                        "time_format" => time_format = Some(map.next_value()?),
                        _ => settings.push(connector_setting(
                            &key,
                            &mut map,
                            &registry::SINKS,
                            &SINK_KEYS,
                        )?),
                    }
                }
                Ok(RawSink {
                    kind: kind.ok_or_else(|| de::Error::missing_field("type"))?,
                    time_format,
                    settings,
                })
            }
        }
        deserializer.deserialize_map(SinkVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    batch_size: Option<Spanned<i64>>,
    channel_capacity: Option<Spanned<i64>>,
    on_stop: Option<Spanned<String>>,
    fuse_source: Option<Spanned<bool>>,
}

/// A field that is present in the YAML, even as `null`, becomes `Some(inner)`.
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A duration as written: `250ms`, `5s`, `1m 30s`, or a number of milliseconds.
#[derive(Debug, Clone)]
struct DurationText(String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `5s`, `250ms` or `1m`, or milliseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<DurationText, E> {
                Ok(DurationText(format!("{v}ms")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<DurationText, E> {
                Ok(DurationText(format!("{v}ms")))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A YAML mapping read in the order it was written (output columns follow it).
#[derive(Debug)]
struct OrderedMap<V>(Vec<(Spanned<String>, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// The latency an adaptive rate limit aims at unless told otherwise (the design's 100 ms).
const DEFAULT_TARGET_LATENCY_MS: i64 = 100;

struct Checker {
    problems: Vec<Problem>,
    base: PathBuf,
    /// The sources' names, which a join's inputs and a branch's `from` may name.
    source_names: Vec<String>,
    /// The `branches:` read so far, and whether a join took each.
    branches: Vec<(BranchDef, bool)>,
}

/// A branch of `branches:`, checked: its name, source and steps.
#[derive(Debug, Clone)]
struct BranchDef {
    name: String,
    source: Option<(String, Place)>,
    steps: Vec<StepSpec>,
    place: Place,
}

fn place_of<T>(spanned: &Spanned<T>, path: impl Into<String>) -> Place {
    Place {
        path: path.into(),
        line: spanned.referenced.line(),
        column: spanned.referenced.column(),
    }
}

impl Checker {
    fn problem(&mut self, place: Place, message: impl Into<String>) {
        self.problems.push(Problem {
            place,
            message: message.into(),
        });
    }

    fn duration(&mut self, text: &Spanned<DurationText>, path: &str) -> Option<i64> {
        let written = text.value.0.trim();
        let place = place_of(text, path);
        if written.starts_with('-') {
            self.problem(
                place,
                format!("invalid duration `{written}`: durations cannot be negative"),
            );
            return None;
        }
        match humantime::parse_duration(written) {
            Ok(duration) => match i64::try_from(duration.as_millis()) {
                Ok(millis) => Some(millis),
                Err(_) => {
                    self.problem(place, format!("duration `{written}` is too large"));
                    None
                }
            },
            Err(error) => {
                self.problem(
                    place,
                    format!(
                        "invalid duration `{written}`: {error} (write e.g. `500ms`, `5s`, `1m`)"
                    ),
                );
                None
            }
        }
    }

    fn path(&self, written: &str) -> PathBuf {
        let path = PathBuf::from(written);
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }

    /// The path `written` at `place`, used as `usage` says: a path that cannot be is reported
    /// there (and still returned, so that no other problem says it is missing).
    fn checked_path(&mut self, written: &str, place: Place, usage: PathUse) -> PathBuf {
        let path = self.path(written);
        if let Err(message) = check_path(&path, usage) {
            self.problem(place, message);
        }
        path
    }

    fn pipeline(&mut self, raw: RawConfig) -> PipelineSpec {
        let mut names = HashSet::new();
        if raw.sources.value.is_empty() {
            self.problem(
                place_of(&raw.sources, "sources"),
                "a pipeline needs at least one source",
            );
        }
        let mut sources = Vec::new();
        for (index, source) in raw.sources.value.into_iter().enumerate() {
            let path = format!("sources[{index}]");
            if !names.insert(source.value.name.value.clone()) {
                let place = place_of(&source.value.name, format!("{path}.name"));
                self.problem(
                    place,
                    format!("source name `{}` is used twice", source.value.name.value),
                );
            }
            if let Some(spec) = self.source(source, &path) {
                sources.push(spec);
            }
        }
        self.source_names = sources.iter().map(|source| source.name.clone()).collect();
        self.read_branches(raw.branches);
        let joins = !self.branches.is_empty()
            || raw
                .steps
                .iter()
                .any(|step| matches!(step, RawStep::Join(_)));
        let steps = raw
            .steps
            .into_iter()
            .enumerate()
            .filter_map(|(index, step)| self.step(step, &format!("steps[{index}]")))
            .collect();
        for (branch, used) in std::mem::take(&mut self.branches) {
            if !used {
                self.problem(
                    branch.place,
                    format!(
                        "branch `{}` is not an input of any join: a branch feeds a `join` step",
                        branch.name
                    ),
                );
            }
        }
        if raw.sinks.value.is_empty() {
            self.problem(
                place_of(&raw.sinks, "sinks"),
                "a pipeline needs at least one sink",
            );
        }
        let sinks = raw
            .sinks
            .value
            .iter()
            .enumerate()
            .filter_map(|(index, sink)| self.sink(sink, &format!("sinks[{index}]")))
            .collect();
        let dead_letters = match &raw.dead_letters {
            Some(sink) => self.side_sink(sink, "dead_letters"),
            None => Some(SinkSpec::file(self.checked_path(
                "dead-letters.jsonl",
                Place::path("dead_letters"),
                PathUse::WriteFile,
            ))),
        };
        let late_events = raw
            .late_events
            .as_ref()
            .and_then(|sink| self.side_sink(sink, "late_events"));
        let timed_out = raw
            .timed_out
            .as_ref()
            .and_then(|sink| self.side_sink(sink, "timed_out"));
        let mut runtime = self.runtime(&raw.runtime);
        if let Some(parallelism) = &raw.parallelism {
            match usize::try_from(parallelism.value) {
                Ok(workers) if (1..=MAX_PARALLELISM).contains(&workers) => {
                    runtime.parallelism = workers
                }
                _ => self.problem(
                    place_of(parallelism, "parallelism"),
                    format!(
                        "`parallelism` must be a number of workers from 1 to {MAX_PARALLELISM}, not {}",
                        parallelism.value
                    ),
                ),
            }
        }
        let checkpoint = raw.checkpoint.as_ref().and_then(|c| self.checkpoint(c));
        let state = raw
            .state
            .as_ref()
            .and_then(|s| self.state(s))
            .unwrap_or_default();
        let api = raw.api.as_ref().and_then(|a| self.api(a));
        if raw.api.is_none() {
            for source in &sources {
                if source.kind.is_ingest() {
                    self.problem(
                        source.place.clone(),
                        format!(
                            "http source `{}` needs an `api:` section: `POST /ingest` is served by the processor's API server",
                            source.name
                        ),
                    );
                }
            }
        }
        // A stop keeps open windows for the final checkpoint when there is one, so that a
        // restart resumes them; without checkpoints it fires them, or they would be lost.
        if raw.runtime.on_stop.is_none() && checkpoint.is_some() {
            runtime.on_stop = OnStop::Keep;
        }
        PipelineSpec {
            name: raw.name.unwrap_or_else(|| "pipeline".into()),
            sources,
            steps,
            joins,
            sinks,
            dead_letters: dead_letters.unwrap_or_else(SinkSpec::stdout),
            late_events,
            timed_out,
            runtime,
            checkpoint,
            state,
            api,
        }
    }

    fn state(&mut self, raw: &Spanned<RawState>) -> Option<StateSpec> {
        let state = &raw.value;
        let backend = state.backend.as_ref().map(|b| b.value.as_str());
        let cache_bytes = match &state.cache_mb {
            None => Some(dataflow_state::DEFAULT_CACHE_BYTES),
            Some(mb) if backend != Some("sled") => {
                self.problem(
                    place_of(mb, "state.cache_mb"),
                    "`cache_mb` is only used by the `sled` backend: set `backend: sled` or remove it",
                );
                None
            }
            Some(mb) if (1..=MAX_CACHE_MB).contains(&mb.value) => Some((mb.value as u64) << 20),
            Some(mb) => {
                self.problem(
                    place_of(mb, "state.cache_mb"),
                    format!(
                        "`cache_mb` must be between 1 and {MAX_CACHE_MB} (MiB), not {}",
                        mb.value
                    ),
                );
                None
            }
        };
        let cache_keys = match &state.cache_keys {
            None => Some(dataflow_operators::window::DEFAULT_CACHE_KEYS),
            Some(keys) if backend != Some("sled") => {
                self.problem(
                    place_of(keys, "state.cache_keys"),
                    "`cache_keys` is only used by the `sled` backend: set `backend: sled` or remove it",
                );
                None
            }
            Some(keys) if (0..=MAX_CACHE_KEYS).contains(&keys.value) => Some(keys.value as usize),
            Some(keys) => {
                self.problem(
                    place_of(keys, "state.cache_keys"),
                    format!(
                        "`cache_keys` must be between 0 and {MAX_CACHE_KEYS}, not {}",
                        keys.value
                    ),
                );
                None
            }
        };
        match (backend, &state.dir) {
            (None | Some("memory"), None) if cache_bytes.is_some() && cache_keys.is_some() => {
                Some(StateSpec::Memory)
            }
            (None | Some("memory"), None) => None,
            (None | Some("memory"), Some(dir)) => {
                self.problem(
                    place_of(dir, "state.dir"),
                    "`dir` is only used by the `sled` backend: set `backend: sled` or remove it",
                );
                None
            }
            (Some("sled"), Some(dir)) => {
                let dir =
                    self.checked_path(&dir.value, place_of(dir, "state.dir"), PathUse::WriteDir);
                Some(StateSpec::Sled {
                    dir,
                    cache_bytes: cache_bytes?,
                    cache_keys: cache_keys?,
                })
            }
            (Some("sled"), None) => {
                self.problem(
                    place_of(raw, "state"),
                    "the `sled` backend needs `dir`: where its databases live",
                );
                None
            }
            (Some(other), _) => {
                let place = state
                    .backend
                    .as_ref()
                    .map_or_else(|| place_of(raw, "state"), |b| place_of(b, "state.backend"));
                self.problem(
                    place,
                    format!("unknown state backend `{other}`: expected `memory` or `sled`"),
                );
                None
            }
        }
    }

    fn api(&mut self, raw: &Spanned<RawApi>) -> Option<ApiSpec> {
        let api = &raw.value;
        // Checked first, so that their problems are reported with those of the other keys.
        let limits = self.api_limits(api);
        let listen = match &api.listen {
            Some(text) => match text.value.parse::<std::net::SocketAddr>() {
                Ok(address) => address,
                Err(error) => {
                    self.problem(
                        place_of(text, "api.listen"),
                        format!("invalid address `{}`: {error}", text.value),
                    );
                    return None;
                }
            },
            None => std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        // The token comes from the config or, better, an environment variable; it is never
        // logged or echoed in a problem.
        let token = match (&api.token, &api.token_env) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(name)) => match std::env::var(&name.value) {
                Ok(token) if !token.is_empty() => Some(token),
                _ => {
                    self.problem(
                        place_of(name, "api.token_env"),
                        format!("environment variable `{}` is not set", name.value),
                    );
                    return None;
                }
            },
            (None, None) => None,
        };
        if token.is_none() && !listen.ip().is_loopback() {
            self.problem(
                place_of(raw, "api"),
                format!("the API would listen on {listen} without a token: set `token_env` (or `token`), or listen on a loopback address"),
            );
            return None;
        }
        Some(ApiSpec {
            listen,
            token,
            limits: limits?,
        })
    }

    /// The limits on the API's connections: every key optional, every problem reported.
    fn api_limits(&mut self, api: &RawApi) -> Option<dataflow_api::ServeLimits> {
        let before = self.problems.len();
        let defaults = dataflow_api::ServeLimits::DEFAULT;
        let count = |this: &mut Self, value: &Option<Spanned<i64>>, key: &str, default: u64| {
            value.as_ref().map_or(Some(default), |value| {
                this.positive(value, &format!("api.{key}"), key)
            })
        };
        let max_connections = count(
            self,
            &api.max_connections,
            "max_connections",
            defaults.max_connections as u64,
        );
        let max_header_bytes = count(
            self,
            &api.max_header_bytes,
            "max_header_bytes",
            defaults.max_header_bytes as u64,
        );
        let max_requests_per_connection = count(
            self,
            &api.max_requests_per_connection,
            "max_requests_per_connection",
            defaults.max_requests_per_connection,
        );
        if let (Some(bytes), Some(value)) = (max_header_bytes, &api.max_header_bytes) {
            if bytes < dataflow_api::ServeLimits::MIN_HEADER_BYTES as u64 {
                self.problem(
                    place_of(value, "api.max_header_bytes"),
                    format!(
                        "`max_header_bytes` must be at least {}, not {bytes}",
                        dataflow_api::ServeLimits::MIN_HEADER_BYTES
                    ),
                );
            }
        }
        let timeout = |this: &mut Self,
                       value: &Option<Spanned<DurationText>>,
                       key: &str,
                       default: std::time::Duration| {
            let Some(text) = value else {
                return Some(default);
            };
            let path = format!("api.{key}");
            let millis = this.duration(text, &path)?;
            if millis == 0 {
                this.problem(
                    place_of(text, &path),
                    format!("`{key}` must be greater than zero"),
                );
                return None;
            }
            Some(std::time::Duration::from_millis(millis.unsigned_abs()))
        };
        let header_timeout = timeout(
            self,
            &api.header_timeout,
            "header_timeout",
            defaults.header_timeout,
        );
        let idle_timeout = timeout(
            self,
            &api.idle_timeout,
            "idle_timeout",
            defaults.idle_timeout,
        );
        if self.problems.len() > before {
            return None;
        }
        Some(dataflow_api::ServeLimits {
            max_connections: usize::try_from(max_connections?).unwrap_or(usize::MAX),
            header_timeout: header_timeout?,
            idle_timeout: idle_timeout?,
            max_header_bytes: usize::try_from(max_header_bytes?).unwrap_or(usize::MAX),
            max_requests_per_connection: max_requests_per_connection?,
        })
    }

    fn checkpoint(&mut self, raw: &Spanned<RawCheckpoint>) -> Option<CheckpointSpec> {
        let checkpoint = &raw.value;
        let dir = self.checked_path(
            &checkpoint.dir.value,
            place_of(&checkpoint.dir, "checkpoint.dir"),
            PathUse::WriteDir,
        );
        let interval = match &checkpoint.interval {
            Some(text) => {
                let millis = self.duration(text, "checkpoint.interval")?;
                if millis == 0 {
                    self.problem(
                        place_of(text, "checkpoint.interval"),
                        "`interval` must be greater than zero",
                    );
                    return None;
                }
                millis
            }
            None => 10_000,
        };
        let retain = match &checkpoint.retain {
            Some(retain) if retain.value >= 1 => retain.value as usize,
            Some(retain) => {
                self.problem(
                    place_of(retain, "checkpoint.retain"),
                    format!("`retain` must be at least 1, not {}", retain.value),
                );
                return None;
            }
            None => 3,
        };
        Some(CheckpointSpec {
            dir,
            interval,
            retain,
        })
    }

    fn source(&mut self, raw: Spanned<RawSource>, path: &str) -> Option<SourceSpec> {
        let place = place_of(&raw, path);
        let mut source = raw.value;
        let kind = self.source_kind(&mut source, &place, path);
        let watermark = self.watermark(&source.watermark, path);
        let decoder = self.decoder(source.format, &place, path);
        let rate_limit = source
            .rate_limit
            .as_ref()
            .and_then(|raw| self.rate_limit(raw, &format!("{path}.rate_limit")));
        Some(SourceSpec {
            name: source.name.value,
            kind: kind?,
            decoder,
            watermark,
            rate_limit,
            place,
        })
    }

    /// What the source reads: its `type:` and its connector's own settings, checked by the
    /// connector registry.
    fn source_kind(
        &mut self,
        source: &mut RawSource,
        place: &Place,
        path: &str,
    ) -> Option<SourceKind> {
        let settings = Settings::new(
            "source",
            &source.kind.value,
            place.clone(),
            &self.base,
            std::mem::take(&mut source.settings),
            &mut self.problems,
        );
        let kind = registry::configure(
            &registry::SOURCES,
            place_of(&source.kind, format!("{path}.type")),
            settings,
        )?;
        if let Some(limit) = &source.rate_limit {
            if kind.is_ingest() && limit.value.adaptive.is_some() {
                self.problem(
                    place_of(limit, format!("{path}.rate_limit.adaptive")),
                    "an http source cannot adapt its rate: it refuses what does not fit \
                     with 429 and clients retry, which already follows backpressure",
                );
            }
        }
        Some(kind)
    }

    fn watermark(&mut self, raw: &RawWatermark, path: &str) -> WatermarkSpec {
        WatermarkSpec {
            out_of_orderness: raw
                .out_of_orderness
                .as_ref()
                .and_then(|d| self.duration(d, &format!("{path}.watermark.out_of_orderness")))
                .unwrap_or(0),
            idle_timeout: raw
                .idle_timeout
                .as_ref()
                .and_then(|d| self.duration(d, &format!("{path}.watermark.idle_timeout"))),
            every: match &raw.every {
                Some(every) if every.value >= 1 => Some(every.value as usize),
                Some(every) => {
                    self.problem(
                        place_of(every, format!("{path}.watermark.every")),
                        format!("`every` must be at least 1 event, not {}", every.value),
                    );
                    None
                }
                None => None,
            },
        }
    }

    /// How the source's records are decoded: field names and the schema.
    fn decoder(&mut self, format: RawFormat, place: &Place, path: &str) -> DecoderConfig {
        let mut decoder = DecoderConfig::default();
        if let Some(field) = format.time_field {
            decoder.time_field = field;
        }
        if let Some(field) = format.type_field {
            decoder.type_field = field;
        }
        if let Some(field) = format.id_field {
            decoder.id_field = field;
        }
        decoder.key_field = format.key_field;
        if let Some(schema) = format.schema {
            let mut fields = Vec::new();
            for (name, ty) in schema.0 {
                let written = ty.value.trim();
                let (type_name, nullable) = match written.strip_suffix('?') {
                    Some(inner) => (inner, true),
                    None => (written, false),
                };
                match type_name.parse::<FieldType>() {
                    Ok(ty) => fields.push(Field {
                        name: name.value.clone(),
                        ty,
                        nullable,
                    }),
                    Err(error) => self.problem(
                        place_of(&ty, format!("{path}.format.schema.{}", name.value)),
                        error.to_string(),
                    ),
                }
            }
            match Schema::from_fields(fields) {
                Ok(schema) => decoder.schema = Some(schema),
                Err(error) => self.problem(place.clone(), error.to_string()),
            }
        }
        decoder
    }

    /// A positive count of events (per second), or a problem at its place.
    fn positive(&mut self, value: &Spanned<i64>, path: &str, key: &str) -> Option<u64> {
        match u64::try_from(value.value) {
            Ok(count) if count >= 1 => Some(count),
            _ => {
                self.problem(
                    place_of(value, path),
                    format!("`{key}` must be at least 1, not {}", value.value),
                );
                None
            }
        }
    }

    fn rate_limit(&mut self, raw: &Spanned<RawRateLimit>, path: &str) -> Option<RateLimitSpec> {
        let limit = &raw.value;
        let before = self.problems.len();
        let events_per_second = self.positive(
            &limit.events_per_second,
            &format!("{path}.events_per_second"),
            "events_per_second",
        );
        let burst = match &limit.burst {
            Some(burst) => self.positive(burst, &format!("{path}.burst"), "burst"),
            None => events_per_second.map(RateLimitSpec::default_burst),
        };
        let adaptive = match &limit.adaptive {
            Some(adaptive) => {
                let adaptive_path = format!("{path}.adaptive");
                let raw_adaptive = &adaptive.value;
                let target_latency = match &raw_adaptive.target_latency {
                    Some(text) => {
                        let target_path = format!("{adaptive_path}.target_latency");
                        match self.duration(text, &target_path) {
                            Some(0) => {
                                self.problem(
                                    place_of(text, target_path),
                                    "`target_latency` must be greater than zero",
                                );
                                None
                            }
                            millis => millis,
                        }
                    }
                    None => Some(DEFAULT_TARGET_LATENCY_MS),
                };
                let min = self.positive(&raw_adaptive.min, &format!("{adaptive_path}.min"), "min");
                let max = self.positive(&raw_adaptive.max, &format!("{adaptive_path}.max"), "max");
                if let (Some(min), Some(max)) = (min, max) {
                    if min > max {
                        self.problem(
                            place_of(&raw_adaptive.min, format!("{adaptive_path}.min")),
                            format!("`min` ({min}) is larger than `max` ({max})"),
                        );
                    } else if let Some(rate) = events_per_second {
                        if !(min..=max).contains(&rate) {
                            self.problem(
                                place_of(
                                    &limit.events_per_second,
                                    format!("{path}.events_per_second"),
                                ),
                                format!(
                                    "`events_per_second` ({rate}) must lie between `adaptive.min` ({min}) and `adaptive.max` ({max})"
                                ),
                            );
                        }
                    }
                }
                Some(AdaptiveSpec {
                    target_latency: target_latency?,
                    min: min?,
                    max: max?,
                })
            }
            None => None,
        };
        if self.problems.len() > before {
            return None;
        }
        Some(RateLimitSpec {
            events_per_second: events_per_second?,
            burst: burst?,
            adaptive,
        })
    }

    fn step(&mut self, raw: RawStep, path: &str) -> Option<StepSpec> {
        match raw {
            RawStep::Filter(expr) => {
                Some(StepSpec::Filter(expr_spec(&expr, format!("{path}.filter"))))
            }
            RawStep::KeyBy(expr) => {
                Some(StepSpec::KeyBy(expr_spec(&expr, format!("{path}.key_by"))))
            }
            RawStep::Map(map) => {
                let map = *map;
                let place = place_of(&map, format!("{path}.map"));
                let map = map.value;
                let fields: Vec<(String, ExprSpec)> = map
                    .fields
                    .0
                    .iter()
                    .map(|(name, expr)| {
                        (
                            name.value.clone(),
                            expr_spec(expr, format!("{path}.map.fields.{}", name.value)),
                        )
                    })
                    .collect();
                if fields.is_empty()
                    && map.rename.0.is_empty()
                    && map.keep.is_none()
                    && map.drop.is_empty()
                {
                    self.problem(
                        place.clone(),
                        "a map step needs `fields`, `rename`, `keep` or `drop`",
                    );
                }
                Some(StepSpec::Map(MapSpec {
                    fields,
                    rename: map
                        .rename
                        .0
                        .into_iter()
                        .map(|(old, new)| (old.value, new))
                        .collect(),
                    keep: map.keep,
                    drop: map.drop,
                    place,
                }))
            }
            RawStep::Window(window) => self.window(*window, &format!("{path}.window")),
            RawStep::Pattern(pattern) => self.pattern(*pattern, &format!("{path}.pattern")),
            RawStep::Alert(alert) => self.alert(*alert, &format!("{path}.alert")),
            RawStep::Over(over) => self.over(*over, &format!("{path}.over")),
            RawStep::Join(join) => self.join(*join, &format!("{path}.join")),
        }
    }

    /// Reads `branches:`: each a source (or every source) and steps of its own.
    fn read_branches(&mut self, raw: OrderedMap<Spanned<RawBranch>>) {
        for (name, branch) in raw.0 {
            let path = format!("branches.{}", name.value);
            let place = place_of(&name, path.clone());
            if self.branches.iter().any(|(b, _)| b.name == name.value) {
                self.problem(
                    place.clone(),
                    format!("branch `{}` is defined twice", name.value),
                );
            }
            if self.source_names.contains(&name.value) {
                self.problem(
                    place.clone(),
                    format!(
                        "branch `{}` has the name of a source: a join input could mean either",
                        name.value
                    ),
                );
            }
            let branch = branch.value;
            // A source the pipeline lacks is refused here, and by the plan when a join takes
            // the branch, in the same words (the same problem is listed once).
            let source = branch
                .from
                .as_ref()
                .map(|from| (from.value.clone(), place_of(from, format!("{path}.from"))));
            if let Some((from, from_place)) = &source {
                if !self.source_names.contains(from) {
                    self.problem(
                        from_place.clone(),
                        format!(
                            "branch `{}` reads source `{from}`, which the pipeline does not have (its sources: {})",
                            name.value,
                            self.source_names.join(", ")
                        ),
                    );
                }
            }
            let steps = branch
                .steps
                .into_iter()
                .enumerate()
                .filter_map(|(index, step)| self.step(step, &format!("{path}.steps[{index}]")))
                .collect();
            self.branches.push((
                BranchDef {
                    name: name.value,
                    source,
                    steps,
                    place,
                },
                false,
            ));
        }
    }

    /// A signed duration written at `path`: `-5s` is five seconds before.
    fn signed_duration(&mut self, text: &Spanned<DurationText>, path: &str) -> Option<i64> {
        let written = text.value.0.trim();
        match written.strip_prefix('-') {
            Some(rest) => {
                let positive = Spanned {
                    value: DurationText(rest.to_string()),
                    referenced: text.referenced,
                    defined: text.defined,
                };
                self.duration(&positive, path).map(|millis| -millis)
            }
            None => self.duration(text, path),
        }
    }

    /// One input of a join: the branch or source it names, its key and prefix.
    fn join_input(
        &mut self,
        raw: Spanned<RawJoinInput>,
        lookup_table: bool,
        path: &str,
    ) -> Option<JoinInputSpec> {
        let place = place_of(&raw, path);
        let input = raw.value;
        let name = input.input.value.clone();
        let (source, steps) = if let Some((branch, used)) = self
            .branches
            .iter_mut()
            .find(|(branch, _)| branch.name == name)
        {
            *used = true;
            (branch.source.clone(), branch.steps.clone())
        } else if self.source_names.contains(&name) {
            (
                Some((
                    name.clone(),
                    place_of(&input.input, format!("{path}.input")),
                )),
                Vec::new(),
            )
        } else {
            let branches: Vec<&str> = self.branches.iter().map(|(b, _)| b.name.as_str()).collect();
            self.problem(
                place_of(&input.input, format!("{path}.input")),
                format!(
                    "join input `{name}` is neither a branch ({}) nor a source ({})",
                    if branches.is_empty() {
                        "none".to_string()
                    } else {
                        branches.join(", ")
                    },
                    self.source_names.join(", ")
                ),
            );
            return None;
        };
        if let (Some(delete), false) = (&input.delete, lookup_table) {
            self.problem(
                place_of(delete, format!("{path}.delete")),
                "`delete` applies only to the right input (the table) of a lookup join",
            );
        }
        Some(JoinInputSpec {
            prefix: input
                .prefix
                .map(|prefix| prefix.value)
                .unwrap_or_else(|| format!("{name}_")),
            name,
            source_place: source
                .as_ref()
                .map_or_else(|| place.clone(), |(_, place)| place.clone()),
            source: source.map(|(source, _)| source),
            steps,
            key: expr_spec(&input.key, format!("{path}.key")),
            delete: input
                .delete
                .as_ref()
                .filter(|_| lookup_table)
                .map(|delete| expr_spec(delete, format!("{path}.delete"))),
            place,
        })
    }

    fn join(&mut self, raw: Spanned<RawJoin>, path: &str) -> Option<StepSpec> {
        let place = place_of(&raw, path);
        let join = raw.value;
        let lookup = join.kind.value == "lookup";
        let left = self.join_input(join.left, false, &format!("{path}.left"));
        let right = self.join_input(join.right, lookup, &format!("{path}.right"));
        let how = match join.how.as_ref().map(|how| how.value.as_str()) {
            None | Some("inner") => Some(JoinType::Inner),
            Some("left") => Some(JoinType::Left),
            Some("right") if !lookup => Some(JoinType::Right),
            Some("full") if !lookup => Some(JoinType::Full),
            Some(other) => {
                let expected = if lookup {
                    "inner or left (a lookup join emits the stream's events: the table's rows are versions, not results)"
                } else {
                    "inner, left, right or full"
                };
                if let Some(how) = &join.how {
                    self.problem(
                        place_of(how, format!("{path}.how")),
                        format!("unknown join `how: {other}`: expected {expected}"),
                    );
                }
                None
            }
        };
        let unexpected =
            |checker: &mut Checker, value: &Option<Spanned<DurationText>>, key: &str| {
                if let Some(text) = value {
                    checker.problem(
                        place_of(text, format!("{path}.{key}")),
                        format!(
                            "`{key}` does not apply to {} join",
                            article(&join.kind.value)
                        ),
                    );
                }
            };
        let required = |checker: &mut Checker,
                        value: &Option<Spanned<DurationText>>,
                        key: &str,
                        signed: bool|
         -> Option<i64> {
            match value {
                Some(text) if signed => checker.signed_duration(text, &format!("{path}.{key}")),
                Some(text) => checker.duration(text, &format!("{path}.{key}")),
                None => {
                    checker.problem(
                        place.clone(),
                        format!("{} join needs `{key}`", article(&join.kind.value)),
                    );
                    None
                }
            }
        };
        let kind = match join.kind.value.as_str() {
            "interval" => {
                unexpected(self, &join.size, "size");
                unexpected(self, &join.slide, "slide");
                let lower = required(self, &join.lower, "lower", true);
                let upper = required(self, &join.upper, "upper", true);
                match (lower, upper) {
                    (Some(lower), Some(upper)) if lower > upper => {
                        self.problem(
                            place.clone(),
                            format!("`lower` ({lower} ms) is after `upper` ({upper} ms): no pair could ever join"),
                        );
                        None
                    }
                    (Some(lower), Some(upper)) => Some(JoinKindSpec::Interval { lower, upper }),
                    _ => None,
                }
            }
            "window" => {
                unexpected(self, &join.lower, "lower");
                unexpected(self, &join.upper, "upper");
                let size = required(self, &join.size, "size", false);
                let slide = match &join.slide {
                    Some(text) => self.duration(text, &format!("{path}.slide")),
                    None => size,
                };
                match (size, slide) {
                    (Some(0), _) | (_, Some(0)) => {
                        self.problem(
                            place.clone(),
                            "`size` and `slide` must be greater than zero",
                        );
                        None
                    }
                    (Some(size), Some(slide)) if slide > size => {
                        self.problem(place.clone(), format!("`slide` ({slide} ms) is larger than `size` ({size} ms): events between windows would never join"));
                        None
                    }
                    (Some(size), Some(slide)) => Some(JoinKindSpec::Window { size, slide }),
                    _ => None,
                }
            }
            "lookup" => {
                unexpected(self, &join.lower, "lower");
                unexpected(self, &join.upper, "upper");
                unexpected(self, &join.size, "size");
                unexpected(self, &join.slide, "slide");
                Some(JoinKindSpec::Lookup)
            }
            other => {
                self.problem(
                    place_of(&join.kind, format!("{path}.type")),
                    format!("unknown join type `{other}`: expected interval, window or lookup"),
                );
                None
            }
        };
        Some(StepSpec::Join(Box::new(JoinSpec {
            kind: kind?,
            how: how?,
            left: left?,
            right: right?,
            place,
        })))
    }

    /// A count of events written at `path`: a whole number from 0 up.
    fn count(&mut self, value: &Spanned<i64>, path: &str) -> Option<u32> {
        match u32::try_from(value.value) {
            Ok(count) => Some(count),
            Err(_) => {
                self.problem(
                    place_of(value, path),
                    format!(
                        "`{}` must be a number of events from 0 up, not {}",
                        path.rsplit('.').next().unwrap_or(path),
                        value.value
                    ),
                );
                None
            }
        }
    }

    fn pattern(&mut self, raw: Spanned<RawPattern>, path: &str) -> Option<StepSpec> {
        let place = place_of(&raw, path);
        let pattern = raw.value;
        if pattern.stages.value.is_empty() {
            self.problem(
                place_of(&pattern.stages, format!("{path}.stages")),
                "a pattern needs at least one stage",
            );
        }
        let mut stages = Vec::new();
        for (index, raw_stage) in pattern.stages.value.iter().enumerate() {
            let stage_path = format!("{path}.stages[{index}]");
            let stage = &raw_stage.value;
            let negative = stage.negative.as_ref().is_some_and(|n| n.value);
            if negative {
                for (written, key) in [
                    (stage.times.is_some(), "times"),
                    (stage.min.is_some(), "min"),
                    (stage.max.is_some(), "max"),
                    (stage.optional.is_some(), "optional"),
                    (stage.greedy.is_some(), "greedy"),
                    (stage.contiguity.is_some(), "contiguity"),
                ] {
                    if written {
                        self.problem(
                            place_of(raw_stage, stage_path.clone()),
                            format!(
                                "`{key}` does not apply to a negative stage, which takes no events"
                            ),
                        );
                    }
                }
            }
            let (mut min, mut max) = (1, Some(1));
            if let Some(times) = &stage.times {
                if stage.min.is_some() || stage.max.is_some() {
                    self.problem(
                        place_of(times, format!("{stage_path}.times")),
                        "`times` (exactly N) cannot be combined with `min` or `max`",
                    );
                }
                // An unreadable count is reported here; the stage is checked further as `times: 1`.
                let times = self
                    .count(times, &format!("{stage_path}.times"))
                    .unwrap_or(1);
                min = times;
                max = Some(times);
            } else if stage.min.is_some() || stage.max.is_some() {
                min = match &stage.min {
                    Some(value) => self.count(value, &format!("{stage_path}.min")).unwrap_or(1),
                    None => 1,
                };
                max = stage.max.as_ref().map(|value| {
                    self.count(value, &format!("{stage_path}.max"))
                        .unwrap_or(min.max(1))
                });
            }
            if stage.optional.as_ref().is_some_and(|o| o.value) {
                min = 0;
            }
            let strict = match stage.contiguity.as_ref().map(|c| c.value.as_str()) {
                None | Some("relaxed") => false,
                Some("strict") => true,
                Some(other) => {
                    let contiguity_place = stage
                        .contiguity
                        .as_ref()
                        .map(|c| place_of(c, format!("{stage_path}.contiguity")))
                        .unwrap_or_default();
                    self.problem(
                        contiguity_place,
                        format!("unknown contiguity `{other}`: expected strict or relaxed"),
                    );
                    false
                }
            };
            stages.push(PatternStageSpec {
                name: stage.name.value.clone(),
                condition: expr_spec(&stage.condition, format!("{stage_path}.where")),
                min,
                max,
                greedy: stage.greedy.as_ref().is_none_or(|g| g.value),
                strict,
                negative,
                place: place_of(raw_stage, stage_path),
            });
        }
        let within = pattern.within.as_ref().and_then(|within| {
            let millis = self.duration(within, &format!("{path}.within"))?;
            if millis == 0 {
                self.problem(
                    place_of(within, format!("{path}.within")),
                    "`within` must be greater than zero",
                );
                return None;
            }
            Some(millis)
        });
        let after_match = match pattern.after_match.as_ref().map(|a| a.value.as_str()) {
            None | Some("skip_past_last") => AfterMatch::SkipPastLast,
            Some("skip_to_next") => AfterMatch::SkipToNext,
            Some(other) => {
                let after_place = pattern
                    .after_match
                    .as_ref()
                    .map(|a| place_of(a, format!("{path}.after_match")))
                    .unwrap_or_default();
                self.problem(
                    after_place,
                    format!(
                        "unknown after_match `{other}`: expected skip_past_last or skip_to_next"
                    ),
                );
                AfterMatch::SkipPastLast
            }
        };
        let mut select = Vec::new();
        for (name, function) in &pattern.select.0 {
            let field_path = format!("{path}.select.{}", name.value);
            match parse_pattern_field(&function.value) {
                Ok((aggregate, stage, input)) => select.push(PatternSelectSpec {
                    name: name.value.clone(),
                    aggregate,
                    stage,
                    input: input.map(|source| ExprSpec {
                        source,
                        place: place_of(function, field_path.clone()),
                    }),
                    place: place_of(function, field_path),
                }),
                Err(message) => self.problem(place_of(function, field_path), message),
            }
        }
        // Problems found so far are reported; the plan checks the rest of the pattern too,
        // with defaults where a value was refused, so that every problem is listed at once.
        Some(StepSpec::Pattern(PatternSpec {
            stages,
            within,
            after_match,
            select,
            place,
        }))
    }

    fn alert(&mut self, raw: Spanned<RawAlert>, path: &str) -> Option<StepSpec> {
        let place = place_of(&raw, path);
        let alert = raw.value;
        let positive = |checker: &mut Checker, text: &Spanned<DurationText>, key: &str| {
            let millis = checker.duration(text, &format!("{path}.{key}"))?;
            if millis == 0 {
                checker.problem(
                    place_of(text, format!("{path}.{key}")),
                    format!("`{key}` must be greater than zero"),
                );
                return None;
            }
            Some(millis)
        };
        let rule = match (&alert.duration, &alert.count, &alert.within) {
            (Some(duration), None, None) => positive(self, duration, "for").map(AlertRule::For),
            (None, Some(count), Some(within)) => {
                let within = positive(self, within, "within");
                let count = match u32::try_from(count.value) {
                    Ok(count) if count > 0 => Some(count),
                    _ => {
                        self.problem(
                            place_of(count, format!("{path}.count")),
                            format!(
                                "`count` must be a number of events from 1 up, not {}",
                                count.value
                            ),
                        );
                        None
                    }
                };
                match (count, within) {
                    (Some(count), Some(within)) => Some(AlertRule::Count { count, within }),
                    _ => None,
                }
            }
            _ => {
                self.problem(
                    place.clone(),
                    "an alert needs either `for` (held continuously that long) or `count` with `within` (that many events within that long)",
                );
                None
            }
        };
        Some(StepSpec::Alert(AlertSpec {
            condition: expr_spec(&alert.condition, format!("{path}.condition")),
            rule: rule?,
            place,
        }))
    }

    fn over(&mut self, raw: Spanned<RawOver>, path: &str) -> Option<StepSpec> {
        let place = place_of(&raw, path);
        let over = raw.value;
        let rows = match usize::try_from(over.rows.value) {
            Ok(rows) if rows > 0 => Some(rows),
            _ => {
                self.problem(
                    place_of(&over.rows, format!("{path}.rows")),
                    format!(
                        "`rows` must be a number of events from 1 up, not {}",
                        over.rows.value
                    ),
                );
                None
            }
        };
        let mut aggregates = Vec::new();
        if over.aggregates.value.0.is_empty() {
            self.problem(
                place_of(&over.aggregates, format!("{path}.aggregates")),
                "an over step needs at least one aggregate",
            );
        }
        for (name, function) in &over.aggregates.value.0 {
            let aggregate_path = format!("{path}.aggregates.{}", name.value);
            match parse_aggregate(&function.value) {
                Ok((kind, _)) if !dataflow_operators::over::AGGREGATES.contains(&kind) => self
                    .problem(
                        place_of(function, aggregate_path),
                        format!(
                            "an over step computes count, sum, avg, min and max, not `{}`",
                            kind.name()
                        ),
                    ),
                Ok((kind, input)) => aggregates.push(AggregateSpec {
                    name: name.value.clone(),
                    kind,
                    input: input.map(|source| ExprSpec {
                        source,
                        place: place_of(function, aggregate_path.clone()),
                    }),
                }),
                Err(message) => self.problem(place_of(function, aggregate_path), message),
            }
        }
        Some(StepSpec::Over(OverSpec {
            rows: rows?,
            aggregates,
            place,
        }))
    }

    fn window(&mut self, raw: Spanned<RawWindow>, path: &str) -> Option<StepSpec> {
        let place = place_of(&raw, path);
        let window = raw.value;
        let required = |checker: &mut Checker,
                        value: &Option<Spanned<DurationText>>,
                        key: &str|
         -> Option<i64> {
            match value {
                Some(text) => {
                    let millis = checker.duration(text, &format!("{path}.{key}"))?;
                    if millis == 0 {
                        checker.problem(
                            place_of(text, format!("{path}.{key}")),
                            format!("`{key}` must be greater than zero"),
                        );
                        return None;
                    }
                    Some(millis)
                }
                None => {
                    checker.problem(
                        place.clone(),
                        format!("a {} window needs `{key}`", window.kind.value),
                    );
                    None
                }
            }
        };
        let unexpected =
            |checker: &mut Checker, value: &Option<Spanned<DurationText>>, key: &str| {
                if let Some(text) = value {
                    checker.problem(
                        place_of(text, format!("{path}.{key}")),
                        format!("`{key}` does not apply to a {} window", window.kind.value),
                    );
                }
            };
        let kind = match window.kind.value.as_str() {
            "tumbling" => {
                unexpected(self, &window.slide, "slide");
                unexpected(self, &window.gap, "gap");
                required(self, &window.size, "size").map(|size| WindowKind::Tumbling { size })
            }
            "sliding" => {
                unexpected(self, &window.gap, "gap");
                let size = required(self, &window.size, "size");
                let slide = required(self, &window.slide, "slide");
                match (size, slide) {
                    (Some(size), Some(slide)) if slide > size => {
                        self.problem(place.clone(), format!("`slide` ({slide} ms) is larger than `size` ({size} ms): events between windows would be lost"));
                        None
                    }
                    (Some(size), Some(slide)) => Some(WindowKind::Sliding { size, slide }),
                    _ => None,
                }
            }
            "session" => {
                unexpected(self, &window.size, "size");
                unexpected(self, &window.slide, "slide");
                required(self, &window.gap, "gap").map(|gap| WindowKind::Session { gap })
            }
            other => {
                self.problem(
                    place_of(&window.kind, format!("{path}.type")),
                    format!("unknown window type `{other}`: expected tumbling, sliding or session"),
                );
                None
            }
        };
        let time = match window.time.as_ref().map(|t| t.value.as_str()) {
            None | Some("event") => TimeDomain::Event,
            Some("processing") => TimeDomain::Processing,
            Some(other) => {
                let time_place = window
                    .time
                    .as_ref()
                    .map(|t| place_of(t, format!("{path}.time")))
                    .unwrap_or_else(|| place.clone());
                self.problem(
                    time_place,
                    format!("unknown time `{other}`: expected event or processing"),
                );
                TimeDomain::Event
            }
        };
        let allowed_lateness = window
            .allowed_lateness
            .as_ref()
            .and_then(|d| self.duration(d, &format!("{path}.allowed_lateness")))
            .unwrap_or(0);
        let mut aggregates = Vec::new();
        if window.aggregates.value.0.is_empty() {
            self.problem(
                place_of(&window.aggregates, format!("{path}.aggregates")),
                "a window needs at least one aggregate",
            );
        }
        for (name, function) in &window.aggregates.value.0 {
            let aggregate_path = format!("{path}.aggregates.{}", name.value);
            match parse_aggregate(&function.value) {
                Ok((kind, input)) => aggregates.push(AggregateSpec {
                    name: name.value.clone(),
                    kind,
                    input: input.map(|source| ExprSpec {
                        source,
                        place: place_of(function, aggregate_path.clone()),
                    }),
                }),
                Err(message) => self.problem(place_of(function, aggregate_path), message),
            }
        }
        Some(StepSpec::Window(WindowSpec {
            kind: kind?,
            time,
            allowed_lateness,
            aggregates,
            place,
        }))
    }

    fn sink(&mut self, raw: &Spanned<RawSink>, path: &str) -> Option<SinkSpec> {
        let sink = &raw.value;
        let time_format = match sink.time_format.as_ref().map(|t| t.value.as_str()) {
            None | Some("rfc3339") => TimeFormat::Rfc3339,
            Some("millis") => TimeFormat::Millis,
            Some(other) => {
                let place = sink
                    .time_format
                    .as_ref()
                    .map(|t| place_of(t, format!("{path}.time_format")))
                    .unwrap_or_default();
                self.problem(
                    place,
                    format!("unknown time format `{other}`: expected rfc3339 or millis"),
                );
                TimeFormat::Rfc3339
            }
        };
        let settings = Settings::new(
            "sink",
            &sink.kind.value,
            place_of(raw, path),
            &self.base,
            sink.settings.clone(),
            &mut self.problems,
        );
        let kind = registry::configure(
            &registry::SINKS,
            place_of(&sink.kind, format!("{path}.type")),
            settings,
        )?;
        Some(SinkSpec { kind, time_format })
    }

    /// A side output's sink (`dead_letters`, `late_events`, `timed_out`): one that side records,
    /// written as JSON Lines as they come, can go to.
    fn side_sink(&mut self, raw: &Spanned<RawSink>, path: &str) -> Option<SinkSpec> {
        let sink = self.sink(raw, path)?;
        if !sink.kind.takes_side_records() {
            self.problem(
                place_of(&raw.value.kind, format!("{path}.type")),
                format!(
                    "`{}` cannot take {path}: side records are written as JSON Lines, to `stdout` or a `file`",
                    sink.kind.type_name()
                ),
            );
            return None;
        }
        Some(sink)
    }

    fn runtime(&mut self, raw: &RawRuntime) -> RuntimeSpec {
        let mut runtime = RuntimeSpec::default();
        for (value, target, key) in [
            (&raw.batch_size, &mut runtime.batch_size, "batch_size"),
            (
                &raw.channel_capacity,
                &mut runtime.channel_capacity,
                "channel_capacity",
            ),
        ] {
            if let Some(value) = value {
                match usize::try_from(value.value) {
                    Ok(size) if size > 0 => *target = size,
                    _ => self.problem(
                        place_of(value, format!("runtime.{key}")),
                        format!("`{key}` must be a positive number, not {}", value.value),
                    ),
                }
            }
        }
        if let Some(fuse) = &raw.fuse_source {
            runtime.fuse_source = fuse.value;
        }
        match raw.on_stop.as_ref().map(|s| s.value.as_str()) {
            None | Some("fire") => runtime.on_stop = OnStop::Fire,
            Some("keep") => runtime.on_stop = OnStop::Keep,
            Some(other) => {
                let place = raw
                    .on_stop
                    .as_ref()
                    .map(|s| place_of(s, "runtime.on_stop"))
                    .unwrap_or_default();
                self.problem(
                    place,
                    format!("unknown on_stop `{other}`: expected fire or keep"),
                );
            }
        }
        runtime
    }
}

/// `word` with its indefinite article: `an interval`, `a window`.
fn article(word: &str) -> String {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {word}")
    } else {
        format!("a {word}")
    }
}

fn expr_spec(expr: &Spanned<String>, path: String) -> ExprSpec {
    ExprSpec {
        source: expr.value.clone(),
        place: place_of(expr, path),
    }
}

/// Parses a pattern's selected field: `first(stage.expr)`, `last(stage.expr)`,
/// `sum(stage.expr)` or `count(stage)`, into the function, the stage and the expression over
/// the stage's events.
pub fn parse_pattern_field(
    text: &str,
) -> std::result::Result<(PatternAggregate, String, Option<String>), String> {
    let text = text.trim();
    let Some(open) = text.find('(') else {
        return Err(format!(
            "field `{text}` must be first(stage.expr), last(stage.expr), sum(stage.expr) or count(stage)"
        ));
    };
    let Some(inner) = text[open + 1..].strip_suffix(')') else {
        return Err(format!("field `{text}` lacks its closing parenthesis"));
    };
    let inner = inner.trim();
    let aggregate = match text[..open].trim() {
        "first" => PatternAggregate::First,
        "last" => PatternAggregate::Last,
        "sum" => PatternAggregate::Sum,
        "count" => PatternAggregate::Count,
        other => {
            return Err(format!(
                "unknown function `{other}`: expected first, last, sum or count"
            ))
        }
    };
    let (stage, expr) = match inner.split_once('.') {
        Some((stage, expr)) => (stage.trim(), Some(expr.trim().to_string())),
        None => (inner, None),
    };
    if stage.is_empty() {
        return Err(format!("field `{text}` names no stage"));
    }
    match (aggregate, expr) {
        (PatternAggregate::Count, None) => Ok((aggregate, stage.to_string(), None)),
        (PatternAggregate::Count, Some(_)) => Err(format!(
            "`count` takes a stage only, as in `count({stage})`"
        )),
        (_, None) => Err(format!(
            "`{text}` needs a field of the stage, as in `{}({stage}.amount)`",
            text[..open].trim()
        )),
        (_, Some(expr)) => Ok((aggregate, stage.to_string(), Some(expr))),
    }
}

/// The arguments of an aggregate, split at the commas outside brackets, braces, parentheses
/// and quotes, each trimmed.
fn split_arguments(text: &str) -> Vec<String> {
    let mut arguments = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut start = 0;
    for (at, character) in text.char_indices() {
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if character == '\\' {
                escaped = true;
            } else if character == open {
                quote = None;
            }
            continue;
        }
        match character {
            '"' | '\'' => quote = Some(character),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                arguments.push(text[start..at].trim().to_string());
                start = at + 1;
            }
            _ => {}
        }
    }
    arguments.push(text[start..].trim().to_string());
    arguments
}

/// Parses `count`, `count()`, `sum(price)`, `count_by(user_id)` into a function and its input.
///
/// `arg_max(VALUE, ARGUMENT)` and `arg_min` take the CEL list `[VALUE, ARGUMENT]` as their
/// input; `arg_max(VALUE)` stands for `arg_max(VALUE, key)`, the keys of an earlier window's
/// results. `top_k(N, EXPR)` takes `EXPR`, with `N` a whole number of at least 1.
pub fn parse_aggregate(text: &str) -> std::result::Result<(AggregateKind, Option<String>), String> {
    let text = text.trim();
    let (name, argument) = match text.find('(') {
        Some(open) => {
            let Some(inner) = text[open + 1..].strip_suffix(')') else {
                return Err(format!("aggregate `{text}` lacks its closing parenthesis"));
            };
            let inner = inner.trim();
            (
                text[..open].trim(),
                (!inner.is_empty()).then(|| inner.to_string()),
            )
        }
        None => (text, None),
    };
    let kind = match name {
        "count" => AggregateKind::Count,
        "sum" => AggregateKind::Sum,
        "min" => AggregateKind::Min,
        "max" => AggregateKind::Max,
        "avg" => AggregateKind::Avg,
        "count_distinct" => AggregateKind::CountDistinct,
        "first" => AggregateKind::First,
        "last" => AggregateKind::Last,
        "count_by" => AggregateKind::CountBy,
        "arg_max" => AggregateKind::ArgMax,
        "arg_min" => AggregateKind::ArgMin,
        "top_k" => AggregateKind::TopK { k: 0 },
        other => {
            return Err(format!(
                "unknown aggregate `{other}`: expected count, sum, min, max, avg, count_distinct, first, last, count_by, arg_max, arg_min or top_k"
            ))
        }
    };
    let arguments = argument.as_deref().map(split_arguments).unwrap_or_default();
    match kind {
        AggregateKind::ArgMax | AggregateKind::ArgMin => {
            return match arguments.as_slice() {
                [value] => Ok((kind, Some(format!("[{value}, key]")))),
                [value, argument] => Ok((kind, Some(format!("[{value}, {argument}]")))),
                _ => Err(format!(
                    "`{name}` takes a value and what to give for it, as in `{name}(price, auction)`, or a value only, as in `{name}(count)` for the keys of an earlier window; found {} arguments",
                    arguments.len()
                )),
            };
        }
        AggregateKind::TopK { .. } => {
            let [count, input] = arguments.as_slice() else {
                return Err(format!(
                    "`top_k` takes a count and an expression, as in `top_k(3, price)`; found {} arguments",
                    arguments.len()
                ));
            };
            return match count.parse::<u32>() {
                Ok(k) if k >= 1 => Ok((AggregateKind::TopK { k }, Some(input.clone()))),
                _ => Err(format!(
                    "`top_k` needs a whole number of at least 1 as its count, found `{count}`"
                )),
            };
        }
        _ if arguments.len() > 1 => {
            return Err(format!(
                "`{name}` takes one argument, found {}",
                arguments.len()
            ));
        }
        _ => {}
    }
    match (kind, &argument) {
        (AggregateKind::Count, Some(_)) => {
            Err("`count` takes no argument: it counts events".into())
        }
        (AggregateKind::Count, None) => Ok((kind, None)),
        (_, None) => Err(format!("`{name}` needs an argument, as in `{name}(price)`")),
        (_, Some(_)) => Ok((kind, argument)),
    }
}
