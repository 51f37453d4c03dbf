//! Scale-out on a consumer group against a real Kafka-protocol broker (tansu, started by
//! `scripts/kafka.sh`): processors started with the same `scale_out: true` config share an
//! 8-partition topic, one task per partition with its state checkpointed per partition in a
//! shared directory; one is SIGKILLed and a fourth joins while they run. The records of the
//! committed transactions of all of them equal the single-process file pipeline's results, as
//! a multiset: none lost, none twice. See docs/kafka.md.
#![cfg(unix)]

mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kafka_support::*;

const PARTITIONS: i32 = 8;

/// `GET path` on the processor's API at `address`: the body.
fn http_get(address: &str, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The partitions a processor says it owns (`GET /api/v1/status`, its tasks), or `None` while
/// its API is not up.
fn owned(dir: &Path, index: usize) -> Option<BTreeSet<String>> {
    let address = std::fs::read_to_string(dir.join(format!("api-{index}.addr"))).ok()?;
    let body = http_get(address.trim(), "/api/v1/status")?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        status["tasks"]
            .as_array()
            .map(|tasks| {
                tasks
                    .iter()
                    .filter_map(|task| task["partition"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// The results a processor says it wrote (`GET /api/v1/status`), or `None` while its API is
/// not up.
fn emitted(dir: &Path, index: usize) -> Option<u64> {
    let address = std::fs::read_to_string(dir.join(format!("api-{index}.addr"))).ok()?;
    let body = http_get(address.trim(), "/api/v1/status")?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    status["events_emitted"].as_u64()
}

/// Waits until the live processors `live` own every partition of `topics` between them, each
/// one at most once, and each at least one: what each owns.
fn wait_for_ownership(
    dir: &Path,
    topics: &[&str],
    live: &[usize],
    children: &mut [Option<Child>],
) -> BTreeMap<usize, BTreeSet<String>> {
    let all: BTreeSet<String> = topics
        .iter()
        .flat_map(|topic| (0..PARTITIONS).map(move |p| format!("{topic}/{p}")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found: BTreeMap<usize, BTreeSet<String>> = live
            .iter()
            .filter_map(|&index| owned(dir, index).map(|parts| (index, parts)))
            .collect();
        let union: BTreeSet<String> = found.values().flatten().cloned().collect();
        let count: usize = found.values().map(BTreeSet::len).sum();
        if found.len() == live.len()
            && union == all
            && count == all.len()
            && found.values().all(|parts| !parts.is_empty())
        {
            return found;
        }
        for &index in live {
            if let Some(status) = children[index]
                .as_mut()
                .and_then(|c| c.try_wait().expect("poll child"))
            {
                let log = std::fs::read_to_string(dir.join(format!("run-{index}.log")));
                panic!("processor {index} ended: {status}: {log:?}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "processors {live:?} never owned the {PARTITIONS} partitions once each: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `group` committed at least `share` of `total` records of `topic`.
fn wait_for_progress(brokers: &str, group: &str, topic: &str, total: i64, share: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = committed(brokers, group, topic, PARTITIONS).values().sum();
        if done as f64 >= total as f64 * share {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group committed {done} of {total} records, waiting for {share}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The watermark every downstream task reaches once the last records (in 2099) went through
/// the repartition topic: 2099-01-01 less the 5 s of disorder.
const CLOSED: i64 = 4_070_908_800_000 - 5_000;

/// Waits until the live processors' tasks of every partition of `topic` have a watermark of
/// at least `watermark`, and then until each has completed a checkpoint after that, so that
/// the windows it closed are in a committed transaction (`GET /api/v1/status`).
fn wait_for_watermarks(dir: &Path, topic: &str, live: &[usize], watermark: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    // The last checkpoint of each partition's task when it was first seen past `watermark`.
    let mut seen: BTreeMap<String, i64> = BTreeMap::new();
    loop {
        let mut reached = BTreeSet::new();
        for &index in live {
            let Some(address) = std::fs::read_to_string(dir.join(format!("api-{index}.addr"))).ok()
            else {
                continue;
            };
            let Some(body) = http_get(address.trim(), "/api/v1/status") else {
                continue;
            };
            let status: serde_json::Value = serde_json::from_str(&body).expect("status");
            for task in status["tasks"].as_array().into_iter().flatten() {
                let partition = task["partition"].as_str().unwrap_or_default();
                if partition.starts_with(&format!("{topic}/"))
                    && task["watermark"].as_i64().unwrap_or(i64::MIN) >= watermark
                {
                    let checkpoint = task["last_checkpoint"].as_i64().unwrap_or(0);
                    let first = *seen.entry(partition.to_string()).or_insert(checkpoint);
                    if checkpoint > first {
                        reached.insert(partition.to_string());
                    }
                }
            }
        }
        if reached.len() == PARTITIONS as usize {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the tasks of {topic} never all reached watermark {watermark}: {reached:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Three processors on one group over an 8-partition topic (keyed tumbling window, exactly-once
/// sink); one is SIGKILLed, then a fourth joins: the committed output holds every result of
/// the file pipeline once (a transaction the killed process committed but did not mark is
/// found in its ledger, not sent again). Co-partitioned: keyed by the auction the
/// producer partitioned by, which the source declares (`partitioned_by`).
#[test]
fn three_processors_one_killed_a_fourth_added_equal_one() {
    three_one_killed_a_fourth_added(false);
}

/// The same with a `key_by` on the bidder, which the producer did not partition by: the
/// events go through the repartition topic, whose 8 partitions are tasks of the processors
/// too; the committed output holds every result of the file pipeline once: none lost, none
/// twice.
#[test]
fn repartitioned_by_bidder_one_killed_a_fourth_added_equal_one() {
    three_one_killed_a_fourth_added(true);
}

/// Keys by bidder, which needs the bids re-partitioned (they are partitioned by auction).
const BIDDER_STEPS: &str = "steps:\n  - key_by: bidder\n  - window: { type: tumbling, size: 10s, aggregates: { n: count, total: sum(price) } }\n";
const BIDDER_FORMAT: &str = "format: { schema: { auction: int, bidder: int, price: int } }";

fn three_one_killed_a_fourth_added(by_bidder: bool) {
    let brokers = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let input = bids(dir.path(), 40_000, 17, 1000);
    let (format, steps) = if by_bidder {
        (BIDDER_FORMAT, BIDDER_STEPS)
    } else {
        (FORMAT, STEPS)
    };
    let reference = file_reference_of(dir.path(), &input, format, steps);
    assert!(reference.len() > 100, "a reference with results");
    let (input_topic, output_topic) = topics("scale", PARTITIONS as u32, 4);
    let mut records: Vec<(i32, String)> = std::fs::read_to_string(&input)
        .expect("input")
        .lines()
        .map(|line| ((auction(line) % PARTITIONS as i64) as i32, line.to_string()))
        .collect();
    // One last record per partition, years later, of an auction of its own: it moves the
    // partition's watermark past every window of the data, so that all of them close while
    // the processors run. Its own window never closes (a stop keeps open windows), so it adds
    // no result.
    for partition in 0..PARTITIONS {
        records.push((
            partition,
            format!(
                "{{\"timestamp\": \"2099-01-01T00:00:00Z\", \"auction\": {}, \"bidder\": {}, \"price\": 0}}",
                1_000_000 + partition as i64,
                1_000_000 + partition as i64
            ),
        ));
    }
    let mut ends = BTreeMap::new();
    for (partition, _) in &records {
        *ends.entry(*partition).or_insert(0i64) += 1;
    }
    let total: i64 = ends.values().sum();
    produce(&brokers, &input_topic, &records);

    let transactional_id = unique("scale-txn");
    let config = kafka_config(
        dir.path(),
        "scale",
        &brokers,
        (&input_topic, &output_topic),
        Extra {
            sink: &format!(", exactly_once: true, transactional_id: {transactional_id}"),
            // Slowed (per task), so that the kill and the join fall while results are written;
            // a short session, so that the killed member's partitions move soon.
            source: "    scale_out: true\n    partitioned_by: auction\n    rate_limit: { events_per_second: 700 }\n    properties: { session.timeout.ms: 3000, heartbeat.interval.ms: 300, topic.metadata.refresh.interval.ms: 1000 }\n",
            ..Extra::default()
        },
    );
    let mut text = std::fs::read_to_string(&config).expect("config");
    text = text.replace(FORMAT, format).replace(STEPS, steps);
    text.push_str("api: { listen: \"127.0.0.1:0\" }\n");
    std::fs::write(&config, text).expect("config");
    let group = format!("scale-{input_topic}");
    // The repartition topic the processors make: `<group>-step<index of the key_by>-repartition`.
    let repartition_topic = format!("{group}-step0-repartition");
    let owned_topics: Vec<&str> = if by_bidder {
        vec![&input_topic, &repartition_topic]
    } else {
        vec![&input_topic]
    };

    let start = |index: usize| {
        let log = std::fs::File::create(dir.path().join(format!("run-{index}.log"))).expect("log");
        processor()
            .args(["run", "--config"])
            .arg(&config)
            .env(
                "DATAFLOW_API_ADDRESS_FILE",
                dir.path().join(format!("api-{index}.addr")),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run")
    };
    let mut children: Vec<Option<Child>> = vec![Some(start(0)), Some(start(1)), Some(start(2))];
    let before = wait_for_ownership(dir.path(), &owned_topics, &[0, 1, 2], &mut children);
    eprintln!("three processors own {before:?}");
    wait_for_progress(&brokers, &group, &input_topic, total, 0.2);
    // Killed right after it wrote its first results, so that it most likely dies with a
    // transaction open (its checkpoint commits it within about 200 ms).
    let deadline = Instant::now() + Duration::from_secs(60);
    while emitted(dir.path(), 1).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "processor 1 never wrote a result"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut killed = children[1].take().expect("processor 1");
    killed.kill().expect("SIGKILL");
    killed.wait().expect("wait");
    // Its partitions move to the two others once its session times out.
    let after_kill = wait_for_ownership(dir.path(), &owned_topics, &[0, 2], &mut children);
    eprintln!("after the kill: {after_kill:?}");
    children.push(Some(start(3)));
    let after_join = wait_for_ownership(dir.path(), &owned_topics, &[0, 2, 3], &mut children);
    eprintln!("after the join: {after_join:?}");
    // Every record read and checkpointed (the last records close every window).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = committed(&brokers, &group, &input_topic, PARTITIONS);
        if ends.iter().all(|(p, end)| done.get(p) == Some(end)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never committed {ends:?} (has {done:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if by_bidder {
        // Every window closed downstream too: the last records' markers went through.
        wait_for_watermarks(dir.path(), &repartition_topic, &[0, 2, 3], CLOSED);
    }
    for index in [0, 2, 3] {
        sigterm(children[index].as_ref().expect("live"));
    }
    for index in [0, 2, 3] {
        let child = children[index].take().expect("live");
        let (code, _) = wait(child);
        let log = std::fs::read_to_string(dir.path().join(format!("run-{index}.log")));
        assert_eq!(code, Some(0), "processor {index}: {log:?}");
    }

    let records = consume_with_provenance(&brokers, &output_topic, Duration::from_secs(3));
    let logs: Vec<String> = (0..4)
        .map(|index| {
            std::fs::read_to_string(dir.path().join(format!("run-{index}.log"))).expect("log")
        })
        .collect();
    let total_records = records.len();
    let results = committed_by_provenance(records, &logs);
    let resent: usize = logs
        .iter()
        .map(|log| log.matches("sending again the transaction").count())
        .sum();
    eprintln!(
        "{} results committed of {total_records} records read; reference {}; {resent} transactions sent again from a spool",
        results.len(),
        reference.len()
    );
    let found_in_ledger: usize = logs
        .iter()
        .map(|log| log.matches("as its ledger says").count())
        .sum();
    let resent_records: usize = logs
        .iter()
        .flat_map(|log| logged(log, "sending again the transaction", "records"))
        .filter_map(|count| count.parse::<usize>().ok())
        .sum();
    let (missing, surplus) = multiset_differences(&reference, &results);
    eprintln!(
        "{} results missing, {} more than once ({resent_records} records sent again; {found_in_ledger} transactions found committed in their ledger)",
        missing.len(),
        surplus.len()
    );
    let failed = !missing.is_empty() || !surplus.is_empty();
    if failed || std::env::var_os("KAFKA_TEST_KEEP").is_some() {
        let kept = dir.keep();
        std::fs::write(kept.join("results.txt"), results.join("\n")).expect("keep");
        std::fs::write(kept.join("reference.txt"), reference.join("\n")).expect("keep");
        eprintln!("kept {}", kept.display());
        assert!(
            !failed,
            "the committed results differ from the reference: kept in {}",
            kept.display()
        );
    }
}

/// A repartitioned job whose input has a partition that never gets a record: with the
/// source's `idle_timeout`, that partition's upstream task writes "idle" markers, so the
/// downstream watermark leaves it out and the window closes. (Without them the downstream
/// task would wait for a word from every input partition.)
#[test]
fn an_idle_input_partition_does_not_hold_the_repartitioned_windows() {
    let brokers = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let (input_topic, output_topic) = topics("repidle", 2, 1);
    let config = kafka_config(
        dir.path(),
        "repidle",
        &brokers,
        (&input_topic, &output_topic),
        Extra {
            idle: ", idle_timeout: 500ms",
            source: "    scale_out: true\n    properties: { session.timeout.ms: 3000, heartbeat.interval.ms: 300 }\n",
            ..Extra::default()
        },
    );
    // Keyed by price: the bids are not partitioned by it.
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace(STEPS, "steps:\n  - key_by: price\n  - window: { type: tumbling, size: 10s, aggregates: { n: count } }\n");
    std::fs::write(&config, text).expect("config");
    // 20 bids of price 1 in partition 0, then one much later; partition 1 stays empty.
    let mut records = twenty_bids(0, 7);
    records.push((
        0,
        "{\"timestamp\": 1800000000000, \"auction\": 8, \"price\": 2}".to_string(),
    ));
    produce(&brokers, &input_topic, &records);
    let child = run(&config);
    let results = consume(&brokers, &output_topic, 1, Duration::from_secs(60));
    sigterm(&child);
    let (code, stderr) = wait(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(results.len(), 1, "{results:?}");
    let value: serde_json::Value = serde_json::from_str(&results[0]).expect("result");
    assert_eq!(
        (value["key"].as_i64(), value["n"].as_i64()),
        (Some(1), Some(20)),
        "{value}"
    );
}

/// A topic created while a scale-out processor runs, matching its `topic_pattern`, is picked
/// up: the member's metadata refresh finds it, the group rebalances, the processor starts a
/// task per new partition, and their records are read. (This is how a partition added to a
/// topic is picked up too; tansu cannot add partitions to a topic, CreatePartitions answers
/// UnsupportedFeature, so the new partitions here come with a new topic: docs/kafka.md.)
#[test]
fn partitions_appearing_while_running_are_picked_up() {
    let brokers = broker();
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique("grow");
    let first = format!("{prefix}-a");
    let second = format!("{prefix}-b");
    let output_topic = unique("grow-out");
    create_topic(&first, 2);
    create_topic(&output_topic, 1);
    let config = kafka_config(
        dir.path(),
        "grow",
        &brokers,
        (&first, &output_topic),
        Extra {
            source: "    scale_out: true\n    partitioned_by: auction\n    properties: { session.timeout.ms: 3000, heartbeat.interval.ms: 300, topic.metadata.refresh.interval.ms: 500 }\n",
            ..Extra::default()
        },
    );
    let mut text = std::fs::read_to_string(&config).expect("config");
    text = text.replace(
        &format!("topics: [{first}]"),
        &format!("topic_pattern: \"{prefix}-.*\""),
    );
    text.push_str("api: { listen: \"127.0.0.1:0\" }\n");
    std::fs::write(&config, text).expect("config");
    let log = std::fs::File::create(dir.path().join("run-0.log")).expect("log");
    let child = processor()
        .args(["run", "--config"])
        .arg(&config)
        .env("DATAFLOW_API_ADDRESS_FILE", dir.path().join("api-0.addr"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run");
    let mut children = vec![Some(child)];
    let owns = |dir: &Path, all: &BTreeSet<String>, children: &mut [Option<Child>]| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if owned(dir, 0).as_ref() == Some(all) {
                return;
            }
            if let Some(status) = children[0]
                .as_mut()
                .and_then(|c| c.try_wait().expect("poll child"))
            {
                let log = std::fs::read_to_string(dir.join("run-0.log"));
                panic!("the processor ended: {status}: {log:?}");
            }
            assert!(
                Instant::now() < deadline,
                "the processor never owned {all:?}: {:?}",
                owned(dir, 0)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut all: BTreeSet<String> = (0..2).map(|p| format!("{first}/{p}")).collect();
    owns(dir.path(), &all, &mut children);
    create_topic(&second, 2);
    all.extend((0..2).map(|p| format!("{second}/{p}")));
    owns(dir.path(), &all, &mut children);
    // `/metrics` has the lag of every owned partition, each under its task's pipeline name
    // (one registry for the process, no two series colliding).
    let address = std::fs::read_to_string(dir.path().join("api-0.addr")).expect("address");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = http_get(address.trim(), "/metrics").unwrap_or_default();
        let missing: Vec<&String> = all
            .iter()
            .filter(|partition| {
                !metrics.lines().any(|line| {
                    line.starts_with(&format!(
                        "dataflow_source_partition_lag{{pipeline=\"grow[{partition}]\",source=\"bids\",partition=\"{partition}\"}} "
                    ))
                })
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no lag series for {missing:?} in /metrics"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // 20 bids of one auction in a new partition, then one much later: their window closes.
    let mut records = twenty_bids(1, 7);
    records.push((
        1,
        "{\"timestamp\": 1800000000000, \"auction\": 8, \"price\": 1}".to_string(),
    ));
    produce(&brokers, &second, &records);
    let results = consume(&brokers, &output_topic, 1, Duration::from_secs(60));
    sigterm(children[0].as_ref().expect("live"));
    let (code, stderr) = wait(children[0].take().expect("live"));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(results.len(), 1, "{results:?}");
    let value: serde_json::Value = serde_json::from_str(&results[0]).expect("result");
    assert_eq!(
        (value["key"].as_i64(), value["n"].as_i64()),
        (Some(7), Some(20)),
        "{value}"
    );
}

/// What `reference` has that `results` lacks, and what `results` has beyond `reference`, both
/// sorted inputs compared as multisets.
fn multiset_differences(reference: &[String], results: &[String]) -> (Vec<String>, Vec<String>) {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for line in reference {
        *counts.entry(line).or_default() += 1;
    }
    for line in results {
        *counts.entry(line).or_default() -= 1;
    }
    let (mut missing, mut surplus) = (Vec::new(), Vec::new());
    for (line, count) in counts {
        for _ in 0..count.max(0) {
            missing.push(line.to_string());
        }
        for _ in 0..(-count).max(0) {
            surplus.push(line.to_string());
        }
    }
    (missing, surplus)
}
