//! The HTTP contract between the processor (server) and the `admin` CLI (client): routes,
//! request and response bodies, the error body with its stable codes, and the server's
//! [`server::router`]. The processor serves it; the typed client for `admin` follows.
//!
//! ```
//! use dataflow_api::{routes, ErrorBody};
//!
//! assert_eq!(routes::HEALTH, "/health");
//! let body = ErrorBody { code: "not_found".into(), message: "no checkpoint 7".into() };
//! assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"code":"not_found","message":"no checkpoint 7"}"#);
//! ```
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
mod connections;
mod limits;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod ui;

/// Route paths.
pub mod routes {
    /// Liveness: answers while the process runs. Not protected.
    pub const HEALTH: &str = "/health";
    /// Readiness: answers once the pipeline runs. Not protected.
    pub const READY: &str = "/ready";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// The versioned API's prefix.
    pub const API_V1: &str = "/api/v1";
    /// The OpenAPI document of these routes.
    pub const OPENAPI: &str = "/api/v1/openapi.json";
    /// `GET`: the pipeline's state, uptime, counts per operator, watermark, last checkpoint.
    pub const STATUS: &str = "/api/v1/status";
    /// `GET`: every source's and partition's watermark, and which input holds the operators back.
    pub const WATERMARKS: &str = "/api/v1/watermarks";
    /// The checkpoints: `GET` lists them, `POST` takes one now.
    pub const CHECKPOINTS: &str = "/api/v1/checkpoints";
    /// One checkpoint: `GET` gives its manifest, after verifying it; `DELETE` deletes it.
    pub const CHECKPOINT: &str = "/api/v1/checkpoints/{id}";
    /// `POST` recomputes a checkpoint's checksum and decodes it.
    pub const CHECKPOINT_VERIFY: &str = "/api/v1/checkpoints/{id}/verify";
    /// `GET`: whether a triggered checkpoint completed.
    pub const CHECKPOINT_STATUS: &str = "/api/v1/checkpoints/{id}/status";
    /// `POST` restores the running pipeline to this checkpoint (`{"dry_run": true}` only says
    /// what would happen).
    pub const CHECKPOINT_RESTORE: &str = "/api/v1/checkpoints/{id}/restore";
    /// `GET`: what changed from checkpoint `id` to checkpoint `other`, key by key.
    pub const CHECKPOINT_DIFF: &str = "/api/v1/checkpoints/{id}/diff/{other}";
    /// `GET ?offset=&limit=`: the keys of an operator's state in a checkpoint, a page at a time.
    pub const STATE_KEYS: &str = "/api/v1/checkpoints/{id}/operators/{operator}/keys";
    /// `GET ?key=`: one key's state (the key as JSON, or as a plain string).
    pub const STATE_KEY: &str = "/api/v1/checkpoints/{id}/operators/{operator}/state";
    /// `GET`: per stage, the share of the last interval it was busy, blocked by its output or
    /// starved for input, and the stage most likely holding the pipeline back.
    pub const BACKPRESSURE: &str = "/api/v1/backpressure";
    /// `POST ?source=`: events for an `http` source, as JSON (an object or an array) or JSON
    /// Lines; all of a body's events are accepted, or none.
    pub const INGEST: &str = "/ingest";
    /// `GET`: the pipeline as a graph (sources, steps, sinks with their kinds and event
    /// counts) and the end-to-end latency histogram, for the dashboard.
    pub const GRAPH: &str = "/api/v1/graph";
    /// The dashboard's page. Not protected: the page asks for the token and sends it on its
    /// data calls.
    pub const UI: &str = "/ui";
    /// The dashboard's page, with a trailing slash.
    pub const UI_INDEX: &str = "/ui/";
    /// The dashboard's scripts and styles. Not protected.
    pub const UI_ASSET: &str = "/ui/{asset}";

    /// Every route with its methods: the OpenAPI document must describe each (tested).
    pub const ALL: &[(&str, &str)] = &[
        ("get", HEALTH),
        ("get", READY),
        ("get", METRICS),
        ("get", OPENAPI),
        ("get", STATUS),
        ("get", WATERMARKS),
        ("get", CHECKPOINTS),
        ("post", CHECKPOINTS),
        ("get", CHECKPOINT),
        ("delete", CHECKPOINT),
        ("post", CHECKPOINT_VERIFY),
        ("get", CHECKPOINT_STATUS),
        ("post", CHECKPOINT_RESTORE),
        ("get", CHECKPOINT_DIFF),
        ("get", STATE_KEYS),
        ("get", STATE_KEY),
        ("get", BACKPRESSURE),
        ("post", INGEST),
        ("get", GRAPH),
        ("get", UI),
        ("get", UI_INDEX),
        ("get", UI_ASSET),
    ];

    /// The routes open to anyone: probes and the dashboard's static files (which hold no data).
    pub const PUBLIC: &[&str] = &[HEALTH, READY, UI, UI_INDEX, UI_ASSET];
}

pub mod control;
pub mod state;

pub use control::{
    Control, ControlError, Ingest, IngestError, IngestFormat, Progress, StateDecoder,
};
pub use dataflow_metrics::{BackpressureReport, StageShare};
pub use limits::ServeLimits;

/// One row of the checkpoint list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSummary {
    /// The checkpoint's id.
    pub id: u64,
    /// When it was taken (RFC 3339), if it verifies.
    pub created_at: Option<String>,
    /// Its data file's size, if it verifies.
    pub bytes: Option<u64>,
    /// How long it took from its trigger until every sink acknowledged its barrier, in
    /// milliseconds, if it verifies and its manifest records it.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// `valid`, or `invalid: <reason>`.
    pub status: String,
    /// Whether it passed its checks.
    pub verified: bool,
}

impl CheckpointSummary {
    /// Every complete checkpoint of `storage`, oldest first, each verified.
    pub fn list(
        storage: &dyn dataflow_checkpoint::CheckpointStorage,
    ) -> dataflow_checkpoint::Result<Vec<CheckpointSummary>> {
        let mut rows = Vec::new();
        for entry in storage.list()? {
            rows.push(match storage.verify(entry.id) {
                Ok(manifest) => CheckpointSummary {
                    id: entry.id.0,
                    created_at: Some(manifest.created_at),
                    bytes: Some(manifest.data_file_size),
                    duration_ms: manifest.duration_ms,
                    status: "valid".into(),
                    verified: true,
                },
                Err(error) => CheckpointSummary {
                    id: entry.id.0,
                    created_at: None,
                    bytes: None,
                    duration_ms: None,
                    status: format!("invalid: {error}"),
                    verified: false,
                },
            });
        }
        Ok(rows)
    }
}

/// The answer to a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResponse {
    /// The checkpoint's id.
    pub id: u64,
    /// Always true: a failed verification is an error answer.
    pub verified: bool,
    /// The sha256 of its payload.
    pub sha256: String,
}

/// The body of every error answer: a stable machine-readable code and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code: `unauthorized`, `bad_request`, `not_found`, `no_checkpoints`,
    /// `no_pipeline`, `not_running`, `incompatible`, `verification_failed`, `internal`; on
    /// `POST /ingest` also `no_ingest`, `payload_too_large`, `unsupported_media_type`,
    /// `queue_full`, `rate_limited`, `shutting_down`.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// The answer to an accepted `POST /ingest` (202): every event of the body was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Events accepted: all of the body's.
    pub accepted: u64,
}

/// The answer to a trigger: the id the checkpoint will have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerResponse {
    /// The checkpoint's id.
    pub id: u64,
    /// `pending` when answered; poll [`routes::CHECKPOINT_STATUS`].
    pub state: String,
}

/// Whether a checkpoint completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointProgress {
    /// The checkpoint's id.
    pub id: u64,
    /// `completed` (it is stored), `pending` (not yet), `removed` (it completed and was
    /// deleted since, by retention or through the API), or `failed` (the pipeline moved past it
    /// without storing it: a sink failed or a newer barrier overtook it). Id 0 and ids never
    /// triggered are 404.
    pub state: String,
}

/// The body of a restore request; an empty body is a real restore. The server takes only a
/// JSON object with at most `dry_run` (a boolean): anything else is 400.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Only say what would be restored and dropped.
    #[serde(default)]
    pub dry_run: bool,
}

/// One operator's counts in [`PipelineStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorStatus {
    /// Its name, e.g. `steps[2].window`.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Events it received.
    pub events_in: u64,
    /// Events it sent on.
    pub events_out: u64,
}

/// What the pipeline is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// The pipeline's name.
    pub pipeline: String,
    /// `starting`, `running`, `restoring`, `stopped` or `failed`.
    pub state: String,
    /// Time since the pipeline started, ms.
    pub uptime_ms: u64,
    /// Records read by the sources.
    pub events_read: u64,
    /// Events written to the result sinks.
    pub events_emitted: u64,
    /// Late events routed aside.
    pub late_events: u64,
    /// Records routed to the dead letters.
    pub dead_letters: u64,
    /// The operators' combined watermark, epoch ms.
    pub watermark: i64,
    /// The last completed checkpoint.
    pub last_checkpoint: Option<u64>,
    /// The checkpoint the current run restored.
    pub restored_from: Option<u64>,
    /// Restores in place since the start.
    pub restores: u64,
    /// Per operator.
    pub operators: Vec<OperatorStatus>,
    /// Why the run failed, when `state` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A scale-out processor's tasks, one per input partition it owns now (absent otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskStatus>,
}

/// One task of a scale-out processor in [`PipelineStatus`]: the input partition it owns and
/// what its pipeline is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The input partition, `topic/partition`.
    pub partition: String,
    /// Its pipeline's state, as [`PipelineStatus::state`].
    pub state: String,
    /// Records its source read.
    pub events_read: u64,
    /// Results it wrote.
    pub events_emitted: u64,
    /// Its watermark (the partition's), epoch ms.
    pub watermark: i64,
    /// Its last completed checkpoint (in its own directory).
    pub last_checkpoint: Option<u64>,
    /// The checkpoint it restored when it started.
    pub restored_from: Option<u64>,
}

/// One partition's watermark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionWatermark {
    /// The partition, e.g. a file path.
    pub name: String,
    /// Its watermark, epoch ms.
    pub watermark: i64,
    /// Whether it is idle.
    pub idle: bool,
    /// Wall-clock time of its last event, epoch ms.
    pub last_event_ms: Option<i64>,
}

/// One source's watermark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceWatermark {
    /// The source.
    pub name: String,
    /// Its watermark (what it sends the operators), epoch ms.
    pub watermark: i64,
    /// Whether it is idle.
    pub idle: bool,
    /// Whether it has ended.
    pub ended: bool,
    /// Wall-clock time of its last event, epoch ms.
    pub last_event_ms: Option<i64>,
    /// The partition holding the source's watermark back.
    pub holding_back: Option<String>,
    /// Its partitions.
    pub partitions: Vec<PartitionWatermark>,
}

/// The watermarks of the inputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    /// The operators' combined watermark, epoch ms.
    pub watermark: i64,
    /// The input (source) holding the operators' watermark back.
    pub holding_back: Option<String>,
    /// Every source.
    pub sources: Vec<SourceWatermark>,
    /// The operators, which share the combined watermark.
    pub operators: Vec<String>,
    /// When the report was made, epoch ms.
    pub now_ms: i64,
}

/// What a restore restores for one operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRestore {
    /// The operator.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Keys restored.
    pub key_count: u64,
}

/// Where a restore puts one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRestore {
    /// The source.
    pub name: String,
    /// `(partition, offset, line)` it resumes at.
    pub partitions: Vec<(String, u64, u64)>,
}

/// What a restore did, or would do with `dry_run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The checkpoint.
    pub checkpoint: u64,
    /// Whether only planned.
    pub dry_run: bool,
    /// The checkpoint's watermark, epoch ms.
    pub watermark: i64,
    /// Operators whose state is restored, with their key counts.
    pub operators: Vec<OperatorRestore>,
    /// Operators that start empty.
    pub empty: Vec<String>,
    /// Sources and where they resume.
    pub sources: Vec<SourceRestore>,
    /// State in the checkpoint this pipeline has no place for.
    pub dropped: Vec<String>,
    /// What is thrown away.
    pub discarded: String,
    /// The last checkpoint completed before the restore.
    pub last_checkpoint_before: Option<u64>,
}

/// One node of [`PipelineGraph`]: a source, a step or a sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphNode {
    /// Its name: the source's name, `steps[1].filter`, `sinks[0]`.
    pub name: String,
    /// `source`, `step` or `sink`.
    pub role: String,
    /// A source's or sink's `type:` in the config (`generator`, `parts`), or a step's operator
    /// kind (`filter`, `window`).
    pub kind: String,
    /// Events it received so far; none for a source.
    pub events_in: Option<u64>,
    /// Events it sent on so far (for a source, the records it read); none for a sink.
    pub events_out: Option<u64>,
}

/// The end-to-end latency of the results written so far: from a source reading an event (for
/// window results, from the window firing) to the first sink writing the result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyReading {
    /// Results counted.
    pub count: u64,
    /// Median, ms, over the whole run; none before the first result.
    pub p50_ms: Option<u64>,
    /// 99th percentile, ms, over the whole run.
    pub p99_ms: Option<u64>,
    /// The histogram's buckets that counted anything, `[lower bound ms, count]`, in order:
    /// exact below 1 s, 100 ms wide up to 60 s, one bucket beyond. Subtracting two readings
    /// gives the quantiles of the results written between them.
    pub buckets: Vec<(u64, u64)>,
}

/// The pipeline as the dashboard draws it: every source, step and sink in pipeline order
/// (sources feed the steps, the last step feeds every sink) with its counts, and the latency.
/// Counts only grow (restarting from 0 with the process): rates are the differences of two
/// readings over their `now_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineGraph {
    /// The pipeline's name.
    pub pipeline: String,
    /// When the reading was made, epoch ms.
    pub now_ms: i64,
    /// Sources, then steps, then sinks.
    pub nodes: Vec<GraphNode>,
    /// End-to-end latency.
    pub latency: LatencyReading,
}
