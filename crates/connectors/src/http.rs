//! HTTP ingest: the `http` source kind and the hub the processor's `POST /ingest` feeds.
//!
//! Each `http` source owns an [`IngestQueue`]: a bounded queue of decoded batches, counted in
//! events (`queue` in the config). The API's handler calls [`IngestHub::ingest`], which decodes
//! the whole body with the source's decoder first — the same [`Decoder`] and field semantics as
//! the file source — and then, under the queue's lock, either admits every event of the body or
//! none of them:
//!
//! - a record that does not decode refuses the body ([`IngestRefusal::Malformed`], naming the
//!   first bad line or array element and why); nothing of it is queued;
//! - a body the source's `rate_limit` cannot cover now is refused
//!   ([`IngestRefusal::RateLimited`], with how long until it would fit);
//! - a body that does not fit in the queue's free room is refused
//!   ([`IngestRefusal::QueueFull`]);
//! - a stopped (or restoring) source refuses ([`IngestRefusal::ShuttingDown`]);
//! - once the run has failed, every source refuses with the failure ([`IngestRefusal::Failed`]):
//!   nothing would process what is sent.
//!
//! Nothing waits and nothing is dropped: an admitted body is handed to the pipeline whole, a
//! refused one is the client's to retry, and retrying is safe since a refused body left nothing
//! behind. The source thread ([`HttpSource`]) takes the batches off the queue; on a stop it
//! first closes the queue (later requests are refused) and drains what was admitted, so every
//! event answered with 202 reaches the operators.
//!
//! The source is not replayable: a checkpoint cannot bring back what clients sent, so a restore
//! resumes with what arrives next (`docs/guarantees.md`).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dataflow_event::json::Decoder;
use dataflow_event::Event;
use dataflow_metrics::{IngestMetrics, Metrics, RefuseReason};

use crate::config::Settings;
use crate::ratelimit::RateLimiter;
use crate::registry::SourceKind;
use crate::side::SideRecord;
use crate::source::{PartitionPosition, Poll, Source};
use crate::Result;

/// How long a source thread waits on an empty queue before it reports it has nothing
/// (so that it sees barriers, stops and idleness).
const EMPTY_WAIT: Duration = Duration::from_millis(50);
/// How long a refused client is told to wait when the queue is full: about one batch's
/// hand-off at the pipeline's pace.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(100);
/// How long a client is told to wait while the source is not accepting (stopping, restoring).
const STOPPED_RETRY: Duration = Duration::from_secs(1);

/// How the body of an ingest request is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON object, or a JSON array of objects (`application/json`).
    Json,
    /// One JSON object per line; blank lines are skipped (`application/x-ndjson`).
    JsonLines,
}

/// Why an ingest request was refused. Nothing of a refused body was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestRefusal {
    /// No `http` source of that name (or none at all, or several and none named).
    NoSource(String),
    /// A record does not decode: the first bad line (or array element) and why.
    Malformed(String),
    /// The source's rate limit cannot cover the body now; retry after the duration.
    RateLimited(Duration),
    /// The source's queue has no room for the body now; retry after the duration.
    QueueFull(Duration),
    /// The source is stopping or restoring and accepts nothing; retry after the duration.
    ShuttingDown(Duration),
    /// The run has failed, for the reason given: nothing will process what is sent.
    Failed(String),
}

impl std::fmt::Display for IngestRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestRefusal::NoSource(message) | IngestRefusal::Malformed(message) => {
                f.write_str(message)
            }
            IngestRefusal::RateLimited(_) => f.write_str("the source's rate limit is reached"),
            IngestRefusal::QueueFull(_) => f.write_str("the source's queue is full"),
            IngestRefusal::ShuttingDown(_) => {
                f.write_str("the source is stopping or restoring and accepts nothing now")
            }
            IngestRefusal::Failed(reason) => write!(f, "the pipeline failed: {reason}"),
        }
    }
}

/// What the queue holds, under its lock.
#[derive(Debug)]
struct QueueState {
    batches: VecDeque<Vec<Event>>,
    /// Events in `batches`.
    events: usize,
    /// Whether requests are admitted (closed while the source stops or between runs).
    open: bool,
    /// Why the run failed, once it has: requests are refused with it.
    failed: Option<String>,
    limiter: Option<RateLimiter>,
    /// Events admitted in total (for the source's offset).
    admitted: u64,
}

/// The bounded queue between `POST /ingest` and one `http` source's thread.
#[derive(Debug)]
pub struct IngestQueue {
    name: String,
    decoder: Arc<Decoder>,
    capacity: usize,
    /// The rate limiter's clock.
    started: Instant,
    state: Mutex<QueueState>,
    ready: Condvar,
}

impl IngestQueue {
    pub fn new(
        name: &str,
        decoder: Arc<Decoder>,
        capacity: usize,
        limiter: Option<RateLimiter>,
    ) -> IngestQueue {
        IngestQueue {
            name: name.to_owned(),
            decoder,
            capacity: capacity.max(1),
            started: Instant::now(),
            state: Mutex::new(QueueState {
                batches: VecDeque::new(),
                events: 0,
                open: true,
                failed: None,
                limiter,
                admitted: 0,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most events the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Events queued now.
    pub fn len(&self) -> usize {
        self.lock().events
    }

    /// Whether no event is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits all of `events` or none: see the module's documentation. Returns how many.
    fn admit(&self, events: Vec<Event>) -> std::result::Result<u64, IngestRefusal> {
        let count = events.len();
        let mut state = self.lock();
        if let Some(reason) = &state.failed {
            return Err(IngestRefusal::Failed(reason.clone()));
        }
        if !state.open {
            return Err(IngestRefusal::ShuttingDown(STOPPED_RETRY));
        }
        if count == 0 {
            return Ok(0);
        }
        // A body larger than the whole queue is admitted into an empty queue, so that it is
        // never refused forever; the queue then holds at most that body.
        if state.events > 0 && state.events + count > self.capacity {
            return Err(IngestRefusal::QueueFull(QUEUE_FULL_RETRY));
        }
        let now = self.started.elapsed();
        if let Some(limiter) = &mut state.limiter {
            limiter
                .try_acquire(count as u64, now)
                .map_err(IngestRefusal::RateLimited)?;
        }
        state.events += count;
        state.admitted += count as u64;
        state.batches.push_back(events);
        drop(state);
        self.ready.notify_one();
        Ok(count as u64)
    }

    /// Takes up to `max` events, waiting up to `wait` for some; `None` when closed and empty.
    fn take(&self, max: usize, wait: Duration, out: &mut Vec<Event>) -> Option<usize> {
        let mut state = self.lock();
        if state.events == 0 && state.open {
            state = self
                .ready
                .wait_timeout_while(state, wait, |s| s.events == 0 && s.open)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        if state.events == 0 {
            return if state.open { Some(0) } else { None };
        }
        let mut taken = 0;
        while taken < max.max(1) {
            let Some(mut batch) = state.batches.pop_front() else {
                break;
            };
            let room = max.max(1) - taken;
            if batch.len() > room {
                let rest = batch.split_off(room);
                state.batches.push_front(rest);
            }
            taken += batch.len();
            out.append(&mut batch);
        }
        state.events -= taken;
        Some(taken)
    }

    /// Stops admitting requests (they are answered `ShuttingDown`); what is queued stays.
    fn close(&self) {
        self.lock().open = false;
        self.ready.notify_all();
    }

    /// Admits requests again (a new run after a restore).
    fn reopen(&self) {
        let mut state = self.lock();
        state.open = true;
        state.failed = None;
    }

    /// The run failed: refuses every request with `reason` from now on, and lets the source
    /// thread end.
    fn fail(&self, reason: &str) {
        let mut state = self.lock();
        state.open = false;
        state.failed = Some(reason.to_owned());
        drop(state);
        self.ready.notify_all();
    }

    fn admitted(&self) -> u64 {
        self.lock().admitted
    }
}

/// The `http` sources of a pipeline, by name, and their ingest metrics. Cloning shares them;
/// it lives as long as the pipeline, across restores in place.
#[derive(Clone, Debug)]
pub struct IngestHub {
    queues: Arc<Vec<Arc<IngestQueue>>>,
    metrics: IngestMetrics,
}

impl IngestHub {
    /// The queues of pipeline `pipeline`'s `http` sources, reporting to `metrics`.
    pub fn new(
        pipeline: &str,
        queues: impl IntoIterator<Item = IngestQueue>,
        metrics: &Metrics,
    ) -> IngestHub {
        IngestHub {
            queues: Arc::new(queues.into_iter().map(Arc::new).collect()),
            metrics: metrics.ingest(pipeline),
        }
    }

    /// Whether the pipeline has no `http` source.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// The names of the `http` sources.
    pub fn sources(&self) -> Vec<String> {
        self.queues.iter().map(|q| q.name.clone()).collect()
    }

    /// The queue of `http` source `name`.
    pub fn queue(&self, name: &str) -> Option<Arc<IngestQueue>> {
        self.queues.iter().find(|q| q.name == name).cloned()
    }

    fn choose(&self, source: Option<&str>) -> std::result::Result<&IngestQueue, IngestRefusal> {
        match source {
            Some(name) => self
                .queues
                .iter()
                .find(|q| q.name == name)
                .map(|q| q.as_ref())
                .ok_or_else(|| {
                    IngestRefusal::NoSource(format!(
                        "no http source named `{name}`: the pipeline's http sources are [{}]",
                        self.sources().join(", ")
                    ))
                }),
            None => match self.queues.as_slice() {
                [only] => Ok(only),
                [] => Err(IngestRefusal::NoSource(
                    "this pipeline has no source of `type: http` to ingest into".into(),
                )),
                _ => Err(IngestRefusal::NoSource(format!(
                    "this pipeline has several http sources: name one with `?source=` ([{}])",
                    self.sources().join(", ")
                ))),
            },
        }
    }

    /// Decodes `body` with the source's decoder and admits all of its events or none (see the
    /// module's documentation); counts the outcome in the ingest metrics. Never waits.
    pub fn ingest(
        &self,
        source: Option<&str>,
        format: BodyFormat,
        body: &[u8],
    ) -> std::result::Result<u64, IngestRefusal> {
        let result = self
            .choose(source)
            .and_then(|queue| queue.admit(decode_body(&queue.decoder, format, body)?));
        match &result {
            Ok(count) => self.metrics.accepted(*count),
            Err(refusal) => {
                if let Some(reason) = refuse_reason(refusal) {
                    self.metrics.refused(reason);
                }
            }
        }
        result
    }

    /// The run failed for `reason`: every source refuses requests with it from now on
    /// ([`IngestRefusal::Failed`]).
    pub fn fail(&self, reason: &str) {
        for queue in self.queues.iter() {
            queue.fail(reason);
        }
    }

    /// Counts a refusal decided before the body reached the hub (bad credentials, a body over
    /// the size limit, an unsupported content type).
    pub fn refused(&self, reason: RefuseReason) {
        self.metrics.refused(reason);
    }
}

/// The metrics' reason for a refusal; a request for no source is not an ingest refusal.
fn refuse_reason(refusal: &IngestRefusal) -> Option<RefuseReason> {
    match refusal {
        IngestRefusal::NoSource(_) => None,
        IngestRefusal::Malformed(_) => Some(RefuseReason::Malformed),
        IngestRefusal::RateLimited(_) => Some(RefuseReason::RateLimited),
        IngestRefusal::QueueFull(_) => Some(RefuseReason::Overloaded),
        IngestRefusal::ShuttingDown(_) | IngestRefusal::Failed(_) => {
            Some(RefuseReason::ShuttingDown)
        }
    }
}

/// Every event of `body`, or the first record that does not decode.
pub fn decode_body(
    decoder: &Decoder,
    format: BodyFormat,
    body: &[u8],
) -> std::result::Result<Vec<Event>, IngestRefusal> {
    let text = trim(body);
    match format {
        BodyFormat::Json if text.first() == Some(&b'[') => {
            let elements = split_array(text).map_err(IngestRefusal::Malformed)?;
            let mut events = Vec::with_capacity(elements.len());
            for (index, element) in elements.into_iter().enumerate() {
                let number = index as u64 + 1;
                let event = decoder.decode(element, number).map_err(|error| {
                    // The decoder names lines; in an array the record is an element.
                    let message = error.to_string();
                    let reason = message
                        .strip_prefix(&format!("line {number}: "))
                        .unwrap_or(&message);
                    IngestRefusal::Malformed(format!("element {number}: {reason}"))
                })?;
                events.push(event);
            }
            Ok(events)
        }
        BodyFormat::Json => {
            if text.is_empty() {
                return Err(IngestRefusal::Malformed(
                    "the body is empty: expected a JSON object or array".into(),
                ));
            }
            decoder
                .decode(text, 1)
                .map(|event| vec![event])
                .map_err(|error| IngestRefusal::Malformed(error.to_string()))
        }
        BodyFormat::JsonLines => {
            let mut events = Vec::new();
            for (index, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let event = decoder
                    .decode(line, index as u64 + 1)
                    .map_err(|error| IngestRefusal::Malformed(error.to_string()))?;
                events.push(event);
            }
            Ok(events)
        }
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// The elements of the JSON array `text` (which starts with `[`), as byte slices, without
/// parsing them: only strings and nesting are tracked. Each element is decoded afterwards.
fn split_array(text: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let mut elements = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 1;
    let mut closed_at = None;
    for (at, &byte) in text.iter().enumerate().skip(1) {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b',' | b']' if depth == 0 => {
                let element = trim(&text[start..at]);
                let number = elements.len() + 1;
                if element.is_empty() {
                    if byte == b']' && elements.is_empty() {
                        closed_at = Some(at);
                        break;
                    }
                    return Err(format!("element {number}: invalid JSON: empty element"));
                }
                elements.push(element);
                start = at + 1;
                if byte == b']' {
                    closed_at = Some(at);
                    break;
                }
            }
            b'}' => {
                return Err(format!(
                    "element {}: invalid JSON: unbalanced `}}`",
                    elements.len() + 1
                ))
            }
            _ => {}
        }
    }
    match closed_at {
        None => Err(format!(
            "element {}: invalid JSON: the array is not closed",
            elements.len() + 1
        )),
        Some(at) if !trim(&text[at + 1..]).is_empty() => {
            Err("invalid JSON: trailing characters after the array".into())
        }
        Some(_) => Ok(elements),
    }
}

/// The source side of an `http` source: takes the batches `POST /ingest` admitted.
#[derive(Debug)]
pub struct HttpSource {
    queue: Arc<IngestQueue>,
    taken: u64,
    ended: bool,
}

impl HttpSource {
    /// The source reading `queue`; opens it to requests (a queue is closed between runs).
    pub fn open(queue: Arc<IngestQueue>) -> HttpSource {
        queue.reopen();
        tracing::warn!(
            source = %queue.name,
            "an http source cannot be replayed: a restart or restore resumes with what clients send next"
        );
        HttpSource {
            queue,
            taken: 0,
            ended: false,
        }
    }
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        // No run reads the queue any more: refuse requests instead of accepting into nowhere.
        self.queue.close();
    }
}

impl Source for HttpSource {
    fn poll_batch(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        _dead_letters: &mut Vec<SideRecord>,
    ) -> Result<Poll> {
        if self.ended {
            return Ok(Poll::End);
        }
        match self.queue.take(max, EMPTY_WAIT, events) {
            Some(0) => Ok(Poll::Pending),
            Some(taken) => {
                self.taken += taken as u64;
                Ok(Poll::Data { partition: 0 })
            }
            None => {
                self.ended = true;
                Ok(Poll::End)
            }
        }
    }

    fn partitions(&self) -> usize {
        1
    }

    fn positions(&self) -> Vec<PartitionPosition> {
        vec![PartitionPosition {
            name: format!("http:{}", self.queue.name),
            offset: self.taken,
            line: 0,
        }]
    }

    fn replayable(&self) -> bool {
        false
    }

    fn seek(&mut self, _positions: &[PartitionPosition]) -> Result<()> {
        // Nothing to seek: what clients sent before the checkpoint is gone. The restore goes on
        // with what arrives next (said at open, and in docs/guarantees.md).
        Ok(())
    }

    fn drain_before_stop(&mut self) -> bool {
        self.queue.close();
        !self.queue.is_empty()
    }
}

impl IngestQueue {
    /// Events admitted since the queue was made (all runs).
    pub fn admitted_total(&self) -> u64 {
        self.admitted()
    }
}

/// Events an `http` source's queue holds when `queue` is not given.
pub const DEFAULT_INGEST_QUEUE: usize = 65_536;
/// The largest `queue` an `http` source accepts.
const MAX_INGEST_QUEUE: u64 = 16 << 20;

/// The settings `configure` takes.
pub(crate) const KEYS: &[&str] = &["queue"];

/// `type: http` settings: `queue`.
pub(crate) fn configure(settings: &mut Settings<'_>) -> Option<SourceKind> {
    let queue = match settings.u64("queue") {
        Some((queue, place)) if queue == 0 || queue > MAX_INGEST_QUEUE => {
            settings.problem(
                place,
                format!("`queue` must be between 1 and {MAX_INGEST_QUEUE} events, not {queue}"),
            );
            DEFAULT_INGEST_QUEUE
        }
        Some((queue, _)) => queue as usize,
        None => DEFAULT_INGEST_QUEUE,
    };
    Some(SourceKind::Http { queue })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflow_event::json::DecoderConfig;

    fn decoder() -> Decoder {
        Decoder::new(DecoderConfig::default())
    }

    fn decode(format: BodyFormat, body: &str) -> std::result::Result<usize, IngestRefusal> {
        decode_body(&decoder(), format, body.as_bytes()).map(|events| events.len())
    }

    const A: &str = r#"{"timestamp":1,"v":1}"#;
    const B: &str = r#"{"timestamp":2,"v":"a,]}\"["}"#;

    #[test]
    fn bodies_decode_as_objects_arrays_and_lines() {
        assert_eq!(decode(BodyFormat::Json, A), Ok(1));
        assert_eq!(
            decode(BodyFormat::Json, &format!(" [ {A} ,\n{B} ] ")),
            Ok(2)
        );
        assert_eq!(decode(BodyFormat::Json, "[]"), Ok(0));
        assert_eq!(
            decode(BodyFormat::JsonLines, &format!("{A}\r\n\n{B}\n")),
            Ok(2)
        );
        assert_eq!(decode(BodyFormat::JsonLines, ""), Ok(0));
    }

    #[test]
    fn the_first_bad_record_is_named() {
        let refused = |format, body: &str| match decode(format, body) {
            Err(IngestRefusal::Malformed(message)) => message,
            other => panic!("{body}: expected a refusal, got {other:?}"),
        };
        let message = refused(BodyFormat::JsonLines, &format!("{A}\n\n{{oops\n{B}"));
        assert!(message.starts_with("line 3: invalid JSON"), "{message}");
        let message = refused(BodyFormat::JsonLines, &format!("{A}\n{{\"v\":1}}"));
        assert!(
            message.starts_with("line 2: missing event time"),
            "{message}"
        );
        let message = refused(BodyFormat::Json, &format!("[{A}, 7]"));
        assert!(message.starts_with("element 2: invalid JSON"), "{message}");
        for body in [
            format!("[{A},"),
            format!("[{A},]"),
            format!("[{A}] x"),
            "[}".into(),
            "".into(),
        ] {
            refused(BodyFormat::Json, &body);
        }
    }

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                decoder()
                    .decode(format!(r#"{{"timestamp":{i}}}"#).as_bytes(), 1)
                    .expect("valid")
            })
            .collect()
    }

    #[test]
    fn the_queue_admits_whole_bodies_within_its_capacity_and_drains_after_close() {
        let queue = IngestQueue::new("in", Arc::new(decoder()), 10, None);
        assert_eq!(queue.admit(events(6)), Ok(6));
        assert_eq!(
            queue.admit(events(5)),
            Err(IngestRefusal::QueueFull(QUEUE_FULL_RETRY))
        );
        assert_eq!(queue.admit(events(4)), Ok(4));
        let mut out = Vec::new();
        assert_eq!(queue.take(3, Duration::ZERO, &mut out), Some(3));
        assert_eq!(queue.take(100, Duration::ZERO, &mut out), Some(7));
        assert_eq!(queue.take(100, Duration::ZERO, &mut out), Some(0));
        // Larger than the queue: admitted into an empty queue only.
        assert_eq!(queue.admit(events(12)), Ok(12));
        queue.close();
        assert!(matches!(
            queue.admit(events(1)),
            Err(IngestRefusal::ShuttingDown(_))
        ));
        assert_eq!(queue.take(100, Duration::ZERO, &mut out), Some(12));
        assert_eq!(queue.take(100, Duration::ZERO, &mut out), None);
        let times: Vec<i64> = out.iter().map(|e| e.event_time).collect();
        let expected: Vec<i64> = (0..6).chain(0..4).chain(0..12).collect();
        assert_eq!(times, expected, "in order, nothing lost or repeated");
        assert_eq!(queue.admitted(), 22);
    }

    #[test]
    fn a_failed_run_refuses_every_body_with_its_reason_until_a_new_run() {
        let metrics = Metrics::new();
        let hub = IngestHub::new(
            "p",
            [IngestQueue::new("in", Arc::new(decoder()), 10, None)],
            &metrics,
        );
        assert_eq!(hub.ingest(None, BodyFormat::JsonLines, A.as_bytes()), Ok(1));
        hub.fail("sink sinks[0] (parts) failed: disk full");
        let refusal = hub.ingest(None, BodyFormat::JsonLines, A.as_bytes());
        assert_eq!(
            refusal,
            Err(IngestRefusal::Failed(
                "sink sinks[0] (parts) failed: disk full".into()
            ))
        );
        assert_eq!(
            refusal.unwrap_err().to_string(),
            "the pipeline failed: sink sinks[0] (parts) failed: disk full"
        );
        let queue = hub.queue("in").expect("queue");
        // The source thread sees the queue closed once it has taken what was admitted.
        let mut out = Vec::new();
        assert_eq!(queue.take(10, Duration::ZERO, &mut out), Some(1));
        assert_eq!(queue.take(10, Duration::ZERO, &mut out), None);
        queue.reopen();
        assert_eq!(hub.ingest(None, BodyFormat::JsonLines, A.as_bytes()), Ok(1));
    }
}
