//! What the server asks of the running pipeline, as traits the processor implements, so that
//! this crate knows nothing of the pipeline: [`Control`] (status, watermarks, a checkpoint now,
//! restore), [`StateDecoder`] (operator state as JSON) and [`Ingest`] (`POST /ingest`).

use std::time::Duration;

use async_trait::async_trait;
use dataflow_metrics::RefuseReason;

use crate::state::KeyState;
use crate::{PipelineStatus, RestoreReport, Watermarks};

/// Why the pipeline refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// The pipeline takes no checkpoints (409 `no_checkpoints`).
    NoCheckpoints,
    /// The pipeline is not running, or is busy restoring (409 `not_running`).
    NotRunning(String),
    /// No such checkpoint (404 `not_found`).
    NotFound(String),
    /// The checkpoint fails its checks (422 `verification_failed`).
    Verification(String),
    /// The checkpoint does not fit this pipeline (409 `incompatible`).
    Incompatible(String),
    /// The pipeline failed (500 `internal`).
    Failed(String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::NoCheckpoints => f.write_str("this pipeline takes no checkpoints"),
            ControlError::NotRunning(why) => write!(f, "the pipeline is not running: {why}"),
            ControlError::NotFound(why)
            | ControlError::Verification(why)
            | ControlError::Incompatible(why)
            | ControlError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ControlError {}

/// The running pipeline, as the API sees it.
#[async_trait]
pub trait Control: Send + Sync {
    /// What the pipeline is doing.
    fn status(&self) -> PipelineStatus;
    /// The inputs' watermarks.
    fn watermarks(&self) -> Watermarks;
    /// Takes a checkpoint now; returns its id.
    async fn trigger(&self) -> Result<u64, ControlError>;
    /// Where checkpoints stand: see [`Progress`].
    fn progress(&self) -> Progress;
    /// Restores checkpoint `id` in place (or says what that would do): refused, with nothing
    /// changed, when the checkpoint fails verification or does not fit.
    async fn restore(&self, id: u64, dry_run: bool) -> Result<RestoreReport, ControlError>;
    /// Whether the pipeline completed (stored) checkpoint `id` at some point, whether or not
    /// it is still stored: the checkpoint status answers `removed` for one that is gone. The
    /// default knows of none.
    fn was_completed(&self, _id: u64) -> bool {
        false
    }

    /// Whether the pipeline can take work (`GET /ready`): `Err` with the reason when not (the
    /// run failed). Ready by default.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Decodes an operator's opaque state into keys and readable values.
pub trait StateDecoder: Send + Sync {
    /// The keys of a state of operator kind `kind`, in the state's order; an error says why it
    /// cannot be shown.
    fn decode(&self, kind: &str, state: &[u8]) -> Result<Vec<KeyState>, String>;
}

/// Where checkpoints stand, to answer whether a triggered one completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The last completed checkpoint, 0 before the first.
    pub last_completed: u64,
    /// The highest id a trigger answered, 0 if none.
    pub last_triggered: u64,
    /// Whether the pipeline still runs (or is restoring).
    pub live: bool,
    /// The first checkpoint id this process could take: ids below it were taken by an earlier
    /// run of the processor on the same directory. 0 when not known (no run started yet).
    pub first_own: u64,
}

/// How an ingest body is laid out, from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestFormat {
    /// `application/json`: one object, or an array of objects.
    Json,
    /// `application/x-ndjson` (or `application/jsonl`, `application/json-lines`, or no
    /// `Content-Type`): one object per line.
    JsonLines,
}

/// Why an ingest body was refused; nothing of it was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestError {
    /// No such `http` source (404 `not_found`).
    NoSource(String),
    /// A record does not decode: the first bad line or element, and why (400 `bad_request`).
    Malformed(String),
    /// The source's rate limit is reached (429 `rate_limited`, `Retry-After`).
    RateLimited(Duration),
    /// The source's queue is full (429 `queue_full`, `Retry-After`).
    QueueFull(Duration),
    /// The source is stopping or restoring (503 `shutting_down`, `Retry-After`).
    ShuttingDown(Duration),
    /// The pipeline failed, for the reason given (503 `failed`, no `Retry-After`).
    Failed(String),
}

/// Where `POST /ingest` puts events: the processor's `http` sources.
pub trait Ingest: Send + Sync {
    /// Decodes `body` and accepts all of its events into `source` (the only `http` source when
    /// `None`), or none. Returns how many. Never waits for room: a full queue is an error.
    fn ingest(
        &self,
        source: Option<&str>,
        format: IngestFormat,
        body: &[u8],
    ) -> Result<u64, IngestError>;
    /// Counts a request the server refused before it reached [`Ingest::ingest`].
    fn refused(&self, reason: RefuseReason);
}
