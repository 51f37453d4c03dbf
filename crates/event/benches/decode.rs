//! Times `Decoder::decode` on bid-like records (the W2 benchmark's input), with std only:
//! `cargo bench -p dataflow-event --bench decode`. Prints nanoseconds a record, best of five.
//! It allocates with mimalloc, as the processor does.

use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use dataflow_event::json::{Decoder, DecoderConfig};
use dataflow_event::{FieldType, Schema};

/// Records decoded a round: 2,000 distinct lines over and over, so that they are in cache, as
/// a source's freshly read buffer is.
const RECORDS: usize = 400_000;

fn bids(count: u64) -> Vec<String> {
    (0..count)
        .map(|i| {
            format!(
                concat!(
                    r#"{{"timestamp":"2023-12-31T23:{:02}:{:02}.{:03}Z","type":"bid","id":"bids-{}","#,
                    r#""auction":{},"bidder":{},"price":{},"channel":"web","#,
                    r#""url":"https://shop.example/item/{}?ref={}"}}"#
                ),
                i / 60 % 60,
                i % 60,
                i * 7 % 1000,
                i,
                1000 + i * 13 % 1000,
                i * 31 % 10_000,
                i * 17 % 5000,
                1000 + i * 13 % 1000,
                i % 1000
            )
        })
        .collect()
}

fn time(name: &str, decoder: &Decoder, lines: &[String]) {
    // `DECODE_BENCH=schema` (say) times only the cases whose name has that word.
    if let Ok(only) = std::env::var("DECODE_BENCH") {
        if !name.contains(&only) {
            return;
        }
    }
    let mut best = f64::MAX;
    let mut check = 0i64;
    for _ in 0..5 {
        let start = Instant::now();
        for (number, line) in lines.iter().cycle().take(RECORDS).enumerate() {
            let event = decoder
                .decode(line.as_bytes(), number as u64 + 1)
                .expect("valid record");
            check = check.wrapping_add(event.event_time);
        }
        best = best.min(start.elapsed().as_nanos() as f64 / RECORDS as f64);
    }
    println!("{name}: {best:.0} ns/record (check {check})");
}

fn main() {
    let lines = bids(2_000);
    let schema = Schema::new([("auction", FieldType::Int), ("price", FieldType::Int)])
        .expect("valid schema");
    let typed = Decoder::new(DecoderConfig {
        schema: Some(schema),
        ..DecoderConfig::default()
    });
    time(
        "bids, with schema {auction: int, price: int}",
        &typed,
        &lines,
    );
    let generic = Decoder::new(DecoderConfig::default());
    time("bids, without schema", &generic, &lines);
}
