//! Regression tests for what the fuzz targets of `fuzz/` found in the JSON Lines decoder (see
//! docs/fuzzing.md). Each input is a file under `tests/data/`, minimized from the fuzzer's.

use std::path::PathBuf;

use dataflow_event::json::{split_lines, Decoder, DecoderConfig, Encoder};
use dataflow_event::{FieldType, Schema, Value};

fn data(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Found by `json_lines`: a number is not decoded to the float nearest to it (serde_json's
/// default float parsing is not correctly rounded), so a decoded float, encoded again (by ryu,
/// the shortest text that reads back exactly), decodes to another float: every pass through a
/// pipeline may change the value by one unit in the last place.
#[test]
fn floats_decode_to_the_nearest_double_and_survive_a_round_trip() {
    let config = DecoderConfig::default();
    let decoder = Decoder::new(config.clone());
    let encoder = Encoder::for_decoder(decoder.layout().clone(), &config);
    let input = data("fuzz-float-not-correctly-rounded.jsonl");
    let mut checked = 0;
    for (index, line) in split_lines(&input).filter(|l| !l.is_empty()).enumerate() {
        let text = std::str::from_utf8(line).expect("UTF-8");
        let number = text.rsplit(':').next().unwrap().trim_end_matches('}');
        let nearest: f64 = number.parse().expect("a number");
        let event = decoder
            .decode(line, index as u64 + 1)
            .expect("a valid record");
        let decoded = event.payload.as_object().expect("an object")["ds"].clone();
        assert_eq!(
            decoded,
            Value::Float(nearest),
            "line {}: {number}",
            index + 1
        );
        let mut out = Vec::new();
        encoder.encode(&event, &mut out);
        let again = decoder
            .decode(out.strip_suffix(b"\n").unwrap(), 1)
            .expect("re-encoded");
        assert_eq!(again, event, "line {}: re-encoded", index + 1);
        checked += 1;
    }
    assert_eq!(checked, 2);
}

/// Found by `json_lines_schema`: with a schema, a field the schema does not read is skipped
/// without checking that it is JSON, so invalid UTF-8 in it passes (issue 10, item 9).
#[test]
fn invalid_utf8_in_a_skipped_field_is_refused() {
    let schema = Schema::new([("user_id", FieldType::String)]).expect("schema");
    let decoder = Decoder::new(DecoderConfig {
        schema: Some(schema),
        ..DecoderConfig::default()
    });
    let input = data("fuzz-invalid-utf8-in-skipped-field.jsonl");
    let lines: Vec<&[u8]> = split_lines(&input).filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2);
    for (index, line) in lines.into_iter().enumerate() {
        assert!(serde_json::from_slice::<serde_json::Value>(line).is_err());
        let decoded = decoder.decode(line, index as u64 + 1);
        assert!(
            decoded.is_err(),
            "line {}: accepted {:?}",
            index + 1,
            String::from_utf8_lossy(line)
        );
    }
}

/// Found by `json_lines`: an event time beyond year 9999 (epoch milliseconds
/// `770000000000000`, year 26370) was encoded as `"+26370-05-01T00:53:20.000Z"`, which is not
/// RFC 3339 and which the decoder refuses. Such times are now written as epoch milliseconds.
#[test]
fn times_beyond_four_digit_years_are_written_so_that_they_read_back() {
    let config = DecoderConfig::default();
    let decoder = Decoder::new(config.clone());
    let encoder = Encoder::for_decoder(decoder.layout().clone(), &config);
    let input = data("fuzz-time-beyond-four-digit-years.jsonl");
    let mut checked = 0;
    for (index, line) in split_lines(&input).filter(|l| !l.is_empty()).enumerate() {
        let event = decoder
            .decode(line, index as u64 + 1)
            .expect("a valid record");
        let mut out = Vec::new();
        encoder.encode(&event, &mut out);
        let again = decoder
            .decode(out.strip_suffix(b"\n").unwrap(), 1)
            .unwrap_or_else(|e| panic!("line {}: re-encoded is refused: {e}", index + 1));
        assert_eq!(again.event_time, event.event_time, "line {}", index + 1);
        checked += 1;
    }
    assert_eq!(checked, 3);
}
