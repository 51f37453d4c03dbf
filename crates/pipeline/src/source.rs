//! Sources: the trait, and the file, stdin and generator sources.
//!
//! Sources are synchronous and run on a thread of their own (reading and decoding are the
//! heaviest work of most pipelines); the runtime moves their batches into the async part.

use std::collections::VecDeque;
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

    /// Asks the source to decode on `threads` threads of its own (the runtime passes its
    /// `parallelism`). Batches, their order and the positions a checkpoint sees stay exactly
    /// those of decoding on the source's thread; sources that cannot do so ignore it.
    fn decode_in_parallel(&mut self, threads: usize) -> Result<()> {
        let _ = threads;
        Ok(())
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

/// Hands the lines of one batch from `reader` to `line` until `max` records are read or no line
/// is left; blank lines are skipped and not counted. Returns the number of records. Where a
/// batch ends depends only on the input and `max`, never on who decodes it.
fn split_lines<R: Read>(
    reader: &mut LineReader<R>,
    final_partial: bool,
    max: usize,
    mut line: impl FnMut(Line<'_>),
) -> std::io::Result<usize> {
    let mut records = 0;
    while records < max {
        // Hand on what is decoded rather than wait for more input: a pipe may stay quiet.
        if records > 0 && !reader.has_buffered_line() {
            break;
        }
        match reader.next_line(final_partial)? {
            Line::Text(text, _) if text.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Exhausted => break,
            other => {
                records += 1;
                line(other);
            }
        }
    }
    Ok(records)
}

/// Decodes one line (or records a line that was too long) into `events` or `dead_letters`.
fn decode_line(
    line: Line<'_>,
    decoder: &Decoder,
    stage: &Arc<str>,
    events: &mut Vec<Event>,
    dead_letters: &mut Vec<SideRecord>,
) {
    match line {
        Line::Text(text, number) => match decoder.decode(text, number) {
            Ok(event) => events.push(event),
            Err(error) => dead_letters.push(SideRecord {
                kind: SideKind::DeadLetter,
                stage: stage.clone(),
                reason: error.to_string(),
                line: Some(number),
                record: SideData::Raw(String::from_utf8_lossy(text).into_owned()),
            }),
        },
        Line::TooLong(number) => dead_letters.push(SideRecord {
            kind: SideKind::DeadLetter,
            stage: stage.clone(),
            reason: format!("line {number}: longer than {MAX_LINE} bytes"),
            line: Some(number),
            record: SideData::Raw(String::new()),
        }),
        Line::Exhausted => {}
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
    split_lines(reader, final_partial, max, |line| {
        decode_line(line, decoder, stage, events, dead_letters)
    })
}

/// The lines of one batch, copied out of the read buffer for a decode thread.
#[derive(Debug, Default)]
struct RawBatch {
    bytes: Vec<u8>,
    /// Per line: where its text ends in `bytes` (it starts where the previous one ended), its
    /// number, and whether it was too long (then it has no text).
    lines: Vec<(usize, u64, bool)>,
}

impl RawBatch {
    fn push(&mut self, line: Line<'_>) {
        match line {
            Line::Text(text, number) => {
                self.bytes.extend_from_slice(text);
                self.lines.push((self.bytes.len(), number, false));
            }
            Line::TooLong(number) => self.lines.push((self.bytes.len(), number, true)),
            Line::Exhausted => {}
        }
    }

    fn decode(&self, decoder: &Decoder, stage: &Arc<str>) -> Decoded {
        let mut decoded = Decoded {
            events: Vec::with_capacity(self.lines.len()),
            dead_letters: Vec::new(),
        };
        let mut start = 0;
        for &(end, number, too_long) in &self.lines {
            let line = if too_long {
                Line::TooLong(number)
            } else {
                Line::Text(&self.bytes[start..end], number)
            };
            decode_line(
                line,
                decoder,
                stage,
                &mut decoded.events,
                &mut decoded.dead_letters,
            );
            start = end;
        }
        decoded
    }
}

/// What a decode thread hands back for one batch.
#[derive(Debug)]
struct Decoded {
    events: Vec<Event>,
    dead_letters: Vec<SideRecord>,
}

/// A batch given to a decode thread, and where to put its result.
struct DecodeJob {
    batch: RawBatch,
    reply: std::sync::mpsc::SyncSender<Decoded>,
}

/// Threads that decode raw batches. Each batch carries its own reply channel, and the source
/// keeps those in reading order, so batches come back in input order whichever thread decoded
/// them and however long it took.
#[derive(Debug)]
struct DecodePool {
    jobs: Option<std::sync::mpsc::SyncSender<DecodeJob>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DecodePool {
    fn start(threads: usize, decoder: &Arc<Decoder>, stage: &Arc<str>) -> Result<DecodePool> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<DecodeJob>(threads);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let queue = queue.clone();
            let decoder = decoder.clone();
            let thread_stage = stage.clone();
            let handle = std::thread::Builder::new()
                .name(format!("decode-{index}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // The source may have stopped waiting for this batch (a seek): fine.
                    let _ = job.reply.send(job.batch.decode(&decoder, &thread_stage));
                })
                .map_err(|source| PipelineError::Io {
                    context: format!("{stage}: cannot start a decode thread"),
                    source,
                })?;
            handles.push(handle);
        }
        Ok(DecodePool {
            jobs: Some(jobs),
            threads: handles,
        })
    }

    /// Queues `batch`; its result arrives on the returned channel.
    fn submit(&self, batch: RawBatch) -> Result<std::sync::mpsc::Receiver<Decoded>> {
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(DecodeJob { batch, reply }).is_ok());
        if !sent {
            return Err(PipelineError::Runtime("the decode threads stopped".into()));
        }
        Ok(result)
    }
}

impl Drop for DecodePool {
    fn drop(&mut self) {
        // Closing the queue ends the threads once they finish the batch in hand.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One step of a file source read ahead of what it has handed on, in reading order.
#[derive(Debug)]
enum Ahead {
    /// A batch of `partition` being decoded.
    Data {
        partition: usize,
        result: std::sync::mpsc::Receiver<Decoded>,
    },
    /// Anything else a poll can say, in turn.
    Other(Poll),
}

#[derive(Debug)]
struct FilePartition {
    path: PathBuf,
    reader: LineReader<File>,
    ended: bool,
    /// Where the partition is after the last batch handed on (the reader may be ahead of it
    /// when decoding runs on other threads): what checkpoints store.
    offset: u64,
    line: u64,
}

/// Reads JSON Lines files; each file is a partition with its own byte offset.
///
/// By default the thread that polls it reads and decodes. With
/// [`Source::decode_in_parallel`] it only reads and splits lines into batches, hands them to a
/// pool of decode threads and keeps reading ahead (a bounded number of batches), while polls
/// return the decoded batches in reading order: the same batches, with the same positions, as
/// without the pool.
#[derive(Debug)]
pub struct FileSource {
    stage: Arc<str>,
    decoder: Arc<Decoder>,
    partitions: Vec<FilePartition>,
    follow: bool,
    next: usize,
    size: u64,
    pool: Option<DecodePool>,
    /// Steps read ahead, in reading order, each with every partition's position after it.
    ahead: VecDeque<(Ahead, Vec<(u64, u64)>)>,
    /// The most steps read ahead.
    depth: usize,
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
                offset: 0,
                line: 1,
            });
        }
        Ok(FileSource {
            stage: Arc::from(format!("source {name}").as_str()),
            decoder,
            partitions,
            follow,
            next: 0,
            size,
            pool: None,
            ahead: VecDeque::new(),
            depth: 0,
        })
    }

    /// Moves partition `partition` to byte `offset`, which must be the start of line `line`.
    pub fn seek_partition(&mut self, partition: usize, offset: u64, line: u64) -> Result<()> {
        // Whatever was read ahead is from before the seek.
        self.discard_ahead();
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
        part.offset = offset;
        part.line = line;
        Ok(())
    }

    /// Forgets the steps read ahead and moves the readers back to the positions handed on.
    fn discard_ahead(&mut self) {
        if self.ahead.is_empty() {
            return;
        }
        self.ahead.clear();
        let positions: Vec<(usize, u64, u64)> = self
            .partitions
            .iter()
            .enumerate()
            .map(|(index, part)| (index, part.offset, part.line))
            .collect();
        for (index, offset, line) in positions {
            // Reopening a file that opened before does not fail in practice; if it does, the
            // next read reports it.
            if let Err(error) = self.seek_partition(index, offset, line) {
                tracing::warn!(%error, "cannot rewind a file source");
            }
        }
    }

    /// One poll's worth of reading, as a source without a pool polls: the next partition in
    /// turn gives `line` its lines of one batch.
    fn step(&mut self, max: usize, mut line: impl FnMut(Line<'_>)) -> Result<Poll> {
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
            let records =
                split_lines(&mut part.reader, !self.follow, max, &mut line).map_err(|source| {
                    PipelineError::Io {
                        context: format!("{}: cannot read {}", self.stage, part.path.display()),
                        source,
                    }
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

    /// Every partition's reader position.
    fn reader_positions(&self) -> Vec<(u64, u64)> {
        self.partitions
            .iter()
            .map(|part| (part.reader.offset(), part.reader.line_number()))
            .collect()
    }

    fn hand_on(&mut self, positions: &[(u64, u64)]) {
        for (part, &(offset, line)) in self.partitions.iter_mut().zip(positions) {
            part.offset = offset;
            part.line = line;
        }
    }

    /// Polls through the decode pool: reads ahead up to `depth` steps, then hands on the oldest.
    fn poll_pooled(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        dead_letters: &mut Vec<SideRecord>,
    ) -> Result<Poll> {
        // Read ahead until the queue is full or reading stopped giving batches (an end, or
        // nothing yet in a followed file): a later step would not be what a poll then gives.
        while self.ahead.len() < self.depth
            && self
                .ahead
                .back()
                .is_none_or(|(step, _)| matches!(step, Ahead::Data { .. }))
        {
            let mut batch = RawBatch::default();
            let poll = self.step(max, |line| batch.push(line))?;
            let positions = self.reader_positions();
            let step = match (poll, &self.pool) {
                (Poll::Data { partition }, Some(pool)) => Ahead::Data {
                    partition,
                    result: pool.submit(batch)?,
                },
                (poll, _) => Ahead::Other(poll),
            };
            self.ahead.push_back((step, positions));
        }
        let Some((step, positions)) = self.ahead.pop_front() else {
            return Ok(Poll::End);
        };
        let poll = match step {
            Ahead::Data { partition, result } => {
                let decoded = result
                    .recv()
                    .map_err(|_| PipelineError::Runtime("a decode thread stopped".into()))?;
                if events.is_empty() {
                    *events = decoded.events;
                } else {
                    events.extend(decoded.events);
                }
                dead_letters.extend(decoded.dead_letters);
                Poll::Data { partition }
            }
            Ahead::Other(poll) => poll,
        };
        self.hand_on(&positions);
        Ok(poll)
    }
}

impl Source for FileSource {
    fn poll_batch(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        dead_letters: &mut Vec<SideRecord>,
    ) -> Result<Poll> {
        if self.pool.is_some() {
            return self.poll_pooled(max, events, dead_letters);
        }
        let decoder = self.decoder.clone();
        let stage = self.stage.clone();
        let poll = self.step(max, |line| {
            decode_line(line, &decoder, &stage, events, dead_letters)
        })?;
        let positions = self.reader_positions();
        self.hand_on(&positions);
        Ok(poll)
    }

    fn partitions(&self) -> usize {
        self.partitions.len()
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        self.partitions
            .iter()
            .map(|part| PartitionPosition {
                name: part.path.display().to_string(),
                offset: part.offset,
                line: part.line,
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
        self.partitions.iter().map(|part| part.offset).sum()
    }

    fn decode_in_parallel(&mut self, threads: usize) -> Result<()> {
        self.discard_ahead();
        self.pool = None;
        if threads > 1 {
            self.pool = Some(DecodePool::start(threads, &self.decoder, &self.stage)?);
            // Enough batches in flight to keep every thread busy while the oldest is handed
            // on, and no more: memory stays bounded by `depth` batches.
            self.depth = 2 * threads;
        }
        Ok(())
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

    /// Everything a consumer of a source sees, poll by poll: what each poll said, the events
    /// and dead letters it gave, and the positions a checkpoint taken after it would store.
    type Trace = Vec<(Poll, Vec<Event>, Vec<SideRecord>, Vec<PartitionPosition>)>;

    fn poll_all(source: &mut FileSource, max: usize, limit: usize) -> Trace {
        let mut trace = Vec::new();
        while trace.len() < limit {
            let mut events = Vec::new();
            let mut dead_letters = Vec::new();
            let poll = source
                .poll_batch(max, &mut events, &mut dead_letters)
                .expect("poll");
            trace.push((poll, events, dead_letters, source.positions()));
            if poll == Poll::End {
                break;
            }
        }
        trace
    }

    /// Two files with blank lines, CRLF, malformed records, a line too long for the buffer's
    /// first size and a last line without its newline.
    fn files(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut first = String::new();
        let mut second = String::new();
        for i in 0..40 {
            match i % 9 {
                4 => first.push_str("{\"timestamp\": oops\n"),
                6 => first.push_str("   \n"),
                7 => first.push_str(&format!("{{\"timestamp\":{i},\"v\":{i}}}\r\n")),
                _ => first.push_str(&format!("{{\"timestamp\":{i},\"v\":{i}}}\n")),
            }
        }
        for i in 0..23 {
            second.push_str(&format!(
                "{{\"timestamp\":{},\"v\":\"{}\"}}\n",
                1000 + i,
                "x".repeat(i)
            ));
            if i == 11 {
                second.push('\n');
                second.push_str(&format!(
                    "{{\"timestamp\":5,\"v\":\"{}\"}}\n",
                    "y".repeat(READ_SIZE + 10)
                ));
            }
        }
        second.push_str("{\"timestamp\":7,\"v\":1}");
        let paths = vec![dir.join("a.jsonl"), dir.join("b.jsonl")];
        std::fs::write(&paths[0], first).expect("write");
        std::fs::write(&paths[1], second).expect("write");
        paths
    }

    fn open(paths: &[PathBuf], threads: usize) -> FileSource {
        let decoder = Arc::new(Decoder::new(dataflow_event::json::DecoderConfig::default()));
        let mut source = FileSource::open("in", paths, decoder, false).expect("open");
        source.decode_in_parallel(threads).expect("decode threads");
        source
    }

    #[test]
    fn decode_threads_give_the_batches_and_positions_of_one_thread() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let paths = files(dir.path());
        for max in [1, 3, 1024] {
            let serial = poll_all(&mut open(&paths, 1), max, usize::MAX);
            assert!(serial.iter().any(|(_, _, dead, _)| !dead.is_empty()));
            assert!(serial.len() > 3);
            for threads in [2, 3] {
                let pooled = poll_all(&mut open(&paths, threads), max, usize::MAX);
                assert_eq!(pooled, serial, "max {max}, {threads} threads");
                // A restart from the positions after any poll goes on exactly where the serial
                // source did, though the pooled source had read further ahead.
                for cut in [1, serial.len() / 2, serial.len() - 1] {
                    let mut first = open(&paths, threads);
                    let before = poll_all(&mut first, max, cut);
                    let positions = before.last().expect("a poll").3.clone();
                    let mut resumed = open(&paths, threads);
                    resumed.seek(&positions).expect("seek");
                    // Per partition: a restart does not keep the round robin's turn.
                    let by_partition = |trace: Trace| {
                        let mut parts = vec![Vec::new(); paths.len()];
                        for (poll, events, _, _) in trace {
                            if let Poll::Data { partition } = poll {
                                parts[partition].extend(events);
                            }
                        }
                        parts
                    };
                    let resumed = before
                        .into_iter()
                        .chain(poll_all(&mut resumed, max, usize::MAX))
                        .collect();
                    assert_eq!(
                        by_partition(resumed),
                        by_partition(serial.clone()),
                        "max {max}, {threads} threads, cut {cut}"
                    );
                }
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
