//! Metric names, the live counters of a pipeline run, and its final summary.
//!
//! This crate is a leaf: it knows nothing of events or operators. The runtime increments the
//! [`Counters`] once per batch (relaxed atomics, no locks); the processor reads them for its
//! progress line and prints the [`RunSummary`] at the end.
//!
//! [`Metrics`] holds the Prometheus families of `docs/metrics.md` (per operator, source,
//! checkpoint and ingest); the runtime takes cloneable handles from it ([`OperatorMetrics`],
//! [`SourceMetrics`], [`CheckpointMetrics`], [`IngestMetrics`]) and [`Metrics::encode`] renders
//! the OpenMetrics text exposition.
//!
//! ```
//! use dataflow_metrics::Counters;
//! use std::time::Duration;
//!
//! let counters = Counters::default();
//! counters.add_read(3, 120);
//! counters.add_emitted(1);
//! let summary = counters.summary(Duration::from_secs(2));
//! assert_eq!(summary.events_read, 3);
//! assert_eq!(summary.events_per_second, 1.5);
//! counters.add_rate_limit_wait(Duration::from_millis(5));
//! assert_eq!(counters.rate_limit_waits(), 1);
//! assert_eq!(counters.rate_limit_wait_nanos(), 5_000_000);
//! ```
#![forbid(unsafe_code)]

pub mod backpressure;
mod exposition;
mod latency;

pub use backpressure::{Backpressure, BackpressureReport, StageShare};
pub use exposition::{
    CheckpointMetrics, IngestMetrics, Metrics, OperatorLabels, OperatorMetrics, PartitionLabels,
    PipelineLabels, RefuseReason, RefusedLabels, SourceLabels, SourceMetrics, StoreRetries,
};
pub use latency::Latency;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Live counters of one pipeline run, shared between the runtime and whoever watches it.
#[derive(Debug)]
pub struct Counters {
    events_read: AtomicU64,
    bytes_read: AtomicU64,
    events_emitted: AtomicU64,
    late_events: AtomicU64,
    dead_letters: AtomicU64,
    watermark: AtomicI64,
    rate_limit_waits: AtomicU64,
    rate_limit_wait_nanos: AtomicU64,
    /// The id of the last completed checkpoint; 0 before the first.
    last_checkpoint: AtomicU64,
    /// From a source reading an event (its processing time) to a sink writing its result.
    latency: Latency,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            events_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            events_emitted: AtomicU64::new(0),
            late_events: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            rate_limit_waits: AtomicU64::new(0),
            rate_limit_wait_nanos: AtomicU64::new(0),
            last_checkpoint: AtomicU64::new(0),
            latency: Latency::default(),
        }
    }
}

impl Counters {
    /// Records read by sources (decoded or not) and their bytes.
    pub fn add_read(&self, records: u64, bytes: u64) {
        self.events_read.fetch_add(records, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Sets the bytes read so far (sources report their position, not increments).
    pub fn set_bytes_read(&self, bytes: u64) {
        self.bytes_read.store(bytes, Ordering::Relaxed);
    }

    /// Events written to the result sinks.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// `events` more results written to the sinks.
    pub fn add_emitted(&self, events: u64) {
        self.events_emitted.fetch_add(events, Ordering::Relaxed);
    }

    /// Events routed to the late-events output.
    pub fn add_late(&self, events: u64) {
        self.late_events.fetch_add(events, Ordering::Relaxed);
    }

    /// Records routed to the dead letters.
    pub fn add_dead_letters(&self, records: u64) {
        self.dead_letters.fetch_add(records, Ordering::Relaxed);
    }

    /// The pipeline's current watermark.
    pub fn set_watermark(&self, watermark: i64) {
        self.watermark.fetch_max(watermark, Ordering::Relaxed);
    }

    /// A source waited `wait` for its rate limit before sending a batch.
    pub fn add_rate_limit_wait(&self, wait: Duration) {
        let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
        self.rate_limit_wait_nanos
            .fetch_add(nanos, Ordering::Relaxed);
    }

    /// Records read so far.
    pub fn events_read(&self) -> u64 {
        self.events_read.load(Ordering::Relaxed)
    }

    /// Bytes read so far (file and stdin sources).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Checkpoint `id` completed.
    pub fn set_last_checkpoint(&self, id: u64) {
        self.last_checkpoint.fetch_max(id, Ordering::Relaxed);
    }

    /// The id of the last completed checkpoint, 0 before the first.
    pub fn last_checkpoint(&self) -> u64 {
        self.last_checkpoint.load(Ordering::Relaxed)
    }

    /// The current watermark, `i64::MIN` before the first.
    pub fn watermark(&self) -> i64 {
        self.watermark.load(Ordering::Relaxed)
    }

    /// How many times sources waited for their rate limit.
    pub fn rate_limit_waits(&self) -> u64 {
        self.rate_limit_waits.load(Ordering::Relaxed)
    }

    /// How long sources waited for their rate limits in all, in nanoseconds.
    pub fn rate_limit_wait_nanos(&self) -> u64 {
        self.rate_limit_wait_nanos.load(Ordering::Relaxed)
    }

    /// The summary after `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> RunSummary {
        let events_read = self.events_read();
        let seconds = elapsed.as_secs_f64();
        RunSummary {
            events_read,
            events_emitted: self.events_emitted.load(Ordering::Relaxed),
            late_events: self.late_events.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            elapsed_seconds: seconds,
            events_per_second: if seconds > 0.0 {
                events_read as f64 / seconds
            } else {
                0.0
            },
            latency_p50_ms: self.latency.quantile(0.5),
            latency_p99_ms: self.latency.quantile(0.99),
        }
    }
}

/// What a run did, printed at its end.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    /// Records read by the sources, including those that failed to decode.
    pub events_read: u64,
    /// Events written to the result sinks.
    pub events_emitted: u64,
    /// Events beyond the allowed lateness, routed to the late-events output.
    pub late_events: u64,
    /// Records routed to the dead letters.
    pub dead_letters: u64,
    /// Wall-clock duration of the run.
    pub elapsed_seconds: f64,
    /// `events_read` per second of `elapsed_seconds`.
    pub events_per_second: f64,
    /// Median time from a source reading an event to the first sink writing its result, ms
    /// (for window results, from the window firing); `None` if nothing was written.
    pub latency_p50_ms: Option<u64>,
    /// The same at the 99th percentile.
    pub latency_p99_ms: Option<u64>,
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read {} events, emitted {}, late {}, dead-lettered {}, in {:.2} s ({:.0} events/s)",
            self.events_read,
            self.events_emitted,
            self.late_events,
            self.dead_letters,
            self.elapsed_seconds,
            self.events_per_second
        )?;
        if let (Some(p50), Some(p99)) = (self.latency_p50_ms, self.latency_p99_ms) {
            write!(f, ", latency p50 {p50} ms, p99 {p99} ms")?;
        }
        Ok(())
    }
}
