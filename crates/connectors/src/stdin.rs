//! `type: stdin`: JSON Lines on standard input. It cannot be replayed.

use std::sync::Arc;

use dataflow_event::json::Decoder;
use dataflow_event::Event;

use crate::config::Settings;
use crate::lines::{read_lines, LineReader};
use crate::registry::SourceKind;
use crate::side::SideRecord;
use crate::source::{PartitionPosition, Poll, Source};
use crate::{ConnectorError, Result};

/// Reads JSON Lines from standard input. It cannot be replayed.
#[derive(Debug)]
pub struct StdinSource {
    stage: Arc<str>,
    decoder: Arc<Decoder>,
    reader: LineReader<std::io::Stdin>,
    ended: bool,
}

impl StdinSource {
    /// A source on this process's standard input.
    pub fn new(name: &str, decoder: Arc<Decoder>) -> StdinSource {
        StdinSource {
            stage: Arc::from(format!("source {name}").as_str()),
            decoder,
            reader: LineReader::new(std::io::stdin(), 0, 1),
            ended: false,
        }
    }
}

impl Source for StdinSource {
    fn poll_batch(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        dead_letters: &mut Vec<SideRecord>,
    ) -> Result<Poll> {
        if self.ended {
            return Ok(Poll::End);
        }
        let records = read_lines(
            &mut self.reader,
            &self.decoder,
            &self.stage,
            true,
            max,
            events,
            dead_letters,
        )
        .map_err(|source| ConnectorError::Io {
            context: format!("{}: cannot read standard input", self.stage),
            cause: source,
        })?;
        if records > 0 {
            Ok(Poll::Data { partition: 0 })
        } else {
            self.ended = true;
            Ok(Poll::PartitionEnd { partition: 0 })
        }
    }

    fn partitions(&self) -> usize {
        1
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        vec![PartitionPosition {
            name: "stdin".into(),
            offset: self.reader.offset(),
            line: self.reader.line_number(),
        }]
    }

    fn replayable(&self) -> bool {
        false
    }

    fn seek(&mut self, positions: &[PartitionPosition]) -> Result<()> {
        if positions.iter().any(|position| position.offset > 0) {
            return Err(ConnectorError::Checkpoint(format!(
                "{}: standard input cannot be replayed from a checkpoint",
                self.stage
            )));
        }
        Ok(())
    }

    fn bytes_read(&self) -> u64 {
        self.reader.offset()
    }
}

/// The settings `configure` takes.
pub(crate) const KEYS: &[&str] = &[];

/// `type: stdin` takes no settings of its own.
pub(crate) fn configure(_settings: &mut Settings<'_>) -> Option<SourceKind> {
    Some(SourceKind::Stdin)
}
