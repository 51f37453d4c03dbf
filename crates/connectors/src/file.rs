//! `type: file`: JSON Lines files, each a partition with its own byte offset and watermark,
//! optionally followed as they grow, decoded on a pool of threads with `parallelism > 1`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use dataflow_event::json::Decoder;
use dataflow_event::Event;

use crate::config::{PathUse, Settings};
use crate::lines::{decode_line, split_lines, Decoded, Line, LineReader, RawBatch};
use crate::registry::SourceKind;
use crate::side::SideRecord;
use crate::source::{PartitionPosition, Poll, Source};
use crate::{ConnectorError, Result};

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
                .map_err(|source| ConnectorError::Io {
                    context: format!("{stage}: cannot start a decode thread"),
                    cause: source,
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
            return Err(ConnectorError::Runtime("the decode threads stopped".into()));
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
    /// Whether every file is a regular file (a FIFO or a device may wait in a read).
    regular: bool,
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
        let mut regular = true;
        for path in paths {
            let file = File::open(path).map_err(|source| ConnectorError::Io {
                context: format!("source `{name}`: cannot open {}", path.display()),
                cause: source,
            })?;
            let metadata = file.metadata().ok();
            size += metadata.as_ref().map_or(0, |m| m.len());
            regular &= metadata.is_some_and(|m| m.is_file());
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
            regular,
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
            return Err(ConnectorError::Runtime(format!("no partition {partition}")));
        };
        let mut file = File::open(&part.path).map_err(|source| ConnectorError::Io {
            context: format!("cannot reopen {}", part.path.display()),
            cause: source,
        })?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|source| ConnectorError::Io {
                context: format!("cannot seek {} to byte {offset}", part.path.display()),
                cause: source,
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
                    ConnectorError::Io {
                        context: format!("{}: cannot read {}", self.stage, part.path.display()),
                        cause: source,
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
                    .map_err(|_| ConnectorError::Runtime("a decode thread stopped".into()))?;
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

    fn reads_without_waiting(&self) -> bool {
        self.regular
    }

    fn seek(&mut self, positions: &[PartitionPosition]) -> Result<()> {
        for position in positions {
            let Some(index) = self
                .partitions
                .iter()
                .position(|part| part.path.display().to_string() == position.name)
            else {
                return Err(ConnectorError::Checkpoint(format!(
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

/// The settings `configure` takes.
pub(crate) const KEYS: &[&str] = &["path", "paths", "follow"];

/// `type: file` settings: `path` or `paths`, and `follow`.
pub(crate) fn configure(settings: &mut Settings<'_>) -> Option<SourceKind> {
    let mut paths: Vec<PathBuf> = settings.path("path", PathUse::Read).into_iter().collect();
    paths.extend(settings.paths("paths", PathUse::Read));
    if paths.is_empty() {
        let place = settings.place();
        settings.problem(place, "a file source needs `path` or `paths`");
    }
    let follow = settings.bool("follow").unwrap_or(false);
    Some(SourceKind::File { paths, follow })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::READ_SIZE;

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
}
