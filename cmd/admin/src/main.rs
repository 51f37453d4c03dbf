//! `admin`: lists, inspects, verifies and compares checkpoints.
//!
//! It talks to a running processor's API (`--url`, `--token`), or reads a checkpoint directory
//! offline (`--dir`), which works with no processor running — for a deployment that is down.
//! Both give the same output. Only arguments, output and exit codes live here; the API client is
//! `dataflow-api`'s, reading and checking checkpoints `dataflow-checkpoint`'s.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};
use dataflow_api::client::Client;
use dataflow_api::CheckpointSummary;
use dataflow_checkpoint::{CheckpointId, CheckpointStorage, LocalStorage, Manifest};

#[derive(Debug, Parser)]
#[command(
    name = "admin",
    version,
    about = "Inspects and verifies dataflow checkpoints"
)]
struct Cli {
    /// Read this checkpoint directory directly, with no processor running.
    #[arg(long, global = true, env = "DATAFLOW_CHECKPOINT_DIR")]
    dir: Option<PathBuf>,
    /// The processor's API, e.g. `http://127.0.0.1:8080`.
    #[arg(long, global = true, env = "DATAFLOW_URL")]
    url: Option<String>,
    /// The API's bearer token.
    #[arg(long, global = true, env = "DATAFLOW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checkpoints.
    #[command(subcommand)]
    Checkpoints(Checkpoints),
}

#[derive(Debug, Subcommand)]
enum Checkpoints {
    /// Every complete checkpoint, oldest first, with whether it verifies.
    List,
    /// One checkpoint's manifest, after verifying it.
    Show {
        /// The checkpoint id.
        id: String,
    },
    /// Recomputes a checkpoint's checksum and decodes it; fails if anything is wrong.
    Verify {
        /// The checkpoint id.
        id: String,
    },
    /// What changed between two checkpoints.
    Diff {
        /// The older checkpoint id.
        from: String,
        /// The newer checkpoint id.
        to: String,
    },
}

/// Where checkpoints are read: a processor's API, or a directory.
enum Checkpointed {
    Api(Client),
    Dir(LocalStorage),
}

impl Checkpointed {
    fn list(&self) -> anyhow::Result<Vec<CheckpointSummary>> {
        match self {
            Checkpointed::Api(client) => Ok(client.checkpoints()?),
            Checkpointed::Dir(storage) => Ok(CheckpointSummary::list(storage)?),
        }
    }

    /// The manifest of checkpoint `id`, verified.
    fn manifest(&self, id: &str) -> anyhow::Result<Manifest> {
        match self {
            Checkpointed::Api(client) => Ok(client.checkpoint(id)?),
            Checkpointed::Dir(storage) => Ok(storage.verify(id.parse::<CheckpointId>()?)?),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let source = match (cli.url, cli.dir) {
        (Some(url), _) => Checkpointed::Api(Client::new(&url, cli.token)?),
        // Reading only: nothing in the directory is created, cleaned up or deleted, so this is
        // safe beside a running processor.
        (None, Some(dir)) => Checkpointed::Dir(LocalStorage::open_for_reading(&dir)?),
        (None, None) => {
            bail!("say where the checkpoints are: --url URL (a running processor) or --dir PATH")
        }
    };
    let Command::Checkpoints(command) = cli.command;
    match command {
        Checkpoints::List => {
            let rows = source.list()?;
            match cli.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Table => {
                    println!("{:>20}  {:<24}  {:>12}  STATUS", "ID", "CREATED", "BYTES");
                    for row in &rows {
                        println!(
                            "{:>20}  {:<24}  {:>12}  {}",
                            row.id,
                            row.created_at.as_deref().unwrap_or("-"),
                            row.bytes
                                .map(|b| b.to_string())
                                .unwrap_or_else(|| "-".into()),
                            row.status
                        );
                    }
                }
            }
        }
        Checkpoints::Show { id } => {
            let manifest = source.manifest(&id)?;
            match cli.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&manifest)?),
                Output::Table => print_manifest(&manifest),
            }
        }
        Checkpoints::Verify { id } => {
            let manifest = source.manifest(&id)?;
            match cli.output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"id": manifest.id.0, "verified": true, "sha256": manifest.payload_sha256})
                ),
                Output::Table => println!(
                    "checkpoint {}: ok (sha256 {})",
                    manifest.id, manifest.payload_sha256
                ),
            }
        }
        Checkpoints::Diff { from, to } => {
            let diff = source.manifest(&from)?.diff(&source.manifest(&to)?);
            match cli.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&diff)?),
                Output::Table => {
                    println!("checkpoint {} -> {}", diff.from, diff.to);
                    if !diff.same_pipeline {
                        println!("  (taken by pipelines of different shapes)");
                    }
                    println!("  watermark: {} -> {}", diff.watermark.0, diff.watermark.1);
                    for op in &diff.operators {
                        println!(
                            "  operator {}: keys {} -> {}, bytes {} -> {}",
                            op.name,
                            show(op.key_count.0),
                            show(op.key_count.1),
                            show(op.bytes.0),
                            show(op.bytes.1)
                        );
                    }
                    for partition in &diff.partitions {
                        println!(
                            "  source {} partition {}: offset {} -> {}, watermark {} -> {}",
                            partition.source,
                            partition.partition,
                            show(partition.offset.0),
                            show(partition.offset.1),
                            show(partition.watermark.0),
                            show(partition.watermark.1)
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show<T: ToString>(value: Option<T>) -> String {
    value
        .map(|v| v.to_string())
        .unwrap_or_else(|| "absent".into())
}

fn print_manifest(manifest: &Manifest) {
    println!("checkpoint {}", manifest.id);
    println!("  created:     {}", manifest.created_at);
    println!("  fingerprint: {}", manifest.pipeline_fingerprint);
    println!("  watermark:   {}", manifest.watermark);
    println!(
        "  data file:   {} bytes, sha256 {}",
        manifest.data_file_size, manifest.payload_sha256
    );
    for op in &manifest.operators {
        println!(
            "  operator {} ({}): {} keys, {} bytes",
            op.name, op.kind, op.key_count, op.bytes
        );
    }
    for source in &manifest.sources {
        for partition in &source.partitions {
            println!(
                "  source {} partition {}: offset {}, line {}, watermark {}",
                source.name, partition.name, partition.offset, partition.line, partition.watermark
            );
        }
    }
}
