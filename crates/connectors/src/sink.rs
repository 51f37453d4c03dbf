//! The sink trait, and the writer every JSON Lines output opens (stdout or a file).

use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use dataflow_event::json::DecoderConfig;
use dataflow_event::{Event, Layout};
use tokio::io::AsyncWrite;

use crate::registry::{SinkKind, SinkSpec};
use crate::{ConnectorError, Result};

/// Where results go. Called once per batch; implementations buffer as they see fit and make
/// everything durable in [`Sink::flush`].
#[async_trait]
pub trait Sink: Send {
    /// Writes a batch of events.
    async fn write(&mut self, events: &[Event]) -> Result<()>;

    /// Flushes everything written so far.
    async fn flush(&mut self) -> Result<()>;

    /// Checkpoint `checkpoint`'s barrier has passed: make everything written before it durable
    /// as part of that checkpoint. By default, a flush.
    async fn prepare(&mut self, _checkpoint: u64) -> Result<()> {
        self.flush().await
    }

    /// The watermark after everything written so far (sent only to sinks whose kind
    /// [`crate::SinkKind::wants_watermarks`]: the repartition sink writes it on as markers).
    async fn watermark(&mut self, _watermark: i64) -> Result<()> {
        Ok(())
    }

    /// Checkpoint `checkpoint` is saved: publish what was prepared for it and before.
    async fn commit(&mut self, _checkpoint: u64) -> Result<()> {
        Ok(())
    }

    /// The run is over: publish everything written.
    async fn finish(&mut self) -> Result<()> {
        self.flush().await
    }

    /// The results of the writes so far that the sink could not write (a value that does not
    /// fit a typed column), each with why: the pipeline makes them dead letters. By default,
    /// none (JSON Lines takes any result).
    fn take_rejected(&mut self) -> Vec<Rejected> {
        Vec::new()
    }

    /// Where a sink writing to a store counts the attempts it makes again after a transient
    /// failure (`dataflow_sink_store_retries_total`). By default, nowhere: files do not retry.
    fn count_retries(&mut self, _retries: dataflow_metrics::StoreRetries) {}
}

/// A result a sink could not write, and why (see [`Sink::take_rejected`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// The result.
    pub event: Event,
    /// Why, as a sentence fragment naming the field.
    pub reason: String,
}

pub(crate) type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// How a file output starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Empty: a run that starts from the beginning.
    Truncate,
    /// After what the file holds: a run that may resume from a checkpoint, so that what earlier
    /// runs wrote is kept.
    Append,
}

/// `text`, after `what` (the output it is about) when there is one: a results sink's errors
/// are named by the pipeline (`sink sinks[0] (file) failed: ...`), so it passes no `what`.
fn about(what: &str, text: String) -> String {
    if what.is_empty() {
        text
    } else {
        format!("{what}: {text}")
    }
}

/// Opens the writer of a sink: stdout, or a file created (with its directory), truncated or
/// appended to as `mode` says.
pub(crate) async fn open_writer(
    spec: &SinkSpec,
    what: &str,
    mode: OpenMode,
) -> Result<(Writer, String)> {
    match &spec.kind {
        SinkKind::Stdout => Ok((Box::pin(tokio::io::stdout()), "stdout".into())),
        SinkKind::File { path } => {
            create_parent(path, what).await?;
            let mut options = tokio::fs::OpenOptions::new();
            match mode {
                OpenMode::Truncate => options.write(true).create(true).truncate(true),
                OpenMode::Append => options.append(true).create(true),
            };
            let file = options
                .open(path)
                .await
                .map_err(|source| ConnectorError::Io {
                    context: about(what, format!("cannot create {}", path.display())),
                    cause: source,
                })?;
            Ok((Box::pin(file), path.display().to_string()))
        }
        SinkKind::Parts { .. }
        | SinkKind::Parquet(_)
        | SinkKind::Postgres(_)
        | SinkKind::Redis(_)
        | SinkKind::Kafka(_)
        | SinkKind::Repartition(_) => Err(ConnectorError::Runtime(format!(
            "a {} sink cannot take {what}: they are written as JSON Lines to stdout or a file",
            spec.kind.type_name()
        ))),
    }
}

pub(crate) async fn create_parent(path: &Path, what: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| ConnectorError::Io {
                context: about(
                    what,
                    format!("cannot create directory {}", parent.display()),
                ),
                cause: source,
            })?;
    }
    Ok(())
}

/// What a results sink writes: the results' layout, whether each line carries the event time,
/// and the metadata field names (time, type, id) of the source the results come from, so that
/// a line decodes back with that source's settings.
#[derive(Clone, Debug)]
pub struct ResultFormat {
    /// The layout of the results' payload.
    pub layout: Layout,
    /// Whether lines carry the event time (not for window results, which carry their window).
    pub write_time: bool,
    /// The source's decoder settings, whose field names the metadata is written under.
    pub fields: DecoderConfig,
    /// Whether the run takes checkpoints: an exactly-once store sink then holds back what it
    /// writes until the checkpoint covering it completes; without, it writes at once.
    pub checkpoints: bool,
    /// The checkpoint directory, when the run takes checkpoints: an exactly-once sink that
    /// must keep what it prepared for a checkpoint (the kafka sink's spool) keeps it in a
    /// directory of its own there (not a number: never taken for a checkpoint).
    pub checkpoint_dir: Option<std::path::PathBuf>,
}

impl ResultFormat {
    /// Results of `layout`, with the time when `write_time`, under the default field names.
    pub fn new(layout: Layout, write_time: bool) -> ResultFormat {
        ResultFormat {
            layout,
            write_time,
            fields: DecoderConfig::default(),
            checkpoints: false,
            checkpoint_dir: None,
        }
    }
}
