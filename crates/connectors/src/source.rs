//! The source trait: what every connector that reads events implements.
//!
//! Sources are synchronous and run on a thread of their own (reading and decoding are the
//! heaviest work of most pipelines); the runtime moves their batches into the async part.

use dataflow_event::Event;

use crate::side::SideRecord;
use crate::Result;

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

    /// Where every partition is, in partition order. A source may append positions of its own
    /// after its partitions' (a repartition source's dedup map and markers): they are
    /// checkpointed and given back to [`Source::seek`], but carry no watermark.
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

    /// Whether its partitions deliver at once (the partitions of Kafka topics), so that a
    /// silent one may go idle while others speak; false for sources that read their
    /// partitions one after another (files), whose unread partitions are waiting their turn.
    fn concurrent_partitions(&self) -> bool {
        false
    }

    /// The checkpoint whose barrier carried `positions` (taken by [`Source::positions`]) has
    /// been saved: a source may tell its origin how far it got (Kafka commits the offsets to
    /// its consumer group, for lag tools). The checkpoint stays the truth on a restore.
    fn checkpoint_completed(&mut self, positions: &[PartitionPosition]) {
        let _ = positions;
    }

    /// Whether the source carries its partitions' watermarks in band (a repartition topic's
    /// markers, [`crate::kafka_repartition`]): then [`Source::carried_watermark`] is each
    /// partition's watermark, instead of one generated from event times.
    fn carries_watermarks(&self) -> bool {
        false
    }

    /// The watermark partition `partition` carries now, if it has one yet (see
    /// [`Source::carries_watermarks`]).
    fn carried_watermark(&self, partition: usize) -> Option<i64> {
        let _ = partition;
        None
    }

    /// How many records each partition has not read yet, by partition name, for the ones the
    /// source knows it of (Kafka: the consumer lag); by default none.
    fn partition_lags(&self) -> Vec<(String, i64)> {
        Vec::new()
    }

    /// Whether a poll never waits for input to arrive (a file returns [`Poll::Pending`] at its
    /// end, the generator always has its next event), so that the runtime may run the
    /// operators on the source's own thread between polls. False by default: stdin, HTTP
    /// ingest and Kafka may wait in a read.
    fn reads_without_waiting(&self) -> bool {
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
