//! Output JSON is strict JSON that round-trips: a source whose schema names its id field writes
//! every key once, and the id keeps the JSON type it was read with.

mod common;

use std::collections::BTreeMap;
use std::fmt;

use dataflow_pipeline::config;
use dataflow_pipeline::runtime::Pipeline;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

/// A JSON value parsed strictly: an object with a repeated key is an error (serde_json's own
/// `Value` keeps the last of them silently).
#[derive(Debug, PartialEq)]
enum Strict {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Strict>),
    Object(BTreeMap<String, Strict>),
}

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value without repeated keys")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        serde_json::Number::from_f64(v)
            .map(Strict::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict::String(v.to_string()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value()?;
            if entries.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
        }
        Ok(Strict::Object(entries))
    }
}

/// Parses one line strictly, naming the line in the panic of a test that fails.
fn strict(line: &str) -> Result<BTreeMap<String, Strict>, String> {
    match serde_json::from_str::<Strict>(line) {
        Ok(Strict::Object(map)) => Ok(map),
        Ok(other) => Err(format!("not an object: {other:?}")),
        Err(error) => Err(format!("{line}: {error}")),
    }
}

#[test]
fn the_strict_parser_refuses_repeated_keys() {
    assert_eq!(
        strict(r#"{"id":"4","id":4}"#),
        Err(r#"{"id":"4","id":4}: duplicate key `id` at line 1 column 17"#.to_string())
    );
    assert!(strict(r#"{"id":4,"x":{"id":"4"}}"#).is_ok());
}

const INPUT: &[&str] = &[
    r#"{"timestamp":"2024-05-01T12:00:00Z","type":"click","id":4,"user":"u1","n":1}"#,
    r#"{"timestamp":"2024-05-01T12:00:01Z","type":"view","id":-17,"user":"u\"2","n":2}"#,
    r#"{"timestamp":"2024-05-01T12:00:02Z","type":"click","id":9007199254740993,"user":"u3","n":3}"#,
];

fn run(dir: &std::path::Path, schema: &str) -> Vec<String> {
    common::write_lines(dir, "in.jsonl", INPUT);
    let yaml = format!(
        "name: output-json\n\
         sources:\n  - name: in\n    type: file\n    path: in.jsonl\n\
         \x20   format:\n      schema:\n{schema}\
         steps:\n  - filter: 'n > 0'\n\
         sinks:\n  - type: file\n    path: out.jsonl\n\
         dead_letters:\n  type: file\n  path: dead.jsonl\n"
    );
    let plan = config::parse_and_plan(&yaml, dir).expect("valid config");
    common::run(Pipeline::new(plan));
    let dead = std::fs::read_to_string(dir.join("dead.jsonl")).unwrap_or_default();
    assert_eq!(dead, "", "no dead letters");
    std::fs::read_to_string(dir.join("out.jsonl"))
        .expect("output")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The input records as serde_json parses them.
fn inputs() -> Vec<serde_json::Map<String, Json>> {
    INPUT
        .iter()
        .map(|line| match serde_json::from_str(line) {
            Ok(Json::Object(map)) => map,
            other => panic!("bad input {line}: {other:?}"),
        })
        .collect()
}

#[test]
fn a_schema_that_names_the_id_writes_it_once_with_its_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = "        id: int\n        user: string\n        n: int\n";
    let lines = run(dir.path(), schema);
    assert_eq!(lines.len(), INPUT.len());
    for (line, input) in lines.iter().zip(inputs()) {
        let output = strict(line).unwrap_or_else(|error| panic!("{error}"));
        let keys: Vec<&str> = output.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "n", "timestamp", "type", "user"], "{line}");
        // Round trip: every field reads back as it was written, with the same JSON type.
        let reparsed: serde_json::Map<String, Json> =
            serde_json::from_str(line).expect("valid JSON");
        for name in ["id", "n", "user", "type"] {
            assert_eq!(reparsed[name], input[name], "{name} in {line}");
        }
        assert!(reparsed["id"].is_i64(), "{line}");
    }
    assert_eq!(
        lines[0],
        r#"{"timestamp":"2024-05-01T12:00:00.000Z","type":"click","id":4,"user":"u1","n":1}"#
    );
}

#[test]
fn without_the_id_in_the_schema_the_metadata_id_is_written_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lines = run(dir.path(), "        user: string\n        n: int\n");
    assert_eq!(lines.len(), INPUT.len());
    for line in &lines {
        let output = strict(line).unwrap_or_else(|error| panic!("{error}"));
        let keys: Vec<&str> = output.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "n", "timestamp", "type", "user"], "{line}");
    }
    // The event id itself is text (`event.id`), so it reads back as the input's text.
    assert_eq!(
        lines[1],
        r#"{"timestamp":"2024-05-01T12:00:01.000Z","type":"view","id":"-17","user":"u\"2","n":2}"#
    );
}

#[test]
fn metadata_is_written_under_the_sources_own_field_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::write_lines(
        dir.path(),
        "in.jsonl",
        &[
            r#"{"ts":"2024-05-01T12:00:00Z","kind":"click","event_id":4,"n":1}"#,
            r#"{"ts":"2024-05-01T12:00:01Z","kind":"view","event_id":"e-5","n":2}"#,
        ],
    );
    let yaml = "name: names\n\
         sources:\n  - name: in\n    type: file\n    path: in.jsonl\n\
         \x20   format:\n      time_field: ts\n      type_field: kind\n      id_field: event_id\n\
         sinks:\n  - type: file\n    path: out.jsonl\n";
    let plan = config::parse_and_plan(yaml, dir.path()).expect("valid config");
    common::run(Pipeline::new(plan));
    let output = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output");
    let lines: Vec<&str> = output.lines().collect();
    for line in &lines {
        strict(line).unwrap_or_else(|error| panic!("{error}"));
    }
    // Each line decodes back with the source's own settings: the same names, written once.
    assert_eq!(
        lines,
        [
            r#"{"ts":"2024-05-01T12:00:00.000Z","kind":"click","event_id":"4","n":1}"#,
            r#"{"ts":"2024-05-01T12:00:01.000Z","kind":"view","event_id":"e-5","n":2}"#,
        ]
    );
}
