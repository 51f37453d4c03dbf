//! The kafka source and sink against a real Kafka-protocol broker (tansu, started by
//! `scripts/kafka.sh`, which installs it when absent): a keyed tumbling window from a topic of
//! 4 partitions to a topic equals the same pipeline on a file; malformed records are dead
//! letters naming topic, partition and offset; an idle partition does not stall windows; and
//! SIGKILLs with `exactly_once: true` neither lose nor duplicate a result. See docs/kafka.md for
//! what this broker does and does not check.
#![cfg(unix)]

mod kills;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

/// Starts the broker (or finds it running): its bootstrap address.
fn broker() -> String {
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
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn create_topic(name: &str, partitions: u32) {
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
fn produce(brokers: &str, topic: &str, records: &[(i32, String)]) {
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
fn consume(brokers: &str, topic: &str, want: usize, patience: Duration) -> Vec<String> {
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
fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
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
fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
}

/// Waits for `child` to end: its exit code and stderr.
fn wait(child: Child) -> (Option<i32>, String) {
    let output = child.wait_with_output().expect("wait");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `count` generated bids (JSON lines) from the processor's own generator.
fn bids(dir: &Path, count: u64, seed: u64, events_per_second: u64) -> PathBuf {
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
fn auction(line: &str) -> i64 {
    let value: serde_json::Value = serde_json::from_str(line).expect("bid line");
    value["auction"].as_i64().expect("auction")
}

const STEPS: &str = "steps:\n  - key_by: auction\n  - window: { type: tumbling, size: 10s, aggregates: { n: count, total: sum(price) } }\n";
const FORMAT: &str = "format: { schema: { auction: int, price: int } }";

/// Runs the windowed pipeline over `input` (a file) to a file: its sorted lines.
fn file_reference(dir: &Path, input: &Path) -> Vec<String> {
    let out = dir.join("reference.jsonl");
    let config = dir.join("reference.yaml");
    std::fs::write(
        &config,
        format!(
            "name: reference\nsources:\n  - name: bids\n    type: file\n    path: {}\n    {FORMAT}\n    watermark: {{ out_of_orderness: 5s }}\n{STEPS}sinks:\n  - {{ type: file, path: {} }}\ndead_letters: {{ type: file, path: {} }}\n",
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
struct Extra<'a> {
    sink: &'a str,
    idle: &'a str,
    source: &'a str,
}

/// A config reading `input_topic` and writing `output_topic`.
fn kafka_config(
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
fn wait_for_commits(
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

/// A keyed tumbling window from a 4-partition topic to a topic gives the results of the same
/// pipeline on a file; malformed records are dead letters naming topic, partition and offset;
/// the group's committed offsets reach the ends of the partitions.
#[test]
fn window_from_four_partitions_equals_the_file_pipeline() {
    let brokers = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let input = bids(dir.path(), 20_000, 11, 1000);
    let reference = file_reference(dir.path(), &input);
    assert!(reference.len() > 100, "a reference with results");

    let input_topic = unique("bids");
    let output_topic = unique("totals");
    create_topic(&input_topic, 4);
    create_topic(&output_topic, 2);
    let mut records: Vec<(i32, String)> = std::fs::read_to_string(&input)
        .expect("input")
        .lines()
        .map(|line| ((auction(line) % 4) as i32, line.to_string()))
        .collect();
    // Malformed records, each at an offset known from the records before it.
    let mut counts = [0i64; 4];
    let mut expected_dead = Vec::new();
    let mut with_dead = Vec::new();
    for (index, (partition, line)) in records.drain(..).enumerate() {
        if index % 5000 == 17 {
            let offset = counts[partition as usize];
            counts[partition as usize] += 1;
            with_dead.push((partition, "{not json".to_string()));
            expected_dead.push(format!(
                "topic {input_topic} partition {partition} offset {offset}:"
            ));
        }
        counts[partition as usize] += 1;
        with_dead.push((partition, line));
    }
    produce(&brokers, &input_topic, &with_dead);

    let config = kafka_config(
        dir.path(),
        "kafka",
        &brokers,
        (&input_topic, &output_topic),
        Extra::default(),
    );
    let mut child = processor()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let ends: BTreeMap<i32, i64> = (0..4).map(|p| (p, counts[p as usize])).collect();
    wait_for_commits(
        &brokers,
        &format!("kafka-{input_topic}"),
        &input_topic,
        &ends,
        &mut child,
    );
    sigterm(&child);
    let (code, stderr) = wait(child);
    assert_eq!(code, Some(0), "{stderr}");

    let mut results = consume(
        &brokers,
        &output_topic,
        reference.len() + 1,
        Duration::from_secs(20),
    );
    results.sort();
    if results.len() != reference.len() {
        let kept = dir.keep();
        std::fs::write(kept.join("results.txt"), results.join("\n")).unwrap();
        eprintln!("{stderr}");
        panic!("kept {}", kept.display());
    }
    assert_eq!(results, reference);

    let dead = std::fs::read_to_string(dir.path().join("kafka-dead.jsonl")).expect("dead letters");
    let dead: Vec<&str> = dead.lines().collect();
    assert_eq!(dead.len(), expected_dead.len(), "{dead:?}");
    for expected in &expected_dead {
        assert!(
            dead.iter().any(|line| line.contains(expected.as_str())),
            "no dead letter says `{expected}`: {dead:?}"
        );
    }
}

/// With three partitions speaking and one silent, windows still fire once the silent one is
/// idle: results appear while the processor runs and the three keep speaking, with no stop to
/// flush them.
#[test]
fn an_idle_partition_does_not_stall_windows() {
    let brokers = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let input_topic = unique("idle-in");
    let output_topic = unique("idle-out");
    create_topic(&input_topic, 4);
    create_topic(&output_topic, 1);
    let config = kafka_config(
        dir.path(),
        "idle",
        &brokers,
        (&input_topic, &output_topic),
        Extra {
            idle: ", idle_timeout: 500ms",
            ..Extra::default()
        },
    );
    let mut child = processor()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    // Partitions 0 to 2 only, one event every 100 ms of event time, key = partition, 3 s of
    // event time per round; partition 3 never gets a record.
    let mut next = 0i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let results = loop {
        let records: Vec<(i32, String)> = (next..next + 30)
            .map(|i| {
                let time = 1_700_000_000_000i64 + i * 100;
                (
                    (i % 3) as i32,
                    format!(
                        "{{\"timestamp\": {time}, \"auction\": {}, \"price\": 1}}",
                        i % 3
                    ),
                )
            })
            .collect();
        next += 30;
        produce(&brokers, &input_topic, &records);
        // Three keys, so three results per closed window: wait for two windows.
        let results = consume(&brokers, &output_topic, 6, Duration::from_millis(300));
        if results.len() >= 6 {
            break results;
        }
        if let Some(status) = child.try_wait().expect("poll child") {
            panic!("the processor ended early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "windows stalled after {next} events"
        );
    };
    sigterm(&child);
    let (code, stderr) = wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    // A closed window of a key holds its events of 10 s: one every 300 ms, 33 or 34 (the
    // first window starts where the events do, on a 10 s boundary or not).
    for line in &results {
        let value: serde_json::Value = serde_json::from_str(line).expect("result");
        let n = value["n"].as_i64().expect("n");
        assert!(n <= 34 && n > 0, "{line}");
    }
}

/// Every record of `topic` with its `dataflow-txn` header, read (committed) until none came
/// for `quiet`.
fn consume_with_provenance(brokers: &str, topic: &str, quiet: Duration) -> Vec<(String, String)> {
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
fn logged<'a>(log: &'a str, message: &str, field: &str) -> Vec<&'a str> {
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
fn committed_by_provenance(records: Vec<(String, String)>, logs: &[String]) -> Vec<String> {
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

/// SIGKILL at 10 seeded instants with restarts, `exactly_once: true`: the committed output
/// holds every result of the uninterrupted file pipeline once, including those of a
/// transaction killed between its checkpoint's save and its commit (sent again from the
/// sink's spool on restart).
#[test]
fn exactly_once_output_survives_ten_sigkills() {
    let brokers = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let input = bids(dir.path(), 60_000, 13, 100);
    let reference = file_reference(dir.path(), &input);
    let input_topic = unique("eo-in");
    let output_topic = unique("eo-out");
    create_topic(&input_topic, 4);
    create_topic(&output_topic, 2);
    let records: Vec<(i32, String)> = std::fs::read_to_string(&input)
        .expect("input")
        .lines()
        .map(|line| ((auction(line) % 4) as i32, line.to_string()))
        .collect();
    let mut ends = BTreeMap::new();
    for (partition, _) in &records {
        *ends.entry(*partition).or_insert(0i64) += 1;
    }
    produce(&brokers, &input_topic, &records);
    let transactional_id = unique("eo-txn");
    let config = kafka_config(
        dir.path(),
        "eo",
        &brokers,
        (&input_topic, &output_topic),
        Extra {
            sink: &format!(", exactly_once: true, transactional_id: {transactional_id}"),
            // Slowed, so that the kills fall while results are being written.
            source: "    rate_limit: { events_per_second: 4000 }\n",
            ..Extra::default()
        },
    );
    let run = |index: usize| {
        let log = std::fs::File::create(dir.path().join(format!("run-{index}.log"))).expect("log");
        processor()
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run")
    };
    for (index, delay) in kills::delays(20_261_207, 10, 800, 1600)
        .into_iter()
        .enumerate()
    {
        if let Some(status) = kills::kill_after(run(index), delay) {
            let log = std::fs::read_to_string(dir.path().join(format!("run-{index}.log")));
            panic!("run {index} ended before its kill: {status}: {log:?}");
        }
    }
    let mut last = run(10);
    // (Its log is read back below: it says which transactions were committed.)
    wait_for_commits(
        &brokers,
        &format!("eo-{input_topic}"),
        &input_topic,
        &ends,
        &mut last,
    );
    sigterm(&last);
    assert_eq!(last.wait().expect("wait").code(), Some(0));

    let records = consume_with_provenance(&brokers, &output_topic, Duration::from_secs(3));
    let total = records.len();
    if std::env::var_os("KAFKA_TEST_KEEP").is_some() {
        let lines: Vec<String> = records.iter().map(|(p, v)| format!("{p} {v}")).collect();
        std::fs::write(dir.path().join("records.txt"), lines.join("\n")).expect("records");
    }
    let logs: Vec<String> = (0..=10)
        .map(|index| {
            std::fs::read_to_string(dir.path().join(format!("run-{index}.log"))).expect("log")
        })
        .collect();
    let results = committed_by_provenance(records, &logs);
    let resent = logs
        .iter()
        .map(|log| log.matches("sending again the transaction").count())
        .sum::<usize>();
    if std::env::var_os("KAFKA_TEST_KEEP").is_some() {
        let kept = dir.keep();
        eprintln!(
            "kept {}: {total} records, {} committed",
            kept.display(),
            results.len()
        );
    }
    eprintln!(
        "{} results committed, {resent} transactions sent again after a crash between save and commit",
        results.len()
    );
    assert_eq!(results.len(), reference.len());
    assert_eq!(results, reference);
}
