//! Repartition topics: how a scale-out job moves events to the task that owns their new key
//! (`dataflow_pipeline::scale_out`, docs/kafka.md "Repartition topics").
//!
//! A `key_by` on something the producer did not partition by splits a scale-out pipeline in
//! two: the **upstream** task of an input partition runs the steps up to that `key_by` and
//! writes each event to the internal topic `<group>-step<N>-repartition` with the
//! [`RepartitionSink`], in the partition its key hashes to (`dataflow_window::key_partition`,
//! the hash the parallel workers route by, modulo the topic's partitions); the **downstream**
//! task of a repartition partition reads it with the [`RepartitionSource`] and runs the rest.
//!
//! - **Records** ([`RepartitionRecord`], [`encode`], [`decode`]): a compact binary encoding of
//!   the whole event (id, type, event time, processing time, headers, key, typed payload;
//!   floats by their bits), with its provenance: the upstream input partition and the input
//!   offset the event was read at. The upstream source stamps that offset on each event as the
//!   header [`OFFSET_HEADER`], which the sink takes off again.
//! - **Watermark markers**: each upstream task writes to every repartition partition a marker
//!   with its watermark when it advanced (at most every [`MARKER_EVERY`]) and at each checkpoint
//!   barrier, or "idle" at a barrier once nothing reached it for the source's `idle_timeout`.
//!   The downstream source's watermark is the least of the upstream partitions' latest marks
//!   ([`Markers`]), the idle ones left out, none until every upstream partition has spoken.
//!   Markers are not events: not counted as input, never dead letters.
//! - **Exactly once without `read_committed`**: the sink is at least once (an idempotent
//!   producer, flushed at each barrier before it acknowledges it); the downstream source drops
//!   a record whose input offset is not above the highest it has seen from that upstream
//!   partition ([`Dedup`]): an upstream task restored from a checkpoint sends its replay again,
//!   in the same order. That map is part of the source's checkpointed positions (one entry per
//!   upstream partition, named `<topic>/<partition>/from-<upstream>`), and so are the markers
//!   read (`<topic>/<partition>/mark-<upstream>`): a restored downstream task replays from its
//!   checkpointed offset, after which an upstream partition that had ended may say nothing
//!   more.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dataflow_event::json::Decoder;
use dataflow_event::{Event, Payload, Value};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::kafka::{client_config, kafka_error, KafkaSourceSettings, Properties, TaskPartition};
use crate::side::SideRecord;
use crate::sink::Sink;
use crate::source::{PartitionPosition, Poll, Source};
use crate::{ConnectorError, Result};

/// The header the upstream source stamps each event with: the input offset it was read at.
pub const OFFSET_HEADER: &str = "dataflow-input-offset";
/// How often at most an upstream task writes markers for an advancing watermark (a barrier
/// always writes them).
pub const MARKER_EVERY: Duration = Duration::from_millis(200);
/// How long a call to the broker may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a poll waits for a record when none is fetched.
const POLL_WAIT: Duration = Duration::from_millis(20);
/// The first byte of every record: the encoding's version.
const VERSION: u8 = 1;
/// How deeply lists and maps may nest in a record.
const MAX_DEPTH: usize = 128;

/// What a task of a scale-out job reads (see [`TaskPartition::role`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskRole {
    /// An input partition; `stamp`: its events carry their offset ([`OFFSET_HEADER`]) for a
    /// repartition sink.
    Input {
        /// Stamp each event with its input offset.
        stamp: bool,
    },
    /// A partition of a repartition topic, written by the tasks of `upstream` input
    /// partitions.
    Repartition {
        /// How many input partitions write to the topic.
        upstream: usize,
    },
}

/// The internal topic of a scale-out job of consumer group `group` repartitioning at step
/// `step` (its index in `steps`).
pub fn topic_name(group: &str, step: usize) -> String {
    format!("{group}-step{step}-repartition")
}

// ---------------------------------------------------------------------------------------------
// Records

/// An upstream partition's latest word on its watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Nothing reached the upstream task for its `idle_timeout`: leave it out.
    Idle,
    /// No event with an earlier time is expected from it.
    At(i64),
}

/// One record of a repartition topic.
#[derive(Clone, Debug, PartialEq)]
pub enum RepartitionRecord {
    /// An event read from `upstream` at input offset `offset`.
    Event {
        /// The input partition it was read from.
        upstream: i32,
        /// Its offset there.
        offset: i64,
        /// The event, whole.
        event: Event,
    },
    /// The watermark of input partition `upstream`'s task.
    Marker {
        /// The input partition.
        upstream: i32,
        /// Its watermark, or idle.
        mark: Mark,
    },
}

/// The bytes of `record`.
pub fn encode(record: &RepartitionRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    match record {
        RepartitionRecord::Event {
            upstream,
            offset,
            event,
        } => {
            out.push(0);
            out.extend_from_slice(&upstream.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            encode_event(event, &mut out);
        }
        RepartitionRecord::Marker { upstream, mark } => {
            out.push(1);
            out.extend_from_slice(&upstream.to_le_bytes());
            match mark {
                Mark::Idle => out.push(0),
                Mark::At(watermark) => {
                    out.push(1);
                    out.extend_from_slice(&watermark.to_le_bytes());
                }
            }
        }
    }
    out
}

fn put_len(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

fn put_str(text: &str, out: &mut Vec<u8>) {
    put_len(text.len(), out);
    out.extend_from_slice(text.as_bytes());
}

fn put_opt_str(text: Option<&str>, out: &mut Vec<u8>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_str(text, out);
        }
    }
}

fn encode_event(event: &Event, out: &mut Vec<u8>) {
    put_opt_str(event.id.as_deref(), out);
    put_opt_str(event.kind.as_deref(), out);
    out.extend_from_slice(&event.event_time.to_le_bytes());
    out.extend_from_slice(&event.processing_time.to_le_bytes());
    match &event.headers {
        None => out.push(0),
        Some(headers) => {
            out.push(1);
            put_len(headers.len(), out);
            for (key, value) in headers.iter() {
                put_str(key, out);
                put_str(value, out);
            }
        }
    }
    match &event.key {
        None => out.push(0),
        Some(key) => {
            out.push(1);
            encode_value(key, out);
        }
    }
    match &event.payload {
        Payload::Row(values) => {
            out.push(0);
            put_len(values.len(), out);
            for value in values {
                encode_value(value, out);
            }
        }
        Payload::Object(fields) => {
            out.push(1);
            put_len(fields.len(), out);
            for (name, value) in fields {
                put_str(name, out);
                encode_value(value, out);
            }
        }
    }
}

fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0),
        Value::Bool(b) => {
            out.push(1);
            out.push(u8::from(*b));
        }
        Value::Int(i) => {
            out.push(2);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Float(f) => {
            out.push(3);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Str(s) => {
            out.push(4);
            put_str(s, out);
        }
        Value::List(items) => {
            out.push(5);
            put_len(items.len(), out);
            for item in items.iter() {
                encode_value(item, out);
            }
        }
        Value::Map(fields) => {
            out.push(6);
            put_len(fields.len(), out);
            for (name, item) in fields.iter() {
                put_str(name, out);
                encode_value(item, out);
            }
        }
    }
}

/// Reads a record's bytes in order; every read names what was missing.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

type Decoded<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, what: &str) -> Decoded<&'a [u8]> {
        let end = self
            .at
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {} (reading {what})", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &str) -> Decoded<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn i32(&mut self, what: &str) -> Decoded<i32> {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(self.take(4, what)?);
        Ok(i32::from_le_bytes(bytes))
    }

    fn i64(&mut self, what: &str) -> Decoded<i64> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.take(8, what)?);
        Ok(i64::from_le_bytes(bytes))
    }

    /// A count of items each at least `least` bytes long: never more than the bytes left
    /// could hold, so that no allocation outgrows the record.
    fn len(&mut self, least: usize, what: &str) -> Decoded<usize> {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(self.take(4, what)?);
        let len = u32::from_le_bytes(bytes) as usize;
        if len.saturating_mul(least) > self.bytes.len() - self.at {
            return Err(format!(
                "{what}: {len} items cannot fit in the {} bytes left",
                self.bytes.len() - self.at
            ));
        }
        Ok(len)
    }

    fn str(&mut self, what: &str) -> Decoded<Arc<str>> {
        let len = self.len(1, what)?;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(Arc::from)
            .map_err(|_| format!("{what}: not UTF-8"))
    }

    fn flag(&mut self, what: &str) -> Decoded<bool> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("{what}: unknown tag {other}")),
        }
    }

    fn opt_str(&mut self, what: &str) -> Decoded<Option<Arc<str>>> {
        Ok(if self.flag(what)? {
            Some(self.str(what)?)
        } else {
            None
        })
    }

    fn value(&mut self, depth: usize) -> Decoded<Value> {
        if depth > MAX_DEPTH {
            return Err(format!("values nest deeper than {MAX_DEPTH}"));
        }
        Ok(match self.u8("a value")? {
            0 => Value::Null,
            1 => Value::Bool(self.flag("a bool")?),
            2 => Value::Int(self.i64("an int")?),
            3 => Value::Float(f64::from_bits(self.i64("a float")? as u64)),
            4 => Value::Str(self.str("a string")?),
            5 => {
                let len = self.len(1, "a list")?;
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.value(depth + 1)?);
                }
                Value::List(Arc::new(items))
            }
            6 => {
                let len = self.len(5, "a map")?;
                let mut fields = BTreeMap::new();
                for _ in 0..len {
                    let name = self.str("a map's key")?;
                    fields.insert(name.to_string(), self.value(depth + 1)?);
                }
                Value::Map(Arc::new(fields))
            }
            other => return Err(format!("unknown value tag {other}")),
        })
    }

    fn event(&mut self) -> Decoded<Event> {
        let id = self.opt_str("the id")?;
        let kind = self.opt_str("the type")?;
        let event_time = self.i64("the event time")?;
        let processing_time = self.i64("the processing time")?;
        let headers = if self.flag("the headers")? {
            let len = self.len(8, "the headers")?;
            let mut pairs = Vec::with_capacity(len);
            for _ in 0..len {
                pairs.push((self.str("a header's name")?, self.str("a header's value")?));
            }
            Some(Box::new(pairs))
        } else {
            None
        };
        let key = if self.flag("the key")? {
            Some(self.value(0)?)
        } else {
            None
        };
        let payload = if self.flag("the payload")? {
            let len = self.len(5, "the payload")?;
            let mut fields = BTreeMap::new();
            for _ in 0..len {
                let name = self.str("a field's name")?;
                fields.insert(name.to_string(), self.value(0)?);
            }
            Payload::Object(fields)
        } else {
            let len = self.len(1, "the payload")?;
            let mut values = Vec::with_capacity(len);
            for _ in 0..len {
                values.push(self.value(0)?);
            }
            Payload::Row(values)
        };
        Ok(Event {
            id,
            kind,
            event_time,
            processing_time,
            headers,
            key,
            payload,
        })
    }
}

/// The record `bytes` hold, or what is wrong with them.
pub fn decode(bytes: &[u8]) -> std::result::Result<RepartitionRecord, String> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.u8("the version")?;
    if version != VERSION {
        return Err(format!("unknown repartition record version {version}"));
    }
    let record = match reader.u8("the record's kind")? {
        0 => RepartitionRecord::Event {
            upstream: reader.i32("the upstream partition")?,
            offset: reader.i64("the input offset")?,
            event: reader.event()?,
        },
        1 => RepartitionRecord::Marker {
            upstream: reader.i32("the upstream partition")?,
            mark: if reader.flag("the mark")? {
                Mark::At(reader.i64("the watermark")?)
            } else {
                Mark::Idle
            },
        },
        other => return Err(format!("unknown record kind {other}")),
    };
    if reader.at != bytes.len() {
        return Err(format!(
            "{} bytes after the record",
            bytes.len() - reader.at
        ));
    }
    Ok(record)
}

/// Stamps `event` with the input offset it was read at ([`OFFSET_HEADER`]).
pub fn stamp_offset(event: &mut Event, offset: i64) {
    // One name shared by every event, not an allocation each.
    static NAME: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    let name = NAME.get_or_init(|| Arc::from(OFFSET_HEADER)).clone();
    let header = (name, Arc::from(offset.to_string().as_str()));
    match &mut event.headers {
        Some(headers) => headers.push(header),
        None => event.headers = Some(Box::new(vec![header])),
    }
}

/// Takes the input offset [`stamp_offset`] put on `event` off it.
pub fn take_offset(event: &mut Event) -> Option<i64> {
    let headers = event.headers.as_mut()?;
    let index = headers
        .iter()
        .rposition(|(name, _)| name.as_ref() == OFFSET_HEADER)?;
    let (_, value) = headers.remove(index);
    if headers.is_empty() {
        event.headers = None;
    }
    value.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Watermarks and duplicates

/// The downstream watermark from the upstream partitions' markers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Markers {
    /// Each upstream partition's latest mark (`At` the highest it said), if it spoke.
    latest: Vec<Option<Mark>>,
    /// Each upstream partition's highest watermark so far.
    highest: Vec<Option<i64>>,
}

impl Markers {
    /// Markers of `upstream` partitions, none heard yet.
    pub fn new(upstream: usize) -> Markers {
        Markers {
            latest: vec![None; upstream],
            highest: vec![None; upstream],
        }
    }

    /// Takes in partition `upstream`'s mark; false if there is no such partition. A
    /// watermark lower than one it said before (a restored upstream task) changes nothing.
    pub fn observe(&mut self, upstream: i32, mark: Mark) -> bool {
        let Some(index) = usize::try_from(upstream)
            .ok()
            .filter(|i| *i < self.latest.len())
        else {
            return false;
        };
        self.latest[index] = Some(match mark {
            Mark::Idle => Mark::Idle,
            Mark::At(watermark) => {
                let highest = self.highest[index].map_or(watermark, |h| h.max(watermark));
                self.highest[index] = Some(highest);
                Mark::At(highest)
            }
        });
        true
    }

    /// What partition `upstream` said: its latest mark and its highest watermark, if it spoke.
    pub fn said(&self, upstream: usize) -> Option<(Mark, Option<i64>)> {
        Some((
            *self.latest.get(upstream)?.as_ref()?,
            self.highest[upstream],
        ))
    }

    /// Sets what partition `upstream` said (a restore); false if there is no such partition.
    pub fn restore(&mut self, upstream: usize, latest: Mark, highest: Option<i64>) -> bool {
        if upstream >= self.latest.len() {
            return false;
        }
        self.latest[upstream] = Some(latest);
        self.highest[upstream] = highest;
        true
    }

    /// How many upstream partitions there are.
    pub fn upstream(&self) -> usize {
        self.latest.len()
    }

    /// The least watermark of the partitions not idle; none until every partition spoke.
    /// Once all are idle, the highest watermark any said (as Flink does: nothing is pending
    /// from any of them; else the order in which they went idle would decide whether the
    /// last watermark ever counts), or none if none said one.
    pub fn watermark(&self) -> Option<i64> {
        let mut least: Option<i64> = None;
        for mark in &self.latest {
            match mark {
                None => return None,
                Some(Mark::Idle) => {}
                Some(Mark::At(w)) => least = Some(least.map_or(*w, |l| l.min(*w))),
            }
        }
        least.or_else(|| self.highest.iter().flatten().copied().max())
    }
}

/// Drops the records an upstream task sends again after a restore: records of one upstream
/// partition arrive in input-offset order, so one not above the highest seen was seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dedup {
    highest: BTreeMap<i32, i64>,
}

impl Dedup {
    /// Whether the record of `upstream` at input offset `offset` is new (then remembered).
    pub fn admit(&mut self, upstream: i32, offset: i64) -> bool {
        match self.highest.get(&upstream) {
            Some(highest) if offset <= *highest => false,
            _ => {
                self.highest.insert(upstream, offset);
                true
            }
        }
    }

    /// The highest input offset seen from each upstream partition.
    pub fn highest(&self) -> &BTreeMap<i32, i64> {
        &self.highest
    }

    /// Sets what was seen from `upstream` (a restore).
    pub fn restore(&mut self, upstream: i32, highest: i64) {
        self.highest.insert(upstream, highest);
    }
}

// ---------------------------------------------------------------------------------------------
// The topic

/// How many partitions `topic` has (blocking); an error if it does not exist.
pub fn topic_partitions(brokers: &str, properties: &Properties, topic: &str) -> Result<usize> {
    let consumer: BaseConsumer = client_config(brokers, properties)
        .create()
        .map_err(|e| kafka_error("cannot create a client", e))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), BROKER_TIMEOUT)
        .map_err(|e| kafka_error(&format!("cannot read topic `{topic}`"), e))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    if count == 0 {
        return Err(ConnectorError::Runtime(format!(
            "topic `{topic}` does not exist on {brokers}"
        )));
    }
    Ok(count)
}

/// Creates the repartition topic `topic` with `partitions` partitions unless it exists
/// (several processors start at once: "already exists" is fine).
pub async fn create_topic(
    brokers: &str,
    properties: &Properties,
    topic: &str,
    partitions: usize,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, properties)
        .create()
        .map_err(|e| kafka_error("cannot create an admin client", e))?;
    let partitions = i32::try_from(partitions)
        .map_err(|_| ConnectorError::Runtime(format!("{partitions} partitions: too many")))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| kafka_error(&format!("cannot create topic `{topic}`"), e))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(%topic, partitions, "repartition topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(%topic, "repartition topic exists")
            }
            Err((_, code)) => {
                return Err(ConnectorError::Runtime(format!(
                    "cannot create topic `{topic}`: {code}"
                )))
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The sink

/// Where an upstream task writes (built by the task manager, never written in a config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepartitionSinkSettings {
    /// `host:port,...`.
    pub brokers: String,
    /// The input source's librdkafka properties (security).
    pub properties: Properties,
    /// The repartition topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: usize,
    /// The input partition this task reads.
    pub upstream: i32,
    /// The source's `idle_timeout`: a barrier with nothing received for that long writes
    /// "idle" markers.
    pub idle_after: Option<Duration>,
}

/// Records the first delivery failure, which the next barrier reports.
#[derive(Clone, Debug, Default)]
struct Failures(Arc<Mutex<Option<String>>>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            if let Ok(mut failure) = self.0.lock() {
                failure.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Writes an upstream task's events and watermark markers to the repartition topic (see the
/// module's documentation).
pub struct RepartitionSink {
    settings: RepartitionSinkSettings,
    producer: Arc<ThreadedProducer<Failures>>,
    failures: Failures,
    /// The latest watermark the task's chain passed on.
    watermark: Option<i64>,
    /// The latest watermark written in markers, and when.
    written: Option<i64>,
    written_at: Instant,
    /// When an event or a watermark last arrived.
    heard: Instant,
}

impl std::fmt::Debug for RepartitionSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepartitionSink")
            .field("topic", &self.settings.topic)
            .field("upstream", &self.settings.upstream)
            .finish_non_exhaustive()
    }
}

impl RepartitionSink {
    /// An idempotent producer to the settings' topic.
    pub fn open(settings: &RepartitionSinkSettings) -> Result<RepartitionSink> {
        let failures = Failures::default();
        let mut config = client_config(&settings.brokers, &settings.properties);
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        let producer: ThreadedProducer<Failures> = config
            .create_with_context(failures.clone())
            .map_err(|e| kafka_error("cannot create the repartition producer", e))?;
        Ok(RepartitionSink {
            settings: settings.clone(),
            producer: Arc::new(producer),
            failures,
            watermark: None,
            written: None,
            written_at: Instant::now(),
            heard: Instant::now(),
        })
    }

    fn send(&self, partition: i32, bytes: &[u8]) -> Result<()> {
        loop {
            let record = BaseRecord::<[u8], [u8], ()>::to(&self.settings.topic)
                .partition(partition)
                .payload(bytes);
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The producer's own thread drains the queue.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    return Err(kafka_error(
                        &format!("cannot write to {}", self.settings.topic),
                        error,
                    ))
                }
            }
        }
    }

    /// Writes `mark` to every partition.
    fn markers(&self, mark: Mark) -> Result<()> {
        let bytes = encode(&RepartitionRecord::Marker {
            upstream: self.settings.upstream,
            mark,
        });
        for partition in 0..self.settings.partitions {
            self.send(partition as i32, &bytes)?;
        }
        Ok(())
    }

    fn failure(&self) -> Result<()> {
        match self.failures.0.lock().ok().and_then(|mut f| f.take()) {
            Some(failure) => Err(ConnectorError::Runtime(format!(
                "a record to {} was not delivered: {failure}",
                self.settings.topic
            ))),
            None => Ok(()),
        }
    }

    /// Waits (off the runtime's threads) until the broker acknowledged every record.
    async fn flush_all(&self) -> Result<()> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(BROKER_TIMEOUT))
            .await
            .map_err(|e| ConnectorError::Runtime(format!("the flush of a producer: {e}")))?
            .map_err(|e| kafka_error(&format!("cannot flush {}", self.settings.topic), e))?;
        self.failure()
    }
}

#[async_trait]
impl Sink for RepartitionSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        self.heard = Instant::now();
        for event in events {
            let mut event = event.clone();
            let Some(offset) = take_offset(&mut event) else {
                return Err(ConnectorError::Runtime(format!(
                    "an event without its input offset reached the sink of {}",
                    self.settings.topic
                )));
            };
            let partition = dataflow_window::key_partition(
                event.key.as_ref().unwrap_or(&Value::Null),
                self.settings.partitions,
            );
            let bytes = encode(&RepartitionRecord::Event {
                upstream: self.settings.upstream,
                offset,
                event,
            });
            self.send(partition as i32, &bytes)?;
        }
        self.failure()
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    async fn watermark(&mut self, watermark: i64) -> Result<()> {
        self.heard = Instant::now();
        self.watermark = Some(watermark);
        if self.written.is_none_or(|w| watermark > w) && self.written_at.elapsed() >= MARKER_EVERY {
            self.written = Some(watermark);
            self.written_at = Instant::now();
            self.markers(Mark::At(watermark))?;
        }
        Ok(())
    }

    async fn prepare(&mut self, _checkpoint: u64) -> Result<()> {
        let idle = self
            .settings
            .idle_after
            .is_some_and(|after| self.heard.elapsed() >= after);
        match self.watermark {
            _ if idle => self.markers(Mark::Idle)?,
            Some(watermark) => {
                self.written = Some(watermark);
                self.written_at = Instant::now();
                self.markers(Mark::At(watermark))?;
            }
            None => {}
        }
        self.flush_all().await
    }

    async fn finish(&mut self) -> Result<()> {
        self.flush_all().await
    }
}

// ---------------------------------------------------------------------------------------------
// The source

/// Reads one partition of a repartition topic: a downstream task's source (see the module's
/// documentation).
pub struct RepartitionSource {
    stage: Arc<str>,
    consumer: BaseConsumer,
    topic: String,
    partition: i32,
    /// The offset of the next record.
    next: i64,
    assigned: bool,
    markers: Markers,
    dedup: Dedup,
    /// Records dropped as sent again, for the log.
    dropped: u64,
}

impl std::fmt::Debug for RepartitionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepartitionSource")
            .field("partition", &self.name())
            .finish_non_exhaustive()
    }
}

impl RepartitionSource {
    /// The source `name` of the downstream task `task`, whose topic `upstream` input
    /// partitions write. It starts at the partition's beginning unless a checkpoint says.
    pub fn open(
        name: &str,
        settings: &KafkaSourceSettings,
        task: &TaskPartition,
        upstream: usize,
        _decoder: Arc<Decoder>,
    ) -> Result<RepartitionSource> {
        let mut config = client_config(&settings.brokers, &settings.properties);
        config
            .set("group.id", crate::kafka::group_id(name, settings))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| kafka_error(&format!("source `{name}`: cannot create the consumer"), e))?;
        let (low, _) = consumer
            .fetch_watermarks(&task.topic, task.partition, BROKER_TIMEOUT)
            .map_err(|e| kafka_error(&format!("cannot read the offsets of {}", task.name()), e))?;
        Ok(RepartitionSource {
            stage: Arc::from(format!("source {name}").as_str()),
            consumer,
            topic: task.topic.clone(),
            partition: task.partition,
            next: low.max(0),
            assigned: false,
            markers: Markers::new(upstream),
            dedup: Dedup::default(),
            dropped: 0,
        })
    }

    fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }

    fn assign(&mut self) -> Result<()> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, self.partition, Offset::Offset(self.next))
            .map_err(|e| kafka_error("cannot assign the repartition partition", e))?;
        self.consumer
            .assign(&list)
            .map_err(|e| kafka_error("cannot assign the repartition partition", e))?;
        self.assigned = true;
        Ok(())
    }

    /// The name of the checkpointed entry of what was seen from `upstream`.
    fn seen_name(&self, upstream: i32) -> String {
        format!("{}/from-{upstream}", self.name())
    }

    /// The name of the checkpointed entry of what `upstream`'s markers said.
    fn mark_name(&self, upstream: usize) -> String {
        format!("{}/mark-{upstream}", self.name())
    }
}

/// A watermark as a position's offset: order kept, `i64::MIN` at 0.
fn biased(watermark: i64) -> u64 {
    (watermark as u64) ^ (1 << 63)
}

/// A marker state as a checkpointed position's offset and line: line 0, `At` the highest
/// watermark (the offset); 1, idle after the highest watermark; 2, idle, no watermark said.
fn mark_position(latest: Mark, highest: Option<i64>) -> (u64, u64) {
    match (latest, highest) {
        (Mark::At(_), Some(highest)) | (Mark::At(highest), None) => (biased(highest), 0),
        (Mark::Idle, Some(highest)) => (biased(highest), 1),
        (Mark::Idle, None) => (0, 2),
    }
}

/// The marker state [`mark_position`] wrote, if the line is one it writes.
fn mark_of_position(offset: u64, line: u64) -> Option<(Mark, Option<i64>)> {
    let watermark = (offset ^ (1 << 63)) as i64;
    match line {
        0 => Some((Mark::At(watermark), Some(watermark))),
        1 => Some((Mark::Idle, Some(watermark))),
        2 => Some((Mark::Idle, None)),
        _ => None,
    }
}

impl Source for RepartitionSource {
    fn poll_batch(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        dead_letters: &mut Vec<SideRecord>,
    ) -> Result<Poll> {
        if !self.assigned {
            self.assign()?;
        }
        let mut taken = 0;
        while taken < max.max(1) {
            let wait = if taken == 0 {
                POLL_WAIT
            } else {
                Duration::ZERO
            };
            let message = match self.consumer.poll(wait) {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(stage = %self.stage, %error, "kafka consumer error");
                    break;
                }
                Some(Ok(message)) => message,
            };
            let offset = message.offset();
            if offset < self.next {
                continue;
            }
            self.next = offset + 1;
            taken += 1;
            match decode(message.payload().unwrap_or_default()) {
                Ok(RepartitionRecord::Marker { upstream, mark }) => {
                    if !self.markers.observe(upstream, mark) {
                        tracing::warn!(stage = %self.stage, upstream, "a marker of an unknown upstream partition: ignored");
                    }
                }
                Ok(RepartitionRecord::Event {
                    upstream,
                    offset: input,
                    event,
                }) => {
                    if self.dedup.admit(upstream, input) {
                        events.push(event);
                    } else {
                        self.dropped += 1;
                        tracing::debug!(stage = %self.stage, upstream, offset = input, "a record sent again: dropped");
                    }
                }
                Err(reason) => dead_letters.push(crate::kafka::dead_letter(
                    &self.stage,
                    &self.topic,
                    self.partition,
                    &message,
                    &reason,
                )),
            }
        }
        Ok(if taken > 0 {
            Poll::Data { partition: 0 }
        } else {
            Poll::Pending
        })
    }

    fn partitions(&self) -> usize {
        1
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        let mut positions = vec![PartitionPosition {
            name: self.name(),
            offset: self.next.max(0) as u64,
            line: 0,
        }];
        for (upstream, highest) in self.dedup.highest() {
            positions.push(PartitionPosition {
                name: self.seen_name(*upstream),
                // The next offset expected: 0 is "nothing seen".
                offset: (*highest).saturating_add(1).max(0) as u64,
                line: 0,
            });
        }
        for upstream in 0..self.markers.upstream() {
            if let Some((latest, highest)) = self.markers.said(upstream) {
                let (offset, line) = mark_position(latest, highest);
                positions.push(PartitionPosition {
                    name: self.mark_name(upstream),
                    offset,
                    line,
                });
            }
        }
        positions
    }

    fn replayable(&self) -> bool {
        true
    }

    fn seek(&mut self, positions: &[PartitionPosition]) -> Result<()> {
        let own = self.name();
        let prefix = format!("{own}/from-");
        let marks = format!("{own}/mark-");
        for position in positions {
            // A marker's offset is a biased watermark, not an offset.
            let offset = || {
                i64::try_from(position.offset).map_err(|_| {
                    ConnectorError::Checkpoint(format!(
                        "{}: offset {} out of range",
                        position.name, position.offset
                    ))
                })
            };
            if position.name == own {
                self.next = offset()?;
            } else if let Some(upstream) = position
                .name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.parse::<i32>().ok())
            {
                let offset = offset()?;
                if offset > 0 {
                    self.dedup.restore(upstream, offset - 1);
                }
            } else if let Some(upstream) = position
                .name
                .strip_prefix(&marks)
                .and_then(|rest| rest.parse::<usize>().ok())
            {
                let restored = mark_of_position(position.offset, position.line).is_some_and(
                    |(latest, highest)| self.markers.restore(upstream, latest, highest),
                );
                if !restored {
                    tracing::warn!(stage = %self.stage, partition = %position.name,
                        "a checkpointed marker that fits no upstream partition: ignored");
                }
            } else {
                tracing::warn!(stage = %self.stage, partition = %position.name,
                    "a checkpointed partition is not the source's: ignored");
            }
        }
        if self.assigned {
            self.assign()?;
        }
        Ok(())
    }

    fn concurrent_partitions(&self) -> bool {
        true
    }

    fn carried_watermark(&self, partition: usize) -> Option<i64> {
        (partition == 0).then(|| self.markers.watermark()).flatten()
    }

    fn carries_watermarks(&self) -> bool {
        true
    }
}

impl Drop for RepartitionSource {
    fn drop(&mut self) {
        if self.dropped > 0 {
            tracing::info!(stage = %self.stage, partition = %self.name(), dropped = self.dropped,
                "records sent again by restored upstream tasks were dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(|bits| Value::Float(f64::from_bits(bits))),
            ".{0,8}".prop_map(|s| Value::str(&s)),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| Value::List(Arc::new(v))),
                prop::collection::btree_map(".{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Map(Arc::new(m))),
            ]
        })
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            prop::option::of(".{0,6}"),
            prop::option::of(".{0,6}"),
            any::<i64>(),
            any::<i64>(),
            prop::option::of(prop::collection::vec((".{0,4}", ".{0,4}"), 0..3)),
            prop::option::of(value()),
            prop_oneof![
                prop::collection::vec(value(), 0..5).prop_map(Payload::Row),
                prop::collection::btree_map(".{0,4}", value(), 0..4).prop_map(Payload::Object),
            ],
        )
            .prop_map(
                |(id, kind, event_time, processing_time, headers, key, payload)| Event {
                    id: id.map(|s| Arc::from(s.as_str())),
                    kind: kind.map(|s| Arc::from(s.as_str())),
                    event_time,
                    processing_time,
                    headers: headers.map(|pairs| {
                        Box::new(
                            pairs
                                .into_iter()
                                .map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())))
                                .collect(),
                        )
                    }),
                    key,
                    payload,
                },
            )
    }

    fn record() -> impl Strategy<Value = RepartitionRecord> {
        prop_oneof![
            (any::<i32>(), any::<i64>(), event()).prop_map(|(upstream, offset, event)| {
                RepartitionRecord::Event {
                    upstream,
                    offset,
                    event,
                }
            }),
            (any::<i32>(), prop::option::of(any::<i64>())).prop_map(|(upstream, mark)| {
                RepartitionRecord::Marker {
                    upstream,
                    mark: mark.map_or(Mark::Idle, Mark::At),
                }
            }),
        ]
    }

    proptest! {
        /// Every record comes back whole (`Value`'s equality compares floats by bits' order,
        /// so NaNs and signed zeros are checked too).
        #[test]
        fn records_round_trip(record in record()) {
            let bytes = encode(&record);
            prop_assert_eq!(decode(&bytes), Ok(record));
        }

        /// Any truncation or any extra byte is an error, never a panic or a wrong record.
        #[test]
        fn damaged_records_are_errors(record in record(), cut in any::<prop::sample::Index>(), extra in any::<u8>()) {
            let bytes = encode(&record);
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err());
            let mut longer = bytes.clone();
            longer.push(extra);
            prop_assert!(decode(&longer).is_err());
        }

        /// Random bytes never panic the decoder.
        #[test]
        fn random_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }

        /// The combined watermark is the naive one: none until every partition spoke; then
        /// the least, over the partitions not idle, of the highest watermark each said; all
        /// idle, the highest any said.
        #[test]
        fn markers_combine_as_the_naive_minimum(
            upstream in 1usize..5,
            marks in prop::collection::vec((0i32..5, prop::option::of(-50i64..50)), 0..40),
        ) {
            let mut markers = Markers::new(upstream);
            let mut said: Vec<Vec<Option<i64>>> = vec![Vec::new(); upstream];
            for (partition, mark) in marks {
                let known = (partition as usize) < upstream;
                prop_assert_eq!(markers.observe(partition, mark.map_or(Mark::Idle, Mark::At)), known);
                if known {
                    said[partition as usize].push(mark);
                }
                let highest = |marks: &Vec<Option<i64>>| marks.iter().flatten().copied().max();
                let naive = if said.iter().any(Vec::is_empty) {
                    None
                } else if said.iter().all(|marks| marks.last() == Some(&None)) {
                    said.iter().filter_map(highest).max()
                } else {
                    said.iter()
                        .filter(|marks| marks.last().copied().flatten().is_some())
                        .filter_map(highest)
                        .min()
                };
                prop_assert_eq!(markers.watermark(), naive);
            }
        }

        /// Upstream tasks that replay from random earlier offsets (a restore): the records the
        /// dedup admits are each offset of each partition once, in order, as a set would keep.
        #[test]
        fn dedup_keeps_each_record_once(
            runs in prop::collection::vec((0i32..3, 1i64..20, 0i64..20), 1..20),
        ) {
            let mut dedup = Dedup::default();
            let mut naive: std::collections::BTreeSet<(i32, i64)> = Default::default();
            let mut admitted = Vec::new();
            let mut sent: BTreeMap<i32, i64> = BTreeMap::new();
            for (partition, count, back) in runs {
                // A replay starts up to `back` records before where the partition got.
                let end = *sent.get(&partition).unwrap_or(&0);
                let start = (end - back).max(0);
                for offset in start..end + count {
                    let new = naive.insert((partition, offset));
                    prop_assert_eq!(dedup.admit(partition, offset), new);
                    if new {
                        admitted.push((partition, offset));
                    }
                }
                sent.insert(partition, end + count);
            }
            let all: Vec<(i32, i64)> = naive.into_iter().collect();
            admitted.sort_unstable();
            prop_assert_eq!(admitted, all);
        }
    }

    proptest! {
        /// A marker state survives its checkpointed position, and positions keep the order
        /// of watermarks.
        #[test]
        fn marker_states_round_trip_through_positions(
            idle in any::<bool>(),
            highest in prop::option::of(any::<i64>()),
            other in any::<i64>(),
        ) {
            let latest = match (idle, highest) {
                (false, Some(w)) => Mark::At(w),
                (false, None) => return Ok(()),
                (true, _) => Mark::Idle,
            };
            let (offset, line) = mark_position(latest, highest);
            prop_assert_eq!(mark_of_position(offset, line), Some((latest, highest)));
            if let Some(highest) = highest {
                prop_assert_eq!(biased(highest).cmp(&biased(other)), highest.cmp(&other));
            }
        }
    }

    #[test]
    fn the_offset_stamp_comes_off_again() {
        let mut event = Event::row(5, vec![Value::Int(1)]);
        stamp_offset(&mut event, 42);
        assert_eq!(take_offset(&mut event), Some(42));
        assert_eq!(event, Event::row(5, vec![Value::Int(1)]));
        let mut event = Event {
            headers: Some(Box::new(vec![(Arc::from("a"), Arc::from("b"))])),
            ..Event::row(5, Vec::new())
        };
        stamp_offset(&mut event, 7);
        assert_eq!(take_offset(&mut event), Some(7));
        assert_eq!(
            event.headers.as_deref(),
            Some(&vec![(Arc::from("a"), Arc::from("b"))])
        );
    }

    #[test]
    fn a_marker_of_every_partition_is_needed() {
        let mut markers = Markers::new(3);
        assert!(markers.observe(0, Mark::At(10)));
        assert!(markers.observe(1, Mark::Idle));
        assert_eq!(markers.watermark(), None);
        assert!(markers.observe(2, Mark::At(4)));
        assert_eq!(markers.watermark(), Some(4));
        // A restored upstream task says a lower watermark: its highest stands.
        assert!(markers.observe(2, Mark::At(1)));
        assert_eq!(markers.watermark(), Some(4));
        assert!(markers.observe(2, Mark::Idle));
        assert_eq!(markers.watermark(), Some(10));
        // All idle: the highest said.
        assert!(markers.observe(0, Mark::Idle));
        assert_eq!(markers.watermark(), Some(10));
        assert!(!markers.observe(3, Mark::At(0)));
        let mut markers = Markers::new(2);
        assert!(markers.observe(0, Mark::Idle));
        assert!(markers.observe(1, Mark::Idle));
        assert_eq!(markers.watermark(), None);
    }
}
