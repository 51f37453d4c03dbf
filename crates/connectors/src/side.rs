//! The side outputs: dead letters and late events, written as JSON Lines with their reason.

use dataflow_event::json::{write_str, Encoder, TimeFormat};
use tokio::io::AsyncWriteExt;

pub use dataflow_event::side::{SideData, SideKind, SideRecord};

use crate::jsonl::WRITE_CHUNK;
use crate::registry::SinkSpec;
use crate::sink::{open_writer, OpenMode, Writer};
use crate::{ConnectorError, Result};

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
    pub async fn open(spec: &SinkSpec, what: &str, mode: OpenMode) -> Result<SideWriter> {
        let (writer, name) = open_writer(spec, what, mode).await?;
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
                Encoder::new(layout.clone())
                    .with_time_format(time_format)
                    .encode(event, out);
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
        result.map_err(|source| ConnectorError::Io {
            context: format!("cannot write to {}", self.name),
            cause: source,
        })
    }
}
