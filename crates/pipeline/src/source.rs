//! Sources: the trait, and the file, stdin and generator sources.
//!
//! Sources are synchronous and run on a thread of their own (reading and decoding are the
//! heaviest work of most pipelines); the runtime moves their batches into the async part.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use dataflow_event::json::Decoder;
use dataflow_event::Event;

use crate::generator::Generator;
use crate::operator::{SideData, SideKind, SideRecord};
use crate::{PipelineError, Result};

/// What a call to [`Source::poll_batch`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Events (possibly none, if every record was a dead letter) from this partition.
    Data {
        /// The partition they came from.
        partition: usize,
    },
    /// Nothing available now (a followed file at its end); ask again later.
    Pending,
    /// This partition has ended; it will produce no more.
    PartitionEnd {
        /// The partition.
        partition: usize,
    },
    /// Every partition has ended.
    End,
}

/// Where a partition is: what a checkpoint stores to replay from there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPosition {
    /// The partition's name (a file path, `stdin`, `generator`).
    pub name: String,
    /// The byte offset (files) or event index (generator) of the next record.
    pub offset: u64,
    /// The 1-based number of the next line (files), for messages.
    pub line: u64,
}

/// A source of events, read batch by batch on a thread of its own.
pub trait Source: Send {
    /// Reads at most `max` records from one partition, appending events to `events` and records
    /// that could not be decoded to `dead_letters`. May block until data is available.
    fn poll_batch(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        dead_letters: &mut Vec<SideRecord>,
    ) -> Result<Poll>;

    /// How many partitions the source has. Each has its own position and watermark.
    fn partitions(&self) -> usize;

    /// Where every partition is.
    fn positions(&self) -> Vec<PartitionPosition>;

    /// Whether the source can seek back to a position (stdin cannot).
    fn replayable(&self) -> bool;

    /// Moves partitions to positions taken by [`Source::positions`] (for a restore), matched
    /// by partition name. A partition without a position starts from the beginning.
    fn seek(&mut self, positions: &[PartitionPosition]) -> Result<()>;

    /// Bytes consumed so far (for progress and metrics); 0 for sources that read no bytes.
    fn bytes_read(&self) -> u64 {
        0
    }

    /// Total input size in bytes, when known (for progress bars).
    fn size_hint(&self) -> Option<u64> {
        None
    }

    /// Called when the run stops, before the source's end is sent, until it returns false: a
    /// source holding records it has already acknowledged to their producer (HTTP ingest)
    /// stops taking more and returns true while some are left, so that they are read first.
    fn drain_before_stop(&mut self) -> bool {
        false
    }
}

/// Splits a byte stream into lines with large reads, tracking the offset of each line.
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    reader: R,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// Byte offset in the stream of `buffer[start]`: where the next unread line begins.
    offset: u64,
    /// The 1-based number of the next line.
    line: u64,
    eof: bool,
}

const READ_SIZE: usize = 1 << 20;
/// Longer lines are refused as dead letters rather than grown into without limit.
const MAX_LINE: usize = 16 << 20;

/// One line read by a [`LineReader`].
pub(crate) enum Line<'a> {
    /// A complete line, without its newline, and its number.
    Text(&'a [u8], u64),
    /// A line longer than the limit, skipped; its number.
    TooLong(u64),
    /// No complete line buffered and nothing more to read now.
    Exhausted,
}

impl<R: Read> LineReader<R> {
    pub(crate) fn new(reader: R, offset: u64, line: u64) -> Self {
        LineReader {
            reader,
            buffer: vec![0; READ_SIZE],
            start: 0,
            end: 0,
            offset,
            line,
            eof: false,
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn line_number(&self) -> u64 {
        self.line
    }

    /// Whether a complete line is buffered, so that the next line needs no read (which may
    /// block on a pipe or a terminal).
    pub(crate) fn has_buffered_line(&self) -> bool {
        memchr::memchr(b'\n', &self.buffer[self.start..self.end]).is_some()
    }

    /// Forgets a previous end of input, to read again from a file that grew.
    pub(crate) fn retry(&mut self) {
        self.eof = false;
    }

    /// The next line. At the end of input, a final line without a newline is returned as a
    /// line only when `final_partial` is set (a followed file may still be writing it).
    pub(crate) fn next_line(&mut self, final_partial: bool) -> std::io::Result<Line<'_>> {
        loop {
            if let Some(position) = memchr::memchr(b'\n', &self.buffer[self.start..self.end]) {
                let line_start = self.start;
                let line_end = self.start + position;
                self.start = line_end + 1;
                self.offset += position as u64 + 1;
                let number = self.line;
                self.line += 1;
                let mut text = &self.buffer[line_start..line_end];
                if let Some(stripped) = text.strip_suffix(b"\r") {
                    text = stripped;
                }
                return Ok(Line::Text(text, number));
            }
            if self.eof {
                if final_partial && self.end > self.start {
                    let text = &self.buffer[self.start..self.end];
                    self.offset += text.len() as u64;
                    self.start = self.end;
                    let number = self.line;
                    self.line += 1;
                    return Ok(Line::Text(text, number));
                }
                return Ok(Line::Exhausted);
            }
            // Make room: move the partial line to the front, or grow for a long line.
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buffer.len() {
                if self.buffer.len() >= MAX_LINE {
                    return self.skip_long_line();
                }
                self.buffer.resize(self.buffer.len() * 2, 0);
            }
            let read = self.reader.read(&mut self.buffer[self.end..])?;
            if read == 0 {
                self.eof = true;
            }
            self.end += read;
        }
    }

    fn skip_long_line(&mut self) -> std::io::Result<Line<'static>> {
        let number = self.line;
        loop {
            if let Some(position) = memchr::memchr(b'\n', &self.buffer[self.start..self.end]) {
                self.start += position + 1;
                self.offset += position as u64 + 1;
                self.line += 1;
                return Ok(Line::TooLong(number));
            }
            self.offset += (self.end - self.start) as u64;
            self.start = 0;
            self.end = self.reader.read(&mut self.buffer)?;
            if self.end == 0 {
                self.eof = true;
                self.line += 1;
                return Ok(Line::TooLong(number));
            }
        }
    }
}

/// Decodes lines from `reader` into events until `max` are read or no line is left.
fn read_lines<R: Read>(
    reader: &mut LineReader<R>,
    decoder: &Decoder,
    stage: &Arc<str>,
    final_partial: bool,
    max: usize,
    events: &mut Vec<Event>,
    dead_letters: &mut Vec<SideRecord>,
) -> std::io::Result<usize> {
    let mut records = 0;
    while records < max {
        // Hand on what is decoded rather than wait for more input: a pipe may stay quiet.
        if records > 0 && !reader.has_buffered_line() {
            break;
        }
        match reader.next_line(final_partial)? {
            Line::Text(text, number) => {
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                records += 1;
                match decoder.decode(text, number) {
                    Ok(event) => events.push(event),
                    Err(error) => dead_letters.push(SideRecord {
                        kind: SideKind::DeadLetter,
                        stage: stage.clone(),
                        reason: error.to_string(),
                        line: Some(number),
                        record: SideData::Raw(String::from_utf8_lossy(text).into_owned()),
                    }),
                }
            }
            Line::TooLong(number) => {
                records += 1;
                dead_letters.push(SideRecord {
                    kind: SideKind::DeadLetter,
                    stage: stage.clone(),
                    reason: format!("line {number}: longer than {MAX_LINE} bytes"),
                    line: Some(number),
                    record: SideData::Raw(String::new()),
                });
            }
            Line::Exhausted => break,
        }
    }
    Ok(records)
}

#[derive(Debug)]
struct FilePartition {
    path: PathBuf,
    reader: LineReader<File>,
    ended: bool,
}

/// Reads JSON Lines files; each file is a partition with its own byte offset.
#[derive(Debug)]
pub struct FileSource {
    stage: Arc<str>,
    decoder: Arc<Decoder>,
    partitions: Vec<FilePartition>,
    follow: bool,
    next: usize,
    size: u64,
}

impl FileSource {
    /// Opens `paths`, each from the start.
    pub fn open(
        name: &str,
        paths: &[PathBuf],
        decoder: Arc<Decoder>,
        follow: bool,
    ) -> Result<FileSource> {
        let mut partitions = Vec::new();
        let mut size = 0;
        for path in paths {
            let file = File::open(path).map_err(|source| PipelineError::Io {
                context: format!("source `{name}`: cannot open {}", path.display()),
                source,
            })?;
            size += file.metadata().map(|m| m.len()).unwrap_or(0);
            partitions.push(FilePartition {
                path: path.clone(),
                reader: LineReader::new(file, 0, 1),
                ended: false,
            });
        }
        Ok(FileSource {
            stage: Arc::from(format!("source {name}").as_str()),
            decoder,
            partitions,
            follow,
            next: 0,
            size,
        })
    }

    /// Moves partition `partition` to byte `offset`, which must be the start of line `line`.
    pub fn seek_partition(&mut self, partition: usize, offset: u64, line: u64) -> Result<()> {
        let Some(part) = self.partitions.get_mut(partition) else {
            return Err(PipelineError::Runtime(format!("no partition {partition}")));
        };
        let mut file = File::open(&part.path).map_err(|source| PipelineError::Io {
            context: format!("cannot reopen {}", part.path.display()),
            source,
        })?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|source| PipelineError::Io {
                context: format!("cannot seek {} to byte {offset}", part.path.display()),
                source,
            })?;
        part.reader = LineReader::new(file, offset, line);
        part.ended = false;
        Ok(())
    }
}

impl Source for FileSource {
    fn poll_batch(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        dead_letters: &mut Vec<SideRecord>,
    ) -> Result<Poll> {
        let count = self.partitions.len();
        let mut pending = false;
        // Round robin over partitions so that every partition's watermark advances.
        for _ in 0..count {
            let index = self.next;
            self.next = (self.next + 1) % count;
            let part = &mut self.partitions[index];
            if part.ended {
                continue;
            }
            if self.follow {
                part.reader.retry();
            }
            let records = read_lines(
                &mut part.reader,
                &self.decoder,
                &self.stage,
                !self.follow,
                max,
                events,
                dead_letters,
            )
            .map_err(|source| PipelineError::Io {
                context: format!("{}: cannot read {}", self.stage, part.path.display()),
                source,
            })?;
            if records > 0 {
                return Ok(Poll::Data { partition: index });
            }
            if self.follow {
                pending = true;
            } else {
                part.ended = true;
                return Ok(Poll::PartitionEnd { partition: index });
            }
        }
        Ok(if pending { Poll::Pending } else { Poll::End })
    }

    fn partitions(&self) -> usize {
        self.partitions.len()
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        self.partitions
            .iter()
            .map(|part| PartitionPosition {
                name: part.path.display().to_string(),
                offset: part.reader.offset(),
                line: part.reader.line_number(),
            })
            .collect()
    }

    fn replayable(&self) -> bool {
        true
    }

    fn seek(&mut self, positions: &[PartitionPosition]) -> Result<()> {
        for position in positions {
            let Some(index) = self
                .partitions
                .iter()
                .position(|part| part.path.display().to_string() == position.name)
            else {
                return Err(PipelineError::Checkpoint(format!(
                    "{}: the checkpoint has a position in {}, which this source does not read",
                    self.stage, position.name
                )));
            };
            self.seek_partition(index, position.offset, position.line)?;
        }
        Ok(())
    }

    fn size_hint(&self) -> Option<u64> {
        (!self.follow).then_some(self.size)
    }

    fn bytes_read(&self) -> u64 {
        self.partitions
            .iter()
            .map(|part| part.reader.offset())
            .sum()
    }
}

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
        .map_err(|source| PipelineError::Io {
            context: format!("{}: cannot read standard input", self.stage),
            source,
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
            return Err(PipelineError::Checkpoint(format!(
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

/// The built-in generator as a source, optionally paced to a rate of events per second.
#[derive(Debug)]
pub struct GeneratorSource {
    generator: Generator,
    rate: Option<u64>,
    started: Option<std::time::Instant>,
    produced: u64,
    ended: bool,
}

impl GeneratorSource {
    /// A source over `generator`, at `rate` events per second of wall-clock time if given.
    pub fn new(generator: Generator, rate: Option<u64>) -> GeneratorSource {
        GeneratorSource {
            generator,
            rate,
            started: None,
            produced: 0,
            ended: false,
        }
    }

    /// Moves to event index `position`.
    pub fn seek_to(&mut self, position: u64) {
        self.generator.seek(position);
        self.ended = false;
    }
}

impl Source for GeneratorSource {
    fn poll_batch(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        _dead_letters: &mut Vec<SideRecord>,
    ) -> Result<Poll> {
        if self.ended {
            return Ok(Poll::End);
        }
        let mut max = max;
        if let Some(rate) = self.rate {
            // Pace by wall clock: event n is due at start + n / rate. Waiting here is the point
            // of a rate, so the thread sleeps until the next event is due.
            let started = *self.started.get_or_insert_with(std::time::Instant::now);
            let due = std::time::Duration::from_secs_f64(self.produced as f64 / rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
            max = max.min((rate / 100).max(1) as usize);
        }
        let produced = self.generator.next_batch(max, events);
        self.produced += produced as u64;
        if produced == 0 {
            self.ended = true;
            return Ok(Poll::PartitionEnd { partition: 0 });
        }
        Ok(Poll::Data { partition: 0 })
    }

    fn partitions(&self) -> usize {
        1
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        vec![PartitionPosition {
            name: "generator".into(),
            offset: self.generator.position(),
            line: 0,
        }]
    }

    fn replayable(&self) -> bool {
        true
    }

    fn seek(&mut self, positions: &[PartitionPosition]) -> Result<()> {
        if let Some(position) = positions.first() {
            self.seek_to(position.offset);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], read_size_limit: bool) -> Vec<(String, u64, u64)> {
        let mut reader = LineReader::new(input, 0, 1);
        if read_size_limit {
            reader.buffer.truncate(4);
        }
        let mut out = Vec::new();
        loop {
            match reader.next_line(true).expect("in-memory read") {
                Line::Text(text, number) => {
                    let text = String::from_utf8_lossy(text).into_owned();
                    out.push((text, number, reader.offset()));
                }
                Line::TooLong(number) => out.push(("<too long>".into(), number, reader.offset())),
                Line::Exhausted => return out,
            }
        }
    }

    #[test]
    fn line_reader_tracks_offsets_across_refills_and_crlf() {
        let input = b"ab\r\ncdefghij\n\nlast";
        let expected = vec![
            ("ab".to_string(), 1, 4),
            ("cdefghij".to_string(), 2, 13),
            ("".to_string(), 3, 14),
            ("last".to_string(), 4, 18),
        ];
        assert_eq!(lines(input, false), expected);
        assert_eq!(lines(input, true), expected);
    }
}
