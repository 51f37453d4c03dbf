//! The Nexmark queries of `configs/nexmark/` run end to end on the generator's `nexmark` profile
//! (out of order within the watermark's bound) and give, as a multiset, what a naive reference
//! written plainly here computes from the same events: loops over the whole input. Each runs as
//! shipped (one worker) and with `parallelism: 3`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use dataflow_connectors::generator::{Generator, GeneratorConfig, Profile};
use serde_json::{json, Value as Json};

/// Events per run: enough for a few dozen sliding windows, quick in a debug build.
const EVENTS: u64 = 50_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A bid of the generated stream, with the fields the queries read.
#[derive(Clone, Debug)]
struct Bid {
    time: i64,
    auction: i64,
    bidder: i64,
    price: i64,
    channel: String,
    url: String,
}

/// The bids of the stream every shipped query reads: the source settings of the configs
/// (seed 42, 1,000 events per second, 2 s of disorder), `EVENTS` events.
fn bids() -> Vec<Bid> {
    let generator = Generator::new(GeneratorConfig {
        profile: Profile::Nexmark,
        seed: 42,
        count: Some(EVENTS),
        events_per_second: 1_000,
        max_disorder_ms: 2_000,
        ..GeneratorConfig::default()
    })
    .expect("valid generator");
    let schema = Generator::schema(Profile::Nexmark);
    let field = |name: &str| schema.index_of(name).expect("nexmark field");
    let mut bids = Vec::new();
    let mut out_of_order = 0;
    let mut latest = i64::MIN;
    for event in generator {
        if event.event_time < latest {
            out_of_order += 1;
        }
        latest = latest.max(event.event_time);
        if event.kind.as_deref() != Some("bid") {
            continue;
        }
        let row = event.payload.as_row().expect("row payload");
        let int = |name: &str| row[field(name)].as_i64().expect("int field");
        let text = |name: &str| row[field(name)].as_str().expect("string field").to_string();
        bids.push(Bid {
            time: event.event_time,
            auction: int("auction"),
            bidder: int("bidder"),
            price: int("price"),
            channel: text("channel"),
            url: text("url"),
        });
    }
    // The runs below see disorder, within the watermark's bound.
    assert!(
        out_of_order > EVENTS / 4,
        "{out_of_order} events out of order"
    );
    bids
}

/// Runs the shipped query `name` on `EVENTS` events with `parallelism` workers, its outputs in a
/// temporary directory with times as epoch milliseconds, and returns its results; it must leave
/// no dead letter.
fn run(name: &str, parallelism: usize) -> Vec<Json> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().display().to_string();
    let text = std::fs::read_to_string(root().join(format!("configs/nexmark/{name}.yaml")))
        .expect("config");
    let sink = format!("    path: ../../target/nexmark/out/{name}.jsonl\n");
    assert!(
        text.contains(&sink),
        "{name}: the sink is not where expected"
    );
    assert!(text.contains("    count: 1000000\n"), "{name}: count");
    let text = text
        .replace("    count: 1000000\n", &format!("    count: {EVENTS}\n"))
        .replace(
            &sink,
            &format!("    path: {out}/{name}.jsonl\n    time_format: millis\n"),
        )
        .replace("../../target/nexmark/out/", &format!("{out}/"))
        + &format!("parallelism: {parallelism}\n");
    let config = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&config, text).expect("write config");
    let dead = dir.path().join(format!("{name}-dead-letters.jsonl"));
    let results = dir.path().join(format!("{name}.jsonl"));
    let output = Command::new(env!("CARGO_BIN_EXE_processor"))
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .output()
        .expect("run processor");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let name = format!("{name} with parallelism {parallelism}");
    assert!(output.status.success(), "{name}: {stderr}");
    assert!(
        stderr.contains("late 0, dead-lettered 0"),
        "{name}: {stderr}"
    );
    let dead = std::fs::read_to_string(dead).unwrap_or_default();
    assert_eq!(dead, "", "{name}: dead letters");
    let results = std::fs::read_to_string(results).expect("results file");
    results
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// `value` as text with every object's keys in order, so that equal values print equally.
fn canonical(value: &Json) -> String {
    match value {
        Json::Object(map) => {
            let sorted: BTreeMap<&String, String> = map
                .iter()
                .map(|(key, value)| (key, canonical(value)))
                .collect();
            let fields: Vec<String> = sorted
                .into_iter()
                .map(|(key, value)| format!("{}:{value}", Json::String(key.clone())))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Json::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// Runs the shipped query `name` with one worker and with three, and compares the results of each
/// with the reference `expected` as multisets.
fn check(name: &str, expected: Vec<Json>) {
    for parallelism in [1, 3] {
        let actual = run(name, parallelism);
        assert_same(
            &format!("{name} with parallelism {parallelism}"),
            actual,
            expected.clone(),
        );
    }
}

/// Compares results with the reference as multisets.
fn assert_same(name: &str, actual: Vec<Json>, expected: Vec<Json>) {
    let sorted = |values: Vec<Json>| {
        let mut texts: Vec<String> = values.iter().map(canonical).collect();
        texts.sort();
        texts
    };
    let (actual, expected) = (sorted(actual), sorted(expected));
    assert!(!expected.is_empty(), "{name}: the reference is empty");
    assert_eq!(actual.len(), expected.len(), "{name}: number of results");
    for (actual, expected) in actual.iter().zip(&expected) {
        assert_eq!(actual, expected, "{name}");
    }
}

#[test]
fn q0_passes_every_bid_through() {
    let expected = bids()
        .into_iter()
        .map(|bid| {
            json!({
                "timestamp": bid.time, "type": "bid", "date_time": bid.time,
                "auction": bid.auction, "bidder": bid.bidder, "price": bid.price,
                "channel": bid.channel, "url": bid.url,
            })
        })
        .collect();
    check("q0", expected);
}

#[test]
fn q1_converts_every_price() {
    let expected = bids()
        .into_iter()
        .map(|bid| {
            json!({
                "timestamp": bid.time, "type": "bid", "date_time": bid.time,
                "auction": bid.auction, "bidder": bid.bidder,
                "price": bid.price as f64 * 0.908,
            })
        })
        .collect();
    check("q1", expected);
}

#[test]
fn q2_selects_the_bids_on_every_123rd_auction() {
    let mut expected = Vec::new();
    for bid in bids() {
        if bid.auction % 123 == 0 {
            expected.push(json!({
                "timestamp": bid.time, "type": "bid", "auction": bid.auction, "price": bid.price,
            }));
        }
    }
    check("q2", expected);
}

#[test]
fn q5_finds_the_hot_items_of_every_sliding_window_ties_included() {
    const SIZE: i64 = 10_000;
    const SLIDE: i64 = 2_000;
    let bids = bids();
    // Every window [start, start + SIZE) with a bid in it.
    let mut starts = BTreeSet::new();
    for bid in &bids {
        let mut start = bid.time.div_euclid(SLIDE) * SLIDE;
        while start + SIZE > bid.time {
            starts.insert(start);
            start -= SLIDE;
        }
    }
    let mut expected = Vec::new();
    let mut tied_windows = 0;
    for start in starts {
        let end = start + SIZE;
        let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
        for bid in &bids {
            if start <= bid.time && bid.time < end {
                *counts.entry(bid.auction).or_insert(0) += 1;
            }
        }
        let most = counts.values().copied().max().expect("a bid");
        let hot: Vec<i64> = counts
            .iter()
            .filter(|(_, count)| **count == most)
            .map(|(auction, _)| *auction)
            .collect();
        if hot.len() > 1 {
            tied_windows += 1;
        }
        expected.push(json!({
            "key": end, "window_start": end - SLIDE, "window_end": end,
            "auctions": hot, "bids": most, "is_update": false,
        }));
    }
    check("q5", expected);
    // The stream has windows where several auctions tie for the most bids: ties are covered.
    assert!(tied_windows > 0, "no window with a tie");
}

#[test]
fn q7_finds_the_highest_bids_of_every_tumbling_window() {
    const SIZE: i64 = 10_000;
    let bids = bids();
    let starts: BTreeSet<i64> = bids
        .iter()
        .map(|bid| bid.time.div_euclid(SIZE) * SIZE)
        .collect();
    let mut expected = Vec::new();
    for start in starts {
        let in_window: Vec<&Bid> = bids
            .iter()
            .filter(|bid| start <= bid.time && bid.time < start + SIZE)
            .collect();
        let highest = in_window.iter().map(|bid| bid.price).max().expect("a bid");
        let mut winners: Vec<(i64, i64, i64)> = in_window
            .iter()
            .filter(|bid| bid.price == highest)
            .map(|bid| (bid.auction, bid.bidder, bid.time))
            .collect();
        winners.sort();
        winners.dedup();
        let winners: Vec<Json> = winners
            .into_iter()
            .map(|(auction, bidder, time)| {
                json!({"auction": auction, "bidder": bidder, "date_time": time})
            })
            .collect();
        expected.push(json!({
            "window_start": start, "window_end": start + SIZE,
            "price": highest, "bids": winners, "is_update": false,
        }));
    }
    check("q7", expected);
}

#[test]
fn q11_counts_the_bids_of_every_bidders_session() {
    const GAP: i64 = 10_000;
    let bids = bids();
    let bidders: BTreeSet<i64> = bids.iter().map(|bid| bid.bidder).collect();
    let mut expected = Vec::new();
    for bidder in bidders {
        let mut times: Vec<i64> = bids
            .iter()
            .filter(|bid| bid.bidder == bidder)
            .map(|bid| bid.time)
            .collect();
        times.sort();
        // A session is [first, last + GAP); the next bid joins it when it comes before its end.
        let mut session: Option<(i64, i64, i64)> = None;
        for time in times {
            session = match session {
                Some((start, end, count)) if time < end => Some((start, time + GAP, count + 1)),
                other => {
                    if let Some((start, end, count)) = other {
                        expected.push(json!({
                            "key": bidder, "window_start": start, "window_end": end,
                            "bids": count, "is_update": false,
                        }));
                    }
                    Some((time, time + GAP, 1))
                }
            };
        }
        if let Some((start, end, count)) = session {
            expected.push(json!({
                "key": bidder, "window_start": start, "window_end": end,
                "bids": count, "is_update": false,
            }));
        }
    }
    check("q11", expected);
}
