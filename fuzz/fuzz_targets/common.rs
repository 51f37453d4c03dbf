//! What the JSON Lines targets share: the lines a file source hands the decoder, and the
//! checks of what the decoder accepts.

use std::sync::LazyLock;

use dataflow_event::json::{split_lines, Decoder, Encoder};

/// `FUZZ_CHECKS=panics` leaves out the differential checks (JSON validity, the round trip), to
/// look for panics past a known differential finding; anything else keeps them.
static DIFFERENTIAL: LazyLock<bool> =
    LazyLock::new(|| std::env::var("FUZZ_CHECKS").map_or(true, |checks| checks != "panics"));

/// The lines of `data` as the file source decodes them: split at `\n`, without a trailing
/// `\r`, blank lines skipped; each with its 1-based number.
pub fn lines(data: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    split_lines(data)
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(index, line)| (index as u64 + 1, line))
}

/// Decodes every line of `data` with `decoder`; for each line it accepts, checks that the line
/// is JSON (serde_json parses it as an object) and that the event, encoded again, decodes to
/// the same event (but for its key, which the encoder does not write).
pub fn decode_and_check(decoder: &Decoder, encoder: &Encoder, data: &[u8]) {
    let mut out = Vec::new();
    for (number, line) in lines(data) {
        let Ok(mut event) = decoder.decode(line, number) else {
            continue;
        };
        if !*DIFFERENTIAL {
            continue;
        }
        // The encoder writes the payload, not the key (a key field outside the schema is
        // not written), so the key is left out of the comparison.
        event.key = None;
        assert_json_object(line);
        out.clear();
        encoder.encode(&event, &mut out);
        let written = out.strip_suffix(b"\n").unwrap_or(&out);
        match decoder.decode(written, number) {
            Ok(mut again) => assert_eq!(
                {
                    again.key = None;
                    again
                },
                event,
                "re-encoded as {:?}",
                String::from_utf8_lossy(written)
            ),
            Err(error) => panic!(
                "an accepted line, encoded again as {:?}, is refused: {error}",
                String::from_utf8_lossy(written)
            ),
        }
    }
}

/// Panics unless serde_json reads `line` as a JSON object. A line nested deeper than
/// serde_json's own recursion limit (128) is left alone: how deep the decoder goes is its call.
pub fn assert_json_object(line: &[u8]) {
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(value) => assert!(
            value.is_object(),
            "the decoder accepted a line that is not an object: {:?}",
            String::from_utf8_lossy(line)
        ),
        Err(error) if error.to_string().starts_with("recursion limit exceeded") => {}
        Err(error) => panic!(
            "the decoder accepted a line serde_json refuses ({error}): {:?}",
            String::from_utf8_lossy(line)
        ),
    }
}
