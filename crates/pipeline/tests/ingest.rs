//! The `http` source in whole pipelines: under a burst bigger than its queue every event is
//! either accepted and reaches the sink, or refused with the whole of its body; malformed bodies
//! are refused whole, naming the line; a stop drains what was accepted.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use dataflow_connectors::http::{BodyFormat, IngestHub, IngestRefusal};
use dataflow_pipeline::config;
use dataflow_pipeline::runtime::Pipeline;

fn pipeline(dir: &Path, queue: usize, rate_limit: &str) -> Pipeline {
    let yaml = format!(
        "name: ingest\n\
         sources:\n  - name: in\n    type: http\n    queue: {queue}\n{rate_limit}\
         steps:\n  - filter: 'v >= 0'\n\
         sinks:\n  - type: file\n    path: out.jsonl\n\
         dead_letters:\n  type: file\n  path: dead.jsonl\n\
         api:\n  listen: 127.0.0.1:0\n\
         runtime:\n  batch_size: 16\n  channel_capacity: 2\n"
    );
    let plan = config::parse_and_plan(&yaml, dir).expect("valid config");
    Pipeline::new(plan)
}

/// A JSON Lines body of the events `first..first + n`, each with its number as `v`.
fn body(first: u64, n: u64) -> String {
    (first..first + n)
        .map(|v| format!("{{\"timestamp\":{v},\"v\":{v}}}\n"))
        .collect()
}

fn sink_values(dir: &Path) -> Vec<u64> {
    common::read_json_lines(&dir.join("out.jsonl"))
        .iter()
        .map(|r| r["v"].as_u64().expect("v"))
        .collect()
}

#[test]
fn a_burst_bigger_than_the_queue_is_accepted_or_refused_whole_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = pipeline(dir.path(), 64, "");
    let hub = pipeline.ingest();
    let stop = pipeline.stop_handle();
    let metrics = pipeline.metrics();
    const BODY: u64 = 10;

    // Before the run reads anything the queue fills: 6 bodies of 10 fit in 64, the 7th not.
    for i in 0..6 {
        assert_eq!(
            hub.ingest(None, BodyFormat::JsonLines, body(i * BODY, BODY).as_bytes()),
            Ok(BODY)
        );
    }
    assert!(matches!(
        hub.ingest(None, BodyFormat::JsonLines, body(60, BODY).as_bytes()),
        Err(IngestRefusal::QueueFull(_))
    ));
    let mut accepted: BTreeSet<u64> = (0..60).collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let run = runtime.spawn(pipeline.run());

    // Four clients send 300 bodies each as fast as they can, never retrying; every 7th body
    // has a bad last line and must be refused whole.
    let clients: Vec<_> = (0..4u64)
        .map(|client| {
            let hub: IngestHub = hub.clone();
            std::thread::spawn(move || {
                let mut accepted = Vec::new();
                let mut full = 0;
                for i in 0..300u64 {
                    let first = 1_000 + (client * 300 + i) * BODY;
                    let mut text = body(first, BODY);
                    let bad = i % 7 == 3;
                    if bad {
                        text.push_str("{\"timestamp\":1,\"v\":\n");
                    }
                    match hub.ingest(None, BodyFormat::JsonLines, text.as_bytes()) {
                        Ok(n) => {
                            assert!(!bad, "a malformed body was accepted");
                            assert_eq!(n, BODY);
                            accepted.extend(first..first + BODY);
                        }
                        Err(IngestRefusal::QueueFull(_)) => full += 1,
                        Err(IngestRefusal::Malformed(message)) => {
                            assert!(bad, "refused as malformed: {message}");
                            assert!(message.starts_with("line 11: invalid JSON"), "{message}");
                        }
                        Err(other) => panic!("unexpected refusal: {other:?}"),
                    }
                }
                (accepted, full)
            })
        })
        .collect();
    let mut refused_full = 1;
    for client in clients {
        let (values, full) = client.join().expect("client");
        accepted.extend(values);
        refused_full += full;
    }
    stop.stop();
    runtime.block_on(run).expect("join").expect("run");
    // After the stop nothing more is taken.
    let after = hub.ingest(None, BodyFormat::JsonLines, body(0, 1).as_bytes());
    assert!(
        matches!(after, Err(IngestRefusal::ShuttingDown(_))),
        "{after:?}"
    );

    let at_sink = sink_values(dir.path());
    let distinct: BTreeSet<u64> = at_sink.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        at_sink.len(),
        "an event reached the sink twice"
    );
    assert_eq!(
        distinct, accepted,
        "the sink has exactly the accepted events"
    );
    // The metrics agree: the accepted events, and every refusal by its reason.
    let text = metrics.encode();
    let value = |name: &str| -> u64 {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    assert_eq!(
        value("dataflow_ingest_accepted_events_total{"),
        accepted.len() as u64
    );
    assert_eq!(
        value("dataflow_ingest_refused_total{pipeline=\"ingest\",reason=\"overloaded\"}"),
        refused_full
    );
    let malformed = 4 * (0..300).filter(|i| i % 7 == 3).count() as u64;
    assert_eq!(
        value("dataflow_ingest_refused_total{pipeline=\"ingest\",reason=\"malformed\"}"),
        malformed
    );
    assert_eq!(
        value("dataflow_ingest_refused_total{pipeline=\"ingest\",reason=\"shutting_down\"}"),
        1
    );
    // Nothing of a refused body went to the dead letters: the client was told instead.
    assert!(common::read_json_lines(&dir.path().join("dead.jsonl")).is_empty());
}

#[test]
fn arrays_and_objects_are_taken_and_a_rate_limit_refuses_what_it_cannot_cover() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A slow rate (1 event/s) with a burst of 5: the first bodies fit, then the bucket is empty.
    let pipeline = pipeline(
        dir.path(),
        1_000,
        "    rate_limit:\n      events_per_second: 1\n      burst: 5\n",
    );
    let hub = pipeline.ingest();
    let stop = pipeline.stop_handle();
    assert_eq!(
        hub.ingest(
            Some("in"),
            BodyFormat::Json,
            br#"[{"timestamp":1,"v":1},{"timestamp":2,"v":2}]"#
        ),
        Ok(2)
    );
    assert_eq!(
        hub.ingest(None, BodyFormat::Json, br#"{"timestamp":3,"v":3}"#),
        Ok(1)
    );
    assert!(matches!(
        hub.ingest(None, BodyFormat::JsonLines, body(4, 3).as_bytes()),
        Err(IngestRefusal::RateLimited(_))
    ));
    assert_eq!(
        hub.ingest(None, BodyFormat::JsonLines, body(4, 2).as_bytes()),
        Ok(2)
    );
    let element = hub.ingest(
        None,
        BodyFormat::Json,
        br#"[{"timestamp":1,"v":1}, {"v":2}]"#,
    );
    assert!(
        matches!(&element, Err(IngestRefusal::Malformed(m)) if m.starts_with("element 2: missing event time")),
        "{element:?}"
    );
    assert!(matches!(
        hub.ingest(Some("other"), BodyFormat::Json, b"{}"),
        Err(IngestRefusal::NoSource(_))
    ));
    stop.stop();
    common::run(pipeline);
    let mut values = sink_values(dir.path());
    values.sort_unstable();
    assert_eq!(values, [1, 2, 3, 4, 5]);
}

#[test]
fn an_http_source_needs_the_api_and_checks_its_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let yaml = "sources:\n  - name: in\n    type: http\n    queue: 0\n    path: x\n    \
                rate_limit:\n      events_per_second: 10\n      adaptive:\n        min: 1\n        max: 10\n\
                sinks:\n  - type: stdout\n";
    let error = config::parse_and_plan(yaml, dir.path())
        .expect_err("invalid")
        .to_string();
    for expected in [
        "`path` does not apply to a http source",
        "`queue` must be between 1 and",
        "an http source cannot adapt its rate",
        "http source `in` needs an `api:` section",
    ] {
        assert!(error.contains(expected), "{expected:?} not in {error}");
    }
}
