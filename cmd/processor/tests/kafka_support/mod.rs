//! What the kafka tests share: the broker (started by `scripts/kafka.sh`), topics, producing
//! and reading records, the processor, the file pipeline's reference results, and telling the
//! records of committed transactions apart by their provenance header.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

/// Starts the broker (or finds it running): its bootstrap address.
pub fn broker() -> String {
    let output = Command::new("bash")
        .arg(root().join("scripts/kafka.sh"))
        .arg("start")
        .output()
        .expect("run scripts/kafka.sh");
    assert!(
        output.status.success(),
        "kafka.sh start failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A topic name no other test (or earlier run on the same broker) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn create_topic(name: &str, partitions: u32) {
    let output = Command::new("bash")
        .arg(root().join("scripts/kafka.sh"))
        .args(["topic", name, &partitions.to_string()])
        .output()
        .expect("run scripts/kafka.sh topic");
    assert!(
        output.status.success(),
        "kafka.sh topic failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Produces `records` (partition, value) in order, and waits until all are acknowledged.
/// Two new topics `<name>-in` and `<name>-out` (made unique) of `input` and `output` partitions.
pub fn topics(name: &str, input: u32, output: u32) -> (String, String) {
    let input_topic = unique(&format!("{name}-in"));
    let output_topic = unique(&format!("{name}-out"));
    create_topic(&input_topic, input);
    create_topic(&output_topic, output);
    (input_topic, output_topic)
}

/// `processor run --config <config>`, its log piped.
pub fn run(config: &Path) -> Child {
    processor()
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run")
}

/// 20 bids of 1 on `auction` in `partition`, 100 ms of event time apart from 1,700,000,000,000.
pub fn twenty_bids(partition: i32, auction: i64) -> Vec<(i32, String)> {
    (0..20)
        .map(|i| {
            (
                partition,
                format!(
                    "{{\"timestamp\": {}, \"auction\": {auction}, \"price\": 1}}",
                    1_700_000_000_000i64 + i * 100
                ),
            )
        })
        .collect()
}

pub fn produce(brokers: &str, topic: &str, records: &[(i32, String)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for (partition, value) in records {
        let mut record = BaseRecord::<(), str>::to(topic)
            .partition(*partition)
            .payload(value.as_str());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// The record values of `topic` (every partition, read committed, in no particular order),
/// read until there are `want` of them or `patience` has passed. (tansu reports a partition's
/// end offset as the last batch's first offset + 1, so the end cannot be asked for: see
/// docs/kafka.md.)
pub fn consume(brokers: &str, topic: &str, want: usize, patience: Duration) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut list = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        list.add_partition_offset(topic, partition.id(), Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let mut values = Vec::new();
    let deadline = Instant::now() + patience;
    while values.len() < want && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            values
                .push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
        }
    }
    values
}

/// The offsets committed by `group` on `topic`, by partition.
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let found = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    found
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(at) => Some((e.partition(), at)),
            _ => None,
        })
        .collect()
}

/// Asks a running processor to stop, as `kill` or a service manager does.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
}

/// Waits for `child` to end: its exit code and stderr.
pub fn wait(child: Child) -> (Option<i32>, String) {
    let output = child.wait_with_output().expect("wait");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `count` generated bids (JSON lines) from the processor's own generator.
pub fn bids(dir: &Path, count: u64, seed: u64, events_per_second: u64) -> PathBuf {
    let input = dir.join("bids.jsonl");
    let generated = processor()
        .args([
            "generate",
            "--profile",
            "bids",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "--events-per-second",
            &events_per_second.to_string(),
            "--out",
        ])
        .arg(&input)
        .output()
        .expect("generate");
    assert!(generated.status.success());
    input
}

/// The auction of a bid line (its partition is `auction % 4`, as a keyed producer would do).
pub fn auction(line: &str) -> i64 {
    let value: serde_json::Value = serde_json::from_str(line).expect("bid line");
    value["auction"].as_i64().expect("auction")
}

pub const STEPS: &str = "steps:\n  - key_by: auction\n  - window: { type: tumbling, size: 10s, aggregates: { n: count, total: sum(price) } }\n";
pub const FORMAT: &str = "format: { schema: { auction: int, price: int } }";

/// Runs the windowed pipeline over `input` (a file) to a file: its sorted lines.
pub fn file_reference(dir: &Path, input: &Path) -> Vec<String> {
    file_reference_of(dir, input, FORMAT, STEPS)
}

/// Runs `steps` over `input` (a file) decoded with `format` to a file: its sorted lines.
pub fn file_reference_of(dir: &Path, input: &Path, format: &str, steps: &str) -> Vec<String> {
    let out = dir.join("reference.jsonl");
    let config = dir.join("reference.yaml");
    std::fs::write(
        &config,
        format!(
            "name: reference\nsources:\n  - name: bids\n    type: file\n    path: {}\n    {format}\n    watermark: {{ out_of_orderness: 5s }}\n{steps}sinks:\n  - {{ type: file, path: {} }}\ndead_letters: {{ type: file, path: {} }}\n",
            input.display(),
            out.display(),
            dir.join("reference-dead.jsonl").display()
        ),
    )
    .expect("write config");
    let output = processor()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<String> = std::fs::read_to_string(&out)
        .expect("reference output")
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// What a test adds to the config of [`kafka_config`]: after the sink's keys, after the
/// watermark's, and source lines.
#[derive(Default)]
pub struct Extra<'a> {
    pub sink: &'a str,
    pub idle: &'a str,
    pub source: &'a str,
}

/// A config reading `input_topic` and writing `output_topic`.
pub fn kafka_config(
    dir: &Path,
    name: &str,
    brokers: &str,
    topics: (&str, &str),
    extra: Extra<'_>,
) -> PathBuf {
    let (input_topic, output_topic) = topics;
    let Extra {
        sink: extra_sink,
        idle,
        source: extra_source,
    } = extra;
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "name: {name}\nsources:\n  - name: bids\n    type: kafka\n    brokers: \"{brokers}\"\n    topics: [{input_topic}]\n    group: {name}-{input_topic}\n    {FORMAT}\n    watermark: {{ out_of_orderness: 5s{idle} }}\n{extra_source}{STEPS}sinks:\n  - {{ type: kafka, brokers: \"{brokers}\", topic: {output_topic}, key: \"string(key)\"{extra_sink} }}\ndead_letters: {{ type: file, path: {} }}\ncheckpoint: {{ dir: {}, interval: 200ms }}\nruntime: {{ on_stop: fire }}\n",
            dir.join(format!("{name}-dead.jsonl")).display(),
            dir.join(format!("{name}-checkpoints")).display(),
        ),
    )
    .expect("write config");
    config
}

/// Waits until `group` committed, for every partition of `topic`, the offset `ends` says.
pub fn wait_for_commits(
    brokers: &str,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
    child: &mut Child,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = committed(brokers, group, topic, ends.len() as i32);
        if ends.iter().all(|(p, end)| done.get(p) == Some(end)) {
            return;
        }
        if let Some(status) = child.try_wait().expect("poll child") {
            panic!("the processor ended early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the group never committed {ends:?} (has {done:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every record of `topic` with its `dataflow-txn` header, read (committed) until none came
/// for `quiet`.
pub fn consume_with_provenance(
    brokers: &str,
    topic: &str,
    quiet: Duration,
) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            std::env::var("KAFKA_TEST_ISOLATION")
                .as_deref()
                .unwrap_or("read_committed"),
        )
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut list = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        list.add_partition_offset(topic, partition.id(), Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let mut records = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        last = Instant::now();
        let provenance = message
            .headers()
            .and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == dataflow_connectors::kafka::TXN_HEADER)
                    .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            })
            .expect("every record names its transaction");
        records.push((
            provenance,
            String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
        ));
    }
    records
}

/// The values of `field=` in the log lines of `log` that contain `message`.
pub fn logged<'a>(log: &'a str, message: &str, field: &str) -> Vec<&'a str> {
    let field = format!("{field}=");
    log.lines()
        .filter(|line| line.contains(message))
        .filter_map(|line| line.split(field.as_str()).nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect()
}

/// The values of the records of an exactly-once output (each naming its transaction as
/// `<nonce>/<checkpoint>`) whose transaction the runs' logs say was committed: what a
/// read-committed reader sees on a real Kafka. (tansu hands aborted records to read-committed
/// readers too, so provenance is how they are told apart: docs/kafka.md.)
pub fn committed_by_provenance(records: Vec<(String, String)>, logs: &[String]) -> Vec<String> {
    let committed: std::collections::BTreeSet<&str> = logs
        .iter()
        .flat_map(|log| logged(log, "kafka transaction committed", "transaction"))
        .collect();
    let mut values: Vec<String> = records
        .into_iter()
        .filter(|(provenance, _)| committed.contains(provenance.as_str()))
        .map(|(_, value)| value)
        .collect();
    values.sort();
    values
}
