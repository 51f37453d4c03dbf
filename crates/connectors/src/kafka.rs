//! `type: kafka`: a source reading topics of a Kafka-protocol broker, and a sink writing results
//! to a topic, both through librdkafka (`rdkafka`).
//!
//! **Source.** Every partition of the topics (named, or matching a pattern) is a source
//! partition named `topic/partition`, with its own offset in checkpoints and its own
//! watermark. The consumer is assigned all of them itself (the group id names where offsets
//! are committed, for lag tools), or, with `scale_out: true`, the one partition of its task,
//! which the process's [`GroupMember`] was given by the group's rebalance
//! (`dataflow_pipeline::scale_out`). A partition starts at its
//! checkpointed offset on a restore, else at the group's committed offset, else at `start`.
//! Without `scale_out`, the source reads its topics' metadata again every few seconds and
//! adds the partitions that appeared (a partition added to a topic, a new topic matching the
//! pattern) after the others; such a partition starts at the group's committed offset, else
//! at its first record ([`KafkaSource::discover`]).
//! Each partition is read from its own librdkafka queue, one batch of one partition per poll,
//! in turn, so that every batch has one partition's offsets and a backlog is read evenly. Values
//! decode with the source's `format` exactly as a file's lines; the record key becomes
//! `event.key` (unless the format's `key_field` sets it) and its headers `event.headers`;
//! with `event_time: record` the record timestamp is the event time. A record that does not
//! decode is a dead letter naming its topic, partition and offset. After a checkpoint is saved
//! its offsets are committed to the group ([`Source::checkpoint_completed`]).
//!
//! **Sink.** Each result is one record of the topic, its value the result's JSON line (as the
//! `file` sink writes it, without the newline), its key a CEL expression over the result.
//! At least once by default: [`Sink::prepare`] waits until the broker acknowledged every record
//! written before the barrier. With `exactly_once`, records go through a transactional producer,
//! one transaction per checkpoint: the transaction open since the last commit is flushed at the
//! barrier and committed when the checkpoint is saved ([`Sink::commit`]); what is written
//! between the barrier and that commit is held in memory and sent in the next transaction. On
//! open, `init_transactions` with the same transactional id fences the previous process and
//! aborts its open transaction, whose results the restore replays; the restored checkpoint's
//! own transaction, if it was not committed, is sent again from the sink's spool ([`Spool`]);
//! whether it was, the sink's [`Ledger`] says (offsets committed inside each transaction).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dataflow_event::json::{Decoder, Encoder};
use dataflow_event::side::{SideData, SideKind};
use dataflow_event::{Event, Value};
use dataflow_expr::Expr;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::{Place, Problem, SettingValue, Settings};
use crate::jsonl::result_encoder;
pub use crate::kafka_repartition::TaskRole;
use crate::registry::{SinkKind, SinkSpec, SourceKind};
use crate::side::SideRecord;
use crate::sink::{ResultFormat, Sink};
use crate::source::{PartitionPosition, Poll, Source};
use crate::{ConnectorError, Result};

/// How long a call to the broker (metadata, offsets, a transaction's commit) may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);
/// What librdkafka prefetches for each partition (`queued.max.messages.kbytes`) unless the
/// source's `properties` say otherwise.
const PREFETCH_KBYTES: &str = "4096";
/// The header naming the transaction of a record an exactly-once sink wrote.
pub const TXN_HEADER: &str = "dataflow-txn";
/// How often the consumer's own queue is polled while the partitions' queues have records.
const SERVE_EVERY: Duration = Duration::from_millis(100);
/// How long a poll waits for a record when no partition has one.
const POLL_WAIT: Duration = Duration::from_millis(20);

/// Client properties as written: `key: value`, passed to librdkafka as they are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties(pub Vec<(String, String)>);

impl Properties {
    /// Whether the user set librdkafka property `key`.
    fn names(&self, key: &str) -> bool {
        self.0.iter().any(|(name, _)| name == key)
    }
}

impl std::fmt::Debug for Properties {
    // Values may be secrets (`sasl.password`): only the keys are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(key, _)| key))
            .finish()
    }
}

/// Where a partition without a checkpointed or committed offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// Its first record.
    Earliest,
    /// After its last record when the source opens.
    Latest,
    /// Its first record with a timestamp at or after these epoch milliseconds.
    Timestamp(i64),
}

/// Which topics a source reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topics {
    /// These topics.
    Names(Vec<String>),
    /// Every topic whose whole name matches this regular expression when the source opens.
    Pattern(String),
}

/// Where an event's time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventTime {
    /// The format's `time_field` (or processing time without one), as for files.
    Field,
    /// The Kafka record's timestamp.
    Record,
}

/// `type: kafka` source settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSourceSettings {
    /// `host:port,...`.
    pub brokers: String,
    /// What it reads.
    pub topics: Topics,
    /// The consumer group offsets are committed to; `None`: `dataflow-<source name>`.
    pub group: Option<String>,
    /// Where partitions without an offset start.
    pub start: StartAt,
    /// Where event times come from.
    pub event_time: EventTime,
    /// Other librdkafka properties (security, tuning).
    pub properties: Properties,
    /// `scale_out: true`: processors started with this config share the topics' partitions
    /// through the consumer group, one task per partition (`dataflow_pipeline::scale_out`).
    pub scale_out: bool,
    /// `partitioned_by`: the CEL expression the producer partitioned the topics by, so that a
    /// `key_by` on the same expression needs no repartition topic in a scale-out job.
    pub partitioned_by: Option<String>,
    /// Set by the task manager of a scale-out processor, never written: the one partition a
    /// task's source reads, and the group member its offsets are committed through.
    pub task: Option<TaskPartition>,
}

/// The one partition the source of a scale-out task reads (see [`KafkaSourceSettings::task`]).
#[derive(Clone)]
pub struct TaskPartition {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// The process's member of the group, which commits the task's offsets: a consumer that
    /// is not a member of a group with members may not commit to it.
    pub member: Arc<GroupMember>,
    /// What the partition is: an input one, or one of a repartition topic.
    pub role: TaskRole,
}

impl TaskPartition {
    /// `topic/partition`, as the source names the partition.
    pub fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

impl std::fmt::Debug for TaskPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl PartialEq for TaskPartition {
    fn eq(&self, other: &Self) -> bool {
        (&self.topic, self.partition) == (&other.topic, other.partition)
    }
}

impl Eq for TaskPartition {}

/// The settings a kafka source takes.
pub(crate) const SOURCE_KEYS: &[&str] = &[
    "brokers",
    "topics",
    "topic_pattern",
    "group",
    "start",
    "event_time",
    "properties",
    "scale_out",
    "partitioned_by",
];

/// The settings a kafka sink takes.
pub(crate) const SINK_KEYS: &[&str] = &[
    "brokers",
    "topic",
    "key",
    "compression",
    "exactly_once",
    "transactional_id",
    "headers",
    "properties",
];

/// Properties the connector sets itself: written in `properties`, they are refused.
const OWN_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "transactional.id",
    "compression.type",
    "compression.codec",
];

fn properties(settings: &mut Settings<'_>) -> Properties {
    let Some(setting) = settings.take("properties") else {
        return Properties::default();
    };
    let SettingValue::Map(entries) = &setting.value else {
        settings.problem(
            setting.place.clone(),
            "`properties` must be a mapping of librdkafka properties to values",
        );
        return Properties::default();
    };
    let mut out = Vec::new();
    for (key, value) in entries {
        let text = match value {
            SettingValue::Str(text) => text.clone(),
            SettingValue::Int(n) => n.to_string(),
            SettingValue::Float(x) => x.to_string(),
            SettingValue::Bool(b) => b.to_string(),
            _ => {
                settings.problem(
                    setting.place.clone(),
                    format!("property `{key}` must be a string, number or bool"),
                );
                continue;
            }
        };
        if OWN_PROPERTIES.contains(&key.as_str()) {
            settings.problem(
                setting.place.clone(),
                format!("property `{key}` is set by the connector: use its own key"),
            );
            continue;
        }
        out.push((key.clone(), text));
    }
    // librdkafka checks names and values when a client is created: do it now, one property
    // at a time (it stops at the first bad one), so that `processor check` reports them all.
    for (key, value) in &out {
        let mut config = ClientConfig::new();
        config.set(key, value);
        if let Err(error) = config.create_native_config() {
            settings.problem(setting.place.clone(), format!("invalid property: {error}"));
        }
    }
    Properties(out)
}

fn brokers(settings: &mut Settings<'_>, what: &str) -> Option<String> {
    match settings.string("brokers") {
        Some((brokers, place)) if brokers.trim().is_empty() => {
            settings.problem(place, "`brokers` is empty");
            None
        }
        Some((brokers, _)) => Some(brokers),
        None => {
            let place = settings.place();
            settings.problem(
                place,
                format!("a kafka {what} needs `brokers`: host:port of the bootstrap brokers"),
            );
            None
        }
    }
}

/// `type: kafka` source settings.
pub(crate) fn configure_source(settings: &mut Settings<'_>) -> Option<SourceKind> {
    let source_place = settings.place();
    let brokers = brokers(settings, "source");
    let names = settings.take("topics").map(|setting| match &setting.value {
        SettingValue::Seq(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                SettingValue::Str(text) if !text.is_empty() => Some(text.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or(setting.place),
        SettingValue::Str(text) if !text.is_empty() => Ok(vec![text.clone()]),
        _ => Err(setting.place),
    });
    let pattern = settings.string("topic_pattern");
    let topics = match (names, pattern) {
        (Some(Ok(names)), None) => Some(Topics::Names(names)),
        (Some(Err(place)), _) => {
            settings.problem(place, "`topics` must be a topic name or a list of them");
            None
        }
        (None, Some((pattern, place))) => match regex::Regex::new(&format!("^(?:{pattern})$")) {
            Ok(_) => Some(Topics::Pattern(pattern)),
            Err(error) => {
                settings.problem(place, format!("invalid `topic_pattern`: {error}"));
                None
            }
        },
        (Some(Ok(_)), Some((_, place))) => {
            settings.problem(place, "give `topics` or `topic_pattern`, not both");
            None
        }
        (None, None) => {
            settings.problem(
                source_place,
                "a kafka source needs `topics` (a list) or `topic_pattern` (a regular expression)",
            );
            None
        }
    };
    let group = settings.string("group").map(|(group, _)| group);
    let start = match settings.take("start") {
        None => Some(StartAt::Earliest),
        Some(setting) => match &setting.value {
            SettingValue::Str(text) if text == "earliest" => Some(StartAt::Earliest),
            SettingValue::Str(text) if text == "latest" => Some(StartAt::Latest),
            SettingValue::Str(text) => match dataflow_event::time::parse_text(text) {
                Some(millis) => Some(StartAt::Timestamp(millis)),
                None => {
                    settings.problem(
                        setting.place,
                        format!("`start` must be earliest, latest or a time (RFC 3339 or epoch milliseconds), not `{text}`"),
                    );
                    None
                }
            },
            SettingValue::Int(millis) => Some(StartAt::Timestamp(*millis)),
            _ => {
                settings.problem(
                    setting.place,
                    "`start` must be earliest, latest or a time (RFC 3339 or epoch milliseconds)",
                );
                None
            }
        },
    };
    let event_time = match settings.string("event_time") {
        None => Some(EventTime::Field),
        Some((text, place)) => match text.as_str() {
            "field" => Some(EventTime::Field),
            "record" => Some(EventTime::Record),
            other => {
                settings.problem(
                    place,
                    format!("unknown `event_time` `{other}`: expected field or record"),
                );
                None
            }
        },
    };
    let properties = properties(settings);
    let scale_out = settings.bool("scale_out").unwrap_or(false);
    let partitioned_by = settings.string("partitioned_by").map(|(text, _)| text);
    Some(SourceKind::Kafka(Box::new(KafkaSourceSettings {
        brokers: brokers?,
        topics: topics?,
        group,
        start: start?,
        event_time: event_time?,
        properties,
        scale_out,
        partitioned_by,
        task: None,
    })))
}

/// The consumer group of source `name`: its `group`, else `dataflow-<name>`.
pub fn group_id(name: &str, settings: &KafkaSourceSettings) -> String {
    settings
        .group
        .clone()
        .unwrap_or_else(|| format!("dataflow-{name}"))
}

/// What a scale-out processor's task manager hears from its [`GroupMember`]: each is called on
/// the thread that polls the member, inside the group's rebalance.
pub trait RebalanceListener: Send + Sync {
    /// These partitions are taken away. Their tasks must have stopped (checkpointed, their
    /// transactions committed) when this returns: the group gives them to another member
    /// only after it.
    fn revoked(&self, partitions: &[(String, i32)]);
    /// These partitions are given to this process (all of its partitions with an eager
    /// protocol, the new ones with a cooperative one).
    fn assigned(&self, partitions: &[(String, i32)]);
}

/// The context of a [`GroupMember`]'s consumer: tells the listener of rebalances, and pauses
/// the partitions it is assigned (it only tracks them; the tasks' own consumers read them).
pub struct MemberContext {
    listener: Arc<dyn RebalanceListener>,
}

fn partition_list(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl std::fmt::Debug for MemberContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberContext")
    }
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(
        &self,
        consumer: &BaseConsumer<MemberContext>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        match rebalance {
            rdkafka::consumer::Rebalance::Revoke(list) => {
                let partitions = partition_list(list);
                if consumer.assignment_lost() {
                    // The group gave them away already (this member missed its session): their
                    // next owners may have started from the checkpoints before the final ones
                    // these tasks now take (docs/kafka.md, gaps).
                    tracing::warn!(partitions = %names(&partitions),
                        "kafka group: partitions lost (the session expired); their tasks stop late");
                }
                tracing::info!(partitions = %names(&partitions), "kafka group: partitions revoked");
                self.listener.revoked(&partitions);
            }
            rdkafka::consumer::Rebalance::Assign(_) => {}
            rdkafka::consumer::Rebalance::Error(error) => {
                tracing::warn!(%error, "kafka group: rebalance error");
            }
        }
    }

    fn post_rebalance(
        &self,
        consumer: &BaseConsumer<MemberContext>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Assign(list) = rebalance {
            if list.count() > 0 {
                if let Err(error) = consumer.pause(list) {
                    tracing::warn!(%error, "kafka group: cannot pause the assigned partitions");
                }
            }
            let partitions = partition_list(list);
            tracing::info!(partitions = %names(&partitions), "kafka group: partitions assigned");
            self.listener.assigned(&partitions);
        }
    }
}

fn names(partitions: &[(String, i32)]) -> String {
    let names: Vec<String> = partitions
        .iter()
        .map(|(topic, partition)| format!("{topic}/{partition}"))
        .collect();
    names.join(",")
}

/// A scale-out processor's member of the source's consumer group: subscribed to the source's
/// topics, it reads no records (its partitions are paused); its rebalances say which
/// partitions this process owns, and it commits the tasks' offsets to the group. It must be
/// polled ([`GroupMember::poll`]) to stay in the group; rebalance callbacks run in that poll.
pub struct GroupMember {
    consumer: BaseConsumer<MemberContext>,
    group: String,
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// How often a scale-out member refreshes the topics' metadata unless `properties` say: a
/// partition added to a topic is noticed (and the group rebalanced) within it.
const METADATA_REFRESH_MS: &str = "5000";

impl GroupMember {
    /// Joins the group of source `name` (its `group`, else `dataflow-<name>`), subscribed to
    /// its topics (or its pattern). Cooperative rebalancing unless `properties` choose a
    /// `partition.assignment.strategy`.
    pub fn join(
        name: &str,
        settings: &KafkaSourceSettings,
        listener: Arc<dyn RebalanceListener>,
    ) -> Result<GroupMember> {
        let group = group_id(name, settings);
        let mut config = consumer_config(settings, &group);
        if !settings.properties.names("partition.assignment.strategy") {
            config.set("partition.assignment.strategy", "cooperative-sticky");
        }
        if !settings
            .properties
            .names("topic.metadata.refresh.interval.ms")
        {
            config.set("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS);
        }
        let consumer: BaseConsumer<MemberContext> = config
            .create_with_context(MemberContext { listener })
            .map_err(|e| {
                kafka_error(
                    &format!("source `{name}`: cannot create the group member"),
                    e,
                )
            })?;
        let topics: Vec<String> = match &settings.topics {
            Topics::Names(names) => names.clone(),
            // librdkafka subscribes to a regular expression when the name starts with `^`,
            // matched by its own engine (POSIX extended syntax: no `(?:`), against every
            // topic at each metadata refresh.
            Topics::Pattern(pattern) => vec![format!("^({pattern})$")],
        };
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| {
            kafka_error(&format!("source `{name}`: cannot join group `{group}`"), e)
        })?;
        tracing::info!(%group, "kafka group: joining");
        Ok(GroupMember { consumer, group })
    }

    /// The group's id.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Serves the member for up to `wait`: heartbeats, rebalances (the listener is called
    /// from here) and offset commits. Records are not read (its partitions are paused).
    pub fn poll(&self, wait: Duration) {
        match self.consumer.poll(wait) {
            Some(Err(error)) => tracing::warn!(group = %self.group, %error, "kafka group member"),
            Some(Ok(message)) => tracing::debug!(
                topic = message.topic(),
                partition = message.partition(),
                "kafka group member: a record fetched before its partition was paused, dropped"
            ),
            None => {}
        }
    }

    /// Leaves the group: its partitions are revoked (the listener is called) and go to the
    /// other members.
    pub fn leave(&self) {
        self.consumer.unsubscribe();
        // The revoke is delivered by the poll.
        for _ in 0..10 {
            self.poll(Duration::from_millis(50));
        }
    }
}

/// A client configuration with `brokers` and the properties written.
pub(crate) fn client_config(brokers: &str, properties: &Properties) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in &properties.0 {
        config.set(key, value);
    }
    config
}

/// A consumer in `group` whose offsets are committed only by hand (after checkpoints).
fn consumer_config(settings: &KafkaSourceSettings, group: &str) -> ClientConfig {
    let mut config = client_config(&settings.brokers, &settings.properties);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    config
}

pub(crate) fn kafka_error(doing: &str, error: KafkaError) -> ConnectorError {
    ConnectorError::Runtime(format!("{doing}: {error}"))
}

struct KafkaPartition {
    topic: String,
    partition: i32,
    /// The offset of the next record to hand on: what checkpoints store.
    next: i64,
    /// Its own queue of fetched records, split from the consumer's at every assignment.
    queue: Option<PartitionQueue<Lags>>,
    /// Each event carries its offset, for a repartition sink ([`TaskRole::Input`]).
    stamp: bool,
}

impl KafkaPartition {
    fn name(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

/// The consumer's context: keeps each partition's end offset (high watermark) from
/// librdkafka's statistics; a partition's lag is that minus the offset the source reads next.
/// (librdkafka's own `consumer_lag` counts from the committed offset, which a scale-out task's
/// consumer never sees: its commits go through the group member.)
#[derive(Clone, Debug, Default)]
pub struct Lags {
    by_partition: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
}

impl ClientContext for Lags {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Ok(mut lags) = self.by_partition.lock() else {
            return;
        };
        for (name, topic) in &statistics.topics {
            for (id, partition) in &topic.partitions {
                // -1: not known (yet); the internal partition -1 is not one of ours.
                if *id >= 0 && partition.hi_offset >= 0 {
                    lags.insert((name.clone(), *id), partition.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Lags {}

/// Reads the partitions of Kafka topics (see the module's documentation).
pub struct KafkaSource {
    stage: Arc<str>,
    decoder: Arc<Decoder>,
    event_time: EventTime,
    consumer: Arc<BaseConsumer<Lags>>,
    partitions: Vec<KafkaPartition>,
    /// Each partition's index, by topic and partition.
    index: BTreeMap<(String, i32), usize>,
    /// Whether the consumer has been assigned the partitions at their offsets (at the first
    /// poll, after any seek).
    assigned: bool,
    /// The partition whose turn it is.
    turn: usize,
    /// When the consumer's own queue was last polled.
    served: std::time::Instant,
    /// The partitions' consumer lag, from the statistics the consumer's queue delivers.
    lags: Lags,
    /// A scale-out task's group member, which commits its offsets.
    member: Option<Arc<GroupMember>>,
    /// How partitions that appear while the source runs are found; `None` for a scale-out
    /// task (its one partition is fixed; the group member notices new ones).
    discovery: Option<Discovery>,
}

/// Which topics a source follows after it opened, and how often it looks for new partitions.
struct Discovery {
    /// The topics named, or `None` with a pattern.
    names: Option<Vec<String>>,
    /// The pattern, anchored.
    pattern: Option<regex::Regex>,
    /// How often the topics' metadata is read.
    every: Duration,
    /// When it was last read.
    last: std::time::Instant,
}

impl Discovery {
    fn follows(&self, topic: &str) -> bool {
        match (&self.names, &self.pattern) {
            (Some(names), _) => names.iter().any(|name| name == topic),
            (None, Some(pattern)) => pattern.is_match(topic) && !topic.starts_with("__"),
            (None, None) => false,
        }
    }
}

/// How often a source looks for partitions added to its topics (or topics matching its
/// pattern) unless `properties` set `topic.metadata.refresh.interval.ms` (a negative value
/// turns it off, as it does librdkafka's own refresh).
const DISCOVERY_EVERY: Duration = Duration::from_secs(5);
/// How long a look for new partitions may wait for the broker's metadata; on a timeout the
/// source reads on and looks again at the next interval.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The discovery interval `properties` ask for: `None` to never look.
fn discovery_interval(properties: &Properties) -> Option<Duration> {
    let written = properties
        .0
        .iter()
        .find(|(key, _)| key == "topic.metadata.refresh.interval.ms")
        .and_then(|(_, value)| value.trim().parse::<i64>().ok());
    match written {
        None => Some(DISCOVERY_EVERY),
        Some(millis) if millis < 0 => None,
        Some(millis) => Some(Duration::from_millis(millis as u64)),
    }
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("stage", &self.stage)
            .field("partitions", &self.partitions.len())
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Connects, finds the partitions of the topics and where each starts.
    pub fn open(
        name: &str,
        settings: &KafkaSourceSettings,
        decoder: Arc<Decoder>,
    ) -> Result<KafkaSource> {
        let group = group_id(name, settings);
        let mut config = consumer_config(settings, &group);
        if !settings.properties.names("statistics.interval.ms") {
            // The consumer lag of each partition, for `/metrics`.
            config.set("statistics.interval.ms", "1000");
        }
        if !settings.properties.names("queued.max.messages.kbytes") {
            // Each partition is read from a queue of its own, and librdkafka's prefetch limit
            // then holds per partition: its default (64 MiB) let a 4-partition W2 run peak at
            // 230 MiB; 4 MiB a partition peaked at 88 MiB (docs/performance.md).
            config.set("queued.max.messages.kbytes", PREFETCH_KBYTES);
        }
        let lags = Lags::default();
        let consumer: BaseConsumer<Lags> = config
            .create_with_context(lags.clone())
            .map_err(|e| kafka_error(&format!("source `{name}`: cannot create the consumer"), e))?;
        let metadata = consumer
            .fetch_metadata(None, BROKER_TIMEOUT)
            .map_err(|e| kafka_error(&format!("source `{name}`: cannot read the topics"), e))?;
        let mut compiled = None;
        let wanted: Vec<String> = match &settings.topics {
            Topics::Names(names) => names.clone(),
            Topics::Pattern(pattern) => {
                let regex = regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| ConnectorError::Runtime(format!("topic_pattern: {e}")))?;
                compiled = Some(regex.clone());
                let mut names: Vec<String> = metadata
                    .topics()
                    .iter()
                    .map(|topic| topic.name().to_string())
                    .filter(|topic| regex.is_match(topic) && !topic.starts_with("__"))
                    .collect();
                names.sort();
                names
            }
        };
        let mut partitions = Vec::new();
        // A scale-out task reads its one partition.
        let wanted = match &settings.task {
            Some(task) => {
                let exists = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == task.topic)
                    .is_some_and(|t| t.partitions().iter().any(|p| p.id() == task.partition));
                if !exists {
                    return Err(ConnectorError::Runtime(format!(
                        "source `{name}`: partition {} does not exist on {}",
                        task.name(),
                        settings.brokers
                    )));
                }
                partitions.push(KafkaPartition {
                    topic: task.topic.clone(),
                    partition: task.partition,
                    next: 0,
                    queue: None,
                    stamp: task.role == (TaskRole::Input { stamp: true }),
                });
                Vec::new()
            }
            None => wanted,
        };
        for topic in &wanted {
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            let mut ids: Vec<i32> = match found {
                Some(found) if found.error().is_none() => {
                    found.partitions().iter().map(|p| p.id()).collect()
                }
                _ => Vec::new(),
            };
            if ids.is_empty() {
                return Err(ConnectorError::Runtime(format!(
                    "source `{name}`: topic `{topic}` does not exist on {}",
                    settings.brokers
                )));
            }
            ids.sort_unstable();
            for partition in ids {
                partitions.push(KafkaPartition {
                    topic: topic.clone(),
                    partition,
                    next: 0,
                    queue: None,
                    stamp: false,
                });
            }
        }
        if partitions.is_empty() {
            return Err(ConnectorError::Runtime(format!(
                "source `{name}`: no topic matches the pattern"
            )));
        }
        let mut source = KafkaSource {
            stage: Arc::from(format!("source {name}").as_str()),
            decoder,
            event_time: settings.event_time,
            consumer: Arc::new(consumer),
            index: partitions
                .iter()
                .enumerate()
                .map(|(index, p)| ((p.topic.clone(), p.partition), index))
                .collect(),
            partitions,
            assigned: false,
            turn: 0,
            served: std::time::Instant::now(),
            lags,
            member: settings.task.as_ref().map(|task| task.member.clone()),
            discovery: match (&settings.task, discovery_interval(&settings.properties)) {
                (None, Some(every)) => Some(Discovery {
                    names: match &settings.topics {
                        Topics::Names(names) => Some(names.clone()),
                        Topics::Pattern(_) => None,
                    },
                    pattern: compiled,
                    every,
                    last: std::time::Instant::now(),
                }),
                _ => None,
            },
        };
        source.resolve_start(settings.start)?;
        Ok(source)
    }

    /// Every partition's starting offset: the group's committed one, else `start`'s.
    fn resolve_start(&mut self, start: StartAt) -> Result<()> {
        let mut list = TopicPartitionList::new();
        for part in &self.partitions {
            list.add_partition(&part.topic, part.partition);
        }
        let committed = self
            .consumer
            .committed_offsets(list, BROKER_TIMEOUT)
            .map_err(|e| kafka_error("cannot read the group's committed offsets", e))?;
        let mut by_time = TopicPartitionList::new();
        for part in &mut self.partitions {
            let stored = committed
                .find_partition(&part.topic, part.partition)
                .and_then(|p| match p.offset() {
                    Offset::Offset(offset) if offset >= 0 => Some(offset),
                    _ => None,
                });
            if let Some(offset) = stored {
                part.next = offset;
                continue;
            }
            let (low, high) = self
                .consumer
                .fetch_watermarks(&part.topic, part.partition, BROKER_TIMEOUT)
                .map_err(|e| {
                    kafka_error(&format!("cannot read the offsets of {}", part.name()), e)
                })?;
            match start {
                StartAt::Earliest => part.next = low,
                StartAt::Latest => part.next = high,
                StartAt::Timestamp(millis) => {
                    part.next = high;
                    by_time
                        .add_partition_offset(&part.topic, part.partition, Offset::Offset(millis))
                        .map_err(|e| kafka_error("cannot look offsets up by time", e))?;
                }
            }
        }
        if by_time.count() > 0 {
            let found = self
                .consumer
                .offsets_for_times(by_time, BROKER_TIMEOUT)
                .map_err(|e| kafka_error("cannot look offsets up by time", e))?;
            for element in found.elements() {
                if let (Offset::Offset(offset), Some(&index)) = (
                    element.offset(),
                    self.index
                        .get(&(element.topic().to_string(), element.partition())),
                ) {
                    if offset >= 0 {
                        self.partitions[index].next = offset;
                    }
                }
            }
        }
        Ok(())
    }

    fn assign(&mut self) -> Result<()> {
        let mut list = TopicPartitionList::new();
        for part in &self.partitions {
            list.add_partition_offset(&part.topic, part.partition, Offset::Offset(part.next))
                .map_err(|e| kafka_error("cannot assign partitions", e))?;
        }
        self.consumer
            .assign(&list)
            .map_err(|e| kafka_error("cannot assign partitions", e))?;
        // Each partition is polled from its own queue, in turn: the consumer's single queue
        // hands on whole fetched chunks of one partition after another, which would hold the
        // other partitions' watermarks back while a backlog is read.
        for part in &mut self.partitions {
            part.queue = self
                .consumer
                .split_partition_queue(&part.topic, part.partition);
            if part.queue.is_none() {
                return Err(ConnectorError::Runtime(format!(
                    "cannot read partition {} on its own",
                    part.name()
                )));
            }
        }
        self.assigned = true;
        Ok(())
    }
}

impl KafkaSource {
    /// Once every discovery interval: reads the topics' metadata and adds the partitions that
    /// appeared since the source opened (a partition added to a topic, or a new topic matching
    /// the pattern), after the others, so that every partition keeps its index. A new partition
    /// starts at the group's committed offset, else at its first record whatever `start` says:
    /// it appeared after the job started, so all of it is new to the job (as Flink's and Kafka
    /// Streams' sources do). The consumer is then assigned every partition again at the offsets
    /// handed on so far. A broker that does not answer is logged and asked again next time.
    fn discover(&mut self) -> Result<()> {
        let Some(discovery) = &mut self.discovery else {
            return Ok(());
        };
        if discovery.last.elapsed() < discovery.every {
            return Ok(());
        }
        discovery.last = std::time::Instant::now();
        let metadata = match self.consumer.fetch_metadata(None, DISCOVERY_TIMEOUT) {
            Ok(metadata) => metadata,
            Err(error) => {
                tracing::warn!(stage = %self.stage, %error,
                    "kafka source: cannot read the topics' metadata to look for new partitions");
                return Ok(());
            }
        };
        let mut found: Vec<(String, i32)> = Vec::new();
        for topic in metadata.topics() {
            if topic.error().is_some() || !discovery.follows(topic.name()) {
                continue;
            }
            for partition in topic.partitions() {
                let key = (topic.name().to_string(), partition.id());
                if !self.index.contains_key(&key) {
                    found.push(key);
                }
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        found.sort();
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &found {
            list.add_partition(topic, *partition);
        }
        let committed = match self.consumer.committed_offsets(list, DISCOVERY_TIMEOUT) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::warn!(stage = %self.stage, %error,
                    "kafka source: cannot read the committed offsets of new partitions");
                return Ok(());
            }
        };
        let mut added = Vec::new();
        for (topic, partition) in found {
            let stored =
                committed
                    .find_partition(&topic, partition)
                    .and_then(|p| match p.offset() {
                        Offset::Offset(offset) if offset >= 0 => Some(offset),
                        _ => None,
                    });
            let next = match stored {
                Some(offset) => offset,
                None => match self
                    .consumer
                    .fetch_watermarks(&topic, partition, DISCOVERY_TIMEOUT)
                {
                    Ok((low, _)) => low,
                    Err(error) => {
                        tracing::warn!(stage = %self.stage, %error, partition = %format!("{topic}/{partition}"),
                            "kafka source: cannot read the first offset of a new partition");
                        continue;
                    }
                },
            };
            self.index
                .insert((topic.clone(), partition), self.partitions.len());
            let part = KafkaPartition {
                topic,
                partition,
                next,
                queue: None,
                // Discovery is for a source that is not a scale-out task: no repartition sink.
                stamp: false,
            };
            added.push(format!("{} from offset {next}", part.name()));
            self.partitions.push(part);
        }
        if added.is_empty() {
            return Ok(());
        }
        tracing::info!(stage = %self.stage, partitions = %added.join(", "),
            "kafka source: new partitions");
        if self.assigned {
            self.assign()?;
        }
        Ok(())
    }
}

impl KafkaPartition {
    /// Hands on one record: its event, or a dead letter naming where it was. A record from
    /// before the partition's position (one fetched before a seek) is skipped.
    fn take(
        &mut self,
        stage: &Arc<str>,
        decoder: &Decoder,
        event_time: EventTime,
        message: &BorrowedMessage<'_>,
        events: &mut Vec<Event>,
        dead_letters: &mut Vec<SideRecord>,
    ) {
        let offset = message.offset();
        if offset < self.next {
            return;
        }
        self.next = offset + 1;
        match decode(decoder, event_time, message) {
            Ok(mut event) => {
                if self.stamp {
                    crate::kafka_repartition::stamp_offset(&mut event, offset);
                }
                events.push(event)
            }
            Err(reason) => dead_letters.push(dead_letter(
                stage,
                &self.topic,
                self.partition,
                message,
                &reason,
            )),
        }
    }
}

/// The dead letter of a record that did not decode: its topic, partition and offset, why, and
/// its value as text.
pub(crate) fn dead_letter(
    stage: &Arc<str>,
    topic: &str,
    partition: i32,
    message: &BorrowedMessage<'_>,
    reason: &str,
) -> SideRecord {
    SideRecord {
        kind: SideKind::DeadLetter,
        stage: stage.clone(),
        reason: format!(
            "topic {topic} partition {partition} offset {}: {reason}",
            message.offset()
        ),
        line: None,
        record: SideData::Raw(
            message
                .payload()
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                .unwrap_or_default(),
        ),
    }
}

/// A record's event, or why it has none.
fn decode(
    decoder: &Decoder,
    event_time: EventTime,
    message: &BorrowedMessage<'_>,
) -> std::result::Result<Event, String> {
    let Some(payload) = message.payload() else {
        return Err("the record has no value".into());
    };
    let mut event = decoder.decode(payload, 1).map_err(|error| {
        // The decoder names a line; a record is one.
        let text = error.to_string();
        text.strip_prefix("line 1: ")
            .map(str::to_string)
            .unwrap_or(text)
    })?;
    if event_time == EventTime::Record {
        event.event_time = message
            .timestamp()
            .to_millis()
            .ok_or_else(|| "the record has no timestamp".to_string())?;
    }
    if event.key.is_none() {
        if let Some(key) = message.key() {
            event.key = Some(Value::Str(Arc::from(String::from_utf8_lossy(key).as_ref())));
        }
    }
    if let Some(headers) = message.headers() {
        let pairs: Vec<(Arc<str>, Arc<str>)> = headers
            .iter()
            .map(|header| {
                let value = header
                    .value
                    .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
                    .unwrap_or_default();
                (Arc::from(header.key), Arc::from(value.as_str()))
            })
            .collect();
        if !pairs.is_empty() {
            event.headers = Some(Box::new(pairs));
        }
    }
    Ok(event)
}

impl KafkaSource {
    /// Polls the consumer's own queue for up to `wait`, which serves its callbacks. A record
    /// fetched before its partition's queue was split arrives there: it is handed on, and its
    /// partition returned.
    fn serve(
        &mut self,
        wait: Duration,
        events: &mut Vec<Event>,
        dead_letters: &mut Vec<SideRecord>,
    ) -> Option<usize> {
        self.served = std::time::Instant::now();
        match self.consumer.poll(wait) {
            Some(Ok(message)) => {
                let key = (message.topic().to_string(), message.partition());
                let index = *self.index.get(&key)?;
                self.partitions[index].take(
                    &self.stage,
                    &self.decoder,
                    self.event_time,
                    &message,
                    events,
                    dead_letters,
                );
                Some(index)
            }
            Some(Err(error)) => {
                tracing::warn!(stage = %self.stage, %error, "kafka consumer error");
                None
            }
            None => None,
        }
    }
}

impl Source for KafkaSource {
    fn poll_batch(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        dead_letters: &mut Vec<SideRecord>,
    ) -> Result<Poll> {
        self.discover()?;
        if !self.assigned {
            self.assign()?;
        }
        let max = max.max(1);
        // The consumer's own queue carries its callbacks (errors, offset commits): served
        // often, even while the partitions' queues have records.
        if self.served.elapsed() >= SERVE_EVERY {
            if let Some(partition) = self.serve(Duration::ZERO, events, dead_letters) {
                return Ok(Poll::Data { partition });
            }
        }
        let count = self.partitions.len();
        for step in 0..count {
            let index = (self.turn + step) % count;
            let part = &mut self.partitions[index];
            // Out of the partition while its records are taken, which borrow it.
            let Some(queue) = part.queue.take() else {
                continue;
            };
            let mut taken = 0;
            while taken < max {
                let Some(polled) = queue.poll(Duration::ZERO) else {
                    break;
                };
                match polled {
                    Ok(message) => {
                        part.take(
                            &self.stage,
                            &self.decoder,
                            self.event_time,
                            &message,
                            events,
                            dead_letters,
                        );
                        taken += 1;
                    }
                    // librdkafka retries on its own; what it reports here is for the log.
                    Err(error) => {
                        tracing::warn!(stage = %self.stage, %error, "kafka consumer error")
                    }
                }
            }
            part.queue = Some(queue);
            if taken > 0 {
                self.turn = (index + 1) % count;
                return Ok(Poll::Data { partition: index });
            }
        }
        // Nothing fetched: wait a little on the consumer's own queue.
        Ok(match self.serve(POLL_WAIT, events, dead_letters) {
            Some(partition) => Poll::Data { partition },
            None => Poll::Pending,
        })
    }

    fn partitions(&self) -> usize {
        self.partitions.len()
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        self.partitions
            .iter()
            .map(|part| PartitionPosition {
                name: part.name(),
                offset: part.next.max(0) as u64,
                line: 0,
            })
            .collect()
    }

    fn replayable(&self) -> bool {
        true
    }

    fn seek(&mut self, positions: &[PartitionPosition]) -> Result<()> {
        for position in positions {
            let Some(part) = self
                .partitions
                .iter_mut()
                .find(|p| p.name() == position.name)
            else {
                tracing::warn!(stage = %self.stage, partition = %position.name,
                    "a checkpointed partition is not among the source's partitions: ignored");
                continue;
            };
            part.next = i64::try_from(position.offset).map_err(|_| {
                ConnectorError::Checkpoint(format!("offset {} out of range", position.offset))
            })?;
        }
        if self.assigned {
            self.assign()?;
        }
        Ok(())
    }

    fn concurrent_partitions(&self) -> bool {
        true
    }

    fn partition_lags(&self) -> Vec<(String, i64)> {
        let Ok(lags) = self.lags.by_partition.lock() else {
            return Vec::new();
        };
        self.partitions
            .iter()
            .filter_map(|part| {
                let end = lags.get(&(part.topic.clone(), part.partition))?;
                Some((part.name(), (end - part.next).max(0)))
            })
            .collect()
    }

    fn checkpoint_completed(&mut self, positions: &[PartitionPosition]) {
        let mut list = TopicPartitionList::new();
        for position in positions {
            let Some(part) = self.partitions.iter().find(|p| p.name() == position.name) else {
                continue;
            };
            if list
                .add_partition_offset(
                    &part.topic,
                    part.partition,
                    Offset::Offset(position.offset as i64),
                )
                .is_err()
            {
                return;
            }
        }
        let committed = match &self.member {
            Some(member) => member.consumer.commit(&list, CommitMode::Async),
            None => self.consumer.commit(&list, CommitMode::Async),
        };
        if let Err(error) = committed {
            tracing::warn!(stage = %self.stage, %error, "cannot commit offsets to the group");
        }
    }
}

/// How a sink compresses record batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `type: kafka` sink settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSinkSettings {
    /// `host:port,...`.
    pub brokers: String,
    /// The topic results are written to.
    pub topic: String,
    /// The CEL expression of a record's key over a result; `None`: no key.
    pub key: Option<String>,
    /// Where `key` was written.
    pub key_place: Place,
    /// Record batch compression.
    pub compression: Compression,
    /// Write through a transactional producer, one transaction per checkpoint.
    pub exactly_once: bool,
    /// The transactional id; `None`: `dataflow-<topic>`.
    pub transactional_id: Option<String>,
    /// Headers of every record: name and CEL expression over the result, in order.
    pub headers: Vec<(String, String)>,
    /// Where `headers` was written.
    pub headers_place: Place,
    /// Where `exactly_once` was written (for the check that needs checkpoints).
    pub place: Place,
    /// Other librdkafka properties.
    pub properties: Properties,
}

/// `type: kafka` sink settings.
pub(crate) fn configure_sink(settings: &mut Settings<'_>) -> Option<SinkKind> {
    let sink_place = settings.place();
    let brokers = brokers(settings, "sink");
    let topic = match settings.string("topic") {
        Some((topic, _)) if !topic.is_empty() => Some(topic),
        _ => {
            settings.problem(sink_place.clone(), "a kafka sink needs `topic`");
            None
        }
    };
    let (key, key_place) = match settings.string("key") {
        Some((key, place)) => (Some(key), place),
        None => (None, sink_place.clone()),
    };
    let compression = match settings.string("compression") {
        None => Some(Compression::None),
        Some((text, place)) => match text.as_str() {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "snappy" => Some(Compression::Snappy),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd),
            other => {
                settings.problem(
                    place,
                    format!(
                        "unknown compression `{other}`: expected none, gzip, snappy, lz4 or zstd"
                    ),
                );
                None
            }
        },
    };
    let exactly_once = settings.bool("exactly_once").unwrap_or(false);
    let transactional_id = settings.string("transactional_id").map(|(id, _)| id);
    let (headers, headers_place) = sink_headers(settings, &sink_place);
    let properties = properties(settings);
    Some(SinkKind::Kafka(Box::new(KafkaSinkSettings {
        brokers: brokers?,
        topic: topic?,
        key,
        key_place,
        compression: compression?,
        exactly_once,
        transactional_id,
        headers: headers?,
        headers_place,
        place: sink_place,
        properties,
    })))
}

/// A sink's `headers`: a mapping of header names to CEL expressions (compiled once the
/// results' layout is known, by [`check_layout`]).
fn sink_headers(
    settings: &mut Settings<'_>,
    sink_place: &Place,
) -> (Option<Vec<(String, String)>>, Place) {
    let Some(setting) = settings.take("headers") else {
        return (Some(Vec::new()), sink_place.clone());
    };
    let SettingValue::Map(entries) = &setting.value else {
        settings.problem(
            setting.place.clone(),
            "`headers` must be a mapping of header names to CEL expressions",
        );
        return (None, setting.place);
    };
    let mut headers = Vec::new();
    let mut ok = true;
    for (name, value) in entries {
        match value {
            SettingValue::Str(_) if name == TXN_HEADER => {
                settings.problem(
                    setting.place.clone(),
                    format!("header `{TXN_HEADER}` is written by an exactly-once sink itself"),
                );
                ok = false;
            }
            SettingValue::Str(expr) if !name.is_empty() => {
                headers.push((name.clone(), expr.clone()))
            }
            _ => {
                settings.problem(
                    setting.place.clone(),
                    format!("header `{name}` must be a CEL expression (a string)"),
                );
                ok = false;
            }
        }
    }
    (ok.then_some(headers), setting.place)
}

/// The static checks of a kafka sink: its key compiles against the results, and exactly once
/// needs checkpoints (a transaction per checkpoint).
pub(crate) fn check_layout(settings: &KafkaSinkSettings, format: &ResultFormat) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(key) = &settings.key {
        if let Err(error) = Expr::compile(key, &format.layout) {
            problems.push(Problem {
                place: settings.key_place.clone(),
                message: error.to_string(),
            });
        }
    }
    for (name, text) in &settings.headers {
        if let Err(error) = Expr::compile(text, &format.layout) {
            problems.push(Problem {
                place: settings.headers_place.clone(),
                message: format!("header `{name}`: {error}"),
            });
        }
    }
    if settings.exactly_once && !format.checkpoints {
        problems.push(Problem {
            place: settings.place.clone(),
            message:
                "`exactly_once` needs `checkpoint:`: each transaction is one checkpoint's results"
                    .into(),
        });
    }
    problems
}

/// Records the first delivery failure, which the next flush reports.
#[derive(Clone, Debug, Default)]
struct Deliveries {
    failure: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            if let Ok(mut failure) = self.failure.lock() {
                failure.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// One encoded record.
#[derive(Clone, Debug)]
struct Record {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Option<Vec<(Arc<str>, Arc<str>)>>,
}

/// Writes results to a topic (see the module's documentation).
pub struct KafkaSink {
    topic: String,
    producer: Arc<ThreadedProducer<Deliveries>>,
    deliveries: Deliveries,
    key: Option<(String, Expr)>,
    /// `headers`: each record's, by name, from an expression over its result.
    headers: Vec<(Arc<str>, String, Expr)>,
    encoder: Encoder,
    exactly_once: bool,
    /// The checkpoint whose barrier flushed the open transaction, not committed yet.
    prepared: Option<u64>,
    /// With `exactly_once`: the checkpoint the open transaction belongs to, and this process's
    /// nonce, which every record carries in its `dataflow-txn` header (`<nonce>/<checkpoint>`).
    transaction: u64,
    nonce: String,
    /// Records written after that barrier: the next transaction's.
    held: Vec<Record>,
    /// With `exactly_once` and checkpoints: the records of the open transaction, spooled at
    /// the barrier into `spool` (see [`Spool`]).
    in_transaction: Vec<Record>,
    spool: Option<Spool>,
    /// With `exactly_once`: where each commit also records, atomically with it, the newest
    /// checkpoint whose transaction it completes (see [`Ledger`]).
    ledger: Option<Ledger>,
}

/// What tells a restarted exactly-once sink whether its restored checkpoint's transaction was
/// committed: every commit sends, inside the transaction (`send_offsets_to_transaction`, as
/// Kafka Streams commits its input offsets), an "offset" of the sink's topic's partition 0 for
/// the consumer group `dataflow-txn-<transactional id>` whose value is the newest checkpoint the
/// transaction completes. The broker makes it visible with the commit, or not at all if the
/// transaction is aborted, so after `init_transactions` has completed or aborted the previous
/// producer's transaction, the group's committed offset says which checkpoints' results are in.
/// The spool's own `committed` marker is written after the commit and can miss it (a crash in
/// between); the ledger cannot.
struct Ledger {
    /// A consumer of the ledger's group that never subscribes: it reads the committed offset.
    consumer: Arc<BaseConsumer>,
    /// The group's metadata (generation -1: a group with no members) for the transactions.
    metadata: Arc<rdkafka::consumer::ConsumerGroupMetadata>,
    group: String,
    topic: String,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("group", &self.group)
            .field("topic", &self.topic)
            .finish()
    }
}

impl Ledger {
    fn open(
        brokers: &str,
        properties: &Properties,
        transactional_id: &str,
        topic: &str,
    ) -> Result<Ledger> {
        let group = format!("dataflow-txn-{transactional_id}");
        let mut config = client_config(brokers, properties);
        config
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| kafka_error("cannot create the transaction ledger's consumer", e))?;
        let metadata = consumer.group_metadata().ok_or_else(|| {
            ConnectorError::Runtime(format!(
                "kafka sink: no consumer group metadata for the transaction ledger `{group}`"
            ))
        })?;
        Ok(Ledger {
            consumer: Arc::new(consumer),
            metadata: Arc::new(metadata),
            group,
            topic: topic.to_string(),
        })
    }

    /// The offsets a commit completing `checkpoint` sends in its transaction, with the
    /// provenance its records carry (`<nonce>/<transaction>`) as the offset's metadata.
    fn offsets(&self, checkpoint: u64, provenance: &str) -> Result<TopicPartitionList> {
        let mut offsets = TopicPartitionList::new();
        let offset = i64::try_from(checkpoint).map_err(|_| {
            ConnectorError::Runtime(format!("kafka sink: checkpoint {checkpoint} out of range"))
        })?;
        let mut element = offsets.add_partition(&self.topic, 0);
        element
            .set_offset(Offset::Offset(offset))
            .map_err(|e| kafka_error("cannot build the transaction ledger's offsets", e))?;
        element.set_metadata(provenance);
        Ok(offsets)
    }

    /// The newest checkpoint whose transaction the broker committed, with that transaction's
    /// provenance, if any.
    async fn committed(&self) -> Result<Option<(u64, String)>> {
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(&self.topic, 0);
        let consumer = self.consumer.clone();
        let offsets =
            tokio::task::spawn_blocking(move || consumer.committed_offsets(wanted, BROKER_TIMEOUT))
                .await
                .map_err(|e| {
                    ConnectorError::Runtime(format!("cannot read the transaction ledger: {e}"))
                })?
                .map_err(|e| kafka_error("cannot read the transaction ledger", e))?;
        Ok(offsets
            .find_partition(&self.topic, 0)
            .and_then(|element| match element.offset() {
                Offset::Offset(offset) => u64::try_from(offset)
                    .ok()
                    .map(|checkpoint| (checkpoint, element.metadata().to_string())),
                _ => None,
            }))
    }
}

/// Where an exactly-once sink keeps the records of the transaction it prepared for a
/// checkpoint until the transaction is committed: `txn-<checkpoint>` files, written and synced
/// before the barrier is acknowledged (so before the checkpoint can be saved), and a
/// `committed` file naming the newest checkpoint whose transaction was committed. A restart
/// from checkpoint `c` whose transaction was not committed (a crash between the save and the
/// commit) sends `txn-c` again in a transaction of its own: librdkafka cannot resume the
/// previous producer's transaction, which `init_transactions` has aborted.
#[derive(Debug)]
struct Spool {
    dir: std::path::PathBuf,
}

fn spool_error(doing: &str, error: std::io::Error) -> ConnectorError {
    ConnectorError::Io {
        context: format!("kafka sink spool: {doing}"),
        cause: error,
    }
}

impl Spool {
    fn file(&self, checkpoint: u64) -> std::path::PathBuf {
        self.dir.join(format!("txn-{checkpoint}"))
    }

    /// The spooled checkpoints, by the names of their files.
    fn checkpoints(&self) -> Result<Vec<u64>> {
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(error) => return Err(spool_error("cannot list", error)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| spool_error("cannot list", e))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_prefix("txn-"))
                .and_then(|id| id.parse().ok())
            {
                found.push(id);
            }
        }
        Ok(found)
    }

    fn committed(&self) -> Result<u64> {
        match std::fs::read_to_string(self.dir.join("committed")) {
            Ok(text) => text.trim().parse().map_err(|_| {
                ConnectorError::Runtime(format!(
                    "kafka sink spool: `committed` holds `{}`",
                    text.trim()
                ))
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(error) => Err(spool_error("cannot read `committed`", error)),
        }
    }

    /// Writes `bytes` to `name` through a temporary file, synced, then renamed.
    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(&self.dir).map_err(|e| spool_error("cannot create", e))?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(|e| spool_error("cannot write", e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| spool_error("cannot write", e))?;
        std::fs::rename(&tmp, self.dir.join(name)).map_err(|e| spool_error("cannot rename", e))?;
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| spool_error("cannot sync", e))
    }

    /// Removes the spooled transactions `keep` does not keep.
    fn remove(&self, keep: impl Fn(u64) -> bool) -> Result<()> {
        for id in self.checkpoints()? {
            if !keep(id) {
                std::fs::remove_file(self.file(id)).map_err(|e| spool_error("cannot remove", e))?;
            }
        }
        Ok(())
    }

    /// A transaction file: [`SPOOL_MAGIC`], the provenance its records carry
    /// (`<nonce>/<transaction>`), then the records. (A file without the magic, written before
    /// the provenance was kept, is the records alone.)
    fn encode(provenance: &str, records: &[Record]) -> Vec<u8> {
        fn put(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
            match bytes {
                Some(bytes) => {
                    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                    out.extend_from_slice(bytes);
                }
                None => out.extend_from_slice(&u64::MAX.to_le_bytes()),
            }
        }
        let mut out = SPOOL_MAGIC.to_vec();
        put(&mut out, Some(provenance.as_bytes()));
        for record in records {
            put(&mut out, record.key.as_deref());
            put(&mut out, Some(&record.value));
            let headers = record.headers.as_deref().unwrap_or_default();
            out.extend_from_slice(&(headers.len() as u64).to_le_bytes());
            for (name, value) in headers {
                put(&mut out, Some(name.as_bytes()));
                put(&mut out, Some(value.as_bytes()));
            }
        }
        out
    }

    /// The provenance (if the file has it) and the records of a transaction file.
    fn decode(mut bytes: &[u8]) -> Result<(Option<String>, Vec<Record>)> {
        let corrupt =
            || ConnectorError::Runtime("kafka sink spool: a truncated transaction file".into());
        fn take_u64(bytes: &mut &[u8]) -> Option<u64> {
            let (head, rest) = bytes.split_first_chunk::<8>()?;
            *bytes = rest;
            Some(u64::from_le_bytes(*head))
        }
        fn take(bytes: &mut &[u8]) -> Option<Option<Vec<u8>>> {
            let len = take_u64(bytes)?;
            if len == u64::MAX {
                return Some(None);
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|len| *len <= bytes.len())?;
            let (head, rest) = bytes.split_at(len);
            *bytes = rest;
            Some(Some(head.to_vec()))
        }
        let text = |bytes: Vec<u8>| Arc::<str>::from(String::from_utf8_lossy(&bytes).as_ref());
        let mut provenance = None;
        if let Some(rest) = bytes.strip_prefix(SPOOL_MAGIC.as_slice()) {
            bytes = rest;
            let found = take(&mut bytes).flatten().ok_or_else(corrupt)?;
            provenance = Some(String::from_utf8_lossy(&found).into_owned());
        }
        let mut records = Vec::new();
        while !bytes.is_empty() {
            let key = take(&mut bytes).ok_or_else(corrupt)?;
            let value = take(&mut bytes).flatten().ok_or_else(corrupt)?;
            let count = take_u64(&mut bytes).ok_or_else(corrupt)?;
            let mut headers = Vec::new();
            for _ in 0..count {
                let name = take(&mut bytes).flatten().ok_or_else(corrupt)?;
                let value = take(&mut bytes).flatten().ok_or_else(corrupt)?;
                headers.push((text(name), text(value)));
            }
            records.push(Record {
                key,
                value,
                headers: (!headers.is_empty()).then_some(headers),
            });
        }
        Ok((provenance, records))
    }
}

/// What a transaction file of the spool starts with (a file without it holds records only).
const SPOOL_MAGIC: &[u8; 8] = b"dfspool2";

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("exactly_once", &self.exactly_once)
            .finish_non_exhaustive()
    }
}

/// How many kafka sinks this process opened: part of each one's nonce.
static SINKS_OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs a blocking producer call off the async threads.
async fn blocking<T: Send + 'static>(
    producer: &Arc<ThreadedProducer<Deliveries>>,
    doing: &'static str,
    call: impl FnOnce(&ThreadedProducer<Deliveries>) -> rdkafka::error::KafkaResult<T> + Send + 'static,
) -> Result<T> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || call(&producer))
        .await
        .map_err(|error| ConnectorError::Runtime(format!("{doing}: {error}")))?
        .map_err(|error| kafka_error(doing, error))
}

impl KafkaSink {
    /// Creates the producer; with `exactly_once`, fences the previous process of the same
    /// transactional id (aborting its open transaction) and begins a transaction.
    pub async fn open(
        spec: &SinkSpec,
        settings: &KafkaSinkSettings,
        format: ResultFormat,
        restored: Option<u64>,
    ) -> Result<KafkaSink> {
        let key = match &settings.key {
            Some(text) => Some((
                text.clone(),
                Expr::compile(text, &format.layout)
                    .map_err(|error| ConnectorError::Runtime(format!("key `{text}`: {error}")))?,
            )),
            None => None,
        };
        let mut headers = Vec::new();
        for (name, text) in &settings.headers {
            let expr = Expr::compile(text, &format.layout)
                .map_err(|error| ConnectorError::Runtime(format!("header `{name}`: {error}")))?;
            headers.push((Arc::<str>::from(name.as_str()), text.clone(), expr));
        }
        let format_dir = format.checkpoint_dir.clone();
        let transactional_id = settings
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("dataflow-{}", settings.topic));
        let mut config = client_config(&settings.brokers, &settings.properties);
        config.set("compression.type", settings.compression.name());
        if settings.exactly_once {
            config.set("transactional.id", &transactional_id);
        } else {
            // Retries keep order and do not duplicate within a run.
            config.set("enable.idempotence", "true");
        }
        let deliveries = Deliveries::default();
        let producer: ThreadedProducer<Deliveries> = config
            .create_with_context(deliveries.clone())
            .map_err(|e| kafka_error("cannot create the producer", e))?;
        let producer = Arc::new(producer);
        if settings.exactly_once {
            blocking(&producer, "cannot initialise transactions", |p| {
                p.init_transactions(BROKER_TIMEOUT)
            })
            .await?;
            producer
                .begin_transaction()
                .map_err(|e| kafka_error("cannot begin a transaction", e))?;
        }
        let mut sink = KafkaSink {
            topic: settings.topic.clone(),
            producer,
            deliveries,
            key,
            headers,
            encoder: result_encoder(spec, format),
            exactly_once: settings.exactly_once,
            prepared: None,
            transaction: restored.unwrap_or(0) + 1,
            // Time first: nonces of later processes sort after earlier ones. The count tells
            // apart the sinks of one process (the tasks of a scale-out processor).
            nonce: format!(
                "{:013}-{}-{}",
                dataflow_event::time::now_millis(),
                std::process::id(),
                SINKS_OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            held: Vec::new(),
            in_transaction: Vec::new(),
            spool: None,
            ledger: None,
        };
        if settings.exactly_once {
            sink.ledger = Some(Ledger::open(
                &settings.brokers,
                &settings.properties,
                &transactional_id,
                &settings.topic,
            )?);
        }
        if let (true, Some(dir)) = (settings.exactly_once, &format_dir) {
            let id: String = transactional_id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            sink.spool = Some(Spool {
                dir: dir.join(format!("kafka-sink-{id}")),
            });
        }
        sink.recover(restored).await?;
        if sink.exactly_once {
            tracing::info!(
                topic = %sink.topic,
                transaction = %format!("{}/{}", sink.nonce, sink.transaction),
                "kafka sink opened"
            );
        }
        Ok(sink)
    }

    fn encode(&self, event: &Event) -> Result<Record> {
        let key = match &self.key {
            None => None,
            Some((text, expr)) => match expr.eval(event) {
                Ok(Value::Null) => None,
                Ok(Value::Str(key)) => Some(key.as_bytes().to_vec()),
                Ok(other) => {
                    let mut out = Vec::new();
                    dataflow_event::json::write_value(&mut out, &other);
                    Some(out)
                }
                Err(error) => {
                    return Err(ConnectorError::Runtime(format!("key `{text}`: {error}")));
                }
            },
        };
        let mut value = Vec::new();
        self.encoder.encode(event, &mut value);
        if value.last() == Some(&b'\n') {
            value.pop();
        }
        let mut headers = event.headers.as_deref().cloned();
        for (name, text, expr) in &self.headers {
            let value: Arc<str> = match expr.eval(event) {
                Ok(Value::Null) => continue,
                Ok(Value::Str(text)) => text,
                Ok(other) => {
                    let mut out = Vec::new();
                    dataflow_event::json::write_value(&mut out, &other);
                    Arc::from(String::from_utf8_lossy(&out).as_ref())
                }
                Err(error) => {
                    return Err(ConnectorError::Runtime(format!(
                        "header `{name}` `{text}`: {error}"
                    )));
                }
            };
            headers
                .get_or_insert_with(Vec::new)
                .push((name.clone(), value));
        }
        Ok(Record {
            key,
            value,
            headers,
        })
    }

    /// Hands `record` to the producer, waiting while its queue is full.
    fn send(&mut self, record: &Record) -> Result<()> {
        if self.spool.is_some() {
            self.in_transaction.push(record.clone());
        }
        let mut headers = record.headers.as_ref().map(|pairs| {
            pairs.iter().fold(OwnedHeaders::new(), |headers, (k, v)| {
                headers.insert(rdkafka::message::Header {
                    key: k,
                    value: Some(v.as_bytes()),
                })
            })
        });
        if self.exactly_once {
            let provenance = format!("{}/{}", self.nonce, self.transaction);
            headers = Some(
                headers
                    .unwrap_or_default()
                    .insert(rdkafka::message::Header {
                        key: TXN_HEADER,
                        value: Some(provenance.as_bytes()),
                    }),
            );
        }
        loop {
            let mut base = BaseRecord::<[u8], [u8], ()>::to(&self.topic).payload(&record.value[..]);
            if let Some(key) = &record.key {
                base = base.key(&key[..]);
            }
            if let Some(headers) = &headers {
                base = base.headers(headers.clone());
            }
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    _,
                )) => {
                    // The threaded producer's own thread drains the queue.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(kafka_error("cannot produce", error)),
            }
        }
    }

    fn delivery_failure(&self) -> Result<()> {
        let failure = self
            .deliveries
            .failure
            .lock()
            .ok()
            .and_then(|mut f| f.take());
        match failure {
            Some(failure) => Err(ConnectorError::Runtime(format!(
                "a record was not delivered to `{}`: {failure}",
                self.topic
            ))),
            None => Ok(()),
        }
    }

    /// On open: a restore from a checkpoint whose transaction was spooled but not committed
    /// sends it again and commits it; every other spooled transaction is dropped (those after
    /// the checkpoint are replayed; a fresh run starts with an empty spool).
    async fn recover(&mut self, restored: Option<u64>) -> Result<()> {
        let Some(spool) = &self.spool else {
            return Ok(());
        };
        let Some(restored) = restored else {
            spool.remove(|_| false)?;
            return Ok(());
        };
        if spool.committed()? < restored && spool.checkpoints()?.contains(&restored) {
            if let Some(ledger) = &self.ledger {
                let found = ledger.committed().await?;
                if let Some((_, metadata)) = found.filter(|(committed, _)| *committed >= restored) {
                    // The provenance is the offset's metadata where the broker keeps it (tansu
                    // does not), else the spooled transaction's.
                    let provenance = if metadata.is_empty() {
                        let bytes = std::fs::read(spool.file(restored))
                            .map_err(|e| spool_error("cannot read a transaction", e))?;
                        Spool::decode(&bytes)?.0.unwrap_or_default()
                    } else {
                        metadata
                    };
                    // Said as a commit is (the crash tests read the provenance back).
                    tracing::info!(topic = %self.topic, checkpoint = restored, ledger = %ledger.group,
                        transaction = %provenance,
                        "kafka transaction committed before the crash, as its ledger says: not sent again");
                    self.mark_committed(restored)?;
                    spool.remove(|_| false)?;
                    return Ok(());
                }
            }
            let bytes = std::fs::read(spool.file(restored))
                .map_err(|e| spool_error("cannot read a transaction", e))?;
            let (_, records) = Spool::decode(&bytes)?;
            tracing::info!(topic = %self.topic, checkpoint = restored, records = records.len(),
                "kafka sink: sending again the transaction of the restored checkpoint, aborted before its commit");
            self.transaction = restored;
            for record in &records {
                self.send(record)?;
            }
            self.flush_producer().await?;
            self.commit_transaction(restored).await?;
            self.mark_committed(restored)?;
            self.transaction = restored + 1;
            self.producer
                .begin_transaction()
                .map_err(|e| kafka_error("cannot begin a transaction", e))?;
        }
        if let Some(spool) = &self.spool {
            spool.remove(|_| false)?;
        }
        Ok(())
    }

    /// Records that `checkpoint`'s transaction was committed, and drops its spool.
    fn mark_committed(&self, checkpoint: u64) -> Result<()> {
        if let Some(spool) = &self.spool {
            spool.write("committed", checkpoint.to_string().as_bytes())?;
            spool.remove(|id| id > checkpoint)?;
        }
        Ok(())
    }

    /// Commits the open transaction, which completes every checkpoint up to `checkpoint` (0:
    /// none), with that number in the ledger, and says so in the log with the provenance its
    /// records carry (the crash tests read it back to know which transactions were committed).
    async fn commit_transaction(&mut self, checkpoint: u64) -> Result<()> {
        let ledger = match &self.ledger {
            Some(ledger) if checkpoint > 0 => {
                let provenance = format!("{}/{}", self.nonce, self.transaction);
                Some((
                    ledger.offsets(checkpoint, &provenance)?,
                    ledger.metadata.clone(),
                ))
            }
            _ => None,
        };
        blocking(&self.producer, "cannot commit the transaction", move |p| {
            if let Some((offsets, metadata)) = &ledger {
                p.send_offsets_to_transaction(offsets, metadata, BROKER_TIMEOUT)?;
            }
            p.commit_transaction(BROKER_TIMEOUT)
        })
        .await?;
        self.prepared = None;
        self.in_transaction.clear();
        tracing::info!(
            topic = %self.topic,
            transaction = %format!("{}/{}", self.nonce, self.transaction),
            "kafka transaction committed"
        );
        Ok(())
    }

    async fn flush_producer(&self) -> Result<()> {
        blocking(&self.producer, "cannot flush", |p| p.flush(BROKER_TIMEOUT)).await?;
        self.delivery_failure()
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        for event in events {
            let record = self.encode(event)?;
            if self.prepared.is_some() {
                self.held.push(record);
            } else {
                self.send(&record)?;
            }
        }
        self.delivery_failure()
    }

    /// librdkafka sends in the background: a flush only reports a failed delivery. Records are
    /// waited for at a barrier and at the end.
    async fn flush(&mut self) -> Result<()> {
        self.delivery_failure()
    }

    async fn prepare(&mut self, checkpoint: u64) -> Result<()> {
        // A transaction still prepared for an earlier checkpoint (one that was not saved) takes
        // what was held back since: it all comes before this barrier.
        for record in std::mem::take(&mut self.held) {
            self.send(&record)?;
        }
        self.flush_producer().await?;
        if self.exactly_once {
            if let Some(spool) = &self.spool {
                spool.write(
                    &format!("txn-{checkpoint}"),
                    &Spool::encode(
                        &format!("{}/{}", self.nonce, self.transaction),
                        &self.in_transaction,
                    ),
                )?;
                // An earlier prepared transaction (its checkpoint not saved) is part of this one.
                spool.remove(|id| id >= checkpoint)?;
            }
            self.prepared = Some(checkpoint);
        }
        Ok(())
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        if !self.exactly_once || self.prepared.is_none_or(|prepared| prepared > checkpoint) {
            return Ok(());
        }
        self.commit_transaction(checkpoint).await?;
        self.mark_committed(checkpoint)?;
        self.transaction = checkpoint + 1;
        self.producer
            .begin_transaction()
            .map_err(|e| kafka_error("cannot begin a transaction", e))?;
        for record in std::mem::take(&mut self.held) {
            self.send(&record)?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        // Records held for after a prepared transaction go out in it: the run is over.
        for record in std::mem::take(&mut self.held) {
            self.send(&record)?;
        }
        self.flush_producer().await?;
        if self.exactly_once {
            // Everything is in this transaction: the checkpoints prepared so far too.
            let completes = self
                .prepared
                .unwrap_or(0)
                .max(self.transaction.saturating_sub(1));
            self.commit_transaction(completes).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Setting;

    fn setting(key: &str, value: SettingValue) -> Setting {
        Setting {
            key: key.into(),
            place: Place::path(key),
            value,
        }
    }

    fn text(value: &str) -> SettingValue {
        SettingValue::Str(value.into())
    }

    /// The problems of a kafka `kind` with `settings`, each as `path: message`.
    fn problems(kind: &'static str, settings: Vec<Setting>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut written = Settings::new(
            kind,
            "kafka",
            Place::path("s"),
            Path::new("."),
            settings,
            &mut problems,
        );
        if kind == "source" {
            configure_source(&mut written);
        } else {
            configure_sink(&mut written);
        }
        written.finish();
        problems
            .into_iter()
            .map(|p| format!("{}: {}", p.place.path, p.message))
            .collect()
    }

    #[test]
    fn a_source_reports_every_problem_at_its_place() {
        let found = problems(
            "source",
            vec![
                setting("topics", SettingValue::Seq(vec![text("a")])),
                setting("topic_pattern", text("b.*")),
                setting("start", text("yesterday")),
                setting("event_time", text("wall")),
                setting(
                    "properties",
                    SettingValue::Map(vec![
                        ("group.id".into(), text("x")),
                        ("no.such.property".into(), text("1")),
                    ]),
                ),
            ],
        );
        assert_eq!(
            found,
            [
                "s: a kafka source needs `brokers`: host:port of the bootstrap brokers",
                "s.topic_pattern: give `topics` or `topic_pattern`, not both",
                "s.start: `start` must be earliest, latest or a time (RFC 3339 or epoch milliseconds), not `yesterday`",
                "s.event_time: unknown `event_time` `wall`: expected field or record",
                "s.properties: property `group.id` is set by the connector: use its own key",
                "s.properties: invalid property: Client config error: No such configuration property: \"no.such.property\" no.such.property 1",
            ]
        );
    }

    #[test]
    fn a_source_reads_its_settings() {
        let mut problems = Vec::new();
        let mut written = Settings::new(
            "source",
            "kafka",
            Place::path("s"),
            Path::new("."),
            vec![
                setting("brokers", text("127.0.0.1:9092")),
                setting("topic_pattern", text("bids-.*")),
                setting("start", text("2024-01-01T00:00:00Z")),
                setting("event_time", text("record")),
                setting(
                    "properties",
                    SettingValue::Map(vec![("fetch.min.bytes".into(), SettingValue::Int(10))]),
                ),
            ],
            &mut problems,
        );
        let kind = configure_source(&mut written);
        written.finish();
        assert!(problems.is_empty(), "{problems:?}");
        let Some(SourceKind::Kafka(settings)) = kind else {
            panic!("a kafka source");
        };
        assert_eq!(settings.topics, Topics::Pattern("bids-.*".into()));
        assert_eq!(settings.start, StartAt::Timestamp(1_704_067_200_000));
        assert_eq!(settings.event_time, EventTime::Record);
        assert_eq!(
            settings.properties.0,
            [("fetch.min.bytes".to_string(), "10".to_string())]
        );
        // Secrets in properties are not shown.
        assert_eq!(
            format!("{:?}", settings.properties),
            "[\"fetch.min.bytes\"]"
        );
    }

    #[test]
    fn a_sink_reports_every_problem_at_its_place() {
        let found = problems(
            "sink",
            vec![
                setting("brokers", text("127.0.0.1:9092")),
                setting("compression", text("brotli")),
                setting("exactly_once", text("yes")),
                setting(
                    "headers",
                    SettingValue::Map(vec![
                        ("ok".into(), text("string(key)")),
                        (TXN_HEADER.into(), text("'x'")),
                        ("n".into(), SettingValue::Int(3)),
                    ]),
                ),
            ],
        );
        assert_eq!(
            found,
            [
                "s: a kafka sink needs `topic`",
                "s.compression: unknown compression `brotli`: expected none, gzip, snappy, lz4 or zstd",
                "s.exactly_once: `exactly_once` must be true or false, not the string `yes`",
                "s.headers: header `dataflow-txn` is written by an exactly-once sink itself",
                "s.headers: header `n` must be a CEL expression (a string)",
            ]
        );
    }

    #[test]
    fn exactly_once_needs_checkpoints_and_the_key_must_compile() {
        let settings = KafkaSinkSettings {
            brokers: "127.0.0.1:9092".into(),
            topic: "out".into(),
            key: Some("no_such_field +".into()),
            key_place: Place::path("s.key"),
            compression: Compression::None,
            exactly_once: true,
            transactional_id: None,
            headers: vec![
                ("auction".into(), "string(key)".into()),
                ("bad".into(), "price +".into()),
            ],
            headers_place: Place::path("s.headers"),
            place: Place::path("s"),
            properties: Properties::default(),
        };
        let format = ResultFormat::new(dataflow_event::Layout::Object, true);
        let found: Vec<String> = check_layout(&settings, &format)
            .into_iter()
            .map(|p| p.place.path)
            .collect();
        assert_eq!(found, ["s.key", "s.headers", "s"]);
    }

    #[test]
    fn the_spool_gives_back_what_it_was_given() {
        let records = vec![
            Record {
                key: Some(b"k1".to_vec()),
                value: b"{\"n\":1}".to_vec(),
                headers: Some(vec![(Arc::from("trace"), Arc::from("t1"))]),
            },
            Record {
                key: None,
                value: Vec::new(),
                headers: None,
            },
        ];
        let bytes = Spool::encode("1-2-3/4", &records);
        let (provenance, back) = Spool::decode(&bytes).expect("decode");
        assert_eq!(provenance.as_deref(), Some("1-2-3/4"));
        assert_eq!(back.len(), 2);
        for (a, b) in records.iter().zip(&back) {
            assert_eq!(
                (&a.key, &a.value, &a.headers),
                (&b.key, &b.value, &b.headers)
            );
        }
        // Every truncation is refused, none panics.
        for cut in 0..bytes.len() {
            let _ = Spool::decode(&bytes[..cut]);
        }
        assert!(Spool::decode(&bytes[..bytes.len() - 1]).is_err());
        // A file written before the provenance was kept: the records alone.
        let old = &bytes[SPOOL_MAGIC.len() + 8 + "1-2-3/4".len()..];
        let (provenance, back) = Spool::decode(old).expect("decode an old file");
        assert_eq!((provenance, back.len()), (None, 2));
    }
}

/// The exactly-once sink against the project's broker (`scripts/kafka.sh`, tansu): what a
/// restart finds when the previous process died around a commit.
#[cfg(test)]
mod transaction_tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::producer::Producer;

    use super::*;
    use crate::registry::{SinkKind, SinkSpec};

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn kafka_sh(args: &[&str]) -> String {
        let output = Command::new("bash")
            .arg(root().join("scripts/kafka.sh"))
            .args(args)
            .output()
            .expect("run scripts/kafka.sh");
        assert!(
            output.status.success(),
            "kafka.sh {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The broker's address and a new topic of one partition.
    fn broker_and_topic(name: &str) -> (String, String) {
        let broker = kafka_sh(&["start"]);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let topic = format!("{name}-{}-{nanos}", std::process::id());
        kafka_sh(&["topic", &topic, "1"]);
        (broker, topic)
    }

    fn settings(broker: &str, topic: &str) -> KafkaSinkSettings {
        KafkaSinkSettings {
            brokers: broker.into(),
            topic: topic.into(),
            key: None,
            key_place: Place::path("s.key"),
            compression: Compression::None,
            exactly_once: true,
            transactional_id: Some(format!("{topic}-txn")),
            headers: Vec::new(),
            headers_place: Place::path("s.headers"),
            place: Place::path("s"),
            properties: Properties::default(),
        }
    }

    async fn open(broker: &str, topic: &str, dir: &Path, restored: Option<u64>) -> KafkaSink {
        let spec = SinkSpec {
            kind: SinkKind::Stdout,
            time_format: dataflow_event::json::TimeFormat::Rfc3339,
        };
        let mut format = ResultFormat::new(dataflow_event::Layout::Object, false);
        format.checkpoints = true;
        format.checkpoint_dir = Some(dir.to_path_buf());
        KafkaSink::open(&spec, &settings(broker, topic), format, restored)
            .await
            .expect("open the sink")
    }

    fn results(from: u64, count: u64) -> Vec<Event> {
        (from..from + count)
            .map(|n| Event::object(0, BTreeMap::from([("n".to_string(), Value::Int(n as i64))])))
            .collect()
    }

    /// Every record of the topic (committed or not: tansu does not hide aborted ones), each as
    /// its value and its transaction header, in order. A record written last, outside any
    /// transaction, marks where to stop.
    fn read_all(broker: &str, topic: &str) -> Vec<(String, String)> {
        let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", broker)
            .create()
            .expect("producer");
        producer
            .send(BaseRecord::<[u8], [u8]>::to(topic).payload(&b"end"[..]))
            .map_err(|(error, _)| error)
            .expect("send the end mark");
        producer.flush(BROKER_TIMEOUT).expect("flush the end mark");
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker)
            .set("group.id", format!("{topic}-reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            .create()
            .expect("consumer");
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .expect("assignment");
        consumer.assign(&assignment).expect("assign");
        let mut records = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.expect("record");
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            if value == "end" {
                return records;
            }
            let txn = message
                .headers()
                .and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == TXN_HEADER)
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                })
                .unwrap_or_default();
            records.push((value, txn));
        }
        panic!("no end mark within 30 s; read {records:?}");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// A crash after the broker committed checkpoint 1's transaction and before the spool
    /// marked it (the state is rebuilt here exactly: `txn-1` spooled, `committed` 0): the restart
    /// finds the commit in the ledger and sends nothing again.
    #[test]
    fn a_transaction_committed_before_the_crash_is_not_sent_again() {
        let (broker, topic) = broker_and_topic("ledger-committed");
        let dir = tempfile::tempdir().expect("dir");
        runtime().block_on(async {
            let mut sink = open(&broker, &topic, dir.path(), None).await;
            sink.write(&results(0, 3)).await.expect("write");
            sink.prepare(1).await.expect("prepare");
            let spool = sink.spool.as_ref().expect("spool").dir.clone();
            let spooled = std::fs::read(spool.join("txn-1")).expect("spooled transaction");
            sink.commit(1).await.expect("commit");
            drop(sink);
            std::fs::write(spool.join("txn-1"), &spooled).expect("spool back");
            std::fs::write(spool.join("committed"), b"0").expect("unmark");

            let mut restarted = open(&broker, &topic, dir.path(), Some(1)).await;
            assert_eq!(
                restarted
                    .spool
                    .as_ref()
                    .expect("spool")
                    .committed()
                    .expect("marker"),
                1
            );
            restarted.write(&results(3, 2)).await.expect("write");
            restarted.prepare(2).await.expect("prepare");
            restarted.commit(2).await.expect("commit");
            restarted.finish().await.expect("finish");
        });
        let values: Vec<String> = read_all(&broker, &topic)
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(
            values,
            [
                "{\"n\":0}",
                "{\"n\":1}",
                "{\"n\":2}",
                "{\"n\":3}",
                "{\"n\":4}"
            ],
            "each result once"
        );
    }

    /// A crash after checkpoint 1 was saved and before its transaction was committed: the
    /// next process's `init_transactions` aborts it, the ledger does not show it, and the restart
    /// sends it again from the spool, in a transaction of its own that the ledger then shows.
    #[test]
    fn a_transaction_aborted_by_the_crash_is_sent_again() {
        let (broker, topic) = broker_and_topic("ledger-aborted");
        let dir = tempfile::tempdir().expect("dir");
        let restarted_nonce = runtime().block_on(async {
            let mut sink = open(&broker, &topic, dir.path(), None).await;
            sink.write(&results(0, 3)).await.expect("write");
            sink.prepare(1).await.expect("prepare");
            // Offsets sent into the transaction that is then aborted must not show either.
            let ledger = sink.ledger.as_ref().expect("ledger");
            let offsets = ledger.offsets(1, "aborted/1").expect("offsets");
            sink.producer
                .send_offsets_to_transaction(&offsets, &ledger.metadata, BROKER_TIMEOUT)
                .expect("offsets into the transaction");
            drop(sink);

            let mut restarted = open(&broker, &topic, dir.path(), Some(1)).await;
            let nonce = restarted.nonce.clone();
            let (checkpoint, _) = restarted
                .ledger
                .as_ref()
                .expect("ledger")
                .committed()
                .await
                .expect("ledger")
                .expect("a committed offset");
            assert_eq!(checkpoint, 1, "the transaction sent again is in the ledger");
            restarted.finish().await.expect("finish");
            nonce
        });
        let resent: Vec<String> = read_all(&broker, &topic)
            .into_iter()
            .filter(|(_, txn)| txn.starts_with(&format!("{restarted_nonce}/")))
            .map(|(v, _)| v)
            .collect();
        assert_eq!(resent, ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"]);
    }

    /// The ledger shows a commit's checkpoint, and not an aborted transaction's.
    #[test]
    fn the_ledger_shows_commits_only() {
        let (broker, topic) = broker_and_topic("ledger-commits");
        let dir = tempfile::tempdir().expect("dir");
        runtime().block_on(async {
            let mut sink = open(&broker, &topic, dir.path(), None).await;
            let ledger = sink.ledger.as_ref().expect("ledger");
            assert_eq!(ledger.committed().await.expect("ledger"), None);
            sink.write(&results(0, 1)).await.expect("write");
            sink.prepare(4).await.expect("prepare");
            sink.commit(4).await.expect("commit");
            let ledger = sink.ledger.as_ref().expect("ledger");
            let committed = |found: Option<(u64, String)>| found.map(|(checkpoint, _)| checkpoint);
            assert_eq!(
                committed(ledger.committed().await.expect("ledger")),
                Some(4)
            );

            let offsets = ledger.offsets(9, "aborted/9").expect("offsets");
            sink.producer
                .send_offsets_to_transaction(&offsets, &ledger.metadata, BROKER_TIMEOUT)
                .expect("offsets into the transaction");
            sink.producer
                .abort_transaction(BROKER_TIMEOUT)
                .expect("abort");
            let ledger = sink.ledger.as_ref().expect("ledger");
            assert_eq!(
                committed(ledger.committed().await.expect("ledger")),
                Some(4)
            );
        });
    }
}
