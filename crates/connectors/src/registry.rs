//! The registry of connectors: every source and sink `type:` a config can name, its typed
//! settings, and how it opens. The only `match` on a connector's kind is here; the runtime and
//! the planner ask these methods.

use std::path::PathBuf;
use std::sync::Arc;

use dataflow_event::json::{Decoder, TimeFormat};

use crate::file::FileSource;
use crate::generator::{Generator, GeneratorConfig, GeneratorSource};
use crate::http::{HttpSource, IngestHub};
use crate::jsonl::JsonLinesSink;
use crate::parts::PartsSink;
use crate::sink::{OpenMode, Sink};
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
        }
    }

    /// Whether its events are posted through the processor's HTTP API (`POST /ingest`): such a
    /// source needs `api:`, applies its rate limit when it admits a request (it cannot wait),
    /// and is drained on a stop.
    pub fn is_ingest(&self) -> bool {
        matches!(self, SourceKind::Http { .. })
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
    /// Whether the sink is exactly once: it keeps what was written since the last checkpoint
    /// pending, and a restore discards what no completed checkpoint covers.
    pub fn is_transactional(&self) -> bool {
        matches!(self, SinkKind::Parts { .. })
    }
}

impl SinkSpec {
    /// Opens the sink for results of `layout` (with the `time` field when `write_time`), in a
    /// run restored from checkpoint `restored` (if any): an exactly-once sink recovers to it,
    /// dropping what it does not cover; a file is truncated or appended to as `mode` says.
    pub async fn open(
        &self,
        layout: dataflow_event::Layout,
        write_time: bool,
        restored: Option<u64>,
        mode: OpenMode,
    ) -> Result<Box<dyn Sink>> {
        Ok(match &self.kind {
            SinkKind::Parts { .. } => {
                Box::new(PartsSink::open(self, layout, write_time, restored).await?)
            }
            SinkKind::Stdout | SinkKind::File { .. } => {
                Box::new(JsonLinesSink::open(self, layout, write_time, mode).await?)
            }
        })
    }
}
