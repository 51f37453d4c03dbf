//! `window`: aggregates events in event-time or processing-time windows per key, with its
//! keyed state in memory or in a store (`store`) and a readable view of its snapshots
//! (`inspect`).

mod inspect;
pub(crate) mod snapshot;
mod store;

use std::sync::Arc;

use dataflow_event::time::now_millis;
use dataflow_event::{Event, Field, FieldType, Layout, Payload, Schema, Value};
use dataflow_expr::Expr;
use dataflow_state::{SledStore, StateSnapshot};
use dataflow_window::{
    Admission, AggregateKind, HeapStates, KeyStates, KeyedWindows, WindowConfig, WindowError,
    WindowResult, WindowSnapshot,
};

pub use inspect::{decode_snapshot, key_from_text, KeyView, OperatorView};
use snapshot::{SnapshotReader, SnapshotWriter, SortedSnapshot};
pub use store::{StoreStates, DEFAULT_CACHE_KEYS};

use crate::kind::{KeyEffect, OperatorKind, Partitioning};
use crate::operator::{
    checkpoint_error, dead_letter, Operator, OperatorSnapshot, Output, SideData, SideKind,
    SideRecord, StreamedSnapshot,
};
use crate::OperatorError;

/// What every window operator is: it keeps state per key, so its input must be partitioned by
/// key across parallel workers, and its snapshot is `(WindowSnapshot, watermark)` encoded with
/// `dataflow_checkpoint::encode_state`, readable through [`decode_snapshot`].
pub const KIND: OperatorKind = OperatorKind {
    name: "window",
    stateful: true,
    input: Partitioning::ByKey,
    key: KeyEffect::Drops,
    inspect: Some(decode_snapshot),
};

/// Which clock windows follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeDomain {
    /// The events' own timestamps, with watermarks.
    #[default]
    Event,
    /// The processing machine's clock when the event reaches the window.
    Processing,
}

/// The windows of a window operator, with their state in memory or in a store.
#[derive(Debug)]
enum Windows {
    Heap(KeyedWindows),
    Store(KeyedWindows<StoreStates>),
}

/// Runs `$body` with `$windows` bound to whichever windows `$self` holds.
macro_rules! on_windows {
    ($self:expr, $windows:ident => $body:expr) => {
        match $self {
            Windows::Heap($windows) => $body,
            Windows::Store($windows) => $body,
        }
    };
}

impl Windows {
    fn config(&self) -> &WindowConfig {
        on_windows!(self, windows => windows.config())
    }

    fn watermark(&self) -> i64 {
        on_windows!(self, windows => windows.watermark())
    }

    fn key_count(&self) -> usize {
        on_windows!(self, windows => windows.key_count())
    }

    fn add(
        &mut self,
        key: &Value,
        timestamp: i64,
        inputs: &[Value],
        out: &mut Vec<WindowResult>,
    ) -> Result<Admission, WindowError> {
        on_windows!(self, windows => windows.add(key, timestamp, inputs, out))
    }

    fn advance_watermark_bounded(
        &mut self,
        watermark: i64,
        limit: usize,
        out: &mut Vec<WindowResult>,
    ) -> Result<bool, WindowError> {
        on_windows!(self, windows => windows.advance_watermark_bounded(watermark, limit, out))
    }

    fn finish_bounded(
        &mut self,
        limit: usize,
        out: &mut Vec<WindowResult>,
    ) -> Result<bool, WindowError> {
        on_windows!(self, windows => windows.finish_bounded(limit, out))
    }

    /// The encoded `(WindowSnapshot, watermark)`, written key by key.
    fn encode_snapshot(&self, watermark: i64) -> Result<Vec<u8>, WindowError> {
        Ok(self.sorted_snapshot(watermark)?.to_vec())
    }

    /// The encoded `(WindowSnapshot, watermark)` key by key, its keys sorted but not gathered in
    /// one buffer: a checkpoint writes it into its file in pieces.
    fn sorted_snapshot(&self, watermark: i64) -> Result<SortedSnapshot, WindowError> {
        on_windows!(self, windows => windows.check_snapshot())?;
        let mut writer = SnapshotWriter::with_capacity(self.key_count());
        match self {
            Windows::Heap(windows) => {
                let mut failure = None;
                windows.states().for_each(&mut |key, state| {
                    if failure.is_none() {
                        failure = writer.add(key, &state.to_stored()).err();
                    }
                })?;
                if let Some(error) = failure {
                    return Err(error);
                }
            }
            Windows::Store(windows) => windows.states().write_snapshot(&mut writer)?,
        }
        let header = on_windows!(self, windows => windows.snapshot_header());
        writer.sorted(&header, &watermark)
    }
}

/// Aggregates events in windows per key. Results are events whose payload is a row of
/// `key` (when keyed), `window_start`, `window_end`, the aggregates in order, and `is_update`.
pub struct WindowAggregate {
    stage: Arc<str>,
    windows: Windows,
    /// Where a sled store keeps the state, if not in memory, with its page cache in bytes.
    /// and the most keys it caches as objects.
    state_dir: Option<(std::path::PathBuf, u64, usize)>,
    inputs: Vec<Option<Expr>>,
    time: TimeDomain,
    keyed: bool,
    input_layout: Layout,
    output_schema: Arc<Schema>,
    input_values: Vec<Value>,
    results: Vec<WindowResult>,
    watermark: i64,
    /// How many results a watermark, a tick or the end emits at most at once (plus one timer
    /// time's); more are emitted by further calls ([`Operator::pending`]).
    emit_limit: usize,
    /// The last control call stopped at `emit_limit` with more to emit.
    pending: bool,
}

/// How many results a window emits at once unless told otherwise: a batch of the runtime's
/// default size.
pub const DEFAULT_EMIT_LIMIT: usize = 1024;

impl std::fmt::Debug for WindowAggregate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAggregate")
            .field("stage", &self.stage)
            .field("keyed", &self.keyed)
            .finish_non_exhaustive()
    }
}

impl WindowAggregate {
    /// A window step; `aggregates` are (output name, function, input expression).
    pub fn new(
        stage: Arc<str>,
        config: WindowConfig,
        aggregates: Vec<(String, AggregateKind, Option<Expr>)>,
        time: TimeDomain,
        keyed: bool,
        key_type: Option<FieldType>,
        input_layout: Layout,
    ) -> Result<(WindowAggregate, Layout), String> {
        let windows = KeyedWindows::new(config).map_err(|error| error.to_string())?;
        let mut fields = Vec::new();
        if keyed {
            fields.push(Field {
                name: "key".into(),
                ty: key_type.unwrap_or(FieldType::Json),
                nullable: true,
            });
        }
        for name in ["window_start", "window_end"] {
            fields.push(Field {
                name: name.into(),
                ty: FieldType::Timestamp,
                nullable: false,
            });
        }
        let mut inputs = Vec::new();
        for (name, kind, input) in aggregates {
            let ty = match kind {
                AggregateKind::Count | AggregateKind::CountDistinct => FieldType::Int,
                AggregateKind::Avg => FieldType::Float,
                _ => FieldType::Json,
            };
            fields.push(Field {
                name,
                ty,
                nullable: true,
            });
            inputs.push(input);
        }
        fields.push(Field {
            name: "is_update".into(),
            ty: FieldType::Bool,
            nullable: false,
        });
        let schema = Arc::new(Schema::from_fields(fields).map_err(|error| error.to_string())?);
        Ok((
            WindowAggregate {
                stage,
                windows: Windows::Heap(windows),
                state_dir: None,
                input_values: Vec::with_capacity(inputs.len()),
                inputs,
                time,
                keyed,
                input_layout,
                output_schema: schema.clone(),
                results: Vec::new(),
                watermark: i64::MIN,
                emit_limit: DEFAULT_EMIT_LIMIT,
                pending: false,
            },
            Layout::Row(schema),
        ))
    }

    /// Keeps the state in a sled store in `dir` from [`Operator::open`] on, instead of in
    /// memory, with sled's page cache capped at about `cache_bytes`
    /// ([`dataflow_state::DEFAULT_CACHE_BYTES`] by default). The directory is a cache: `open`
    /// empties it, and a restore fills it from the checkpoint.
    pub fn keep_state_in(&mut self, dir: std::path::PathBuf, cache_bytes: u64, cache_keys: usize) {
        self.state_dir = Some((dir, cache_bytes, cache_keys));
    }

    /// The number of keys holding state.
    pub fn key_count(&self) -> usize {
        self.windows.key_count()
    }

    /// Emits at most about `limit` results per call of a watermark, a tick or the end (the
    /// results of one timer time are not split), the rest in further calls: see
    /// [`Operator::pending`].
    pub fn limit_emission(&mut self, limit: usize) {
        self.emit_limit = limit.max(1);
    }

    /// Fires what is due at `time` (a watermark or, in processing time, the clock), one bounded
    /// batch of it.
    fn fire_bounded(&mut self, time: i64, out: &mut Output) {
        match self
            .windows
            .advance_watermark_bounded(time, self.emit_limit, &mut self.results)
        {
            Ok(done) => self.pending = !done,
            Err(error) => {
                self.pending = false;
                out.failure = Some(self.state_error(error));
            }
        }
        self.emit(out);
    }

    fn state_error(&self, error: WindowError) -> OperatorError {
        OperatorError::State(format!("{}: {error}", self.stage))
    }

    fn emit(&mut self, out: &mut Output) {
        let now = now_millis();
        for result in self.results.drain(..) {
            let mut row = Vec::with_capacity(self.output_schema.len());
            if self.keyed {
                row.push(result.key);
            }
            row.push(Value::Int(result.start));
            row.push(Value::Int(result.end));
            row.extend(result.values);
            row.push(Value::Bool(result.is_update));
            out.events.push(Event {
                event_time: result.end - 1,
                processing_time: now,
                payload: Payload::Row(row),
                ..Event::default()
            });
        }
    }
}

impl Operator for WindowAggregate {
    fn kind(&self) -> &'static OperatorKind {
        &KIND
    }

    fn open(&mut self, instance: usize) -> crate::Result<()> {
        let Some((dir, cache_bytes, cache_keys)) = &self.state_dir else {
            return Ok(());
        };
        // sled is a cache: start it empty, and let a restore fill it from the checkpoint.
        let dir = dir.join(format!("instance-{instance}"));
        let store = SledStore::rebuild_with_cache(&dir, &StateSnapshot::default(), *cache_bytes)
            .map_err(|error| {
                OperatorError::State(format!("{}: state store: {error}", self.stage))
            })?;
        let states =
            StoreStates::new(Box::new(store), &self.stage).with_cache_capacity(*cache_keys);
        let windows = KeyedWindows::with_states(self.windows.config().clone(), states)
            .map_err(|error| self.state_error(error))?;
        self.windows = Windows::Store(windows);
        Ok(())
    }

    fn process(&mut self, batch: Vec<Event>, out: &mut Output) {
        let now = if self.time == TimeDomain::Processing {
            now_millis()
        } else {
            0
        };
        const NO_KEY: Value = Value::Null;
        for event in batch {
            self.input_values.clear();
            let mut failure = None;
            for input in &self.inputs {
                match input {
                    Some(expr) => match expr.eval(&event) {
                        Ok(value) => self.input_values.push(value),
                        Err(error) => {
                            failure = Some(error.to_string());
                            break;
                        }
                    },
                    None => self.input_values.push(Value::Null),
                }
            }
            if let Some(reason) = failure {
                out.side
                    .push(dead_letter(&self.stage, &event, &self.input_layout, reason));
                continue;
            }
            let timestamp = match self.time {
                TimeDomain::Event => event.event_time,
                TimeDomain::Processing => now,
            };
            let key = event.key.as_ref().unwrap_or(&NO_KEY);
            match self.windows.add(key, timestamp, &self.input_values, &mut self.results) {
                Ok(Admission::OnTime) | Ok(Admission::LateUpdated) => {}
                Ok(Admission::TooLate) => out.side.push(SideRecord {
                    kind: SideKind::Late,
                    stage: self.stage.clone(),
                    reason: format!(
                        "event time {} is behind the watermark {} by more than the allowed lateness",
                        dataflow_event::time::format_rfc3339(timestamp),
                        dataflow_event::time::format_rfc3339(self.windows.watermark()),
                    ),
                    line: None,
                    record: SideData::event(&event, &self.input_layout),
                }),
                Err(error @ WindowError::State(_)) => {
                    out.failure = Some(self.state_error(error));
                    return;
                }
                Err(error) => {
                    out.side.push(dead_letter(&self.stage, &event, &self.input_layout, error.to_string()))
                }
            }
        }
        if !self.results.is_empty() {
            self.emit(out);
        }
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> i64 {
        if self.time == TimeDomain::Event && (watermark > self.watermark || self.pending) {
            self.watermark = self.watermark.max(watermark);
            self.fire_bounded(self.watermark, out);
        }
        // Results fired at watermark W end at or before W and carry the time end - 1, so the
        // watermark forwarded is W - 1: a downstream event-time step never sees them as late.
        watermark.saturating_sub(1)
    }

    fn on_tick(&mut self, now: i64, out: &mut Output) {
        if self.time == TimeDomain::Processing {
            self.fire_bounded(now, out);
        }
    }

    fn finish(&mut self, fire: bool, out: &mut Output) {
        if fire {
            match self
                .windows
                .finish_bounded(self.emit_limit, &mut self.results)
            {
                Ok(done) => self.pending = !done,
                Err(error) => {
                    self.pending = false;
                    out.failure = Some(self.state_error(error));
                }
            }
            self.emit(out);
        }
    }

    fn pending(&self) -> bool {
        self.pending
    }

    fn snapshot(&self) -> crate::Result<Option<OperatorSnapshot>> {
        // Encoded key by key, never gathered as a `WindowSnapshot`: with a million keys that
        // would hold every key's windows as objects beside their encoding.
        let state = self
            .windows
            .encode_snapshot(self.watermark)
            .map_err(|error| self.state_error(error))?;
        Ok(Some(OperatorSnapshot {
            key_count: self.windows.key_count() as u64,
            state,
        }))
    }

    fn snapshot_streamed(&self) -> crate::Result<Option<StreamedSnapshot>> {
        // The sorted keys' entries are written into the checkpoint file where they are, never
        // copied into one buffer: with a million keys that buffer is the whole state again.
        let state = self
            .windows
            .sorted_snapshot(self.watermark)
            .map_err(|error| self.state_error(error))?;
        Ok(Some(StreamedSnapshot {
            key_count: self.windows.key_count() as u64,
            state: Box::new(state),
        }))
    }

    fn merge_snapshots(&self, parts: Vec<OperatorSnapshot>) -> crate::Result<OperatorSnapshot> {
        let mut snapshots = Vec::with_capacity(parts.len());
        let mut watermark = i64::MIN;
        for part in &parts {
            let (snapshot, part_watermark): (WindowSnapshot, i64) =
                dataflow_checkpoint::decode_state(&part.state).map_err(checkpoint_error)?;
            watermark = watermark.max(part_watermark);
            snapshots.push(snapshot);
        }
        let merged = WindowSnapshot::merge(snapshots)
            .map_err(|error| OperatorError::Checkpoint(format!("{}: {error}", self.stage)))?;
        Ok(OperatorSnapshot {
            key_count: merged.key_count() as u64,
            state: dataflow_checkpoint::encode_state(&(merged, watermark))
                .map_err(checkpoint_error)?,
        })
    }

    fn split_snapshot(&self, state: &[u8], workers: usize) -> crate::Result<Vec<Vec<u8>>> {
        let (snapshot, watermark): (WindowSnapshot, i64) =
            dataflow_checkpoint::decode_state(state).map_err(checkpoint_error)?;
        snapshot
            .split(workers)
            .into_iter()
            .map(|part| {
                dataflow_checkpoint::encode_state(&(part, watermark)).map_err(checkpoint_error)
            })
            .collect()
    }

    fn restore(&mut self, state: &[u8]) -> crate::Result<()> {
        let invalid = |error| OperatorError::Checkpoint(format!("{}: {error}", self.stage));
        // Read one key at a time: a decoded `WindowSnapshot` of a million keys would be held
        // whole beside the restored states.
        let (header, mut keys) = SnapshotReader::new(state).map_err(invalid)?;
        let config = self.windows.config().clone();
        // Until the restore succeeds the operator holds empty in-memory windows.
        let empty = KeyedWindows::new(config.clone()).map_err(invalid)?;
        let restored = match std::mem::replace(&mut self.windows, Windows::Heap(empty)) {
            Windows::Heap(_) => Windows::Heap(
                KeyedWindows::restore_keys(config, HeapStates::default(), &header, &mut keys)
                    .map_err(invalid)?,
            ),
            Windows::Store(windows) => Windows::Store(
                KeyedWindows::restore_keys(config, windows.into_states(), &header, &mut keys)
                    .map_err(invalid)?,
            ),
        };
        self.watermark = keys.watermark().map_err(invalid)?;
        self.windows = restored;
        Ok(())
    }
}
