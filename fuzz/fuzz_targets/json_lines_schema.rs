//! The JSON Lines decoder with a schema (its fast path reads only the schema's fields and
//! skips the rest): it must never panic, what it accepts must be JSON (serde_json parses the
//! line), and an accepted event, encoded again, decodes to the same event.
//!
//! The first byte of the input picks one of a few decoder configs; the rest are the lines.
#![no_main]

use std::sync::LazyLock;

use dataflow_event::json::{Decoder, DecoderConfig, Encoder};
use dataflow_event::{Field, FieldType, Schema};
use libfuzzer_sys::fuzz_target;

mod common;

fn schema(fields: &[(&str, FieldType, bool)]) -> Schema {
    Schema::from_fields(fields.iter().map(|&(name, ty, nullable)| Field {
        name: name.to_string(),
        ty,
        nullable,
    }))
    .expect("a valid schema")
}

fn configs() -> Vec<DecoderConfig> {
    use FieldType::*;
    let defaults = DecoderConfig::default();
    vec![
        // configs/pipeline.yaml's clicks.
        DecoderConfig {
            schema: Some(schema(&[
                ("user_id", String, false),
                ("page", String, false),
                ("duration_ms", Int, false),
            ])),
            ..defaults.clone()
        },
        // configs/bench/w1-filter-map.yaml's bids, keyed.
        DecoderConfig {
            key_field: Some("bidder".into()),
            schema: Some(schema(&[
                ("auction", Int, false),
                ("bidder", Int, false),
                ("price", Int, false),
                ("channel", String, false),
            ])),
            ..defaults.clone()
        },
        // Every type, nullable, and a schema field that is also the id.
        DecoderConfig {
            time_field: Some("ts".into()),
            key_field: Some("k".into()),
            schema: Some(schema(&[
                ("b", Bool, true),
                ("i", Int, true),
                ("f", Float, true),
                ("s", String, true),
                ("t", Timestamp, true),
                ("j", Json, true),
                ("id", String, true),
            ])),
            ..defaults.clone()
        },
        // No event time field: events are stamped when processed.
        DecoderConfig {
            time_field: None,
            type_field: None,
            id_field: None,
            key_field: None,
            schema: Some(schema(&[("v", Float, false), ("j", Json, false)])),
        },
    ]
}

static CODECS: LazyLock<Vec<(Decoder, Encoder)>> = LazyLock::new(|| {
    configs()
        .into_iter()
        .map(|config| {
            let decoder = Decoder::new(config.clone());
            let encoder = Encoder::for_decoder(decoder.layout().clone(), &config);
            (decoder, encoder)
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, lines)) = data.split_first() else {
        return;
    };
    let (decoder, encoder) = &CODECS[usize::from(pick) % CODECS.len()];
    common::decode_and_check(decoder, encoder, lines);
});
