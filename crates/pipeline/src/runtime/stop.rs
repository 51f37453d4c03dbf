//! Stop handling: the [`StopHandle`] that asks a run to stop, and the flags the coordinator
//! sets to tell the source threads to stop (and whether the stop is a halt for a restore).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The id of the newest checkpoint saved, which the writer sets: a source then hears
    /// where that checkpoint's barrier left it ([`dataflow_connectors::Source::checkpoint_completed`]).
    pub(super) saved: Arc<AtomicU64>,
    /// When each barrier still in flight was asked for.
    pub(super) asked_at: TriggerTimes,
}

impl SourceSignals {
    /// Asks the sources for barrier `id`, noting when.
    pub(super) fn ask(&self, id: u64) {
        self.asked_at.note(id);
        self.trigger.store(id, Ordering::SeqCst);
    }
}

/// When the coordinator asked for each barrier not yet aligned, so that a checkpoint's
/// duration runs from its trigger (the barrier's way through the queues included).
#[derive(Clone, Default)]
pub(super) struct TriggerTimes(Arc<std::sync::Mutex<VecDeque<(u64, Instant)>>>);

impl TriggerTimes {
    fn note(&self, id: u64) {
        let mut asked = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // At most a couple are in flight (one aligning, a final one on a stop); keep it small
        // whatever happens to the chain.
        if asked.len() >= 8 {
            asked.pop_front();
        }
        asked.push_back((id, Instant::now()));
    }

    /// When barrier `id` was asked for (forgetting it and every older one), if this run asked.
    pub(super) fn take(&self, id: u64) -> Option<Instant> {
        let mut asked = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut found = None;
        while let Some(&(first, at)) = asked.front() {
            if first > id {
                break;
            }
            asked.pop_front();
            if first == id {
                found = Some(at);
            }
        }
        found
    }
}

/// The first failure of a run, shared by all its tasks. A task that fails reports its error
/// here before it lets go of its channels, so that the error of the task where the failure
/// started is kept (not the "stopped" errors of the tasks that then lose their peers); the chain
/// waits on it to end the run at once, and the run ends with it.
#[derive(Clone, Default)]
pub(super) struct Failure {
    inner: Arc<FailureInner>,
}

#[derive(Default)]
struct FailureInner {
    first: std::sync::Mutex<Option<crate::PipelineError>>,
    /// The first failure's message, once there is one.
    reason: watch::Sender<Option<String>>,
}

impl Failure {
    /// Records `error` if it is the run's first failure; returns what the reporting task ends
    /// with: `what` stopped.
    pub(super) fn report(&self, error: crate::PipelineError, what: &str) -> crate::PipelineError {
        let mut first = self
            .inner
            .first
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if first.is_none() {
            let reason = error.to_string();
            tracing::error!(%reason, "the run failed");
            *first = Some(error);
            self.inner.reason.send_replace(Some(reason));
        }
        crate::PipelineError::Stopped(what.to_string())
    }

    /// The first failure's message, if the run failed.
    pub(super) fn reason(&self) -> Option<String> {
        self.inner.reason.borrow().clone()
    }

    /// Resolves once the run has failed.
    pub(super) async fn failed(&self) {
        let mut receiver = self.inner.reason.subscribe();
        let _ = receiver.wait_for(|reason| reason.is_some()).await;
    }

    /// Takes the first failure (once).
    pub(super) fn take(&self) -> Option<crate::PipelineError> {
        self.inner
            .first
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// How long a source must have been inside one read before a stop stops waiting for it: longer
/// than any source that polls (an http source waits 50 ms for requests) takes, so only a
/// source blocked on its input (stdin) is left behind.
const BLOCKED_READ: Duration = Duration::from_secs(1);

/// Which source threads are inside a read, and since when, so that a stop waits for every
/// source except one blocked on its input (which holds nothing it has read).
#[derive(Clone)]
pub(super) struct Reading {
    started: std::time::Instant,
    /// Per source: when its current read began, in ms after `started` plus one; 0 when it is
    /// not reading.
    since: Arc<Vec<AtomicU64>>,
}

impl Reading {
    pub(super) fn new(sources: usize) -> Reading {
        Reading {
            started: std::time::Instant::now(),
            since: Arc::new((0..sources).map(|_| AtomicU64::new(0)).collect()),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Source `input` starts a read.
    pub(super) fn begin(&self, input: usize) {
        if let Some(since) = self.since.get(input) {
            since.store(self.now(), Ordering::SeqCst);
        }
    }

    /// Source `input`'s read returned.
    pub(super) fn end(&self, input: usize) {
        if let Some(since) = self.since.get(input) {
            since.store(0, Ordering::SeqCst);
        }
    }

    /// Whether every source that has not `ended` has been blocked in a read for a while.
    pub(super) fn all_blocked(&self, ended: &[bool]) -> bool {
        let now = self.now();
        let threshold = BLOCKED_READ.as_millis() as u64;
        self.since.iter().zip(ended).all(|(since, ended)| {
            let since = since.load(Ordering::SeqCst);
            *ended || (since > 0 && now.saturating_sub(since) >= threshold)
        })
    }
}
