//! The Prometheus families of `docs/metrics.md`, their handles, and the text exposition.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::backpressure::{Backpressure, StageClock};

/// A counter of whole things (events, records, requests).
type Count = Counter<u64, AtomicU64>;
/// A counter of seconds.
type Seconds = Counter<f64, AtomicU64>;
/// A gauge holding an integer (milliseconds, bytes, ids).
type IntGauge = Gauge<i64, AtomicI64>;
/// A gauge holding a float (ratios, seconds).
type FloatGauge = Gauge<f64, AtomicU64>;
/// A family of histograms, all with the same buckets.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets of `dataflow_operator_processing_seconds`: 10 µs to 1 s.
const PROCESSING_BUCKETS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Buckets of `dataflow_checkpoint_duration_seconds`: 1 ms to 60 s.
const CHECKPOINT_BUCKETS: [f64; 15] = [
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn processing_histogram() -> Histogram {
    Histogram::new(PROCESSING_BUCKETS)
}

fn checkpoint_histogram() -> Histogram {
    Histogram::new(CHECKPOINT_BUCKETS)
}

/// Labels of the operator families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperatorLabels {
    /// The pipeline's name.
    pub pipeline: String,
    /// The operator's name in the pipeline.
    pub operator: String,
    /// The operator's kind (`filter`, `map`, `key_by`, `window`, `sink`, …).
    pub kind: String,
}

/// Labels of the source families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The pipeline's name.
    pub pipeline: String,
    /// The source's name in the pipeline.
    pub source: String,
}

/// Labels of the per-partition source families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The pipeline's name.
    pub pipeline: String,
    /// The source's name in the pipeline.
    pub source: String,
    /// The source partition's name (`topic/N` for Kafka).
    pub partition: String,
}

/// Labels of the checkpoint and ingest families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    /// The pipeline's name.
    pub pipeline: String,
}

/// Why the ingest endpoint refused a request: the `reason` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RefuseReason {
    /// The body is not valid for the pipeline's input.
    Malformed,
    /// The body exceeds the configured limit.
    TooLarge,
    /// The pipeline's input queue is full.
    Overloaded,
    /// The source's rate limit has no tokens for the request now.
    RateLimited,
    /// Missing or wrong credentials.
    Unauthorized,
    /// The pipeline is stopping.
    ShuttingDown,
}

impl RefuseReason {
    /// Every reason, in the order of `docs/metrics.md`.
    pub const ALL: [RefuseReason; 6] = [
        RefuseReason::Malformed,
        RefuseReason::TooLarge,
        RefuseReason::Overloaded,
        RefuseReason::RateLimited,
        RefuseReason::Unauthorized,
        RefuseReason::ShuttingDown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::Malformed => "malformed",
            RefuseReason::TooLarge => "too_large",
            RefuseReason::Overloaded => "overloaded",
            RefuseReason::RateLimited => "rate_limited",
            RefuseReason::Unauthorized => "unauthorized",
            RefuseReason::ShuttingDown => "shutting_down",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl EncodeLabelValue for RefuseReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of `dataflow_ingest_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// The pipeline's name.
    pub pipeline: String,
    /// Why the request was refused.
    pub reason: RefuseReason,
}

#[derive(Debug)]
struct OperatorFamilies {
    events_received: Family<OperatorLabels, Count>,
    events_sent: Family<OperatorLabels, Count>,
    errors: Family<OperatorLabels, Count>,
    late_events: Family<OperatorLabels, Count>,
    timed_out: Family<OperatorLabels, Count>,
    unmatched: Family<OperatorLabels, Count>,
    dead_letters: Family<OperatorLabels, Count>,
    processing: Histograms<OperatorLabels>,
    busy: Family<OperatorLabels, Seconds>,
    backpressured: Family<OperatorLabels, Seconds>,
    starved: Family<OperatorLabels, Seconds>,
    queue_fill: Family<OperatorLabels, FloatGauge>,
    watermark: Family<OperatorLabels, IntGauge>,
    watermark_lag: Family<OperatorLabels, FloatGauge>,
    store_retries: Family<OperatorLabels, Count>,
}

#[derive(Debug)]
struct SourceFamilies {
    events_read: Family<SourceLabels, Count>,
    dead_letters: Family<SourceLabels, Count>,
    bytes_read: Family<SourceLabels, Count>,
    rate_limit_waits: Family<SourceLabels, Count>,
    rate_limit_wait_seconds: Family<SourceLabels, Seconds>,
    lag_bytes: Family<SourceLabels, IntGauge>,
    partition_lag: Family<PartitionLabels, IntGauge>,
    busy: Family<SourceLabels, Seconds>,
    backpressured: Family<SourceLabels, Seconds>,
}

#[derive(Debug)]
struct CheckpointFamilies {
    completed: Family<PipelineLabels, Count>,
    failed: Family<PipelineLabels, Count>,
    duration: Histograms<PipelineLabels>,
    size_bytes: Family<PipelineLabels, IntGauge>,
    last_restored_id: Family<PipelineLabels, IntGauge>,
    last_restore_timestamp: Family<PipelineLabels, FloatGauge>,
    last_restore_duration: Family<PipelineLabels, FloatGauge>,
}

#[derive(Debug)]
struct IngestFamilies {
    accepted: Family<PipelineLabels, Count>,
    accepted_events: Family<PipelineLabels, Count>,
    refused: Family<RefusedLabels, Count>,
}

/// Registers `metric` under `name`, the contract name of `docs/metrics.md` without a counter's
/// `_total`; a `_seconds`, `_bytes` or `_milliseconds` suffix becomes the family's unit.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: &M) {
    let units = [
        ("_seconds", Unit::Seconds),
        ("_bytes", Unit::Bytes),
        ("_milliseconds", Unit::Other("milliseconds".to_owned())),
    ];
    for (suffix, unit) in units {
        if let Some(stem) = name.strip_suffix(suffix) {
            registry.register_with_unit(stem, help, unit, metric.clone());
            return;
        }
    }
    registry.register(name, help, metric.clone());
}

/// Every metric family of a process, in one Prometheus registry.
///
/// Create it once, share it (`Arc<Metrics>`), take handles for each operator, source and
/// pipeline, and [`encode`](Metrics::encode) it for `GET /metrics`.
///
/// ```
/// use dataflow_metrics::Metrics;
/// use std::time::Duration;
///
/// let metrics = Metrics::new();
/// let op = metrics.operator("orders", "big_orders", "filter");
/// op.events_received(1024);
/// op.events_sent(17);
/// op.observe_processing(Duration::from_micros(250));
///
/// let text = metrics.encode();
/// assert!(text.contains(
///     "dataflow_operator_events_sent_total{pipeline=\"orders\",operator=\"big_orders\",kind=\"filter\"} 17\n"
/// ));
/// assert!(text.ends_with("# EOF\n"));
/// ```
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    operators: OperatorFamilies,
    sources: SourceFamilies,
    checkpoints: CheckpointFamilies,
    ingest: IngestFamilies,
    backpressure: Backpressure,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family of `docs/metrics.md` registered, and no series yet.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let operators = OperatorFamilies {
            events_received: Family::default(),
            events_sent: Family::default(),
            errors: Family::default(),
            late_events: Family::default(),
            timed_out: Family::default(),
            unmatched: Family::default(),
            dead_letters: Family::default(),
            processing: Family::new_with_constructor(processing_histogram as fn() -> Histogram),
            busy: Family::default(),
            backpressured: Family::default(),
            starved: Family::default(),
            queue_fill: Family::default(),
            watermark: Family::default(),
            watermark_lag: Family::default(),
            store_retries: Family::default(),
        };
        let o = &operators;
        register(
            &mut r,
            "dataflow_operator_events_received",
            "Events handed to the operator",
            &o.events_received,
        );
        register(
            &mut r,
            "dataflow_operator_events_sent",
            "Events the operator passed downstream",
            &o.events_sent,
        );
        register(
            &mut r,
            "dataflow_operator_errors",
            "Events the operator failed on",
            &o.errors,
        );
        register(
            &mut r,
            "dataflow_operator_late_events",
            "Events beyond the allowed lateness",
            &o.late_events,
        );
        register(
            &mut r,
            "dataflow_operator_timed_out",
            "Partial matches whose time ran out, routed to the timed-out output",
            &o.timed_out,
        );
        register(
            &mut r,
            "dataflow_operator_unmatched",
            "Rows of a join that found no partner before the watermark passed them",
            &o.unmatched,
        );
        register(
            &mut r,
            "dataflow_operator_dead_letters",
            "Records the operator routed to the dead letters",
            &o.dead_letters,
        );
        register(
            &mut r,
            "dataflow_operator_processing_seconds",
            "Time the operator spent on one batch",
            &o.processing,
        );
        register(
            &mut r,
            "dataflow_operator_busy_seconds",
            "Time the operator spent processing",
            &o.busy,
        );
        register(
            &mut r,
            "dataflow_operator_backpressured_seconds",
            "Time the operator waited for room downstream",
            &o.backpressured,
        );
        register(
            &mut r,
            "dataflow_operator_starved_seconds",
            "Time the operator waited for input",
            &o.starved,
        );
        register(
            &mut r,
            "dataflow_sink_store_retries",
            "Attempts a sink made again because its store was unreachable or refused for a transient reason",
            &o.store_retries,
        );
        register(
            &mut r,
            "dataflow_operator_queue_fill",
            "Fill of the operator's input channel, 0 to 1",
            &o.queue_fill,
        );
        register(
            &mut r,
            "dataflow_operator_watermark_milliseconds",
            "The operator's watermark, epoch milliseconds",
            &o.watermark,
        );
        register(
            &mut r,
            "dataflow_operator_watermark_lag_seconds",
            "Wall-clock time minus the operator's watermark",
            &o.watermark_lag,
        );

        let sources = SourceFamilies {
            events_read: Family::default(),
            dead_letters: Family::default(),
            bytes_read: Family::default(),
            rate_limit_waits: Family::default(),
            rate_limit_wait_seconds: Family::default(),
            lag_bytes: Family::default(),
            partition_lag: Family::default(),
            busy: Family::default(),
            backpressured: Family::default(),
        };
        let s = &sources;
        register(
            &mut r,
            "dataflow_source_events_read",
            "Records read, including those that failed to decode",
            &s.events_read,
        );
        register(
            &mut r,
            "dataflow_source_dead_letters",
            "Records that failed to decode, routed to the dead letters",
            &s.dead_letters,
        );
        register(
            &mut r,
            "dataflow_source_bytes_read",
            "Bytes read",
            &s.bytes_read,
        );
        register(
            &mut r,
            "dataflow_source_busy_seconds",
            "Time the source spent reading and decoding",
            &s.busy,
        );
        register(
            &mut r,
            "dataflow_source_backpressured_seconds",
            "Time the source waited for room in the pipeline's input channel",
            &s.backpressured,
        );
        register(
            &mut r,
            "dataflow_source_rate_limit_waits",
            "Pauses because of the rate limit",
            &s.rate_limit_waits,
        );
        register(
            &mut r,
            "dataflow_source_rate_limit_wait_seconds",
            "Time spent in rate-limit pauses",
            &s.rate_limit_wait_seconds,
        );
        register(
            &mut r,
            "dataflow_source_lag_bytes",
            "Bytes available but not read yet",
            &s.lag_bytes,
        );
        register(
            &mut r,
            "dataflow_source_partition_lag",
            "Records of a partition not read yet (Kafka: consumer lag)",
            &s.partition_lag,
        );

        let checkpoints = CheckpointFamilies {
            completed: Family::default(),
            failed: Family::default(),
            duration: Family::new_with_constructor(checkpoint_histogram as fn() -> Histogram),
            size_bytes: Family::default(),
            last_restored_id: Family::default(),
            last_restore_timestamp: Family::default(),
            last_restore_duration: Family::default(),
        };
        let c = &checkpoints;
        register(
            &mut r,
            "dataflow_checkpoints_completed",
            "Checkpoints saved and committed",
            &c.completed,
        );
        register(
            &mut r,
            "dataflow_checkpoints_failed",
            "Checkpoints started but not saved",
            &c.failed,
        );
        register(
            &mut r,
            "dataflow_checkpoint_duration_seconds",
            "From barrier to saved checkpoint",
            &c.duration,
        );
        register(
            &mut r,
            "dataflow_checkpoint_size_bytes",
            "Size of the last completed checkpoint",
            &c.size_bytes,
        );
        register(
            &mut r,
            "dataflow_checkpoint_last_restored_id",
            "Id of the checkpoint restored on start, 0 if none",
            &c.last_restored_id,
        );
        register(
            &mut r,
            "dataflow_checkpoint_last_restore_timestamp_seconds",
            "When the last restore happened, Unix time",
            &c.last_restore_timestamp,
        );
        register(
            &mut r,
            "dataflow_checkpoint_last_restore_duration_seconds",
            "How long the last restore took",
            &c.last_restore_duration,
        );

        let ingest = IngestFamilies {
            accepted: Family::default(),
            accepted_events: Family::default(),
            refused: Family::default(),
        };
        let i = &ingest;
        register(
            &mut r,
            "dataflow_ingest_accepted",
            "Ingest requests accepted",
            &i.accepted,
        );
        register(
            &mut r,
            "dataflow_ingest_accepted_events",
            "Events in accepted ingest requests",
            &i.accepted_events,
        );
        register(
            &mut r,
            "dataflow_ingest_refused",
            "Ingest requests refused, by reason",
            &i.refused,
        );

        Metrics {
            registry: r,
            operators,
            sources,
            checkpoints,
            ingest,
            backpressure: Backpressure::default(),
        }
    }

    /// The busy, backpressured and starved times of every stage registered so far (operators
    /// and sinks through [`Metrics::operator`], sources through [`Metrics::source`]), for
    /// [`Backpressure::report`].
    pub fn backpressure(&self) -> Backpressure {
        self.backpressure.clone()
    }

    /// The handle of operator `operator` (of kind `kind`) in `pipeline`; its series start at 0.
    pub fn operator(&self, pipeline: &str, operator: &str, kind: &str) -> OperatorMetrics {
        let labels = OperatorLabels {
            pipeline: pipeline.to_owned(),
            operator: operator.to_owned(),
            kind: kind.to_owned(),
        };
        let f = &self.operators;
        OperatorMetrics {
            events_received: f.events_received.get_or_create_owned(&labels),
            events_sent: f.events_sent.get_or_create_owned(&labels),
            errors: f.errors.get_or_create_owned(&labels),
            late_events: f.late_events.get_or_create_owned(&labels),
            timed_out: f.timed_out.get_or_create_owned(&labels),
            unmatched: f.unmatched.get_or_create_owned(&labels),
            dead_letters: f.dead_letters.get_or_create_owned(&labels),
            processing: f.processing.get_or_create_owned(&labels),
            busy: f.busy.get_or_create_owned(&labels),
            backpressured: f.backpressured.get_or_create_owned(&labels),
            starved: f.starved.get_or_create_owned(&labels),
            queue_fill: f.queue_fill.get_or_create_owned(&labels),
            watermark: f.watermark.get_or_create_owned(&labels),
            watermark_lag: f.watermark_lag.get_or_create_owned(&labels),
            store_retries: f.store_retries.get_or_create_owned(&labels),
            clock: self.backpressure.stage(pipeline, operator, kind),
        }
    }

    /// The handle of source `source` in `pipeline`; its series start at 0.
    pub fn source(&self, pipeline: &str, source: &str) -> SourceMetrics {
        let labels = SourceLabels {
            pipeline: pipeline.to_owned(),
            source: source.to_owned(),
        };
        let f = &self.sources;
        SourceMetrics {
            events_read: f.events_read.get_or_create_owned(&labels),
            dead_letters: f.dead_letters.get_or_create_owned(&labels),
            bytes_read: f.bytes_read.get_or_create_owned(&labels),
            rate_limit_waits: f.rate_limit_waits.get_or_create_owned(&labels),
            rate_limit_wait_seconds: f.rate_limit_wait_seconds.get_or_create_owned(&labels),
            lag_bytes: f.lag_bytes.get_or_create_owned(&labels),
            partition_lag: f.partition_lag.clone(),
            busy: f.busy.get_or_create_owned(&labels),
            backpressured: f.backpressured.get_or_create_owned(&labels),
            clock: self.backpressure.stage(pipeline, source, "source"),
            labels,
        }
    }

    /// The checkpoint handle of `pipeline`; its series start at 0.
    pub fn checkpoints(&self, pipeline: &str) -> CheckpointMetrics {
        let labels = PipelineLabels {
            pipeline: pipeline.to_owned(),
        };
        let f = &self.checkpoints;
        CheckpointMetrics {
            completed: f.completed.get_or_create_owned(&labels),
            failed: f.failed.get_or_create_owned(&labels),
            duration: f.duration.get_or_create_owned(&labels),
            size_bytes: f.size_bytes.get_or_create_owned(&labels),
            last_restored_id: f.last_restored_id.get_or_create_owned(&labels),
            last_restore_timestamp: f.last_restore_timestamp.get_or_create_owned(&labels),
            last_restore_duration: f.last_restore_duration.get_or_create_owned(&labels),
        }
    }

    /// The ingest handle of `pipeline`; its series, one per refusal reason, start at 0.
    pub fn ingest(&self, pipeline: &str) -> IngestMetrics {
        let labels = PipelineLabels {
            pipeline: pipeline.to_owned(),
        };
        let f = &self.ingest;
        let refused = RefuseReason::ALL.map(|reason| {
            f.refused.get_or_create_owned(&RefusedLabels {
                pipeline: pipeline.to_owned(),
                reason,
            })
        });
        IngestMetrics {
            accepted: f.accepted.get_or_create_owned(&labels),
            accepted_events: f.accepted_events.get_or_create_owned(&labels),
            refused,
        }
    }

    /// The OpenMetrics text exposition of every family, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, and every label set here encodes without error.
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        text
    }
}

/// Counts a sink's retries against its store. Cheap to clone; the default counts into a
/// series of no registry (for sinks opened outside a run).
#[derive(Clone, Debug, Default)]
pub struct StoreRetries(Count);

impl StoreRetries {
    /// One more attempt after a transient failure.
    pub fn retried(&self) {
        self.0.inc();
    }

    /// The attempts counted so far.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// The metrics of one operator. Cheap to clone; every clone updates the same series.
#[derive(Clone, Debug)]
pub struct OperatorMetrics {
    events_received: Count,
    events_sent: Count,
    errors: Count,
    late_events: Count,
    timed_out: Count,
    unmatched: Count,
    dead_letters: Count,
    processing: Histogram,
    busy: Seconds,
    backpressured: Seconds,
    starved: Seconds,
    queue_fill: FloatGauge,
    watermark: IntGauge,
    watermark_lag: FloatGauge,
    store_retries: Count,
    clock: Arc<StageClock>,
}

impl OperatorMetrics {
    /// `n` events handed to the operator.
    pub fn events_received(&self, n: u64) {
        self.events_received.inc_by(n);
    }

    /// `n` events passed downstream.
    pub fn events_sent(&self, n: u64) {
        self.events_sent.inc_by(n);
    }

    /// `n` events the operator failed on.
    pub fn errors(&self, n: u64) {
        self.errors.inc_by(n);
    }

    /// `n` events beyond the allowed lateness.
    pub fn late_events(&self, n: u64) {
        self.late_events.inc_by(n);
    }

    /// `n` partial matches whose time ran out.
    pub fn timed_out(&self, n: u64) {
        self.timed_out.inc_by(n);
    }

    /// `n` rows of a join that found no partner.
    pub fn unmatched(&self, n: u64) {
        self.unmatched.inc_by(n);
    }

    /// `n` records routed to the dead letters.
    pub fn dead_letters(&self, n: u64) {
        self.dead_letters.inc_by(n);
    }

    /// One batch took `took`: observed in the histogram and added to the busy time.
    pub fn observe_processing(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        self.processing.observe(seconds);
        self.busy.inc_by(seconds);
        self.clock.busy(took);
    }

    /// Time the operator spent on control (a watermark, the end of input): added to the busy
    /// time, not to the per-batch histogram.
    pub fn busy(&self, took: Duration) {
        self.busy.inc_by(took.as_secs_f64());
        self.clock.busy(took);
    }

    /// The operator waited `waited` for room in a full downstream channel.
    pub fn backpressured(&self, waited: Duration) {
        self.backpressured.inc_by(waited.as_secs_f64());
        self.clock.backpressured(waited);
    }

    /// The operator waited `waited` for input.
    pub fn starved(&self, waited: Duration) {
        self.starved.inc_by(waited.as_secs_f64());
        self.clock.starved(waited);
    }

    /// `instances` parallel instances run this operator: its shares in the backpressure report
    /// are of their total time.
    pub fn set_instances(&self, instances: usize) {
        self.clock.set_instances(instances);
    }

    /// The handle a sink counts its store retries with (`dataflow_sink_store_retries_total`).
    pub fn store_retries(&self) -> StoreRetries {
        StoreRetries(self.store_retries.clone())
    }

    /// The input channel holds `queued` of `capacity` batches.
    pub fn set_queue_fill(&self, queued: usize, capacity: usize) {
        let fill = if capacity == 0 {
            0.0
        } else {
            (queued as f64 / capacity as f64).clamp(0.0, 1.0)
        };
        self.queue_fill.set(fill);
    }

    /// The operator's watermark advanced to `watermark` (epoch ms) at wall-clock `now` (epoch
    /// ms); the lag is `now - watermark`, never below 0.
    pub fn set_watermark(&self, watermark: i64, now: i64) {
        self.watermark.set(watermark);
        let lag_ms = now.saturating_sub(watermark).max(0);
        self.watermark_lag.set(lag_ms as f64 / 1000.0);
    }

    /// Events handed to the operator so far.
    pub fn events_received_count(&self) -> u64 {
        self.events_received.get()
    }

    /// Events passed downstream so far.
    pub fn events_sent_count(&self) -> u64 {
        self.events_sent.get()
    }
}

/// The metrics of one source. Cheap to clone; every clone updates the same series.
#[derive(Clone, Debug)]
pub struct SourceMetrics {
    events_read: Count,
    dead_letters: Count,
    bytes_read: Count,
    rate_limit_waits: Count,
    rate_limit_wait_seconds: Seconds,
    lag_bytes: IntGauge,
    partition_lag: Family<PartitionLabels, IntGauge>,
    busy: Seconds,
    backpressured: Seconds,
    clock: Arc<StageClock>,
    labels: SourceLabels,
}

impl SourceMetrics {
    /// `records` records and `bytes` bytes read.
    pub fn read(&self, records: u64, bytes: u64) {
        self.events_read.inc_by(records);
        self.bytes_read.inc_by(bytes);
    }

    /// `n` records read.
    pub fn events_read(&self, n: u64) {
        self.events_read.inc_by(n);
    }

    /// `n` records that failed to decode.
    pub fn dead_letters(&self, n: u64) {
        self.dead_letters.inc_by(n);
    }

    /// `n` more bytes read.
    pub fn bytes_read(&self, n: u64) {
        self.bytes_read.inc_by(n);
    }

    /// The source spent `took` reading and decoding.
    pub fn busy(&self, took: Duration) {
        self.busy.inc_by(took.as_secs_f64());
        self.clock.busy(took);
    }

    /// The source waited `waited` for room in the pipeline's input channel.
    pub fn backpressured(&self, waited: Duration) {
        self.backpressured.inc_by(waited.as_secs_f64());
        self.clock.backpressured(waited);
    }

    /// The source waited `waited` for input that did not come (an empty ingest queue, a
    /// followed file with nothing new): starved, in the backpressure report.
    pub fn starved(&self, waited: Duration) {
        self.clock.starved(waited);
    }

    /// The source paused `waited` because of its rate limit.
    pub fn rate_limit_wait(&self, waited: Duration) {
        self.rate_limit_waits.inc();
        self.rate_limit_wait_seconds.inc_by(waited.as_secs_f64());
    }

    /// `bytes` are available but not read yet.
    pub fn set_lag_bytes(&self, bytes: u64) {
        self.lag_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Partition `partition` has `records` records not read yet.
    pub fn set_partition_lag(&self, partition: &str, records: i64) {
        self.partition_lag
            .get_or_create(&PartitionLabels {
                pipeline: self.labels.pipeline.clone(),
                source: self.labels.source.clone(),
                partition: partition.to_owned(),
            })
            .set(records);
    }

    /// Records read so far.
    pub fn events_read_count(&self) -> u64 {
        self.events_read.get()
    }
}

/// The checkpoint metrics of one pipeline. Cheap to clone; every clone updates the same series.
#[derive(Clone, Debug)]
pub struct CheckpointMetrics {
    completed: Count,
    failed: Count,
    duration: Histogram,
    size_bytes: IntGauge,
    last_restored_id: IntGauge,
    last_restore_timestamp: FloatGauge,
    last_restore_duration: FloatGauge,
}

impl CheckpointMetrics {
    /// A checkpoint of `size_bytes` bytes was saved, `took` after its barrier.
    pub fn completed(&self, took: Duration, size_bytes: u64) {
        self.completed.inc();
        self.duration.observe(took.as_secs_f64());
        self.size_bytes
            .set(i64::try_from(size_bytes).unwrap_or(i64::MAX));
    }

    /// A checkpoint was started but not saved.
    pub fn failed(&self) {
        self.failed.inc();
    }

    /// The run restored checkpoint `id` at `at`, in `took`.
    pub fn restored(&self, id: u64, at: SystemTime, took: Duration) {
        self.last_restored_id
            .set(i64::try_from(id).unwrap_or(i64::MAX));
        let unix = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_restore_timestamp.set(unix);
        self.last_restore_duration.set(took.as_secs_f64());
    }

    /// Checkpoints completed so far.
    pub fn completed_count(&self) -> u64 {
        self.completed.get()
    }

    /// Checkpoints failed so far.
    pub fn failed_count(&self) -> u64 {
        self.failed.get()
    }
}

/// The ingest metrics of one pipeline. Cheap to clone; every clone updates the same series.
#[derive(Clone, Debug)]
pub struct IngestMetrics {
    accepted: Count,
    accepted_events: Count,
    refused: [Count; RefuseReason::ALL.len()],
}

impl IngestMetrics {
    /// A request carrying `events` events was accepted.
    pub fn accepted(&self, events: u64) {
        self.accepted.inc();
        self.accepted_events.inc_by(events);
    }

    /// A request was refused for `reason`.
    pub fn refused(&self, reason: RefuseReason) {
        self.refused[reason.index()].inc();
    }

    /// Requests refused for `reason` so far.
    pub fn refused_count(&self, reason: RefuseReason) -> u64 {
        self.refused[reason.index()].get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_handles_are_shareable_across_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Metrics>();
        shareable::<OperatorMetrics>();
        shareable::<SourceMetrics>();
        shareable::<CheckpointMetrics>();
        shareable::<IngestMetrics>();
    }

    #[test]
    fn same_labels_share_series() {
        let metrics = Metrics::new();
        let a = metrics.operator("p", "f", "filter");
        let b = metrics.operator("p", "f", "filter");
        a.events_received(2);
        b.events_received(3);
        assert_eq!(a.events_received_count(), 5);
        let other = metrics.operator("p", "g", "filter");
        assert_eq!(other.events_received_count(), 0);
    }

    #[test]
    fn processing_feeds_histogram_and_busy_time() {
        let metrics = Metrics::new();
        let op = metrics.operator("p", "w", "window");
        op.observe_processing(Duration::from_millis(2));
        op.observe_processing(Duration::from_millis(3));
        let text = metrics.encode();
        assert!(text.contains(
            "dataflow_operator_processing_seconds_count{pipeline=\"p\",operator=\"w\",kind=\"window\"} 2\n"
        ));
        assert!(text.contains(
            "dataflow_operator_busy_seconds_total{pipeline=\"p\",operator=\"w\",kind=\"window\"} 0.005\n"
        ));
    }

    #[test]
    fn queue_fill_and_watermark_lag_stay_in_range() {
        let metrics = Metrics::new();
        let op = metrics.operator("p", "m", "map");
        op.set_queue_fill(3, 0);
        assert_eq!(op.queue_fill.get(), 0.0);
        op.set_queue_fill(9, 4);
        assert_eq!(op.queue_fill.get(), 1.0);
        op.set_queue_fill(1, 4);
        assert_eq!(op.queue_fill.get(), 0.25);
        op.set_watermark(10_000, 12_500);
        assert_eq!(op.watermark.get(), 10_000);
        assert_eq!(op.watermark_lag.get(), 2.5);
        op.set_watermark(20_000, 12_500);
        assert_eq!(op.watermark_lag.get(), 0.0);
    }

    #[test]
    fn checkpoints_and_ingest() {
        let metrics = Metrics::new();
        let cp = metrics.checkpoints("p");
        cp.completed(Duration::from_millis(40), 1234);
        cp.failed();
        cp.restored(
            7,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            Duration::from_millis(500),
        );
        assert_eq!((cp.completed_count(), cp.failed_count()), (1, 1));
        let ingest = metrics.ingest("p");
        ingest.accepted(10);
        ingest.refused(RefuseReason::TooLarge);
        assert_eq!(ingest.refused_count(RefuseReason::TooLarge), 1);
        assert_eq!(ingest.refused_count(RefuseReason::Malformed), 0);
        let text = metrics.encode();
        for line in [
            "dataflow_checkpoint_size_bytes{pipeline=\"p\"} 1234\n",
            "dataflow_checkpoint_last_restored_id{pipeline=\"p\"} 7\n",
            "dataflow_checkpoint_last_restore_timestamp_seconds{pipeline=\"p\"} 1700000000.0\n",
            "dataflow_checkpoint_last_restore_duration_seconds{pipeline=\"p\"} 0.5\n",
            "dataflow_ingest_accepted_events_total{pipeline=\"p\"} 10\n",
            "dataflow_ingest_refused_total{pipeline=\"p\",reason=\"too_large\"} 1\n",
            "dataflow_ingest_refused_total{pipeline=\"p\",reason=\"shutting_down\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
