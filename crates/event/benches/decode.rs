//! Times `Decoder::decode` on bid-like records (the W2 benchmark's input), with and without a
//! schema: `cargo bench -p dataflow-event --bench decode`.
//! It allocates with mimalloc, as the processor does.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use dataflow_event::json::{Decoder, DecoderConfig};
use dataflow_event::{FieldType, Schema};

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

fn decode(c: &mut Criterion) {
    let lines = bids(2_000);
    let schema = Schema::new([("auction", FieldType::Int), ("price", FieldType::Int)])
        .expect("valid schema");
    let typed = Decoder::new(DecoderConfig {
        schema: Some(schema),
        ..DecoderConfig::default()
    });
    let generic = Decoder::new(DecoderConfig::default());
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(lines.len() as u64));
    for (name, decoder) in [
        ("bids_with_schema", &typed),
        ("bids_without_schema", &generic),
    ] {
        group.bench_function(name, |bench| {
            bench.iter(|| {
                for (number, line) in lines.iter().enumerate() {
                    let event = decoder.decode(line.as_bytes(), number as u64 + 1);
                    black_box(event.is_ok());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
