//! `type: stdout` and `type: file`: results as JSON Lines.

use async_trait::async_trait;
use dataflow_event::json::Encoder;
use dataflow_event::Event;
use tokio::io::AsyncWriteExt;

use crate::config::{PathUse, Settings};
use crate::registry::SinkKind;
use crate::registry::SinkSpec;
use crate::sink::{open_writer, OpenMode, ResultFormat, Sink, Writer};
use crate::{ConnectorError, Result};

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

/// The encoder a result sink of `spec` writes events of `layout` with. Window results carry
/// their time in their fields, so `write_time` is off for them.
pub(crate) fn result_encoder(spec: &SinkSpec, format: ResultFormat) -> Encoder {
    let encoder =
        Encoder::for_decoder(format.layout, &format.fields).with_time_format(spec.time_format);
    if format.write_time {
        encoder
    } else {
        encoder.without_time()
    }
}

/// Encodes a batch into `buffer`; true when enough is buffered to write it out.
pub(crate) fn encode_batch(encoder: &Encoder, events: &[Event], buffer: &mut Vec<u8>) -> bool {
    for event in events {
        encoder.encode(event, buffer);
    }
    buffer.len() >= WRITE_CHUNK
}

/// Flush to the writer once this much is encoded.
pub(crate) const WRITE_CHUNK: usize = 256 << 10;

impl JsonLinesSink {
    /// Opens the sink of `spec` for events of `layout`. Window results carry their time in
    /// their fields, so `write_time` is off for them.
    pub async fn open(
        spec: &SinkSpec,
        format: ResultFormat,
        mode: OpenMode,
    ) -> Result<JsonLinesSink> {
        // The pipeline names the sink in its errors.
        let (writer, name) = open_writer(spec, "", mode).await?;
        let encoder = result_encoder(spec, format);
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
            .map_err(|source| ConnectorError::Io {
                context: format!("cannot write to {}", self.name),
                cause: source,
            })?;
        self.buffer.clear();
        Ok(())
    }
}

#[async_trait]
impl Sink for JsonLinesSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        if encode_batch(&self.encoder, events, &mut self.buffer) {
            self.drain().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.drain().await?;
        self.writer
            .flush()
            .await
            .map_err(|source| ConnectorError::Io {
                context: format!("cannot flush {}", self.name),
                cause: source,
            })
    }
}

/// The settings `configure_stdout` takes.
pub(crate) const STDOUT_KEYS: &[&str] = &[];
/// The settings `configure_file` takes.
pub(crate) const FILE_KEYS: &[&str] = &["path"];

/// `type: stdout` takes no settings of its own.
pub(crate) fn configure_stdout(_settings: &mut Settings<'_>) -> Option<SinkKind> {
    Some(SinkKind::Stdout)
}

/// `type: file` settings: `path`.
pub(crate) fn configure_file(settings: &mut Settings<'_>) -> Option<SinkKind> {
    match settings.path("path", PathUse::WriteFile) {
        Some(path) => Some(SinkKind::File { path }),
        None => {
            let place = settings.place();
            settings.problem(place, "a file sink needs `path`");
            None
        }
    }
}
