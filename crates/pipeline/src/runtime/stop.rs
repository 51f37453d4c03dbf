//! Stop handling: the [`StopHandle`] that asks a run to stop, and the flags the coordinator
//! sets to tell the source threads to stop (and whether the stop is a halt for a restore).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How long a stop waits for the sources' final barriers before giving up on them.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(10);

/// Asks a running pipeline to stop cleanly. Cloning shares the request.
#[derive(Clone, Debug)]
pub struct StopHandle {
    stopped: Arc<watch::Sender<bool>>,
}

impl Default for StopHandle {
    fn default() -> Self {
        StopHandle {
            stopped: Arc::new(watch::channel(false).0),
        }
    }
}

impl StopHandle {
    /// Requests a stop: sources stop reading, a final checkpoint is taken when checkpoints are
    /// configured, and open windows fire or are kept as configured.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves once a stop is requested.
    pub(super) async fn stopped(&self) {
        let mut receiver = self.stopped.subscribe();
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }
}

/// What the coordinator tells the source threads, shared with every one of them.
#[derive(Clone, Default)]
pub(super) struct SourceSignals {
    /// The id of the newest barrier asked for; a source sends it once it sees it grow.
    pub(super) trigger: Arc<AtomicU64>,
    /// Set when the sources are to stop reading and end.
    pub(super) stop: Arc<AtomicBool>,
    /// Set with `stop` by a halt for a restore: the sources end without firing.
    pub(super) halt: Arc<AtomicBool>,
}
