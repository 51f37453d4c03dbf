//! The registry of connectors: every source and sink `type:` a config can name, its typed
//! settings, and how it opens. The only `match` on a connector's kind is here; the runtime and
//! the planner ask these methods.

use std::path::PathBuf;
use std::sync::Arc;

use dataflow_event::json::{Decoder, DecoderConfig, TimeFormat};

use crate::config::{Place, Settings};
use crate::file::FileSource;
use crate::generator::{Generator, GeneratorConfig, GeneratorSource};
use crate::http::{HttpSource, IngestHub};
use crate::jsonl::JsonLinesSink;
use crate::kafka::{EventTime, KafkaSink, KafkaSinkSettings, KafkaSource, KafkaSourceSettings};
use crate::kafka_repartition::{
    RepartitionSink, RepartitionSinkSettings, RepartitionSource, TaskRole,
};
use crate::parquet::{ParquetSettings, ParquetSink};
use crate::parts::PartsSink;
use crate::postgres::{PostgresSettings, PostgresSink};
use crate::redis::{RedisSettings, RedisSink};
use crate::sink::{OpenMode, ResultFormat, Sink};
use crate::source::Source;
use crate::stdin::StdinSource;
use crate::{ConnectorError, Result};

/// What a source reads.
#[derive(Clone, Debug)]
pub enum SourceKind {
    /// JSON Lines files; each file is a partition with its own byte offset and watermark.
    File {
        /// The files.
        paths: Vec<PathBuf>,
        /// Keep reading as the files grow, until stopped.
        follow: bool,
    },
    /// JSON Lines on standard input (cannot be replayed).
    Stdin,
    /// Events posted to the processor's `POST /ingest` (cannot be replayed; see
    /// [`crate::http`]).
    Http {
        /// The most events its queue holds before requests are refused with 429.
        queue: usize,
    },
    /// The built-in deterministic generator.
    Generator {
        /// What to generate.
        config: GeneratorConfig,
        /// Events per second of wall-clock time; `None` is as fast as possible.
        rate: Option<u64>,
    },
    /// The partitions of Kafka topics (see [`crate::kafka`]).
    Kafka(Box<KafkaSourceSettings>),
}

/// Where output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkSpec {
    /// Stdout or a file.
    pub kind: SinkKind,
    /// How timestamps are written.
    pub time_format: TimeFormat,
}

/// Sink kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkKind {
    /// Standard output, one JSON line per event.
    Stdout,
    /// A JSON Lines file, created or truncated at start.
    File {
        /// The file.
        path: PathBuf,
    },
    /// Exactly-once JSON Lines part files in a directory: what is written between two
    /// checkpoints stays pending until the second completes, then is committed as
    /// `part-<checkpoint>.jsonl`; a restore discards what no completed checkpoint covers.
    Parts {
        /// The directory.
        dir: PathBuf,
    },
    /// Exactly-once Parquet files in a directory, partitioned, published when the checkpoint
    /// after them completes (see [`crate::parquet`]).
    Parquet(ParquetSettings),
    /// Rows of a PostgreSQL table, exactly once with checkpoints (see [`crate::postgres`]).
    Postgres(Box<PostgresSettings>),
    /// Keys of Redis, last write wins (see [`crate::redis`]).
    Redis(Box<RedisSettings>),
    /// Records of a Kafka topic, at least once or exactly once (see [`crate::kafka`]).
    Kafka(Box<KafkaSinkSettings>),
    /// The internal repartition topic of a scale-out job, written by an upstream task (built
    /// by the task manager, never written in a config; see [`crate::kafka_repartition`]).
    Repartition(Box<RepartitionSinkSettings>),
}

impl SinkSpec {
    /// A stdout sink.
    pub fn stdout() -> SinkSpec {
        SinkSpec {
            kind: SinkKind::Stdout,
            time_format: TimeFormat::Rfc3339,
        }
    }

    /// A file sink.
    pub fn file(path: impl Into<PathBuf>) -> SinkSpec {
        SinkSpec {
            kind: SinkKind::File { path: path.into() },
            time_format: TimeFormat::Rfc3339,
        }
    }
}

impl SourceKind {
    /// The `type:` of this source in a config.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKind::File { .. } => "file",
            SourceKind::Stdin => "stdin",
            SourceKind::Http { .. } => "http",
            SourceKind::Generator { .. } => "generator",
            SourceKind::Kafka(_) => "kafka",
        }
    }

    /// Whether its events are posted through the processor's HTTP API (`POST /ingest`): such a
    /// source needs `api:`, applies its rate limit when it admits a request (it cannot wait),
    /// and is drained on a stop.
    pub fn is_ingest(&self) -> bool {
        self.ingest_queue().is_some()
    }

    /// The size of its ingest queue, for a source fed through `POST /ingest`.
    pub fn ingest_queue(&self) -> Option<usize> {
        match self {
            SourceKind::Http { queue } => Some(*queue),
            _ => None,
        }
    }

    /// Total bytes it will read, when it is bounded and known before it starts (files that
    /// are not followed); `None` otherwise.
    pub fn size_hint(&self) -> Option<u64> {
        match self {
            SourceKind::File {
                paths,
                follow: false,
            } => paths
                .iter()
                .map(|path| std::fs::metadata(path).ok().map(|m| m.len()))
                .sum(),
            _ => None,
        }
    }

    /// The generator it runs, for a generator source: its events are rows of the profile's
    /// schema, so the planner decodes nothing and types expressions by that schema.
    pub fn generator(&self) -> Option<&GeneratorConfig> {
        match self {
            SourceKind::Generator { config, .. } => Some(config),
            _ => None,
        }
    }

    /// Whether its settings can produce events: a generator's are checked as a whole here
    /// (each key was checked as it was read).
    pub fn check(&self) -> Result<()> {
        match self {
            SourceKind::Generator { config, .. } => Generator::new(config.clone()).map(|_| ()),
            SourceKind::File { .. }
            | SourceKind::Stdin
            | SourceKind::Http { .. }
            | SourceKind::Kafka(_) => Ok(()),
        }
    }

    /// The decoder settings its records are read with, from those `written` for it: a
    /// generator's events are rows of its profile's schema, stamped with event times.
    pub fn decoder_config(&self, written: &DecoderConfig) -> DecoderConfig {
        let mut config = written.clone();
        if let SourceKind::Generator {
            config: generator, ..
        } = self
        {
            config.schema = Some(Generator::schema(generator.profile));
        }
        // The record timestamp is the event time: no field holds it.
        if let SourceKind::Kafka(settings) = self {
            if settings.event_time == EventTime::Record {
                config.time_field = None;
            }
        }
        config
    }

    /// Opens the source `name`, decoding with `decoder`; an `http` source takes its queue from
    /// `ingest`.
    pub fn open(
        &self,
        name: &str,
        decoder: Arc<Decoder>,
        ingest: &IngestHub,
    ) -> Result<Box<dyn Source>> {
        Ok(match self {
            SourceKind::File { paths, follow } => {
                Box::new(FileSource::open(name, paths, decoder, *follow)?)
            }
            SourceKind::Stdin => {
                tracing::warn!(source = %name, "standard input cannot be replayed: a restart cannot resume it");
                Box::new(StdinSource::new(name, decoder))
            }
            SourceKind::Generator { config, rate } => {
                let generator = Generator::new(config.clone())?;
                Box::new(GeneratorSource::new(generator, *rate))
            }
            SourceKind::Kafka(settings) => match settings.task.as_ref() {
                Some(task) => match task.role {
                    TaskRole::Repartition { upstream } => Box::new(RepartitionSource::open(
                        name, settings, task, upstream, decoder,
                    )?),
                    TaskRole::Input { .. } => Box::new(KafkaSource::open(name, settings, decoder)?),
                },
                None => Box::new(KafkaSource::open(name, settings, decoder)?),
            },
            SourceKind::Http { .. } => match ingest.queue(name) {
                Some(queue) => Box::new(HttpSource::open(queue)),
                None => {
                    return Err(ConnectorError::Runtime(format!(
                        "http source `{name}` has no ingest queue"
                    )))
                }
            },
        })
    }
}

impl SinkKind {
    /// The `type:` of this sink in a config.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File { .. } => "file",
            SinkKind::Parts { .. } => "parts",
            SinkKind::Parquet(_) => "parquet",
            SinkKind::Postgres(_) => "postgres",
            SinkKind::Redis(_) => "redis",
            SinkKind::Kafka(_) => "kafka",
            SinkKind::Repartition(_) => "repartition",
        }
    }

    /// Whether the sink is sent the watermark after what it was written
    /// ([`crate::Sink::watermark`]): the repartition sink passes it on downstream.
    pub fn wants_watermarks(&self) -> bool {
        matches!(self, SinkKind::Repartition(_))
    }

    /// Whether the sink can take side records (dead letters, late events, timed-out matches),
    /// which are written as JSON Lines as they come: only a stream of lines can.
    pub fn takes_side_records(&self) -> bool {
        matches!(self, SinkKind::Stdout | SinkKind::File { .. })
    }

    /// Whether the sink is exactly once: it keeps what was written since the last checkpoint
    /// pending, and a restore discards what no completed checkpoint covers.
    pub fn is_transactional(&self) -> bool {
        matches!(
            self,
            SinkKind::Parts { .. } | SinkKind::Parquet(_) | SinkKind::Postgres(_)
        ) || matches!(self, SinkKind::Kafka(settings) if settings.exactly_once)
    }

    /// The problems of this sink's settings against the results it will get and the `earlier`
    /// result sinks of the pipeline, each at its place (checked by validation, which opens no
    /// file and no connection): a parquet sink needs typed results, partitions by fields they
    /// have, and a directory no other parquet sink writes in; a store sink's mapping names
    /// fields the results have.
    pub fn check_results(
        &self,
        format: &ResultFormat,
        earlier: &[SinkSpec],
    ) -> Vec<crate::config::Problem> {
        match self {
            SinkKind::Parquet(settings) => {
                let shared = earlier.iter().any(|sink| {
                    matches!(&sink.kind, SinkKind::Parquet(other) if other.dir == settings.dir)
                });
                crate::parquet::check_layout(settings, format, shared)
            }
            SinkKind::Postgres(settings) => crate::postgres::check_layout(settings, &format.layout),
            SinkKind::Redis(settings) => crate::redis::check_layout(settings, &format.layout),
            SinkKind::Kafka(settings) => crate::kafka::check_layout(settings, format),
            SinkKind::Stdout
            | SinkKind::File { .. }
            | SinkKind::Parts { .. }
            | SinkKind::Repartition(_) => Vec::new(),
        }
    }
}

impl SinkSpec {
    /// Opens the sink for results in `format`, in a run restored from checkpoint `restored` (if
    /// any): an exactly-once sink recovers to it, dropping what it does not cover; a file is
    /// truncated or appended to as `mode` says.
    pub async fn open(
        &self,
        format: ResultFormat,
        restored: Option<u64>,
        mode: OpenMode,
    ) -> Result<Box<dyn Sink>> {
        Ok(match &self.kind {
            SinkKind::Parts { .. } => Box::new(PartsSink::open(self, format, restored).await?),
            SinkKind::Parquet(_) => Box::new(ParquetSink::open(self, format, restored).await?),
            SinkKind::Postgres(settings) => {
                Box::new(PostgresSink::open(settings, format, restored).await?)
            }
            SinkKind::Redis(settings) => Box::new(RedisSink::open(self, settings, format).await?),
            SinkKind::Kafka(settings) => {
                Box::new(KafkaSink::open(self, settings, format, restored).await?)
            }
            SinkKind::Repartition(settings) => Box::new(RepartitionSink::open(settings)?),
            SinkKind::Stdout | SinkKind::File { .. } => {
                Box::new(JsonLinesSink::open(self, format, mode).await?)
            }
        })
    }
}

/// Reads a connector type's own settings into its kind, reporting problems to them.
pub type Configure<K> = fn(&mut Settings<'_>) -> Option<K>;

/// A connector `type:` a config can name, and how its settings become a kind `K`
/// ([`SourceKind`] or [`SinkKind`]).
#[derive(Debug)]
pub struct ConnectorType<K> {
    /// The `type:` as written.
    pub name: &'static str,
    /// The settings it takes besides the keys every source (or sink) has.
    pub keys: &'static [&'static str],
    /// Reads the type's own settings, reporting problems to them.
    pub configure: Configure<K>,
}

/// A source type of [`SOURCES`].
pub type SourceType = ConnectorType<SourceKind>;

/// A sink type of [`SINKS`].
pub type SinkType = ConnectorType<SinkKind>;

/// Whether some type of `types` takes `key`: a key none takes is refused as unknown.
pub fn takes_key<K>(types: &[ConnectorType<K>], key: &str) -> bool {
    types.iter().any(|t| t.keys.contains(&key))
}

/// Every source type.
pub const SOURCES: [SourceType; 5] = [
    SourceType {
        name: "file",
        keys: crate::file::KEYS,
        configure: crate::file::configure,
    },
    SourceType {
        name: "stdin",
        keys: crate::stdin::KEYS,
        configure: crate::stdin::configure,
    },
    SourceType {
        name: "http",
        keys: crate::http::KEYS,
        configure: crate::http::configure,
    },
    SourceType {
        name: "generator",
        keys: crate::generator::KEYS,
        configure: crate::generator::configure,
    },
    SourceType {
        name: "kafka",
        keys: crate::kafka::SOURCE_KEYS,
        configure: crate::kafka::configure_source,
    },
];

/// Every sink type.
pub const SINKS: [SinkType; 7] = [
    SinkType {
        name: "stdout",
        keys: crate::jsonl::STDOUT_KEYS,
        configure: crate::jsonl::configure_stdout,
    },
    SinkType {
        name: "file",
        keys: crate::jsonl::FILE_KEYS,
        configure: crate::jsonl::configure_file,
    },
    SinkType {
        name: "parts",
        keys: crate::parts::KEYS,
        configure: crate::parts::configure,
    },
    SinkType {
        name: "parquet",
        keys: crate::parquet::KEYS,
        configure: crate::parquet::configure,
    },
    SinkType {
        name: "postgres",
        keys: crate::postgres::KEYS,
        configure: crate::postgres::configure,
    },
    SinkType {
        name: "redis",
        keys: crate::redis::KEYS,
        configure: crate::redis::configure,
    },
    SinkType {
        name: "kafka",
        keys: crate::kafka::SINK_KEYS,
        configure: crate::kafka::configure_sink,
    },
];

/// `a, b or c`.
fn alternatives(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Configures, with `settings`, the type among `types` that they name (written at
/// `type_place`); problems go to `settings`: an unknown type names the known ones, and keys the
/// type does not take are reported by `Settings::finish`.
pub fn configure<K>(
    types: &[ConnectorType<K>],
    type_place: Place,
    mut settings: Settings<'_>,
) -> Option<K> {
    let Some(connector) = types.iter().find(|t| t.name == settings.type_name()) else {
        let names: Vec<&str> = types.iter().map(|t| t.name).collect();
        let message = format!(
            "unknown {} type `{}`: expected {}",
            settings.kind(),
            settings.type_name(),
            alternatives(&names)
        );
        settings.problem(type_place, message);
        return None;
    };
    let kind = (connector.configure)(&mut settings);
    settings.finish();
    kind
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Setting, SettingValue};

    /// A value of the type each key is read as, so that `configure` takes it.
    fn value_for(key: &str) -> SettingValue {
        match key {
            "paths" => SettingValue::Seq(vec![SettingValue::Str("a".into())]),
            "follow" | "exactly_once" | "scale_out" => SettingValue::Bool(false),
            "topics" => SettingValue::Seq(vec![SettingValue::Str("t".into())]),
            "properties" => {
                SettingValue::Map(vec![("client.id".into(), SettingValue::Str("test".into()))])
            }
            "headers" => SettingValue::Map(vec![("h".into(), SettingValue::Str("key".into()))]),
            "path" | "profile" | "max_disorder" | "partition_by" | "partition_time"
            | "compression" | "retry_timeout" | "ttl" | "url" | "host" | "user" | "password"
            | "dbname" | "table" | "mode" | "key" | "id" | "command" | "brokers" | "topic"
            | "topic_pattern" | "group" | "start" | "event_time" | "transactional_id"
            | "partitioned_by" => SettingValue::Str(match key {
                "profile" => "bids".into(),
                "max_disorder" | "retry_timeout" | "ttl" => "1s".into(),
                "compression" => "snappy".into(),
                "url" => "redis://127.0.0.1:6379/".into(),
                "mode" => "upsert".into(),
                "brokers" => "127.0.0.1:9092".into(),
                "start" => "earliest".into(),
                "event_time" => "record".into(),
                "command" => "hset".into(),
                "key" => "a".into(),
                _ => "x".into(),
            }),
            "columns" => SettingValue::Seq(vec![SettingValue::Str("a".into())]),
            "create_table" => SettingValue::Bool(true),
            _ => SettingValue::Int(1),
        }
    }

    fn settings_of(keys: &[&str]) -> Vec<Setting> {
        keys.iter()
            .map(|key| Setting {
                key: key.to_string(),
                place: Place::path(*key),
                value: value_for(key),
            })
            .collect()
    }

    /// Each type's `keys` are exactly what its `configure` takes: given all of them, nothing
    /// is left over, and each is refused by a type that does not list it.
    #[test]
    fn every_type_takes_exactly_its_keys() {
        // The inputs `a` and `x` exist; the sinks' `x` does not, and can be created.
        let inputs = tempfile::tempdir().expect("temp dir");
        for name in ["a", "x"] {
            std::fs::write(inputs.path().join(name), "").expect("write input");
        }
        let outputs = tempfile::tempdir().expect("temp dir");
        for source in SOURCES {
            let mut problems = Vec::new();
            // A kafka source takes `topics` or `topic_pattern`, not both: the list here.
            let keys: Vec<&str> = source
                .keys
                .iter()
                .copied()
                .filter(|key| !(source.name == "kafka" && *key == "topic_pattern"))
                .collect();
            let settings = Settings::new(
                "source",
                source.name,
                Place::path("s"),
                inputs.path(),
                settings_of(&keys),
                &mut problems,
            );
            assert!(configure(&SOURCES, Place::path("t"), settings).is_some());
            assert!(problems.is_empty(), "{}: {problems:?}", source.name);
        }
        for sink in SINKS {
            let mut problems = Vec::new();
            // A postgres sink takes a `url` or its parts, not both: the parts here.
            let keys: Vec<&str> = sink
                .keys
                .iter()
                .copied()
                .filter(|key| !(sink.name == "postgres" && *key == "url"))
                .collect();
            let settings = Settings::new(
                "sink",
                sink.name,
                Place::path("s"),
                outputs.path(),
                settings_of(&keys),
                &mut problems,
            );
            assert!(configure(&SINKS, Place::path("t"), settings).is_some());
            assert!(problems.is_empty(), "{}: {problems:?}", sink.name);
        }
        let mut problems = Vec::new();
        let settings = Settings::new(
            "source",
            "stdin",
            Place::path("s"),
            Path::new("."),
            settings_of(&["queue"]),
            &mut problems,
        );
        configure(&SOURCES, Place::path("t"), settings);
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].message,
            "`queue` does not apply to a stdin source"
        );
    }
}
