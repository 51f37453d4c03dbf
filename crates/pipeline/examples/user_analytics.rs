//! The user-analytics pipeline of the design, built in Rust rather than YAML: keep `user_click`
//! events, extract the user id, count clicks in 5-minute windows sliding by 1 minute, and emit
//! the total clicks, the number of distinct users and the clicks per user.
//!
//! Run it on the shipped sample with
//! `cargo run --example user_analytics -p dataflow-pipeline`; results go to standard output,
//! malformed lines to `out/example-dead-letters.jsonl`.

use std::path::{Path, PathBuf};

use dataflow_event::{FieldType, Schema};
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::runtime::Pipeline;
use dataflow_pipeline::spec::SinkSpec;

/// Builds the pipeline reading `input`, writing results to `results` and failures to
/// `dead_letters`.
pub fn build(
    input: &Path,
    results: SinkSpec,
    dead_letters: SinkSpec,
) -> dataflow_pipeline::Result<Pipeline> {
    let schema = Schema::new([
        ("user_id", FieldType::String),
        ("page", FieldType::String),
        ("duration_ms", FieldType::Int),
    ])?;
    PipelineBuilder::new("user-analytics")
        .file_source("clicks", input)
        .schema(schema)
        .out_of_orderness_ms(5_000)
        .watermark_every(1)
        .filter("event.type == 'user_click'")
        .map_field("user", "payload.user_id")
        .sliding_ms(5 * 60_000, 60_000)
        .allowed_lateness_ms(60_000)
        .aggregate("total_clicks", "count")
        .aggregate("unique_users", "count_distinct(user)")
        .aggregate("user_clicks", "count_by(user)")
        .sink(results)
        .dead_letters(dead_letters)
        .build()
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let pipeline = build(
        &root.join("data/clicks.jsonl"),
        SinkSpec::stdout(),
        SinkSpec::file(root.join("out/example-dead-letters.jsonl")),
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(pipeline.run())?;
    eprintln!("{summary}");
    Ok(())
}
