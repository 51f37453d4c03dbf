//! The kafka source and sink against a real Kafka-protocol broker (tansu, started by
//! `scripts/kafka.sh`, which installs it when absent): a keyed tumbling window from a topic of
//! 4 partitions to a topic equals the same pipeline on a file; malformed records are dead
//! letters naming topic, partition and offset; an idle partition does not stall windows; a
//! topic appearing while the source runs is read and checkpointed; and SIGKILLs with `exactly_once: true` neither lose nor duplicate a result. See docs/kafka.md for
//! what this broker does and does not check.
#![cfg(unix)]

mod kafka_support;
mod kills;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dataflow_checkpoint::{CheckpointStorage, LocalStorage};
use kafka_support::*;

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
    let mut child = run(&config);
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
    let (input_topic, output_topic) = topics("idle", 4, 1);
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
    let mut child = run(&config);
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

/// The `(key, n)` of each result line, sorted.
fn keys_and_counts(lines: &[String]) -> Vec<(i64, i64)> {
    let mut found: Vec<(i64, i64)> = lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("result");
            (
                value["key"].as_i64().expect("key"),
                value["n"].as_i64().expect("n"),
            )
        })
        .collect();
    found.sort_unstable();
    found
}

/// Without `scale_out`, a source on a `topic_pattern` picks up a topic created while it runs
/// (tansu cannot add partitions to a topic; the source's path is the same: a metadata refresh
/// finds partitions it does not have). They are read from their first record although the
/// source says `start: latest`, each with its own watermark and idle detection (the new empty
/// partition goes idle, the one with records closes a window), and checkpointed: a restart
/// restores the new partition's offset and open window, so nothing is read twice (the window
/// open at the stop would count its record twice) and nothing is lost.
#[test]
fn partitions_appearing_while_running_are_read_and_restored() {
    let brokers = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique("found");
    let first = format!("{prefix}-a");
    let second = format!("{prefix}-b");
    let output_topic = unique("found-out");
    create_topic(&first, 1);
    create_topic(&output_topic, 1);
    let config = kafka_config(
        dir.path(),
        "found",
        &brokers,
        (&first, &output_topic),
        Extra {
            idle: ", idle_timeout: 1s",
            source:
                "    start: latest\n    properties: { topic.metadata.refresh.interval.ms: 300 }\n",
            ..Extra::default()
        },
    );
    let group = format!("found-{first}");
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(
            &format!("topics: [{first}]"),
            &format!("topic_pattern: \"{prefix}-.*\""),
        )
        .replace("on_stop: fire", "on_stop: keep");
    std::fs::write(&config, text).expect("config");
    let mut child = run(&config);
    // The source is open and checkpointing once the group has an offset for the first topic.
    wait_for_commits(
        &brokers,
        &group,
        &first,
        &BTreeMap::from([(0, 0)]),
        &mut child,
    );
    create_topic(&second, 2);
    // At once, before the source can have noticed the topic: read from the first record.
    let mut records = twenty_bids(1, 7);
    records.push((
        1,
        "{\"timestamp\": 1800000000000, \"auction\": 8, \"price\": 1}".to_string(),
    ));
    produce(&brokers, &second, &records);
    let results = consume(&brokers, &output_topic, 1, Duration::from_secs(60));
    assert_eq!(keys_and_counts(&results), [(7, 20)], "{results:?}");
    // A checkpoint holding the new partition's offset (committed to the group after it).
    wait_for_commits(
        &brokers,
        &group,
        &second,
        &BTreeMap::from([(0, 0), (1, 21)]),
        &mut child,
    );
    sigterm(&child);
    let (code, stderr) = wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    // The stop's checkpoint holds every partition's offset, the new ones' too.
    let storage = LocalStorage::open_for_reading(dir.path().join("found-checkpoints"))
        .expect("checkpoint directory");
    let (checkpoint, _) = storage
        .latest_valid()
        .expect("checkpoints")
        .expect("a checkpoint");
    let offsets: BTreeMap<&str, u64> = checkpoint.sources[0]
        .partitions
        .iter()
        .map(|p| (p.name.as_str(), p.offset))
        .collect();
    assert_eq!(
        offsets,
        BTreeMap::from([
            (format!("{first}/0").as_str(), 0),
            (format!("{second}/0").as_str(), 0),
            (format!("{second}/1").as_str(), 21),
        ]),
    );

    // Restarted: auction 8's window (one record, open at the stop) closes with the next
    // records; auction 9's window too.
    let mut child = run(&config);
    // 20 bids of auction 9, 100 ms apart from 1,850,000,000,000.
    let mut records: Vec<(i32, String)> = (0..20)
        .map(|i| {
            let time = 1_850_000_000_000i64 + i * 100;
            (
                1,
                format!("{{\"timestamp\": {time}, \"auction\": 9, \"price\": 1}}"),
            )
        })
        .collect();
    records.push((
        1,
        "{\"timestamp\": 1900000000000, \"auction\": 10, \"price\": 1}".to_string(),
    ));
    produce(&brokers, &second, &records);
    let results = consume(&brokers, &output_topic, 3, Duration::from_secs(60));
    assert_eq!(results.len(), 3, "{results:?}");
    wait_for_commits(
        &brokers,
        &group,
        &second,
        &BTreeMap::from([(0, 0), (1, 42)]),
        &mut child,
    );
    sigterm(&child);
    let (code, stderr) = wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    // Every result once: a re-read record would count twice in auction 8's window or close
    // auction 7's again.
    let results = consume(&brokers, &output_topic, 4, Duration::from_secs(3));
    assert_eq!(
        keys_and_counts(&results),
        [(7, 20), (8, 1), (9, 20)],
        "{results:?}"
    );
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
    let (input_topic, output_topic) = topics("eo", 4, 2);
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

/// A sink's `headers` are CEL expressions over each result: a string as it is, another value
/// as JSON, `null` no header; the record's own headers go on before them.
#[test]
fn sink_headers_are_expressions_over_the_result() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let brokers = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let (input_topic, output_topic) = topics("headers", 1, 1);
    let config = kafka_config(
        dir.path(),
        "headers",
        &brokers,
        (&input_topic, &output_topic),
        Extra {
            sink: ", headers: { auction: \"string(key)\", big: \"total > 10\", none: \"null\" }",
            ..Extra::default()
        },
    );
    let mut child = run(&config);
    // Auction 7: 20 bids of 1; auction 9: one of 5; then a bid much later closes their window.
    let mut records = twenty_bids(0, 7);
    records.push((
        0,
        "{\"timestamp\": 1700000000500, \"auction\": 9, \"price\": 5}".to_string(),
    ));
    records.push((
        0,
        "{\"timestamp\": 1800000000000, \"auction\": 8, \"price\": 1}".to_string(),
    ));
    produce(&brokers, &input_topic, &records);
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&output_topic]).expect("subscribe");
    let mut found: BTreeMap<i64, Vec<(String, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while found.len() < 2 {
        if let Some(status) = child.try_wait().expect("poll child") {
            panic!("the processor ended early: {status}");
        }
        assert!(Instant::now() < deadline, "results: {found:?}");
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("consume");
        let value: serde_json::Value =
            serde_json::from_slice(message.payload().expect("value")).expect("result");
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.insert(value["key"].as_i64().expect("key"), headers);
    }
    sigterm(&child);
    let (code, stderr) = wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    let pairs = |a: &str, b: &str| {
        vec![
            ("auction".to_string(), a.to_string()),
            ("big".to_string(), b.to_string()),
        ]
    };
    assert_eq!(found[&7], pairs("7", "true"));
    assert_eq!(found[&9], pairs("9", "false"));
}
