//! The source feed: one thread per source, reading batches, stamping processing times,
//! generating watermarks, and sending barriers and the end of input in band to the chain.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflow_checkpoint::PartitionState;
use dataflow_connectors::http::IngestHub;
use dataflow_connectors::ratelimit::RateLimiter;
use dataflow_connectors::source::{PartitionPosition, Poll, Source};
use dataflow_event::time::now_millis;
use dataflow_event::Event;
use dataflow_metrics::{Counters, SourceMetrics};
use dataflow_operators::SideRecord;
use dataflow_window::{BoundedOutOfOrderness, WatermarkCombiner};
use tokio::sync::mpsc;

use super::chain::Fused;
use super::messages::Message;
use super::stop::{Failure, Reading, SourceSignals};
use crate::control::ControlHandle;
use crate::plan::{Plan, SourcePlan};
use crate::spec::WatermarkSpec;
use crate::Result;

/// How long a followed file waits before looking for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// The longest a source sleeps at once while waiting for its rate limit, so that a stop is seen.
const RATE_WAIT_SLICE: Duration = Duration::from_millis(50);

/// A source opened for a run, with what its thread needs besides.
pub(super) struct OpenedSource {
    pub(super) source: Box<dyn Source>,
    pub(super) watermark: WatermarkSpec,
    /// Its rate limit, when it waits on its own thread (an http source applies its limit when
    /// it admits a request instead: it cannot wait).
    pub(super) limiter: Option<RateLimiter>,
}

/// Opens every source of `plan`, so that a bad path fails the run before anything runs.
pub(super) fn open_sources(plan: &Plan, ingest: &IngestHub) -> Result<Vec<OpenedSource>> {
    let mut sources = Vec::new();
    for source in &plan.sources {
        let mut opened = open_source(source, ingest)?;
        // Decoding spreads over as many threads as there are workers (file sources).
        opened.decode_in_parallel(plan.runtime.parallelism)?;
        // An http source applies its rate limit where it admits requests (see `IngestHub`).
        let limiter = if source.spec.kind.is_ingest() {
            None
        } else {
            source.spec.rate_limit.as_ref().map(RateLimiter::new)
        };
        sources.push(OpenedSource {
            source: opened,
            watermark: source.spec.watermark,
            limiter,
        });
    }
    Ok(sources)
}

fn open_source(plan: &SourcePlan, ingest: &IngestHub) -> Result<Box<dyn Source>> {
    Ok(plan
        .spec
        .kind
        .open(&plan.spec.name, plan.decoder.clone(), ingest)?)
}

/// What every source thread of a run shares.
pub(super) struct FeedContext {
    pub(super) side: mpsc::Sender<Vec<SideRecord>>,
    pub(super) counters: Arc<Counters>,
    pub(super) signals: SourceSignals,
    pub(super) batch_size: usize,
    pub(super) fire_on_stop: bool,
    pub(super) control: ControlHandle,
    pub(super) reading: Reading,
    pub(super) failure: Failure,
}

impl SourceFeed {
    /// The feed of source `input`, handing its messages to `out`.
    pub(super) fn new(
        context: &FeedContext,
        out: FeedOut,
        input: usize,
        limiter: Option<RateLimiter>,
        metrics: SourceMetrics,
    ) -> SourceFeed {
        SourceFeed {
            input,
            out,
            side: context.side.clone(),
            counters: context.counters.clone(),
            signals: context.signals.clone(),
            batch_size: context.batch_size,
            fire_on_stop: context.fire_on_stop,
            limiter,
            metrics,
            control: context.control.clone(),
            reading: context.reading.clone(),
            failure: context.failure.clone(),
        }
    }
}

/// Where a source's messages go.
pub(super) enum FeedOut {
    /// To the chain's channel, which every source thread feeds.
    Channel(mpsc::Sender<(usize, Message)>),
    /// Straight into the chain, run on the source's thread (see [`Fused`]).
    Fused(Box<Fused>),
}

/// Drives one source on its own thread.
pub(super) struct SourceFeed {
    input: usize,
    out: FeedOut,
    side: mpsc::Sender<Vec<SideRecord>>,
    counters: Arc<Counters>,
    /// The coordinator's barrier requests and stop.
    signals: SourceSignals,
    batch_size: usize,
    fire_on_stop: bool,
    /// The source's rate limit, if any.
    limiter: Option<RateLimiter>,
    metrics: SourceMetrics,
    /// Where the source reports its watermarks (see [`crate::control`]).
    control: ControlHandle,
    /// Where it says when it is inside a read.
    reading: Reading,
    /// Where it reports its failure.
    failure: Failure,
}

impl SourceFeed {
    /// Hands `message` on; false if the chain is gone (or, fused, done). Time spent handing
    /// on counts as the source's backpressure: fused, that is the chain's own work, which the
    /// source waits for as it would wait for room in the channel.
    fn send(&mut self, message: Message) -> bool {
        let started = Instant::now();
        let sent = match &mut self.out {
            FeedOut::Channel(tx) => tx.blocking_send((self.input, message)).is_ok(),
            FeedOut::Fused(chain) => chain.deliver(message),
        };
        self.metrics.backpressured(started.elapsed());
        sent
    }

    /// Between two reads: a fused chain ticks when one is due; false once it is done.
    fn between_reads(&mut self) -> bool {
        match &mut self.out {
            FeedOut::Channel(_) => true,
            FeedOut::Fused(chain) => chain.idle(),
        }
    }

    /// Runs the source, and with it the chain fused into its thread: the source's result and
    /// the chain's.
    pub(super) fn run_fused(
        mut self,
        source: Box<dyn Source>,
        watermark: WatermarkSpec,
        initial: Vec<PartitionState>,
    ) -> (Result<()>, Result<()>) {
        let result = self.read(source, watermark, initial);
        self.reading.end(self.input);
        let result = result.map_err(|error| self.failure.report(error, "a source"));
        let chain = match &mut self.out {
            FeedOut::Fused(chain) => chain.end(),
            FeedOut::Channel(_) => Ok(()),
        };
        (result, chain)
    }

    /// Reads the source to its end or a stop. A failure is reported to the run before the
    /// source lets go of its channel, so that the run ends with the source's own error.
    pub(super) fn run(
        mut self,
        source: Box<dyn Source>,
        watermark: WatermarkSpec,
        initial: Vec<PartitionState>,
    ) -> Result<()> {
        let result = self.read(source, watermark, initial);
        self.reading.end(self.input);
        result.map_err(|error| self.failure.report(error, "a source"))
    }

    fn read(
        &mut self,
        mut source: Box<dyn Source>,
        watermark: WatermarkSpec,
        initial: Vec<PartitionState>,
    ) -> Result<()> {
        let partitions = source.partitions();
        // A source may checkpoint more positions than it has partitions (a repartition
        // source's upstream offsets); the partitions come first.
        let mut names: Vec<String> = source.positions().into_iter().map(|p| p.name).collect();
        names.truncate(partitions);
        // A source carrying its watermarks hands them over as they are (no disorder bound).
        let carried = source.carries_watermarks();
        let bound = if carried {
            0
        } else {
            watermark.out_of_orderness
        };
        let mut generators = vec![BoundedOutOfOrderness::new(bound); partitions];
        let mut combiner = WatermarkCombiner::new(partitions, watermark.idle_timeout);
        // A restored partition starts at its checkpointed watermark.
        for state in &initial {
            if let Some(index) = names.iter().position(|name| *name == state.name) {
                if state.watermark > i64::MIN {
                    generators[index].observe(state.watermark.saturating_add(bound));
                }
            }
        }
        let mut last_sent = i64::MIN;
        let mut last_barrier = 0;
        // The positions of the barriers sent whose checkpoint is not saved yet, oldest first.
        let mut unsaved: VecDeque<(u64, Vec<PartitionPosition>)> = VecDeque::new();
        let concurrent = source.concurrent_partitions();
        let mut lags_reported = Instant::now();
        let mut last_bytes = 0u64;
        // The rate limiter's clock: time since the source started.
        let clock = Instant::now();
        let states = |source: &dyn Source, generators: &[BoundedOutOfOrderness]| {
            source
                .positions()
                .into_iter()
                .enumerate()
                .map(|(index, position)| PartitionState {
                    name: position.name,
                    offset: position.offset,
                    line: position.line,
                    watermark: generators
                        .get(index)
                        .map_or(i64::MIN, BoundedOutOfOrderness::current),
                })
                .collect::<Vec<_>>()
        };
        loop {
            // A barrier first, so that a stop's final barrier goes out before the end.
            let wanted = self.signals.trigger.load(Ordering::SeqCst);
            if wanted > last_barrier {
                last_barrier = wanted;
                let partitions = states(source.as_ref(), &generators);
                unsaved.push_back((wanted, source.positions()));
                if !self.send(Message::Barrier {
                    id: wanted,
                    partitions,
                }) {
                    return Ok(());
                }
            }
            // Per-partition lag, where the source knows it, once a second.
            if lags_reported.elapsed() >= Duration::from_secs(1) {
                lags_reported = Instant::now();
                for (partition, records) in source.partition_lags() {
                    self.metrics.set_partition_lag(&partition, records);
                }
            }
            // A saved checkpoint's positions go back to the source (Kafka commits them).
            let saved = self.signals.saved.load(Ordering::SeqCst);
            let mut newest = None;
            while unsaved.front().is_some_and(|(id, _)| *id <= saved) {
                newest = unsaved.pop_front();
            }
            if let Some((_, positions)) = newest {
                source.checkpoint_completed(&positions);
            }
            // A source holding acknowledged records (HTTP ingest) hands them on first.
            if self.signals.stop.load(Ordering::SeqCst) && !source.drain_before_stop() {
                let partitions = states(source.as_ref(), &generators);
                self.control
                    .report_source(self.input, &names, &generators, &combiner, None, true);
                self.send(Message::End {
                    fire: self.fire_on_stop && !self.signals.halt.load(Ordering::SeqCst),
                    partitions,
                });
                return Ok(());
            }
            let max = match &self.limiter {
                Some(limiter) => limiter.max_batch().min(self.batch_size),
                None => self.batch_size,
            };
            let mut events = Vec::with_capacity(max);
            let mut dead_letters = Vec::new();
            let reading = Instant::now();
            self.reading.begin(self.input);
            let poll = source.poll_batch(max, &mut events, &mut dead_letters);
            self.reading.end(self.input);
            let poll = poll?;
            // A source may find partitions while it runs (Kafka: a partition added to a topic),
            // each after the others: each gets its own watermark, in the combiner from now on.
            let count = source.partitions();
            if count > generators.len() {
                let now = now_millis();
                names = source.positions().into_iter().map(|p| p.name).collect();
                names.truncate(count);
                while generators.len() < count {
                    generators.push(BoundedOutOfOrderness::new(bound));
                    combiner.add_input(now);
                }
            }
            // A poll that found nothing waited for input rather than worked.
            if matches!(poll, Poll::Pending) {
                self.metrics.starved(reading.elapsed());
            } else {
                self.metrics.busy(reading.elapsed());
            }
            let now = now_millis();
            let records = (events.len() + dead_letters.len()) as u64;
            let bytes = source.bytes_read();
            if records > 0 {
                self.counters.add_read(records, 0);
                self.metrics.events_read(records);
                self.metrics.dead_letters(dead_letters.len() as u64);
            }
            self.metrics.bytes_read(bytes.saturating_sub(last_bytes));
            last_bytes = bytes;
            self.counters.set_bytes_read(bytes);
            if !dead_letters.is_empty() && self.side.blocking_send(dead_letters).is_err() {
                return Ok(());
            }
            let event_partition = match poll {
                Poll::Data { partition } if !events.is_empty() => Some(partition),
                _ => None,
            };
            match poll {
                Poll::Data { partition } => {
                    let every = watermark.every.unwrap_or(usize::MAX).max(1);
                    // One chunk per watermark update: the whole batch unless `every` is smaller
                    // (then the batch's own vector, not a copy).
                    let chunks = if events.is_empty() {
                        Vec::new()
                    } else if events.len() <= every {
                        vec![events]
                    } else {
                        let mut rest = events.into_iter();
                        std::iter::from_fn(|| {
                            let chunk: Vec<Event> = rest.by_ref().take(every).collect();
                            (!chunk.is_empty()).then_some(chunk)
                        })
                        .collect()
                    };
                    let mut rest = chunks.into_iter().peekable();
                    while let Some(mut chunk) = rest.next() {
                        let mut max_time = i64::MIN;
                        for event in &mut chunk {
                            event.processing_time = now;
                            max_time = max_time.max(event.event_time);
                        }
                        if let Some(generator) = generators.get_mut(partition) {
                            if carried {
                                combiner.activity(partition, now);
                            } else {
                                generator.observe(max_time);
                                combiner.update(partition, generator.current(), now);
                            }
                        }
                        // Partitions that speak at once (Kafka): the silent ones may be idle
                        // while others speak. (A file waiting its turn is not idle.)
                        if concurrent {
                            combiner.check_idle(now);
                        }
                        if !self.send_events(chunk, clock) {
                            return Ok(());
                        }
                        if rest.peek().is_some() && !self.send_watermark(&combiner, &mut last_sent)
                        {
                            return Ok(());
                        }
                    }
                }
                Poll::Pending => {
                    combiner.check_idle(now);
                    std::thread::sleep(FOLLOW_POLL);
                    if !self.between_reads() {
                        return Ok(());
                    }
                }
                Poll::PartitionEnd { partition } => combiner.finish(partition),
                Poll::End => {
                    let partitions = states(source.as_ref(), &generators);
                    self.control.report_source(
                        self.input,
                        &names,
                        &generators,
                        &combiner,
                        None,
                        true,
                    );
                    self.send(Message::End {
                        fire: true,
                        partitions,
                    });
                    return Ok(());
                }
            }
            if carried {
                for (partition, generator) in generators.iter_mut().enumerate() {
                    // Only an advance counts as the partition's activity.
                    if let Some(carried) = source
                        .carried_watermark(partition)
                        .filter(|carried| *carried > generator.current())
                    {
                        generator.observe(carried);
                        combiner.update(partition, generator.current(), now);
                    }
                }
            }
            self.control.report_source(
                self.input,
                &names,
                &generators,
                &combiner,
                event_partition,
                false,
            );
            if !self.send_watermark(&combiner, &mut last_sent) {
                return Ok(());
            }
        }
    }

    /// Sends a batch of events, first waiting as long as the rate limit says; false if the
    /// chain is gone. In adaptive mode, how long the send was blocked by backpressure is the
    /// latency the limiter observes (see [`dataflow_connectors::ratelimit`]).
    fn send_events(&mut self, events: Vec<Event>, clock: Instant) -> bool {
        if self.limiter.is_none() {
            return self.send(Message::Events(events));
        }
        let count = events.len() as u64;
        let wait = self.limiter.as_mut().map_or(Duration::ZERO, |limiter| {
            limiter.acquire(count, clock.elapsed())
        });
        if !wait.is_zero() {
            let waited = self.wait(wait);
            self.counters.add_rate_limit_wait(waited);
            self.metrics.rate_limit_wait(waited);
        }
        let started = Instant::now();
        let sent = self.send(Message::Events(events));
        let blocked = started.elapsed();
        if let Some(limiter) = &mut self.limiter {
            limiter.observe(blocked, clock.elapsed());
        }
        sent
    }

    /// Sleeps for `wait`, in slices so that a stop cuts it short (the batch is then sent at
    /// once: it has been read, and the final barrier's positions are past it). Returns how long
    /// it slept.
    fn wait(&self, wait: Duration) -> Duration {
        let started = Instant::now();
        while !self.signals.stop.load(Ordering::SeqCst) {
            let Some(left) = wait.checked_sub(started.elapsed()) else {
                break;
            };
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(RATE_WAIT_SLICE));
        }
        started.elapsed()
    }

    /// Sends the combined watermark if it advanced; false if the chain is gone.
    fn send_watermark(&mut self, combiner: &WatermarkCombiner, last_sent: &mut i64) -> bool {
        let current = combiner.current();
        if current > *last_sent && current != i64::MAX {
            *last_sent = current;
            return self.send(Message::Watermark(current));
        }
        true
    }
}
