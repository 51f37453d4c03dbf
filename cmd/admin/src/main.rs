//! `admin`: lists, inspects, verifies, compares, triggers and restores checkpoints, looks up
//! operator state, and shows a running pipeline's status and watermarks.
//!
//! It talks to a running processor's API (`--url`, `--token`), or reads a checkpoint directory
//! offline (`--dir`), which works with no processor running — for a deployment that is down.
//! Both give the same output for what both can do. Only arguments, output and exit codes live here; the API client is
//! `dataflow-api`'s, reading and checking checkpoints `dataflow-checkpoint`'s.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};
use dataflow_api::client::Client;
use dataflow_api::state::{self, CheckpointDiff, KeyPage, KeyState, StateValue};
use dataflow_api::{CheckpointSummary, StateDecoder};
use dataflow_checkpoint::{Checkpoint, CheckpointId, CheckpointStorage, LocalStorage, Manifest};

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
    /// Operator state in a checkpoint.
    #[command(subcommand)]
    State(StateCommand),
    /// The running pipeline's state, counts and last checkpoint (needs --url).
    Status,
    /// Every source's and partition's watermark, and which holds the operators back (needs --url).
    Watermarks,
    /// Per stage, the share of the last interval it was busy, blocked by its output or starved
    /// for input, and the stage most likely holding the pipeline back (needs --url).
    Backpressure,
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// The state of one key.
    Get {
        /// The checkpoint id.
        #[arg(long)]
        checkpoint: String,
        /// The operator, e.g. `steps[2].window`.
        #[arg(long)]
        operator: String,
        /// The key: JSON (`42`, `"u01"`) or, if it does not parse, a plain string.
        #[arg(long)]
        key: String,
    },
    /// A page of the keys.
    Keys {
        /// The checkpoint id.
        #[arg(long)]
        checkpoint: String,
        /// The operator.
        #[arg(long)]
        operator: String,
        /// The first key's position.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// How many keys (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
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
    /// What changed between two checkpoints: per operator keys added, removed and changed;
    /// source positions and watermarks.
    Diff {
        /// The older checkpoint id.
        from: String,
        /// The newer checkpoint id.
        to: String,
    },
    /// Takes a checkpoint now (needs --url); prints its id.
    Trigger {
        /// Wait until it completes (or fails), up to a minute.
        #[arg(long)]
        wait: bool,
    },
    /// Deletes a checkpoint (needs --url).
    Delete {
        /// The checkpoint id.
        id: String,
    },
    /// Restores the running pipeline to a checkpoint (needs --url): it stops, restores the
    /// checkpoint, seeks its sources and resumes.
    Restore {
        /// The checkpoint id.
        id: String,
        /// Only say what would be restored and dropped.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Operator state decoded by `dataflow_operators::kind::decode_state`, as the processor decodes it.
struct Decoder;

impl StateDecoder for Decoder {
    fn decode(&self, kind: &str, state: &[u8]) -> Result<Vec<KeyState>, String> {
        let view = dataflow_operators::kind::decode_state(kind, state)
            .map_err(|error| error.to_string())?;
        Ok(view
            .keys
            .into_iter()
            .map(|k| KeyState {
                key: k.key,
                value: k.value,
            })
            .collect())
    }
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

    fn client(&self, what: &str) -> anyhow::Result<&Client> {
        match self {
            Checkpointed::Api(client) => Ok(client),
            Checkpointed::Dir(_) => bail!("{what} needs a running processor: use --url URL"),
        }
    }

    fn load(storage: &LocalStorage, id: &str) -> anyhow::Result<(Checkpoint, Manifest)> {
        let id = id.parse::<CheckpointId>()?;
        Ok((storage.load(id)?, storage.manifest(id)?))
    }

    fn diff(&self, from: &str, to: &str) -> anyhow::Result<CheckpointDiff> {
        match self {
            Checkpointed::Api(client) => Ok(client.diff(from, to)?),
            Checkpointed::Dir(storage) => {
                let older = Self::load(storage, from)?;
                let newer = Self::load(storage, to)?;
                Ok(state::diff(
                    (&older.0, &older.1),
                    (&newer.0, &newer.1),
                    &Decoder,
                ))
            }
        }
    }

    fn state(
        &self,
        id: &str,
        operator: &str,
        key: &serde_json::Value,
    ) -> anyhow::Result<StateValue> {
        match self {
            Checkpointed::Api(client) => Ok(client.state(id, operator, key)?),
            Checkpointed::Dir(storage) => {
                let (checkpoint, _) = Self::load(storage, id)?;
                Ok(state::lookup(&checkpoint, operator, key, &Decoder)?)
            }
        }
    }

    fn keys(
        &self,
        id: &str,
        operator: &str,
        offset: usize,
        limit: usize,
    ) -> anyhow::Result<KeyPage> {
        match self {
            Checkpointed::Api(client) => Ok(client.keys(id, operator, offset, limit)?),
            Checkpointed::Dir(storage) => {
                let (checkpoint, _) = Self::load(storage, id)?;
                Ok(state::page(&checkpoint, operator, offset, limit, &Decoder)?)
            }
        }
    }
}

/// `println!` that ends the program quietly when the reader of standard output has gone (as in
/// `admin checkpoints list | head`), and with an error for any other write failure.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout(), $($arg)*) {
            stdout_failed(error);
        }
    }};
}

fn stdout_failed(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {error}");
    std::process::exit(1);
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn time(millis: i64) -> String {
    match millis {
        i64::MIN => "none".into(),
        i64::MAX => "end".into(),
        // Event time as people read it; the exact milliseconds are in `--output json`.
        millis => dataflow_event::time::format_rfc3339(millis),
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
    let command = match cli.command {
        Command::Checkpoints(command) => command,
        Command::State(command) => return state_command(&source, command, cli.output),
        Command::Status => {
            let status = source.client("status")?.status()?;
            match cli.output {
                Output::Json => print_json(&status)?,
                Output::Table => {
                    out!("pipeline {}: {}", status.pipeline, status.state);
                    out!("  uptime:          {} ms", status.uptime_ms);
                    out!(
                        "  events:          read {}, emitted {}, late {}, dead-lettered {}",
                        status.events_read,
                        status.events_emitted,
                        status.late_events,
                        status.dead_letters
                    );
                    out!("  watermark:       {}", time(status.watermark));
                    out!("  last checkpoint: {}", show(status.last_checkpoint));
                    out!(
                        "  restored from:   {} ({} restores in place)",
                        show(status.restored_from),
                        status.restores
                    );
                    out!(
                        "  {:<28} {:<10} {:>12} {:>12}",
                        "OPERATOR",
                        "KIND",
                        "IN",
                        "OUT"
                    );
                    for op in &status.operators {
                        out!(
                            "  {:<28} {:<10} {:>12} {:>12}",
                            op.name,
                            op.kind,
                            op.events_in,
                            op.events_out
                        );
                    }
                    if !status.tasks.is_empty() {
                        let owned: Vec<&str> =
                            status.tasks.iter().map(|t| t.partition.as_str()).collect();
                        out!("  owns partitions: {}", owned.join(", "));
                        out!(
                            "  {:<28} {:<10} {:>12} {:>12} {:>10} {:<24}",
                            "TASK",
                            "STATE",
                            "READ",
                            "EMITTED",
                            "CHECKPOINT",
                            "WATERMARK"
                        );
                        for task in &status.tasks {
                            out!(
                                "  {:<28} {:<10} {:>12} {:>12} {:>10} {:<24}",
                                task.partition,
                                task.state,
                                task.events_read,
                                task.events_emitted,
                                show(task.last_checkpoint),
                                time(task.watermark)
                            );
                        }
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Backpressure => {
            let report = source.client("backpressure")?.backpressure()?;
            match cli.output {
                Output::Json => print_json(&report)?,
                Output::Table => {
                    out!(
                        "over the last {:.1} s; held back by {}",
                        report.interval_seconds,
                        report
                            .bottleneck
                            .as_deref()
                            .unwrap_or("none (the input is the limit)")
                    );
                    out!(
                        "{:<28} {:<10} {:>9} {:>6} {:>14} {:>8}",
                        "STAGE",
                        "KIND",
                        "INSTANCES",
                        "BUSY",
                        "BACKPRESSURED",
                        "STARVED"
                    );
                    let percent = |share: f64| format!("{:.0}%", share * 100.0);
                    for stage in &report.stages {
                        out!(
                            "{:<28} {:<10} {:>9} {:>6} {:>14} {:>8}",
                            stage.stage,
                            stage.kind,
                            stage.instances,
                            percent(stage.busy),
                            percent(stage.backpressured),
                            percent(stage.starved)
                        );
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Watermarks => {
            let marks = source.client("watermarks")?.watermarks()?;
            match cli.output {
                Output::Json => print_json(&marks)?,
                Output::Table => {
                    out!(
                        "operators ({}): watermark {}, held back by {}",
                        marks.operators.join(", "),
                        time(marks.watermark),
                        marks.holding_back.as_deref().unwrap_or("none")
                    );
                    out!(
                        "{:<20} {:<28} {:>24} {:>5} {:>6} {:>14}",
                        "SOURCE",
                        "PARTITION",
                        "WATERMARK",
                        "IDLE",
                        "ENDED",
                        "SINCE EVENT MS"
                    );
                    for source in &marks.sources {
                        let since = |last: Option<i64>| {
                            last.map(|l| (marks.now_ms - l).to_string())
                                .unwrap_or_else(|| "-".into())
                        };
                        out!(
                            "{:<20} {:<28} {:>24} {:>5} {:>6} {:>14}",
                            source.name,
                            "*",
                            time(source.watermark),
                            source.idle,
                            source.ended,
                            since(source.last_event_ms)
                        );
                        for p in &source.partitions {
                            out!(
                                "{:<20} {:<28} {:>24} {:>5} {:>6} {:>14}",
                                "",
                                p.name,
                                time(p.watermark),
                                p.idle,
                                "",
                                since(p.last_event_ms)
                            );
                        }
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match command {
        Checkpoints::List => {
            let rows = source.list()?;
            match cli.output {
                Output::Json => out!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Table => {
                    out!(
                        "{:>20}  {:<24}  {:>12}  {:>10}  STATUS",
                        "ID",
                        "CREATED",
                        "BYTES",
                        "DURATION"
                    );
                    for row in &rows {
                        out!(
                            "{:>20}  {:<24}  {:>12}  {:>10}  {}",
                            row.id,
                            row.created_at.as_deref().unwrap_or("-"),
                            row.bytes
                                .map(|b| b.to_string())
                                .unwrap_or_else(|| "-".into()),
                            row.duration_ms
                                .map(|ms| format!("{ms} ms"))
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
                Output::Json => out!("{}", serde_json::to_string_pretty(&manifest)?),
                Output::Table => print_manifest(&manifest),
            }
        }
        Checkpoints::Verify { id } => {
            let manifest = source.manifest(&id)?;
            match cli.output {
                Output::Json => out!(
                    "{}",
                    serde_json::json!({"id": manifest.id.0, "verified": true, "sha256": manifest.payload_sha256})
                ),
                Output::Table => out!(
                    "checkpoint {}: ok (sha256 {})",
                    manifest.id,
                    manifest.payload_sha256
                ),
            }
        }
        Checkpoints::Diff { from, to } => {
            let full = source.diff(&from, &to)?;
            let diff = &full.summary;
            match cli.output {
                Output::Json => print_json(&full)?,
                Output::Table => {
                    out!("checkpoint {} -> {}", diff.from, diff.to);
                    if !diff.same_pipeline {
                        out!("  (taken by pipelines of different shapes)");
                    }
                    out!("  watermark: {} -> {}", diff.watermark.0, diff.watermark.1);
                    for op in &diff.operators {
                        out!(
                            "  operator {}: keys {} -> {}, bytes {} -> {}",
                            op.name,
                            show(op.key_count.0),
                            show(op.key_count.1),
                            show(op.bytes.0),
                            show(op.bytes.1)
                        );
                        if let Some(keys) = full.keys.iter().find(|k| k.operator == op.name) {
                            match &keys.error {
                                Some(error) => out!("    keys not compared: {error}"),
                                None => out!(
                                    "    keys added {}, removed {}, changed {}{}",
                                    keys.added.len(),
                                    keys.removed.len(),
                                    keys.changed.len(),
                                    sample(&keys.added, &keys.removed, &keys.changed)
                                ),
                            }
                        }
                    }
                    for partition in &diff.partitions {
                        out!(
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
        Checkpoints::Trigger { wait } => {
            let client = source.client("trigger")?;
            let triggered = client.trigger()?;
            let id = triggered.id.to_string();
            let mut state = triggered.state;
            if wait {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                loop {
                    state = match client.checkpoint_status(&id) {
                        Ok(progress) => progress.state,
                        // Not stored yet and not known to the pipeline: still on its way.
                        Err(dataflow_api::client::ClientError::Api { status: 404, .. }) => {
                            "pending".into()
                        }
                        Err(error) => return Err(error.into()),
                    };
                    if state != "pending" || std::time::Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                // `removed`: it completed, and retention has already deleted it.
                if state != "completed" && state != "removed" {
                    bail!("checkpoint {id} did not complete: {state}");
                }
            }
            match cli.output {
                Output::Json => out!(
                    "{}",
                    serde_json::json!({"id": triggered.id, "state": state})
                ),
                Output::Table => out!("checkpoint {id}: {state}"),
            }
        }
        Checkpoints::Delete { id } => {
            source.client("delete")?.delete(&id)?;
            match cli.output {
                Output::Json => out!("{}", serde_json::json!({"id": id, "deleted": true})),
                Output::Table => out!("checkpoint {id}: deleted"),
            }
        }
        Checkpoints::Restore { id, dry_run } => {
            let report = source.client("restore")?.restore(&id, dry_run)?;
            match cli.output {
                Output::Json => print_json(&report)?,
                Output::Table => {
                    if report.dry_run {
                        out!(
                            "checkpoint {}: would restore (dry run, nothing changed)",
                            report.checkpoint
                        );
                    } else {
                        out!(
                            "checkpoint {}: restored; the pipeline runs again from it (last checkpoint before: {})",
                            report.checkpoint,
                            show(report.last_checkpoint_before)
                        );
                    }
                    out!("  watermark: {}", time(report.watermark));
                    for op in &report.operators {
                        out!(
                            "  operator {} ({}): {} keys",
                            op.name,
                            op.kind,
                            op.key_count
                        );
                    }
                    for name in &report.empty {
                        out!("  operator {name}: starts empty");
                    }
                    for source in &report.sources {
                        for (partition, offset, line) in &source.partitions {
                            out!("  source {} partition {partition}: resumes at offset {offset}, line {line}", source.name);
                        }
                    }
                    for dropped in &report.dropped {
                        out!("  dropped: {dropped}");
                    }
                    out!("  discarded: {}", report.discarded);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn state_command(
    source: &Checkpointed,
    command: StateCommand,
    output: Output,
) -> anyhow::Result<ExitCode> {
    match command {
        StateCommand::Get {
            checkpoint,
            operator,
            key,
        } => {
            let key = state::parse_key(&key);
            let value = source.state(&checkpoint, &operator, &key)?;
            match output {
                Output::Json => print_json(&value)?,
                Output::Table => {
                    out!(
                        "checkpoint {} operator {} key {}",
                        value.checkpoint,
                        value.operator,
                        value.key
                    );
                    match value.value.get("windows").and_then(|w| w.as_array()) {
                        Some(windows) => {
                            for window in windows {
                                let aggregates: Vec<String> = window["aggregates"]
                                    .as_array()
                                    .map(|a| {
                                        a.iter()
                                            .map(|agg| {
                                                format!(
                                                    "{}={}",
                                                    agg["aggregate"].as_str().unwrap_or("?"),
                                                    agg["value"]
                                                )
                                            })
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                out!(
                                    "  window [{}, {}){}: {}",
                                    window["start"],
                                    window["end"],
                                    if window["fired"].as_bool() == Some(true) {
                                        " fired"
                                    } else {
                                        ""
                                    },
                                    aggregates.join(", ")
                                );
                            }
                        }
                        None => out!("  {}", value.value),
                    }
                }
            }
        }
        StateCommand::Keys {
            checkpoint,
            operator,
            offset,
            limit,
        } => {
            let page = source.keys(&checkpoint, &operator, offset, limit)?;
            match output {
                Output::Json => print_json(&page)?,
                Output::Table => {
                    out!(
                        "checkpoint {} operator {}: keys {}..{} of {}",
                        page.checkpoint,
                        page.operator,
                        page.offset,
                        page.offset + page.keys.len(),
                        page.total
                    );
                    for key in &page.keys {
                        out!("  {key}");
                    }
                    if let Some(next) = page.next_offset {
                        out!("  (more: --offset {next})");
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A few of the keys, for the table.
fn sample(
    added: &[serde_json::Value],
    removed: &[serde_json::Value],
    changed: &[serde_json::Value],
) -> String {
    let few = |keys: &[serde_json::Value]| -> String {
        let mut text: Vec<String> = keys.iter().take(5).map(|k| k.to_string()).collect();
        if keys.len() > 5 {
            text.push("...".into());
        }
        text.join(" ")
    };
    let mut parts = Vec::new();
    for (what, keys) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !keys.is_empty() {
            parts.push(format!("{what}: {}", few(keys)));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

fn show<T: ToString>(value: Option<T>) -> String {
    value
        .map(|v| v.to_string())
        .unwrap_or_else(|| "absent".into())
}

fn print_manifest(manifest: &Manifest) {
    out!("checkpoint {}", manifest.id);
    out!("  created:     {}", manifest.created_at);
    out!("  fingerprint: {}", manifest.pipeline_fingerprint);
    out!("  watermark:   {}", manifest.watermark);
    if let Some(ms) = manifest.duration_ms {
        out!("  duration:    {ms} ms");
    }
    out!(
        "  data file:   {} bytes, sha256 {}",
        manifest.data_file_size,
        manifest.payload_sha256
    );
    for op in &manifest.operators {
        out!(
            "  operator {} ({}): {} keys, {} bytes",
            op.name,
            op.kind,
            op.key_count,
            op.bytes
        );
    }
    for source in &manifest.sources {
        for partition in &source.partitions {
            out!(
                "  source {} partition {}: offset {}, line {}, watermark {}",
                source.name,
                partition.name,
                partition.offset,
                partition.line,
                partition.watermark
            );
        }
    }
}
