//! The fast path against the serde path: for random configurations and random records (valid,
//! invalid and corrupted), `decode` must equal `decode_slow` exactly, results and errors alike.

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use crate::json::{Decoder, DecoderConfig};
use crate::{Field, FieldType, Payload, Schema, Value};

/// The names records and configurations draw from, so that they meet often.
const NAMES: [&str; 10] = [
    "timestamp",
    "type",
    "id",
    "user",
    "n",
    "score",
    "ts",
    "tags",
    "é",
    "a\"b",
];

const TYPES: [FieldType; 6] = [
    FieldType::Bool,
    FieldType::Int,
    FieldType::Float,
    FieldType::String,
    FieldType::Timestamp,
    FieldType::Json,
];

fn name() -> BoxedStrategy<String> {
    prop_oneof![
        8 => proptest::sample::select(&NAMES[..]).prop_map(String::from),
        1 => "[a-z]{0,3}",
        1 => "\\PC{0,3}",
    ]
    .boxed()
}

fn config() -> BoxedStrategy<DecoderConfig> {
    let field = (
        proptest::sample::select(&NAMES[..]),
        proptest::sample::select(&TYPES[..]),
        any::<bool>(),
    );
    (
        proptest::option::weighted(0.8, proptest::sample::select(&["timestamp", "ts", "n"][..])),
        proptest::option::weighted(0.6, proptest::sample::select(&["type", "user"][..])),
        proptest::option::weighted(0.6, proptest::sample::select(&["id", "n"][..])),
        proptest::option::weighted(
            0.5,
            proptest::sample::select(&["user", "n", "id", "tags", "score"][..]),
        ),
        proptest::option::weighted(0.7, proptest::collection::vec(field, 0..6)),
    )
        .prop_map(|(time, kind, id, key, fields)| {
            let schema = fields.map(|fields| {
                let mut unique: Vec<Field> = Vec::new();
                for (name, ty, nullable) in fields {
                    if !unique.iter().any(|field| field.name == name) {
                        unique.push(Field {
                            name: name.to_string(),
                            ty,
                            nullable,
                        });
                    }
                }
                Schema::from_fields(unique).expect("unique, non-empty names")
            });
            DecoderConfig {
                time_field: time.map(String::from),
                type_field: kind.map(String::from),
                id_field: id.map(String::from),
                key_field: key.map(String::from),
                schema,
            }
        })
        .boxed()
}

fn whitespace() -> BoxedStrategy<String> {
    prop_oneof![
        800 => Just(""),
        200 => Just(" "),
        30 => Just("\t"),
        30 => Just("\n"),
        30 => Just("\r\n  "),
        1 => Just("\x0c"),
        1 => Just("\u{a0}"),
    ]
    .prop_map(String::from)
    .boxed()
}

fn timestamp_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])T[01][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]0[0-9]:[0-5][0-9])",
        1 => "[0-9]{4}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,12})?(Z|z|[+-][0-2][0-9]:[0-6][0-9]|)",
        1 => "-?[0-9]{1,14}",
        1 => " ?[0-9]{10,13} ?",
    ]
    .boxed()
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        24 => "[a-z0-9_ ./:?=-]{0,12}",
        8 => "\\PC{0,6}",
        1 => "[\\x00-\\x7f]{0,6}",
        8 => timestamp_text(),
    ]
    .boxed()
}

/// `text` as a JSON string: mostly written raw (which is invalid JSON when it holds a quote, a
/// backslash or a control character), sometimes escaped as needed, sometimes fully escaped.
fn string_token(text: BoxedStrategy<String>) -> BoxedStrategy<String> {
    (text, 0u8..30)
        .prop_map(|(text, style)| match style {
            0..=26 => format!("\"{text}\""),
            27..=28 => serde_json::to_string(&text).expect("strings serialize"),
            _ => {
                let mut out = String::from("\"");
                for unit in text.encode_utf16() {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
                out.push('"');
                out
            }
        })
        .boxed()
}

fn number_token() -> BoxedStrategy<String> {
    prop_oneof![
        8 => any::<i64>().prop_map(|i| i.to_string()),
        6 => (-100_000i64..100_000).prop_map(|i| i.to_string()),
        2 => any::<u64>().prop_map(|u| u.to_string()),
        1 => "-?[1-9][0-9]{18,45}",
        1 => proptest::sample::select(&[
            "9223372036854775807", "9223372036854775808", "-9223372036854775808",
            "-9223372036854775809", "18446744073709551615", "18446744073709551616",
            "-18446744073709551615", "-18446744073709551616", "9007199254740993.0",
            "9007199254740992.5e0", "0.1", "0.30000000000000004", "1e22", "1e23", "1e-22",
            "1e-23", "123.456e-20", "1e308", "1e309", "-1e400", "1e-400", "0e999", "-0e-999",
            "0.000000000000000000000000001", "2.2250738585072011e-308", "-0", "-0.0", "0",
            "-0E0", "1E+2", "1e-0", "0.0e1", "4.9406564584124654e-324",
        ][..]).prop_map(String::from),
        4 => any::<f64>().prop_map(|f| format!("{f}")),
        4 => any::<f64>().prop_map(|f| format!("{f:e}")),
        2 => any::<f64>().prop_map(|f| ryu::Buffer::new().format(f).to_string()),
        4 => "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?",
        6 => "-?(0|[1-9][0-9]{0,6})\\.[0-9]{1,8}",
        2 => "-?[1-9][0-9]{0,15}(\\.[0-9]{1,6})?[eE][+-]?(1[0-9]|2[0-9]|30[0-9])",
        1 => prop_oneof![
            "-?0[0-9]{1,3}", "[0-9]{1,3}\\.", "\\.[0-9]{1,3}", "\\+[0-9]{1,3}", "-",
            "[0-9]e", "-?[0-9]{1,3}[eE][+-]?", "0x1f", "1_000", "--1", "-\\.5", "1\\.5\\.2",
        ],
    ]
    .boxed()
}

fn literal_token() -> BoxedStrategy<String> {
    prop_oneof![
        12 => proptest::sample::select(&["true", "false", "null"][..]),
        1 => proptest::sample::select(
            &[
                "tru", "nul", "fals", "True", "NULL", "NaN", "Infinity", "-Infinity", "truex",
                "nulll", "undefined",
            ][..],
        ),
    ]
    .prop_map(String::from)
    .boxed()
}

fn nested_token() -> BoxedStrategy<String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "[]",
                "[1,\"a\",null]",
                "{}",
                "{\"a\":1}",
                "{\"a\":[1,{\"b\":\"c\\n\"}]}",
                "[1,]",
                "{\"a\"}",
                "[[[]]]",
                "{\"timestamp\":1}",
                "[",
                "{",
                "]",
                "}",
            ][..]
        )
        .prop_map(String::from),
        proptest::sample::select(
            &[
                "[\"a\\\"b\\u00e9\\ud83d\\ude00\\/\\t\"]",
                "{\"\\u0041\\n\":[\"\\\\\"]}",
                "[\"\\ud800\"]",
                "[\"\\udc00\"]",
                "[\"\\ud800\\u0041\"]",
                "[\"\\x\"]",
                "[\"\\u12g4\"]",
                "[\"tab\tinside\"]",
                "[1e400]",
                "[1e308, -1e-400, 0.5e3]",
                "[1 2]",
                "{\"a\":1,}",
                "[}",
                "{\"a\":[}",
                "[tru]",
                "[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]",
            ][..]
        )
        .prop_map(String::from),
        (124usize..130, any::<bool>()).prop_map(|(depth, objects)| {
            let (open, close) = if objects {
                ("{\"k\":", "}")
            } else {
                ("[", "]")
            };
            format!("{}null{}", open.repeat(depth), close.repeat(depth))
        }),
        (scalar_token(), whitespace()).prop_map(|(value, ws)| format!("[{ws}{value}{ws}]")),
        (scalar_token(), whitespace())
            .prop_map(|(value, ws)| format!("{{{ws}\"k\"{ws}:{value}{ws}}}")),
    ]
    .boxed()
}

fn scalar_token() -> BoxedStrategy<String> {
    prop_oneof![
        4 => string_token(text()),
        4 => number_token(),
        2 => literal_token(),
    ]
    .boxed()
}

fn any_token() -> BoxedStrategy<String> {
    prop_oneof![12 => scalar_token(), 1 => nested_token()].boxed()
}

/// What a slot of the configuration wants: the value is of that kind most of the time.
#[derive(Clone, Copy, Debug)]
enum Want {
    Time,
    Text,
    Typed(FieldType, bool),
    Any,
}

fn time_token() -> BoxedStrategy<String> {
    prop_oneof![
        8 => (-100_000_000_000_000i64..4_000_000_000_000).prop_map(|i| i.to_string()),
        12 => string_token(timestamp_text()),
        1 => number_token(),
        1 => any_token(),
    ]
    .boxed()
}

fn wanted_token(want: Want) -> BoxedStrategy<String> {
    let typed = match want {
        Want::Time => return time_token(),
        Want::Text => string_token(text()),
        Want::Any => any_token(),
        Want::Typed(ty, _) => match ty {
            FieldType::Bool => proptest::sample::select(&["true", "false"][..])
                .prop_map(String::from)
                .boxed(),
            FieldType::Int => prop_oneof![
                12 => any::<i64>().prop_map(|i| i.to_string()),
                1 => number_token(),
            ]
            .boxed(),
            FieldType::Float => number_token(),
            FieldType::String => string_token(text()),
            FieldType::Timestamp => time_token(),
            FieldType::Json => any_token(),
        },
    };
    let nullable = matches!(want, Want::Typed(_, true));
    prop_oneof![
        30 => typed,
        if nullable { 6 } else { 0 } => Just("null".to_string()),
        1 => any_token(),
    ]
    .boxed()
}

/// One `"key": value` pair, with the whitespace around its parts.
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    value: String,
    space: [String; 4],
}

fn entry(name: BoxedStrategy<String>, value: BoxedStrategy<String>) -> BoxedStrategy<Entry> {
    (
        string_token(name),
        value,
        [whitespace(), whitespace(), whitespace(), whitespace()],
    )
        .prop_map(|(key, value, space)| Entry { key, value, space })
        .boxed()
}

/// How a rendered line is damaged, if at all.
#[derive(Clone, Debug)]
enum Damage {
    None,
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn damage() -> BoxedStrategy<Damage> {
    let garbage = proptest::collection::vec(
        prop_oneof![
            3 => any::<u8>(),
            1 => proptest::sample::select(&b"{}[],:\"\\ 0-.eE"[..]),
        ],
        1..4,
    );
    prop_oneof![
        70 => Just(Damage::None),
        1 => any::<usize>().prop_map(Damage::Truncate),
        2 => (any::<usize>(), 1u8..=255).prop_map(|(at, bits)| Damage::Flip(at, bits)),
        2 => (any::<usize>(), garbage).prop_map(|(at, bytes)| Damage::Insert(at, bytes)),
        1 => (any::<usize>(), 1usize..4).prop_map(|(at, len)| Damage::Delete(at, len)),
    ]
    .boxed()
}

fn apply(mut line: Vec<u8>, damage: &Damage) -> Vec<u8> {
    let at = |at: usize, len: usize| at % (len + 1);
    match damage {
        Damage::None => {}
        Damage::Truncate(point) => line.truncate(at(*point, line.len())),
        Damage::Flip(point, bits) => {
            if !line.is_empty() {
                let index = point % line.len();
                line[index] ^= bits;
            }
        }
        Damage::Insert(point, bytes) => {
            let index = at(*point, line.len());
            line.splice(index..index, bytes.iter().copied());
        }
        Damage::Delete(point, len) => {
            let start = at(*point, line.len());
            let end = (start + len).min(line.len());
            line.drain(start..end);
        }
    }
    line
}

/// A record for `config`: its slots, each present most of the time with a value of the wanted
/// kind most of the time, plus other fields (which may repeat a slot), in random order.
fn record(config: &DecoderConfig) -> BoxedStrategy<Vec<u8>> {
    // One entry a slot (the first of its roles here), so that most records are valid.
    let mut wants: Vec<(String, Want)> = Vec::new();
    let mut want = |name: &str, want: Want| {
        if !wants.iter().any(|(slot, _)| slot == name) {
            wants.push((name.to_string(), want));
        }
    };
    if let Some(schema) = &config.schema {
        for field in schema.fields() {
            want(&field.name, Want::Typed(field.ty, field.nullable));
        }
    }
    for (name, role) in [
        (&config.time_field, Want::Time),
        (&config.type_field, Want::Text),
        (&config.id_field, Want::Text),
        (&config.key_field, Want::Any),
    ] {
        if let Some(name) = name {
            want(name, role);
        }
    }
    let slots: Vec<BoxedStrategy<Option<Entry>>> = wants
        .into_iter()
        .map(|(name, want)| {
            proptest::option::weighted(0.97, entry(Just(name).boxed(), wanted_token(want))).boxed()
        })
        .collect();
    let other_name = prop_oneof![
        6 => proptest::sample::select(&["bidder", "channel", "url", "price", "x"][..])
            .prop_map(String::from),
        1 => name(),
    ]
    .boxed();
    let others = proptest::collection::vec(entry(other_name, any_token()), 0..5);
    let shape = prop_oneof![
        30 => Just(None),
        1 => proptest::sample::select(
            &["[1,2]", "null", "\"x\"", "", "   ", "1", "{}", " {} ", "{,}", "\u{feff}{}"][..]
        )
        .prop_map(Some),
    ];
    (
        slots,
        others,
        whitespace(),
        whitespace(),
        prop_oneof![
            40 => proptest::sample::select(&["", " ", "\r", "\t\n"][..]),
            1 => proptest::sample::select(&["x", ",", "}", "{}", "\u{0}"][..]),
        ],
        shape,
        damage(),
    )
        .prop_flat_map(|(slots, others, before, after, trailer, shape, damage)| {
            let entries: Vec<Entry> = slots.into_iter().flatten().chain(others).collect();
            (
                Just(entries).prop_shuffle(),
                Just((before, after, trailer, shape, damage)),
            )
        })
        .prop_map(|(entries, (before, after, trailer, shape, damage))| {
            let line = match shape {
                Some(other) => other.to_string(),
                None => {
                    let mut line = format!("{before}{{");
                    for (index, entry) in entries.iter().enumerate() {
                        if index > 0 {
                            line.push(',');
                        }
                        let [a, b, c, d] = &entry.space;
                        line.push_str(&format!("{a}{}{b}:{c}{}{d}", entry.key, entry.value));
                    }
                    if entries.is_empty() {
                        line.push_str(&after);
                    }
                    line.push('}');
                    line.push_str(&after);
                    line.push_str(trailer);
                    line
                }
            };
            apply(line.into_bytes(), &damage)
        })
        .boxed()
}

fn case() -> BoxedStrategy<(DecoderConfig, Vec<u8>)> {
    config()
        .prop_flat_map(|config| {
            let record = record(&config);
            (Just(config), record)
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn fast_path_equals_serde_path((config, line) in case(), number in 1u64..1_000_000) {
        let decoder = Decoder::new(config);
        prop_assert_eq!(
            decoder.decode(&line, number),
            decoder.decode_slow(&line, number),
            "{}",
            String::from_utf8_lossy(&line)
        );
    }

    #[test]
    fn arbitrary_bytes_decode_as_serde_decodes_them(
        config in config(),
        line in proptest::collection::vec(
            prop_oneof![
                2 => any::<u8>(),
                3 => proptest::sample::select(&b"{}[]:,\"\\ \t\n0123456789-+.eEtruefalsn"[..]),
            ],
            0..48,
        ),
    ) {
        let decoder = Decoder::new(config);
        prop_assert_eq!(decoder.decode(&line, 1), decoder.decode_slow(&line, 1));
    }
}

/// The random records above exercise the fast path, not only the fallback: a good share of
/// them is decoded by it, with every kind of value.
#[test]
fn random_records_mostly_take_the_fast_path() {
    let mut runner = TestRunner::deterministic();
    let strategy = case();
    let (mut total, mut fast, mut ok, mut fast_ok) = (0, 0, 0, 0);
    let (mut ints, mut floats, mut strings, mut bools, mut nulls) = (0, 0, 0, 0, 0);
    for _ in 0..5000 {
        let (config, line) = strategy
            .new_tree(&mut runner)
            .expect("strategy generates")
            .current();
        let decoder = Decoder::new(config);
        let slow = decoder.decode_slow(&line, 1);
        let quick = decoder.decode_fast(&line, 1);
        total += 1;
        ok += usize::from(slow.is_ok());
        if let Some(event) = &quick {
            fast += 1;
            assert_eq!(
                Ok(event),
                slow.as_ref(),
                "{}",
                String::from_utf8_lossy(&line)
            );
            let values: Vec<&Value> = match &event.payload {
                Payload::Row(values) => values.iter().collect(),
                Payload::Object(map) => map.values().collect(),
            };
            for value in values {
                match value {
                    Value::Int(_) => ints += 1,
                    Value::Float(_) => floats += 1,
                    Value::Str(_) => strings += 1,
                    Value::Bool(_) => bools += 1,
                    Value::Null => nulls += 1,
                    _ => {}
                }
            }
        }
        fast_ok += usize::from(quick.is_some() && slow.is_ok());
    }
    eprintln!(
        "{total} records: {ok} decode, {fast} by the fast path; \
         values {ints} ints, {floats} floats, {strings} strings, {bools} bools, {nulls} nulls"
    );
    assert!(ok * 5 > total, "only {ok} of {total} records decode");
    assert!(
        fast * 2 > ok,
        "the fast path decodes only {fast} of {ok} records"
    );
    assert_eq!(fast, fast_ok);
    for (kind, count) in [
        ("ints", ints),
        ("floats", floats),
        ("strings", strings),
        ("bools", bools),
        ("nulls", nulls),
    ] {
        assert!(count > 100, "only {count} {kind}");
    }
}

#[test]
fn fast_path_reads_typical_records() {
    let schema = Schema::new([("auction", FieldType::Int), ("price", FieldType::Int)])
        .expect("valid schema");
    let decoder = Decoder::new(DecoderConfig {
        schema: Some(schema),
        key_field: Some("auction".into()),
        ..DecoderConfig::default()
    });
    let line = br#"{"timestamp":"2023-12-31T23:59:58.649Z","type":"bid","id":"bids-0","auction":1139,"bidder":4922,"price":2721,"channel":"web","url":"https://shop.example/item/1139?ref=78"}"#;
    let event = decoder
        .decode_fast(line, 1)
        .expect("the fast path reads it");
    assert_eq!(Ok(&event), decoder.decode_slow(line, 1).as_ref());
    assert_eq!(event.event_time, 1_704_067_198_649);
    assert_eq!(
        event.payload,
        Payload::Row(vec![Value::Int(1139), Value::Int(2721)])
    );

    let generic = Decoder::new(DecoderConfig::default());
    let line = br#" { "timestamp" : 1 , "a":-0, "b":1.5e3, "c":18446744073709551615, "d":-9223372036854775808, "e":0.30000000000000004, "f":"\u00e9", "g":[1] }"#;
    assert_eq!(
        generic.decode_fast(line, 1),
        None,
        "escapes and lists fall back"
    );
    let line = br#" { "timestamp" : 1 , "a":-0, "b":1.5e3, "c":18446744073709551615, "d":-9223372036854775808, "e":0.30000000000000004, "f":"\u00e9" } "#;
    let line = String::from_utf8_lossy(line).replace("\\u00e9", "é");
    let event = generic
        .decode_fast(line.as_bytes(), 1)
        .expect("the fast path reads it");
    assert_eq!(Ok(&event), generic.decode_slow(line.as_bytes(), 1).as_ref());
    let object = event.payload.as_object().expect("an object");
    assert_eq!(object["a"], Value::Float(-0.0));
    assert_eq!(object["b"], Value::Float(1500.0));
    assert_eq!(object["c"], Value::Float(18446744073709551615.0));
    assert_eq!(object["d"], Value::Int(i64::MIN));
    assert_eq!(object["f"], Value::str("é"));
}

#[test]
fn invalid_records_fall_back_and_keep_their_errors() {
    let decoder = Decoder::new(DecoderConfig::default());
    for line in [
        &br#"{"timestamp":1,"a":01}"#[..],
        br#"{"timestamp":1,"a":1.}"#,
        br#"{"timestamp":1,"a":+1}"#,
        br#"{"timestamp":1,"a":1e400}"#,
        br#"{"timestamp":1,"a":"x"} x"#,
        br#"{"timestamp":1,"a":"tab	inside"}"#,
        br#"{"timestamp":1,}"#,
        br#"{"timestamp":"soon"}"#,
        br#"{"a":1}"#,
        b"{\"timestamp\":1,\"a\":\"\xff\"}",
        b"",
    ] {
        assert_eq!(decoder.decode_fast(line, 2), None);
        assert!(decoder.decode(line, 2).is_err());
    }
}

/// With a schema, the fast path skips fields it does not read, nested or escaped ones too, and
/// gives up (for the serde path to refuse) on whatever serde_json refuses in them.
#[test]
fn fast_path_skips_and_checks_fields_it_does_not_read() {
    let schema = Schema::new([("n", FieldType::Int)]).expect("valid schema");
    let decoder = Decoder::new(DecoderConfig {
        schema: Some(schema),
        ..DecoderConfig::default()
    });
    let record = |skipped: &str| format!(r#"{{"timestamp":1,"x":{skipped},"n":2}}"#);
    let deep = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    for skipped in [
        "[]".to_string(),
        "{}".to_string(),
        r#" [ 1 , { "a\"b" : [ null , true , false , -0.5e-3 , "\u00e9" ] } , "" ] "#.to_string(),
        r#""\u00e9\n\"\\\/\b\f\r\t""#.to_string(),
        "1e22".to_string(),
        "-1.5e-400".to_string(),
        // The record and 126 levels inside it: as deep as serde_json reads.
        deep(126),
    ] {
        let line = record(&skipped);
        let event = decoder
            .decode_fast(line.as_bytes(), 1)
            .unwrap_or_else(|| panic!("the fast path skips {skipped}"));
        assert_eq!(Ok(&event), decoder.decode_slow(line.as_bytes(), 1).as_ref());
        assert_eq!(event.payload, Payload::Row(vec![Value::Int(2)]));
    }
    for skipped in [
        deep(127),
        deep(100_000),
        r#""\ud800""#.to_string(),
        r#""\ud83d\ude00""#.to_string(),
        r#""\x""#.to_string(),
        r#"["\u12g4"]"#.to_string(),
        "[\"\u{1}\"]".to_string(),
        "1e400".to_string(),
        "[1e400]".to_string(),
        // Valid, but beyond what the fast path is sure of: the serde path reads it.
        "1e308".to_string(),
        "12345678901234567890123".to_string(),
        "123456789012345678901234567890e300".to_string(),
        "[1,]".to_string(),
        "{\"a\"}".to_string(),
        "[}".to_string(),
        "[".to_string(),
    ] {
        let line = record(&skipped);
        assert_eq!(decoder.decode_fast(line.as_bytes(), 1), None, "{skipped}");
        let valid = serde_json::from_str::<serde_json::Value>(&line).is_ok();
        assert_eq!(
            decoder.decode(line.as_bytes(), 1).is_ok(),
            valid,
            "{skipped}"
        );
    }
    let line = [
        &br#"{"timestamp":1,"x":["\u00e9",""#[..],
        b"\xff",
        br#""],"n":2}"#,
    ]
    .concat();
    assert_eq!(decoder.decode_fast(&line, 1), None);
    assert!(decoder.decode(&line, 1).is_err());
}
