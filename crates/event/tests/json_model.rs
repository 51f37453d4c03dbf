//! The JSON Lines decoder against serde_json as the model of what JSON is: with or without a
//! schema, a line decodes only if serde_json reads it as a JSON object (nesting within its
//! recursion limit), whatever fields the schema skips; and where both decoders accept a line,
//! the schema's row holds what the schemaless object holds. Plus the exact cases of issue 10,
//! item 9 (invalid UTF-8 and deep nesting in skipped fields, fractional epoch times).

use proptest::prelude::*;

use dataflow_event::json::{Decoder, DecoderConfig, MAX_NESTING};
use dataflow_event::{EventError, Field, FieldType, Payload, Schema, Value};

fn field(name: &str, ty: FieldType, nullable: bool) -> Field {
    Field {
        name: name.into(),
        ty,
        nullable,
    }
}

/// The schema the tests read: a field of every type, the last three nullable.
fn schema() -> Schema {
    Schema::from_fields([
        field("user", FieldType::String, false),
        field("n", FieldType::Int, false),
        field("ok", FieldType::Bool, true),
        field("score", FieldType::Float, true),
        field("tags", FieldType::Json, true),
        field("at", FieldType::Timestamp, true),
    ])
    .expect("valid schema")
}

fn with_schema() -> Decoder {
    Decoder::new(DecoderConfig {
        schema: Some(schema()),
        key_field: Some("user".into()),
        ..DecoderConfig::default()
    })
}

fn without_schema() -> Decoder {
    Decoder::new(DecoderConfig {
        key_field: Some("user".into()),
        ..DecoderConfig::default()
    })
}

/// Whether serde_json reads `line` as a JSON object.
fn serde_reads_an_object(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|value| value.is_object())
}

fn invalid_json_reason(result: Result<dataflow_event::Event, EventError>) -> String {
    match result {
        Err(EventError::InvalidJson { line, reason }) => format!("line {line}: {reason}"),
        other => panic!("expected invalid JSON, got {other:?}"),
    }
}

/// `depth` lists (or objects, alternately when `mixed`) one inside the other, around `1`.
fn nest(depth: usize, mixed: bool) -> String {
    let mut open = String::new();
    let mut close = String::new();
    for level in 0..depth {
        if mixed && level % 2 == 1 {
            open.push_str("{\"k\":");
            close.insert(0, '}');
        } else {
            open.push('[');
            close.insert(0, ']');
        }
    }
    format!("{open}1{close}")
}

const HEAD: &str = r#"{"timestamp":1700000000000,"user":"u1","n":3"#;

#[test]
fn invalid_utf8_in_a_skipped_field_is_invalid_json() {
    for line in [
        [HEAD.as_bytes(), b",\"x\":\"\xff\"}"].concat(),
        [HEAD.as_bytes(), b",\"x\":[\"ok\",{\"k\":\"\xc3(\"}]}"].concat(),
        [HEAD.as_bytes(), b",\"x\":\"\xed\xa0\x80\"}"].concat(),
        [HEAD.as_bytes(), b",\"\xfe\":1}"].concat(),
        [HEAD.as_bytes(), b",\"x\":{\"\xfe\":1}}"].concat(),
    ] {
        assert!(!serde_reads_an_object(&line));
        for decoder in [with_schema(), without_schema()] {
            let reason = invalid_json_reason(decoder.decode(&line, 7));
            assert!(
                reason.starts_with("line 7: invalid unicode code point at line 1 column"),
                "{reason}"
            );
        }
    }
    let line = [HEAD.as_bytes(), b",\"x\":\"\xff\"}"].concat();
    assert_eq!(
        with_schema().decode(&line, 7),
        Err(EventError::InvalidJson {
            line: 7,
            reason: "invalid unicode code point at line 1 column 51".into()
        })
    );
}

#[test]
fn deep_nesting_in_a_skipped_field_is_refused_naming_the_limit() {
    for mixed in [false, true] {
        let line = format!("{HEAD},\"x\":{}}}", nest(100_000, mixed));
        for decoder in [with_schema(), without_schema()] {
            let reason = invalid_json_reason(decoder.decode(line.as_bytes(), 4));
            assert!(
                reason.starts_with(
                    "line 4: lists and objects nested deeper than 127 levels at line 1 column"
                ),
                "{reason}"
            );
        }
    }
    assert_eq!(MAX_NESTING, 127);
    // The record is the first level: a field may nest 126 more, as serde_json reads them.
    for mixed in [false, true] {
        for depth in [125, 126, 127, 128, 200] {
            let line = format!("{HEAD},\"x\":{}}}", nest(depth, mixed));
            let allowed = depth < MAX_NESTING;
            assert_eq!(serde_reads_an_object(line.as_bytes()), allowed, "{depth}");
            for decoder in [with_schema(), without_schema()] {
                let decoded = decoder.decode(line.as_bytes(), 1);
                assert_eq!(decoded.is_ok(), allowed, "{depth} {mixed}: {decoded:?}");
            }
        }
    }
    let line = format!("{HEAD},\"x\":{}}}", nest(127, false));
    assert_eq!(
        with_schema().decode(line.as_bytes(), 2),
        Err(EventError::InvalidJson {
            line: 2,
            reason: "lists and objects nested deeper than 127 levels at line 1 column 176".into()
        })
    );
}

#[test]
fn other_invalid_json_in_skipped_fields_is_refused() {
    for skipped in [
        "1e400",
        "-1e309",
        "[1e999]",
        "\"\\ud800\"",
        "\"\\udc00x\"",
        "\"\\ud800\\u0041\"",
        "\"\\x\"",
        "\"\\u12g4\"",
        "[1,]",
        "{\"a\"}",
        "{\"a\":1,}",
        "[1 2]",
        "{1:2}",
        "[tru]",
        "[01]",
        "[1.]",
        "[-]",
        "NaN",
        "[\"a\"",
        "{\"a\":[}",
        "[}",
    ] {
        let line = format!("{HEAD},\"x\":{skipped}}}");
        assert!(!serde_reads_an_object(line.as_bytes()), "{skipped}");
        for decoder in [with_schema(), without_schema()] {
            invalid_json_reason(decoder.decode(line.as_bytes(), 1));
        }
    }
    for skipped in [
        "1e308",
        "1e-400",
        "\"\\ud83d\\ude00 \\u00e9\\n\\\"\\\\\\/\\b\\f\\r\\t\"",
        "[]",
        "{}",
        "[ 1 , { \"a\\\"b\" : [ null , true , false , -0.5e-3 ] } , \"\" ]",
    ] {
        let line = format!("{HEAD},\"x\":{skipped}}}");
        assert!(serde_reads_an_object(line.as_bytes()), "{skipped}");
        for decoder in [with_schema(), without_schema()] {
            assert!(decoder.decode(line.as_bytes(), 1).is_ok(), "{skipped}");
        }
    }
}

#[test]
fn an_epoch_time_must_be_a_whole_number_of_milliseconds() {
    // The refused value as the error shows it: the number read.
    let refused = |time: &str, shown: &str| {
        let line = format!(r#"{{"timestamp":{time},"user":"u1","n":3}}"#);
        for decoder in [with_schema(), without_schema()] {
            assert_eq!(
                decoder.decode(line.as_bytes(), 5),
                Err(EventError::InvalidTime {
                    line: 5,
                    field: "timestamp".into(),
                    value: shown.into(),
                }),
                "{time}"
            );
        }
    };
    for (time, shown) in [
        ("0.0125", "0.0125"),
        ("1700000000000.5", "1700000000000.5"),
        ("-0.5", "-0.5"),
        ("1e19", "10000000000000000000"),
        ("-9.3e18", "-9300000000000000000"),
        ("18446744073709551615", "18446744073709552000"),
    ] {
        refused(time, shown);
    }
    let line = br#"{"timestamp":0.0125,"user":"u1","n":3}"#;
    assert_eq!(
        with_schema()
            .decode(line, 5)
            .expect_err("refused")
            .to_string(),
        "line 5: field `timestamp`: invalid timestamp 0.0125: expected RFC 3339 text or epoch milliseconds"
    );
    for (time, millis) in [
        ("1.7e12", 1_700_000_000_000),
        ("1700000000000.0", 1_700_000_000_000),
        ("-1.5e3", -1500),
        ("0", 0),
        ("-9223372036854775808", i64::MIN),
        ("9223372036854775807", i64::MAX),
    ] {
        let line = format!(r#"{{"timestamp":{time},"user":"u1","n":3}}"#);
        for decoder in [with_schema(), without_schema()] {
            let event = decoder.decode(line.as_bytes(), 1).expect("accepted");
            assert_eq!(event.event_time, millis, "{time}");
        }
    }
    // A schema field of type timestamp follows the same rule.
    let line = br#"{"timestamp":1,"user":"u1","n":3,"at":0.0125}"#;
    assert_eq!(
        with_schema().decode(line, 6),
        Err(EventError::FieldType {
            line: 6,
            field: "at".into(),
            expected: "timestamp",
            found: "float 0.0125".into(),
        })
    );
    let line = br#"{"timestamp":1,"user":"u1","n":3,"at":1.7e12}"#;
    let event = with_schema().decode(line, 6).expect("accepted");
    assert_eq!(
        event.payload.as_row().expect("a row")[5],
        Value::Int(1_700_000_000_000)
    );
}

/// Any JSON value, strings with any characters (serialized with their escapes), nested a few
/// levels.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,8}".prop_map(serde_json::Value::String),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec(("\\PC{0,4}", inner), 0..4)
                .prop_map(|entries| serde_json::Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// The text of a value for a field the schema does not read: any JSON value, written compact or
/// pretty, or a nest around the recursion limit.
fn skipped_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => json_value().prop_map(|value| serde_json::to_string(&value).expect("serializes")),
        2 => json_value().prop_map(|value| serde_json::to_string_pretty(&value).expect("serializes")),
        1 => (120usize..132, any::<bool>()).prop_map(|(depth, mixed)| nest(depth, mixed)),
    ]
}

fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0i64..4_000_000_000_000).prop_map(|millis| millis.to_string()),
        2 => Just("\"2024-05-01T12:00:00.250Z\"".to_string()),
        1 => proptest::sample::select(&["0.0125", "1.7e12", "1700000000000.5", "-0.0", "1e30"][..])
            .prop_map(String::from),
    ]
}

/// A record: the schema's fields with values of their types (nullable ones sometimes absent or
/// null), a time, and fields the schema does not read, in random order; then sometimes a few
/// bytes damaged.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let typed = (
        "\\PC{0,6}",
        any::<i64>(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(prop_oneof![
            any::<i32>().prop_map(|i| i.to_string()),
            (-1e6f64..1e6).prop_map(|f| f.to_string()),
        ]),
        proptest::option::of(json_value()),
        proptest::option::of(0i64..4_000_000_000_000),
    );
    let others = proptest::collection::vec(
        (
            prop_oneof![
                proptest::sample::select(&["x", "url", "meta", "é", "a\"b", ""][..])
                    .prop_map(String::from),
                "\\PC{0,4}",
            ],
            skipped_text(),
        ),
        0..4,
    );
    let damage = proptest::collection::vec(
        (
            any::<prop::sample::Index>(),
            0u8..4,
            prop_oneof![
                any::<u8>(),
                proptest::sample::select(&b"\xff\xc3\xed\x80\\\"{}[],:u0\x01"[..]),
            ],
        ),
        0..3,
    );
    (
        typed,
        time_text(),
        others,
        proptest::bool::weighted(0.4),
        damage,
    )
        .prop_flat_map(
            |((user, n, ok, score, tags, at), time, others, damaged, damage)| {
                let mut fields = vec![
                    ("timestamp".to_string(), time),
                    (
                        "user".to_string(),
                        serde_json::to_string(&user).expect("serializes"),
                    ),
                    ("n".to_string(), n.to_string()),
                ];
                if let Some(ok) = ok {
                    fields.push(("ok".into(), ok.to_string()));
                }
                if let Some(score) = score {
                    fields.push(("score".into(), score));
                }
                if let Some(tags) = tags {
                    fields.push((
                        "tags".into(),
                        serde_json::to_string(&tags).expect("serializes"),
                    ));
                }
                if let Some(at) = at {
                    fields.push(("at".into(), at.to_string()));
                }
                for (name, text) in others {
                    fields.push((serde_json::to_string(&name).expect("serializes"), text));
                }
                let fields: Vec<(String, String)> = fields
                    .into_iter()
                    .map(|(name, text)| {
                        let name = if name.starts_with('"') {
                            name
                        } else {
                            format!("\"{name}\"")
                        };
                        (name, text)
                    })
                    .collect();
                (Just(fields).prop_shuffle(), Just((damaged, damage)))
            },
        )
        .prop_map(|(fields, (damaged, damage))| {
            let body: Vec<String> = fields
                .iter()
                .map(|(name, text)| format!("{name}:{text}"))
                .collect();
            let mut line = format!("{{{}}}", body.join(",")).into_bytes();
            if damaged {
                for (at, kind, byte) in damage {
                    let index = at.index(line.len() + 1);
                    match kind {
                        0 => line.insert(index, byte),
                        1 if index < line.len() => line[index] = byte,
                        2 if index < line.len() => {
                            line.remove(index);
                        }
                        _ => line.truncate(index),
                    }
                }
            }
            line
        })
}

/// What the schema's field `ty` holds for the schemaless payload's `value` (absent: null).
fn as_typed(ty: FieldType, value: Option<&Value>) -> Value {
    match (ty, value) {
        (_, None) => Value::Null,
        (FieldType::Float, Some(Value::Int(i))) => Value::Float(*i as f64),
        (FieldType::Timestamp, Some(Value::Str(text))) => {
            dataflow_event::time::parse_text(text).map_or(Value::Null, Value::Int)
        }
        (_, Some(value)) => value.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn decoders_accept_exactly_what_serde_json_reads_as_an_object(line in line()) {
        let text = String::from_utf8_lossy(&line).into_owned();
        let json = serde_reads_an_object(&line);
        let typed = with_schema().decode(&line, 1);
        let generic = without_schema().decode(&line, 1);
        for result in [&typed, &generic] {
            match result {
                Ok(_) => prop_assert!(json, "accepted what serde_json refuses: {}", text),
                Err(EventError::InvalidJson { .. }) => {
                    prop_assert!(!json, "refused as invalid what serde_json reads: {:?} {}", result, text)
                }
                Err(_) => {}
            }
        }
        if let (Ok(typed), Ok(generic)) = (&typed, &generic) {
            prop_assert_eq!(typed.event_time, generic.event_time);
            prop_assert_eq!(&typed.kind, &generic.kind);
            prop_assert_eq!(&typed.id, &generic.id);
            prop_assert_eq!(&typed.key, &generic.key);
            let (Payload::Row(row), Payload::Object(object)) = (&typed.payload, &generic.payload) else {
                panic!("a row and an object");
            };
            let schema = schema();
            for (field, value) in schema.fields().iter().zip(row) {
                prop_assert_eq!(value, &as_typed(field.ty, object.get(&field.name)), "{}", field.name);
            }
        }
    }
}

/// The random lines above meet every case: accepted by both decoders, refused as invalid JSON
/// (damaged, or nested too deep), and refused for their time.
#[test]
fn random_lines_cover_valid_invalid_and_too_deep_records() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = line();
    let (mut both, mut invalid, mut deep, mut time) = (0, 0, 0, 0);
    for _ in 0..2_000 {
        let line = strategy
            .new_tree(&mut runner)
            .expect("strategy generates")
            .current();
        match (
            with_schema().decode(&line, 1),
            without_schema().decode(&line, 1),
        ) {
            (Ok(_), Ok(_)) => both += 1,
            (Err(EventError::InvalidJson { reason, .. }), _) => {
                invalid += 1;
                deep += usize::from(reason.contains("nested deeper than 127 levels"));
            }
            (Err(EventError::InvalidTime { .. }), _) => time += 1,
            _ => {}
        }
    }
    eprintln!("2000 lines: {both} accepted by both, {invalid} invalid JSON ({deep} too deep), {time} invalid times");
    assert!(both > 600, "{both}");
    assert!(invalid > 300, "{invalid}");
    assert!(deep > 20, "{deep}");
    assert!(time > 50, "{time}");
}
