//! Nexmark events written by the join tests (`nexmark_joins.rs`, `join_crash.rs`): persons,
//! auctions and bids in the benchmark's 1:3:46, sellers among the persons generated before,
//! disordered within the queries' 2 s watermark bound; and a shipped query's config with its
//! source swapped for a file of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One generated event: its kind, time and fields.
#[derive(Clone, Debug)]
pub struct Generated {
    pub kind: &'static str,
    pub time: i64,
    pub fields: BTreeMap<&'static str, Value>,
}

impl Generated {
    pub fn int(&self, field: &str) -> i64 {
        self.fields[field].as_i64().expect("an int field")
    }

    pub fn text(&self, field: &str) -> &str {
        self.fields[field].as_str().expect("a string field")
    }
}

/// `count` Nexmark events in time order (10 ms apart), deterministic from `seed`.
pub fn generate(count: usize, seed: u64) -> Vec<Generated> {
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
                // One of the 20 newest auctions, mostly open ones.
                let back = next(20.min(auctions.len() as u64)) as usize;
                fields.insert("auction", json!(auctions[auctions.len() - 1 - back]));
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
pub fn write_events(events: &[Generated], path: &Path) {
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

/// The shipped query `name` (`configs/nexmark/NAME.yaml`) reading the events in `input`, its
/// results going to `sink` (a YAML sink list entry, `  - ...`), its dead letters to
/// `dead_letters`, with `extra` (top-level keys) appended.
pub fn query_config(
    name: &str,
    input: &Path,
    sink: &str,
    dead_letters: &Path,
    extra: &str,
) -> String {
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
    let shipped_sink = format!("  - type: file\n    path: ../../target/nexmark/out/{name}.jsonl\n");
    assert!(text.contains(&shipped_sink), "the sink of {name} changed");
    let mut config = format!("{}{source}{}", &text[..sources_at], &text[branches_at..]);
    config = config.replace(&shipped_sink, sink).replace(
        &format!("../../target/nexmark/out/{name}-dead-letters.jsonl"),
        &dead_letters.display().to_string(),
    );
    config.push_str(extra);
    config
}
