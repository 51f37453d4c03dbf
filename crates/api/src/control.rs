//! What the server asks of the running pipeline, as traits the processor implements, so that
//! this crate knows nothing of the pipeline: [`Control`] (status, watermarks, a checkpoint now,
//! restore) and [`StateDecoder`] (operator state as JSON).

use async_trait::async_trait;

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
}
