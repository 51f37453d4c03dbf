//! `processor`: runs a dataflow pipeline from a YAML config, checks a config, or generates data.
//!
//! Only argument parsing, logging, the progress bar, signals and exit codes live here; the work
//! is done by `dataflow-pipeline`.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use dataflow_connectors::generator::{Generator, GeneratorConfig, Profile};
use dataflow_connectors::http::{BodyFormat, IngestHub, IngestRefusal};
use dataflow_pipeline::control::ControlHandle;
use dataflow_pipeline::runtime::{Pipeline, RestoreMode, RestoreOptions};
use dataflow_pipeline::{config, PipelineError};
use indicatif::{ProgressBar, ProgressStyle};

/// Events are allocated on a source thread and freed on the operator thread; mimalloc handles
/// that cross-thread traffic far better than glibc's malloc (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of a config that failed its checks.
const EXIT_INVALID_CONFIG: u8 = 2;

/// How long a processor whose run failed keeps its API answering before it exits (1), so that
/// clients and health checks see why (`GET /ready` and the status say `failed` with the reason,
/// `POST /ingest` is refused with it); a signal cuts it short.
const FAILED_API_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(name = "processor", version, about = "Runs dataflow pipelines")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a pipeline to the end of its input, or until Ctrl-C.
    Run {
        /// The pipeline config.
        #[arg(long, short, default_value = "configs/pipeline.yaml")]
        config: PathBuf,
        /// Do not show the progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Restore this checkpoint instead of the latest valid one.
        #[arg(long, value_name = "ID", conflicts_with = "fresh")]
        restore: Option<u64>,
        /// Restore no checkpoint: start from the beginning of the input.
        #[arg(long)]
        fresh: bool,
        /// Restore a checkpoint taken by a pipeline of another shape: what still maps is
        /// restored, the rest is listed and dropped.
        #[arg(long)]
        allow_non_restored_state: bool,
    },
    /// Checks a config and lists every problem, without opening any input or output.
    Check {
        /// The pipeline config.
        #[arg(long, short, default_value = "configs/pipeline.yaml")]
        config: PathBuf,
    },
    /// Writes generated events as JSON Lines.
    Generate {
        /// What to generate.
        #[arg(long, value_enum, default_value = "bids")]
        profile: ProfileArg,
        /// How many events.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// The seed: the same seed gives the same events.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Events per second of event time.
        #[arg(long, default_value_t = 1000)]
        events_per_second: u64,
        /// The largest delay of an event behind its place in the stream, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        max_disorder_ms: i64,
        /// The output file; standard output if absent.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProfileArg {
    Bids,
    Clicks,
    Cards,
    Nexmark,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            no_progress,
            restore,
            fresh,
            allow_non_restored_state,
        } => run(
            config,
            no_progress,
            RestoreOptions {
                mode: match (restore, fresh) {
                    (Some(id), _) => RestoreMode::Id(id),
                    (None, true) => RestoreMode::Fresh,
                    (None, false) => RestoreMode::Latest,
                },
                allow_non_restored_state,
            },
        ),
        Command::Check { config } => check(config),
        Command::Generate {
            profile,
            count,
            seed,
            events_per_second,
            max_disorder_ms,
            out,
        } => generate(
            GeneratorConfig {
                profile: match profile {
                    ProfileArg::Bids => Profile::Bids,
                    ProfileArg::Clicks => Profile::Clicks,
                    ProfileArg::Cards => Profile::Cards,
                    ProfileArg::Nexmark => Profile::Nexmark,
                },
                count: Some(count),
                seed,
                events_per_second,
                max_disorder_ms,
                ..GeneratorConfig::default()
            },
            out,
        ),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            if is_invalid_config(&error) {
                return ExitCode::from(EXIT_INVALID_CONFIG);
            }
            ExitCode::FAILURE
        }
    }
}

/// Whether `error` is about the config rather than the run: the config failed its checks, or
/// the file given with `--config` cannot be read.
fn is_invalid_config(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<PipelineError>(),
        Some(PipelineError::InvalidConfig(_))
    ) || error.downcast_ref::<UnreadableConfig>().is_some()
}

/// A config file that cannot be read (missing, a directory, not readable): an invalid config.
#[derive(Debug)]
struct UnreadableConfig {
    path: PathBuf,
    cause: std::io::Error,
}

impl std::fmt::Display for UnreadableConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot read config {}: {}",
            self.path.display(),
            self.cause
        )
    }
}

impl std::error::Error for UnreadableConfig {}

/// The text of the config at `path`.
fn read_config(path: &Path) -> Result<String, UnreadableConfig> {
    std::fs::read_to_string(path).map_err(|cause| UnreadableConfig {
        path: path.to_path_buf(),
        cause,
    })
}

/// Reads and plans the config at `config`; relative paths in it are taken from its directory.
fn load(config: &Path) -> anyhow::Result<Pipeline> {
    let text = read_config(config)?;
    let base = config.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Pipeline::new(config::parse_and_plan(&text, &base)?))
}

/// Loads a pipeline that can restart in place from a checkpoint (a restore through the API):
/// the config text read now is planned again for each restart.
fn load_restartable(config: &Path) -> anyhow::Result<Pipeline> {
    let text = read_config(config)?;
    let base = config.parent().map(Path::to_path_buf).unwrap_or_default();
    let plan = config::parse_and_plan(&text, &base)?;
    Ok(Pipeline::new(plan).with_replan(move || config::parse_and_plan(&text, &base)))
}

fn check(config: PathBuf) -> anyhow::Result<ExitCode> {
    let pipeline = load(&config)?;
    let plan = pipeline.plan();
    println!(
        "{}: ok: pipeline `{}`, {} source(s), {} step(s), {} sink(s)",
        config.display(),
        plan.name,
        plan.sources.len(),
        plan.operators.len(),
        plan.sinks.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn run(config: PathBuf, no_progress: bool, restore: RestoreOptions) -> anyhow::Result<ExitCode> {
    let text = read_config(&config)?;
    let base = config.parent().map(Path::to_path_buf).unwrap_or_default();
    let spec = config::parse(&text, &base)?;
    if dataflow_pipeline::scale_out::is_scale_out(&spec) {
        return run_scale_out(&config, spec, &text, &base, restore);
    }
    let pipeline = load_restartable(&config)?.with_restore(restore);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let counters = pipeline.counters();
    let stop = pipeline.stop_handle();
    let size = pipeline.input_size_hint();
    let name = pipeline.plan().name.clone();
    tracing::info!(pipeline = %name, config = %config.display(), "starting");

    let show_progress = !no_progress && std::io::stderr().is_terminal();
    let bar = match (show_progress, size) {
        (true, Some(total)) => {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        (true, None) => ProgressBar::new_spinner(),
        (false, _) => ProgressBar::hidden(),
    };

    let api = pipeline.plan().api.clone();
    let metrics = pipeline.metrics();
    let control = pipeline.control();
    let ingest = pipeline.ingest();
    let checkpoint_dir = pipeline.plan().checkpoint.as_ref().map(|c| c.dir.clone());
    let graph = graph_shape(pipeline.plan());
    let summary = runtime.block_on(async {
        let server = match api {
            Some(api) => {
                let live = ApiLive {
                    metrics,
                    counters: Some(counters.clone()),
                    control: std::sync::Arc::new(ApiControl(control)),
                    ingest,
                    graph,
                };
                Some(start_api(api, checkpoint_dir, live).await?)
            }
            None => None,
        };
        let mut signals = tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop requested: finishing cleanly");
            stop.stop();
        });
        let progress = {
            let bar = bar.clone();
            let counters = counters.clone();
            let started = std::time::Instant::now();
            tokio::spawn(async move {
                loop {
                    bar.set_position(counters.bytes_read());
                    bar.set_message(progress_line(&counters, started.elapsed()));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let summary = pipeline.run().await;
        progress.abort();
        if let (Err(_), Some(_)) = (&summary, &server) {
            tracing::info!(
                seconds = FAILED_API_GRACE.as_secs(),
                "the run failed: the API answers `failed` until the processor exits"
            );
            tokio::select! {
                _ = tokio::time::sleep(FAILED_API_GRACE) => {}
                _ = &mut signals => {}
            }
        }
        signals.abort();
        if let Some(server) = server {
            server.abort();
        }
        anyhow::Ok(summary?)
    });
    bar.finish_and_clear();
    // Sources blocked in a read (stdin after Ctrl-C) must not keep the process alive.
    runtime.shutdown_background();
    let summary = summary?;
    match peak_rss_kib() {
        Some(rss) => eprintln!("{name}: {summary}, peak RSS {rss} KiB"),
        None => eprintln!("{name}: {summary}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a scale-out processor (a kafka source with `scale_out: true`): a member of the
/// source's consumer group running one task per partition it owns, until a signal or a task's
/// failure (see `dataflow_pipeline::scale_out`).
fn run_scale_out(
    config: &Path,
    spec: dataflow_pipeline::spec::PipelineSpec,
    text: &str,
    base: &Path,
    restore: RestoreOptions,
) -> anyhow::Result<ExitCode> {
    if restore.mode != RestoreMode::Latest || restore.allow_non_restored_state {
        anyhow::bail!(
            "a scale-out processor restores each task from its own latest checkpoint: \
             --restore, --fresh and --allow-non-restored-state do not apply"
        );
    }
    // The whole config is checked (expressions included) before joining the group.
    let plan = config::parse_and_plan(text, base)?;
    let graph = graph_shape(&plan);
    let api = plan.api.clone();
    let name = plan.name.clone();
    drop(plan);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let metrics = std::sync::Arc::new(dataflow_metrics::Metrics::new());
    let manager = dataflow_pipeline::scale_out::ScaleOut::new(
        spec,
        runtime.handle().clone(),
        metrics.clone(),
    )?;
    tracing::info!(pipeline = %name, config = %config.display(), "starting (scale-out)");
    let result = runtime.block_on(async {
        let server = match api {
            Some(api) => {
                let ingest = IngestHub::new(&name, std::iter::empty(), &metrics);
                let live = ApiLive {
                    metrics,
                    counters: None,
                    control: std::sync::Arc::new(ApiScaleOut(manager.clone())),
                    ingest,
                    graph,
                };
                Some(start_api(api, None, live).await?)
            }
            None => None,
        };
        let signals = {
            let manager = manager.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!(
                    "stop requested: the tasks checkpoint and the processor leaves the group"
                );
                manager.stop();
            })
        };
        let result = manager.run().await;
        signals.abort();
        if let Some(server) = server {
            server.abort();
        }
        anyhow::Ok(result?)
    });
    runtime.shutdown_background();
    result?;
    eprintln!("{name}: stopped (scale-out)");
    Ok(ExitCode::SUCCESS)
}

/// A scale-out processor behind the API: status and watermarks over its tasks; checkpoints
/// are each task's own, so a trigger or a restore through the API is refused.
struct ApiScaleOut(dataflow_pipeline::scale_out::ScaleOut);

const SCALE_OUT_REFUSAL: &str =
    "a scale-out processor checkpoints each task (input partition) on its own: no trigger or restore through the API";

#[async_trait::async_trait]
impl dataflow_api::Control for ApiScaleOut {
    fn status(&self) -> dataflow_api::PipelineStatus {
        self.0.status()
    }

    fn watermarks(&self) -> dataflow_api::Watermarks {
        self.0.watermarks()
    }

    async fn trigger(&self) -> Result<u64, dataflow_api::ControlError> {
        Err(dataflow_api::ControlError::Incompatible(
            SCALE_OUT_REFUSAL.into(),
        ))
    }

    fn progress(&self) -> dataflow_api::Progress {
        dataflow_api::Progress {
            last_completed: 0,
            last_triggered: 0,
            first_own: 0,
            live: self.0.ready().is_ok(),
        }
    }

    async fn restore(
        &self,
        _id: u64,
        _dry_run: bool,
    ) -> Result<dataflow_api::RestoreReport, dataflow_api::ControlError> {
        Err(dataflow_api::ControlError::Incompatible(
            SCALE_OUT_REFUSAL.into(),
        ))
    }

    fn ready(&self) -> Result<(), String> {
        self.0.ready()
    }
}

/// What the API serves of the running pipeline.
struct ApiLive {
    metrics: std::sync::Arc<dataflow_metrics::Metrics>,
    counters: Option<std::sync::Arc<dataflow_metrics::Counters>>,
    control: std::sync::Arc<dyn dataflow_api::Control>,
    ingest: IngestHub,
    graph: dataflow_api::server::GraphShape,
}

/// The plan's sources, steps and sinks as the dashboard's graph names them (the metrics' names).
fn graph_shape(plan: &dataflow_pipeline::plan::Plan) -> dataflow_api::server::GraphShape {
    use dataflow_api::server::ShapeNode;
    let node = |name: &str, kind: &str| ShapeNode {
        name: name.to_owned(),
        kind: kind.to_owned(),
    };
    dataflow_api::server::GraphShape {
        pipeline: plan.name.clone(),
        sources: plan
            .sources
            .iter()
            .map(|source| node(&source.spec.name, source.spec.kind.type_name()))
            .collect(),
        steps: plan
            .operators
            .iter()
            .map(|operator| node(&operator.info.name, operator.info.kind.name))
            .collect(),
        sinks: plan
            .sinks
            .iter()
            .enumerate()
            .map(|(index, sink)| node(&format!("sinks[{index}]"), sink.kind.type_name()))
            .collect(),
    }
}

/// Binds the API and serves it in the background. The checkpoint directory is read only (the
/// run writes it); it is created first so that the API can answer before the first checkpoint.
async fn start_api(
    api: dataflow_pipeline::spec::ApiSpec,
    checkpoint_dir: Option<PathBuf>,
    live: ApiLive,
) -> anyhow::Result<ApiServer> {
    let ApiLive {
        metrics,
        counters,
        control,
        ingest,
        graph,
    } = live;
    let storage: Option<std::sync::Arc<dyn dataflow_checkpoint::CheckpointStorage>> =
        match checkpoint_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                Some(std::sync::Arc::new(
                    dataflow_checkpoint::LocalStorage::open_for_reading(&dir)?,
                ))
            }
            None => None,
        };
    let listener = std::net::TcpListener::bind(api.listen)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
        .with_context(|| format!("cannot listen on {}", api.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the API's address")?;
    tracing::info!(%address, authenticated = api.token.is_some(), "API listening");
    if let Some(path) = std::env::var_os("DATAFLOW_API_ADDRESS_FILE") {
        // For scripts and tests: the bound address (useful with port 0), written atomically.
        let path = PathBuf::from(path);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, address.to_string())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write the API's address to {}", path.display()))?;
    }
    let state = dataflow_api::server::ApiState {
        storage,
        token: api.token,
        metrics: Some(metrics),
        control: Some(control),
        decoder: Some(std::sync::Arc::new(ApiDecoder)),
        ingest: (!ingest.is_empty()).then(|| {
            std::sync::Arc::new(ApiIngest(ingest)) as std::sync::Arc<dyn dataflow_api::Ingest>
        }),
        graph: Some(std::sync::Arc::new(graph)),
        counters,
    };
    // The API runs on a runtime of its own: its handlers (some read checkpoint files
    // synchronously) and its connections can never take worker threads from the pipeline.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("api")
        .enable_all()
        .build()
        .context("cannot start the API's runtime")?;
    let limits = api.limits;
    let task = runtime.spawn(async move {
        let served = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => dataflow_api::server::serve_with_limits(listener, state, limits).await,
            Err(error) => Err(error),
        };
        if let Err(error) = &served {
            tracing::error!(%error, "the API server stopped");
        }
        served
    });
    Ok(ApiServer {
        task,
        runtime: Some(runtime),
    })
}

/// The API server, on its own runtime; [`ApiServer::abort`] (or dropping it) stops it.
#[derive(Debug)]
struct ApiServer {
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ApiServer {
    /// Stops serving: the connections still open are closed.
    fn abort(self) {
        self.task.abort();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropped from within the pipeline's runtime: no blocking wait here.
            runtime.shutdown_background();
        }
    }
}

/// The pipeline's control handle behind the API's [`dataflow_api::Control`]: the handle speaks
/// the API's types.
struct ApiControl(ControlHandle);

#[async_trait::async_trait]
impl dataflow_api::Control for ApiControl {
    fn status(&self) -> dataflow_api::PipelineStatus {
        self.0.status()
    }

    fn watermarks(&self) -> dataflow_api::Watermarks {
        self.0.watermarks()
    }

    async fn trigger(&self) -> Result<u64, dataflow_api::ControlError> {
        self.0.trigger().await
    }

    fn progress(&self) -> dataflow_api::Progress {
        dataflow_api::Progress {
            last_completed: self.0.last_checkpoint(),
            last_triggered: self.0.last_triggered(),
            first_own: self.0.first_own(),
            live: self.0.is_live(),
        }
    }

    async fn restore(
        &self,
        id: u64,
        dry_run: bool,
    ) -> Result<dataflow_api::RestoreReport, dataflow_api::ControlError> {
        self.0.restore(id, dry_run).await
    }

    fn was_completed(&self, id: u64) -> bool {
        self.0.was_completed(id)
    }

    fn ready(&self) -> Result<(), String> {
        self.0.ready()
    }
}

/// The pipeline's `http` sources behind the API's `POST /ingest`.
struct ApiIngest(IngestHub);

impl dataflow_api::Ingest for ApiIngest {
    fn ingest(
        &self,
        source: Option<&str>,
        format: dataflow_api::IngestFormat,
        body: &[u8],
    ) -> Result<u64, dataflow_api::IngestError> {
        use dataflow_api::IngestError as Api;
        let format = match format {
            dataflow_api::IngestFormat::Json => BodyFormat::Json,
            dataflow_api::IngestFormat::JsonLines => BodyFormat::JsonLines,
        };
        self.0
            .ingest(source, format, body)
            .map_err(|refusal| match refusal {
                IngestRefusal::NoSource(m) => Api::NoSource(m),
                IngestRefusal::Malformed(m) => Api::Malformed(m),
                IngestRefusal::RateLimited(wait) => Api::RateLimited(wait),
                IngestRefusal::QueueFull(wait) => Api::QueueFull(wait),
                IngestRefusal::ShuttingDown(wait) => Api::ShuttingDown(wait),
                IngestRefusal::Failed(reason) => {
                    Api::Failed(format!("the pipeline failed: {reason}"))
                }
            })
    }

    fn refused(&self, reason: dataflow_metrics::RefuseReason) {
        self.0.refused(reason);
    }
}

/// Operator state for the API, decoded by `dataflow_operators::kind::decode_state`.
struct ApiDecoder;

impl dataflow_api::StateDecoder for ApiDecoder {
    fn decode(
        &self,
        kind: &str,
        state: &[u8],
    ) -> Result<Vec<dataflow_api::state::KeyState>, String> {
        let view = dataflow_operators::kind::decode_state(kind, state)
            .map_err(|error| error.to_string())?;
        Ok(view
            .keys
            .into_iter()
            .map(|k| dataflow_api::state::KeyState {
                key: k.key,
                value: k.value,
            })
            .collect())
    }
}

/// The process's peak resident set size, from `/proc/self/status` (Linux only).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The live part of the progress line: events, rate, watermark and last checkpoint.
fn progress_line(counters: &dataflow_metrics::Counters, elapsed: Duration) -> String {
    let events = counters.events_read();
    let rate = events as f64 / elapsed.as_secs_f64().max(0.001);
    let watermark = match counters.watermark() {
        i64::MIN => "none yet".to_string(),
        millis => dataflow_event::time::format_rfc3339(millis),
    };
    let checkpoint = match counters.last_checkpoint() {
        0 => "none".to_string(),
        id => id.to_string(),
    };
    format!("{events} events, {rate:.0}/s, watermark {watermark}, last checkpoint {checkpoint}")
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn generate(config: GeneratorConfig, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let total = config.count.unwrap_or(0);
    let mut generator = Generator::new(config)?;
    let bar = if std::io::stderr().is_terminal() && out.is_some() {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    let written = match &out {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut writer = BufWriter::new(file);
            let written = generator.write_jsonl(&mut writer, |n| bar.set_position(n))?;
            writer
                .flush()
                .with_context(|| format!("cannot write {}", path.display()))?;
            written
        }
        None => {
            let stdout = std::io::stdout();
            let mut writer = BufWriter::new(stdout.lock());
            let written = generator.write_jsonl(&mut writer, |n| bar.set_position(n))?;
            writer.flush().context("cannot write to standard output")?;
            written
        }
    };
    bar.finish_and_clear();
    if let Some(path) = out {
        eprintln!("wrote {written} events to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
