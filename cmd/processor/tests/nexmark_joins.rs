//! The Nexmark join queries (`configs/nexmark/q3.yaml`, `q8.yaml`) run as shipped, their source
//! swapped for a file of Nexmark events written by the test (persons, auctions and bids in the
//! benchmark's 1:3:46, sellers among the persons generated before, disordered within the
//! watermark bound), with `parallelism: 1` and `3`. Each output must equal, as a multiset, a
//! naive reference computed over the whole input with nested loops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One generated event: its kind, time and fields.
#[derive(Clone, Debug)]
struct Generated {
    kind: &'static str,
    time: i64,
    fields: BTreeMap<&'static str, Value>,
}

impl Generated {
    fn int(&self, field: &str) -> i64 {
        self.fields[field].as_i64().expect("an int field")
    }

    fn text(&self, field: &str) -> &str {
        self.fields[field].as_str().expect("a string field")
    }
}

/// `count` Nexmark events in time order (10 ms apart), deterministic from `seed`.
fn generate(count: usize, seed: u64) -> Vec<Generated> {
    let mut state = seed | 1;
    let mut next = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    const STATES: [&str; 6] = ["OR", "ID", "CA", "WA", "NY", "TX"];
    const CITIES: [&str; 4] = ["Portland", "Boise", "Fresno", "Seattle"];
    let mut persons: Vec<i64> = Vec::new();
    let mut auctions: Vec<i64> = Vec::new();
    let mut events = Vec::with_capacity(count);
    for index in 0..count {
        let time = 1_700_000_000_000 + index as i64 * 10;
        let mut fields = BTreeMap::new();
        let kind = match index % 50 {
            0 => {
                let id = 1000 + persons.len() as i64;
                persons.push(id);
                fields.insert("id", json!(id));
                fields.insert("name", json!(format!("person-{id}")));
                fields.insert("email_address", json!(format!("p{id}@example.com")));
                fields.insert("credit_card", json!(format!("4000 {id:04}")));
                fields.insert("city", json!(CITIES[next(4) as usize]));
                fields.insert("state", json!(STATES[next(6) as usize]));
                "person"
            }
            1..=3 if !persons.is_empty() => {
                let id = 1000 + auctions.len() as i64;
                auctions.push(id);
                // Mostly the newest person, else one of the 20 newest.
                let back = if next(4) < 3 { 0 } else { next(20) as usize };
                let seller = persons[persons.len() - 1 - back.min(persons.len() - 1)];
                fields.insert("id", json!(id));
                fields.insert("item_name", json!(format!("item-{id}")));
                fields.insert("description", json!("an item"));
                fields.insert("initial_bid", json!(100 + next(1000) as i64));
                fields.insert("reserve", json!(2000 + next(1000) as i64));
                fields.insert("expires", json!(time + 60_000));
                fields.insert("seller", json!(seller));
                fields.insert("category", json!(10 + next(5) as i64));
                "auction"
            }
            _ if !auctions.is_empty() => {
                fields.insert(
                    "auction",
                    json!(auctions[next(auctions.len() as u64) as usize]),
                );
                fields.insert(
                    "bidder",
                    json!(persons[next(persons.len() as u64) as usize]),
                );
                fields.insert("price", json!(100 + next(10_000) as i64));
                fields.insert("channel", json!("Google"));
                fields.insert("url", json!("https://example.com/item"));
                "bid"
            }
            _ => continue,
        };
        fields.insert("date_time", json!(time));
        events.push(Generated { kind, time, fields });
    }
    events
}

/// Writes `events` as JSON Lines in arrival order: each up to 1.5 s late against the events
/// before it, within the 2 s watermark bound of the queries.
fn write_events(events: &[Generated], path: &Path) {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut arrivals: Vec<(i64, usize)> = events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (event.time + (state % 1500) as i64, index)
        })
        .collect();
    arrivals.sort();
    let mut text = String::new();
    for (_, index) in arrivals {
        let event = &events[index];
        let mut line = serde_json::Map::new();
        line.insert("type".into(), json!(event.kind));
        for (name, value) in &event.fields {
            line.insert((*name).into(), value.clone());
        }
        text.push_str(&Value::Object(line).to_string());
        text.push('\n');
    }
    std::fs::write(path, text).expect("write events");
}

/// Runs the shipped query `name` on the events in `input` with `parallelism` workers; returns
/// its results.
fn run_query(name: &str, input: &Path, parallelism: usize, dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(format!("configs/nexmark/{name}.yaml")))
        .expect("config");
    let sources_at = text.find("sources:\n").expect("a sources section");
    let branches_at = text.find("branches:\n").expect("a branches section");
    let source = format!(
        "sources:
  - name: nexmark
    type: file
    path: {}
    format:
      time_field: date_time
      id_field: null
      schema:
        id: int?
        name: string?
        email_address: string?
        credit_card: string?
        city: string?
        state: string?
        item_name: string?
        description: string?
        initial_bid: int?
        reserve: int?
        date_time: timestamp?
        expires: timestamp?
        seller: int?
        category: int?
        auction: int?
        bidder: int?
        price: int?
        channel: string?
        url: string?
    watermark:
      out_of_orderness: 2s
",
        input.display()
    );
    let output = dir.join(format!("{name}-{parallelism}.jsonl"));
    let mut config = format!("{}{source}{}", &text[..sources_at], &text[branches_at..]);
    config = config
        .replace(
            &format!("path: ../../target/nexmark/out/{name}.jsonl"),
            &format!("path: {}\n    time_format: millis", output.display()),
        )
        .replace(
            &format!("../../target/nexmark/out/{name}-dead-letters.jsonl"),
            &dir.join(format!("{name}-dead-letters.jsonl"))
                .display()
                .to_string(),
        );
    config.push_str(&format!("parallelism: {parallelism}\n"));
    let config_path = dir.join(format!("{name}-{parallelism}.yaml"));
    std::fs::write(&config_path, &config).expect("write config");
    let run = Command::new(env!("CARGO_BIN_EXE_processor"))
        .args(["run", "--no-progress", "--config"])
        .arg(&config_path)
        .output()
        .expect("run processor");
    assert!(
        run.status.success(),
        "{name} with parallelism {parallelism}: {}\n{config}",
        String::from_utf8_lossy(&run.stderr)
    );
    let dead =
        std::fs::read_to_string(dir.join(format!("{name}-dead-letters.jsonl"))).unwrap_or_default();
    assert!(dead.is_empty(), "{name}: dead letters: {dead}");
    std::fs::read_to_string(&output)
        .expect("results")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON result"))
        .collect()
}

/// `rows` as a sorted list of the JSON of the fields `fields`: a multiset.
fn multiset(rows: impl IntoIterator<Item = Value>, fields: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = rows
        .into_iter()
        .map(|row| {
            let picked: Vec<Value> = fields
                .iter()
                .map(|field| row.get(*field).cloned().unwrap_or(Value::Null))
                .collect();
            Value::Array(picked).to_string()
        })
        .collect();
    out.sort();
    out
}

/// q3 by nested loops: every auction of category 10 with its seller, a person of OR, ID or CA
/// who registered at or before the auction's time.
fn naive_q3(events: &[Generated]) -> Vec<Value> {
    let mut rows = Vec::new();
    for auction in events.iter().filter(|e| e.kind == "auction") {
        if auction.int("category") != 10 {
            continue;
        }
        for person in events.iter().filter(|e| e.kind == "person") {
            if person.int("id") == auction.int("seller")
                && ["OR", "ID", "CA"].contains(&person.text("state"))
                && person.time <= auction.time
            {
                rows.push(json!({
                    "name": person.text("name"),
                    "city": person.text("city"),
                    "state": person.text("state"),
                    "id": auction.int("id"),
                }));
            }
        }
    }
    rows
}

/// q8 by nested loops: each person with the number of auctions they sold in the 10 s
/// tumbling window they registered in, when there is one.
fn naive_q8(events: &[Generated]) -> Vec<Value> {
    const SIZE: i64 = 10_000;
    let mut rows = Vec::new();
    for person in events.iter().filter(|e| e.kind == "person") {
        let start = person.time - person.time.rem_euclid(SIZE);
        let auctions = events
            .iter()
            .filter(|e| {
                e.kind == "auction"
                    && e.int("seller") == person.int("id")
                    && e.time - e.time.rem_euclid(SIZE) == start
            })
            .count();
        if auctions > 0 {
            rows.push(json!({
                "key": person.int("id"),
                "window_start": start,
                "window_end": start + SIZE,
                "name": person.text("name"),
                "auctions": auctions,
            }));
        }
    }
    rows
}

fn check(name: &str, naive: fn(&[Generated]) -> Vec<Value>, fields: &[&str], least: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = generate(30_000, 7);
    let input = dir.path().join("nexmark.jsonl");
    write_events(&events, &input);
    let want = multiset(naive(&events), fields);
    assert!(
        want.len() >= least,
        "{name}: the reference has only {} rows",
        want.len()
    );
    for parallelism in [1, 3] {
        let got = multiset(run_query(name, &input, parallelism, dir.path()), fields);
        assert_eq!(
            got.len(),
            want.len(),
            "{name} with parallelism {parallelism}: row counts differ"
        );
        assert_eq!(got, want, "{name} with parallelism {parallelism}");
    }
}

#[test]
fn q3_local_item_suggestion_is_the_nested_loop_join() {
    check("q3", naive_q3, &["name", "city", "state", "id"], 50);
}

#[test]
fn q8_new_users_is_the_nested_loop_window_join() {
    check(
        "q8",
        naive_q8,
        &["key", "window_start", "window_end", "name", "auctions"],
        100,
    );
}
