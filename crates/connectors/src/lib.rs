//! The connectors of dataflow: the [`Source`] and [`Sink`] traits, one module per connector,
//! and the [`registry`] that maps a config's `type:` to a connector with its typed settings.
//!
//! Sources: `file` (JSON Lines files, partitions with byte offsets, follow mode, parallel
//! decoding), `stdin`, `http` (events posted to the processor's `POST /ingest`) and
//! `generator` (deterministic Nexmark-style bids or clicks) and `kafka` (topics of a Kafka
//! broker). Sinks: `stdout` and `file`
//! (`jsonl`), `parts` (exactly-once part files committed with checkpoints), `parquet` (exactly-once
//! Parquet files, partitioned, published with checkpoints), and the side
//! outputs for dead letters and late events (`side`). `ratelimit` paces any source.
//!
//! Adding a connector: a module with the connector and its settings, and its entry in
//! [`registry`].
#![forbid(unsafe_code)]

pub mod config;
mod error;
pub mod file;
pub mod generator;
pub mod http;
pub mod jsonl;
pub mod kafka;
pub mod kafka_repartition;
mod lines;
pub mod parquet;
pub mod parts;
pub mod postgres;
pub mod ratelimit;
pub mod redis;
pub mod registry;
mod retry;
pub mod side;
pub mod sink;
pub mod source;
pub mod stdin;

pub use error::{ConnectorError, Result};
pub use registry::{SinkKind, SinkSpec, SourceKind};
pub use sink::{OpenMode, Rejected, ResultFormat, Sink};
pub use source::{PartitionPosition, Poll, Source};
