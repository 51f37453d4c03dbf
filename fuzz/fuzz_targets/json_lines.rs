//! The JSON Lines decoder without a schema, as the file source runs it with a `format:` of
//! defaults: it must never panic, and what it accepts must be JSON and survive encoding.
#![no_main]

use std::sync::LazyLock;

use dataflow_event::json::{Decoder, DecoderConfig, Encoder};
use libfuzzer_sys::fuzz_target;

mod common;

static CODEC: LazyLock<(Decoder, Encoder)> = LazyLock::new(|| {
    let config = DecoderConfig::default();
    let decoder = Decoder::new(config.clone());
    let encoder = Encoder::for_decoder(decoder.layout().clone(), &config);
    (decoder, encoder)
});

fuzz_target!(|data: &[u8]| {
    let (decoder, encoder) = &*CODEC;
    common::decode_and_check(decoder, encoder, data);
});
