//! Sinks: the trait, JSON Lines to stdout or a file, and the side-record writer used for dead
//! letters and late events.

use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use dataflow_event::json::{write_str, Encoder, TimeFormat};
use dataflow_event::{Event, Layout};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::operator::{SideData, SideRecord};
use crate::spec::{SinkKind, SinkSpec};
use crate::{PipelineError, Result};

/// Where results go. Called once per batch; implementations buffer as they see fit and make
/// everything durable in [`Sink::flush`].
#[async_trait]
pub trait Sink: Send {
    /// Writes a batch of events.
    async fn write(&mut self, events: &[Event]) -> Result<()>;

    /// Flushes everything written so far.
    async fn flush(&mut self) -> Result<()>;
}

type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// Opens the writer of a sink: stdout, or a file created (with its directory) or truncated.
async fn open_writer(spec: &SinkSpec, what: &str) -> Result<(Writer, String)> {
    match &spec.kind {
        SinkKind::Stdout => Ok((Box::pin(tokio::io::stdout()), "stdout".into())),
        SinkKind::File { path } => {
            create_parent(path, what).await?;
            let file = tokio::fs::File::create(path)
                .await
                .map_err(|source| PipelineError::Io {
                    context: format!("{what}: cannot create {}", path.display()),
                    source,
                })?;
            Ok((Box::pin(file), path.display().to_string()))
        }
    }
}

async fn create_parent(path: &Path, what: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| PipelineError::Io {
                context: format!("{what}: cannot create directory {}", parent.display()),
                source,
            })?;
    }
    Ok(())
}

/// Writes events as JSON Lines.
pub struct JsonLinesSink {
    writer: Writer,
    name: String,
    encoder: Encoder,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLinesSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Flush to the writer once this much is encoded.
const WRITE_CHUNK: usize = 256 << 10;

impl JsonLinesSink {
    /// Opens the sink of `spec` for events of `layout`. Window results carry their time in
    /// their fields, so `write_time` is off for them.
    pub async fn open(spec: &SinkSpec, layout: Layout, write_time: bool) -> Result<JsonLinesSink> {
        let (writer, name) = open_writer(spec, "sink").await?;
        let mut encoder = Encoder::new(layout);
        encoder.time_format = spec.time_format;
        if !write_time {
            encoder.time_field = None;
        }
        Ok(JsonLinesSink {
            writer,
            name,
            encoder,
            buffer: Vec::with_capacity(WRITE_CHUNK * 2),
        })
    }

    async fn drain(&mut self) -> Result<()> {
        self.writer
            .write_all(&self.buffer)
            .await
            .map_err(|source| PipelineError::Io {
                context: format!("cannot write to {}", self.name),
                source,
            })?;
        self.buffer.clear();
        Ok(())
    }
}

#[async_trait]
impl Sink for JsonLinesSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        for event in events {
            self.encoder.encode(event, &mut self.buffer);
        }
        if self.buffer.len() >= WRITE_CHUNK {
            self.drain().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.drain().await?;
        self.writer
            .flush()
            .await
            .map_err(|source| PipelineError::Io {
                context: format!("cannot flush {}", self.name),
                source,
            })
    }
}

/// Writes side records (dead letters, late events) as JSON Lines:
/// `{"kind":"dead_letter","stage":"source clicks","line":12,"reason":"...","record":...}`.
pub struct SideWriter {
    writer: Writer,
    name: String,
    buffer: Vec<u8>,
    time_format: TimeFormat,
}

impl std::fmt::Debug for SideWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideWriter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SideWriter {
    /// Opens the side-record sink of `spec`.
    pub async fn open(spec: &SinkSpec, what: &str) -> Result<SideWriter> {
        let (writer, name) = open_writer(spec, what).await?;
        Ok(SideWriter {
            writer,
            name,
            buffer: Vec::new(),
            time_format: spec.time_format,
        })
    }

    /// Encodes one side record, events with `time_format`.
    pub fn encode(record: &SideRecord, time_format: TimeFormat, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"kind\":");
        write_str(out, record.kind.name());
        out.extend_from_slice(b",\"stage\":");
        write_str(out, &record.stage);
        if let Some(line) = record.line {
            out.extend_from_slice(b",\"line\":");
            out.extend_from_slice(line.to_string().as_bytes());
        }
        out.extend_from_slice(b",\"reason\":");
        write_str(out, &record.reason);
        out.extend_from_slice(b",\"record\":");
        match &record.record {
            SideData::Raw(text) => write_str(out, text),
            SideData::Event { event, layout } => {
                let mut encoder = Encoder::new(layout.clone());
                encoder.time_format = time_format;
                encoder.encode(event, out);
                // The encoder ends the line; this object continues it.
                if out.last() == Some(&b'\n') {
                    out.pop();
                }
            }
        }
        out.extend_from_slice(b"}\n");
    }

    /// Writes records.
    pub async fn write(&mut self, records: &[SideRecord]) -> Result<()> {
        for record in records {
            SideWriter::encode(record, self.time_format, &mut self.buffer);
        }
        if self.buffer.len() >= WRITE_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Flushes what was written.
    pub async fn flush(&mut self) -> Result<()> {
        let result = async {
            self.writer.write_all(&self.buffer).await?;
            self.writer.flush().await
        }
        .await;
        self.buffer.clear();
        result.map_err(|source| PipelineError::Io {
            context: format!("cannot write to {}", self.name),
            source,
        })
    }
}
