//! [`KeyedWindows`]: the windows of every key of one operator.

use dataflow_event::Value;
use serde::{Deserialize, Serialize};

use crate::aggregate::check_inputs;
use crate::layout::PaneLayout;
use crate::running::Running;
use crate::snapshot::{KeySnapshot, SnapshotHeader, WindowSnapshot};
use crate::states::{HeapStates, KeyState, KeyStates, Slice, StoredKey};
use crate::{Result, WindowConfig, WindowError, WindowKind};

/// The aggregates of one key over one window, emitted when the window fires or is updated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    /// The key the window belongs to.
    pub key: Value,
    /// The window's first millisecond.
    pub start: i64,
    /// The window's end, exclusive.
    pub end: i64,
    /// One value per aggregate of the config, in its order.
    pub values: Vec<Value>,
    /// Whether this result replaces one emitted before for the same key and window: a late event
    /// changed a window that had already fired. For sessions, the replaced result may have had
    /// narrower bounds (the late event extended or merged the session).
    pub is_update: bool,
}

/// What [`KeyedWindows::add`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Admission {
    /// Added to windows that have not fired yet.
    OnTime,
    /// Added, and at least one of its windows had already fired: updated results were emitted.
    LateUpdated,
    /// Every window of the event was already purged: nothing changed, nothing was emitted.
    TooLate,
}

/// How a window kind keeps its state.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Tumbling and sliding windows: slices are panes.
    Panes(PaneLayout),
    /// Session windows: slices are sessions.
    Sessions { gap: i64 },
}

/// The windows of every key of one windowed aggregation operator.
///
/// Events are added with [`KeyedWindows::add`]; windows fire when
/// [`KeyedWindows::advance_watermark`] passes their end, and their state is purged once the
/// watermark passes their end plus the allowed lateness. Only accumulators are kept, never
/// events. See the crate documentation for the conventions.
///
/// The keys' states and timers live in `S`: in memory by default ([`HeapStates`]), or in any
/// other [`KeyStates`] (the pipeline keeps them in its state store). Only a store can fail
/// ([`WindowError::State`]); in memory, every method that returns a `Result` fails only as it
/// documents.
#[derive(Debug)]
pub struct KeyedWindows<S = HeapStates> {
    config: WindowConfig,
    layout: Layout,
    /// The keys with their states, and the timers: the keys to look at when the watermark
    /// reaches a time. A timer is live when its time is its key's timer; others are stale and
    /// skipped.
    states: S,
    /// Monotonic. Every window with `end <= watermark` has fired and every slice whose purge
    /// time is at or below it has been dropped.
    watermark: i64,
    /// The arrival number of the next admitted event; orders ties of `first` and `last`.
    next_seq: u64,
    /// The number of slices over all keys.
    slice_count: usize,
    /// The keys of a timer time a bounded advance fires in batches, left to fire.
    firing: Option<Firing>,
}

/// The keys of one timer time that a bounded advance has yet to fire, in key order
/// ([`KeyedWindows::advance_watermark_bounded`]).
#[derive(Debug)]
struct Firing {
    time: i64,
    keys: std::vec::IntoIter<Value>,
}

/// The number of panes per window from which sliding windows are combined incrementally as
/// they slide ([`Running`]); windows of fewer panes merge them when they fire, at most seven
/// merges per window, where the running combination measured slower (10 s by 2 s: five panes).
const INCREMENTAL_PANES: i64 = 8;

/// How many restored keys are handed to the store at once ([`KeyStates::load`]).
const RESTORE_BATCH: usize = 1024;

/// The values of the window `[start, end)` over `panes`, or `None` if no pane holds data.
fn window_values(panes: &[Slice], start: i64, end: i64) -> Option<Vec<Value>> {
    let low = panes.partition_point(|pane| pane.start < start);
    let high = panes.partition_point(|pane| pane.start < end);
    match panes.get(low..high)? {
        [] => None,
        [only] => Some(only.values()),
        [first, rest @ ..] => {
            // One aggregate at a time, so that accumulators without heap state merge on the
            // stack.
            let merged = first.accumulators.iter().enumerate().map(|(index, first)| {
                let mut accumulator = first.clone();
                for pane in rest {
                    if let Some(other) = pane.accumulators.get(index) {
                        accumulator.merge(other);
                    }
                }
                accumulator.value()
            });
            Some(merged.collect())
        }
    }
}

/// The earliest watermark at which `slices` have a window to fire or a slice to purge, given that
/// everything due at or below `watermark` is done.
fn next_time(layout: Layout, slices: &[Slice], watermark: i64, lateness: i64) -> Option<i64> {
    match layout {
        Layout::Panes(layout) => {
            let next_window = layout
                .next_window(slices.len(), |index| slices[index].start, watermark)
                .map(|(_, end)| end);
            let next_purge = slices
                .first()
                .map(|pane| layout.purge_time(pane.start, lateness));
            next_window.into_iter().chain(next_purge).min()
        }
        Layout::Sessions { .. } => slices
            .iter()
            .map(|session| session_time(session, lateness))
            .min(),
    }
}

/// When a session needs attention: firing at its end, or purging once fired.
fn session_time(session: &Slice, lateness: i64) -> i64 {
    if session.fired {
        session.end.saturating_add(lateness)
    } else {
        session.end
    }
}

/// The result of `session` of `key` as it stands.
fn session_result(key: &Value, session: &Slice, is_update: bool) -> WindowResult {
    WindowResult {
        key: key.clone(),
        start: session.start,
        end: session.end,
        values: session.values(),
        is_update,
    }
}

/// The indexes `low..high` of the sessions that intersect `[start, end)`.
fn intersecting(sessions: &[Slice], start: i64, end: i64) -> (usize, usize) {
    let low = sessions.partition_point(|session| session.end <= start);
    let high = sessions.partition_point(|session| session.start < end);
    (low, high.max(low))
}

impl KeyedWindows {
    /// Windows for `config`, which must be valid ([`WindowConfig::validate`]), keeping their
    /// state in memory.
    pub fn new(config: WindowConfig) -> Result<KeyedWindows> {
        KeyedWindows::with_states(config, HeapStates::default())
    }

    /// In-memory windows for `config` holding the state of `snapshot`. See
    /// [`KeyedWindows::restore_with`].
    pub fn restore(config: WindowConfig, snapshot: WindowSnapshot) -> Result<KeyedWindows> {
        KeyedWindows::restore_with(config, HeapStates::default(), snapshot)
    }
}

impl<S: KeyStates> KeyedWindows<S> {
    /// Windows for `config`, which must be valid ([`WindowConfig::validate`]), keeping their
    /// state in `states`, which is cleared.
    pub fn with_states(config: WindowConfig, mut states: S) -> Result<KeyedWindows<S>> {
        config.validate()?;
        states.clear()?;
        let layout = match config.kind {
            WindowKind::Tumbling { size } => Layout::Panes(PaneLayout::new(size, size)),
            WindowKind::Sliding { size, slide } => Layout::Panes(PaneLayout::new(size, slide)),
            WindowKind::Session { gap } => Layout::Sessions { gap },
        };
        Ok(KeyedWindows {
            config,
            layout,
            states,
            watermark: i64::MIN,
            next_seq: 0,
            slice_count: 0,
            firing: None,
        })
    }

    /// The config the windows were built with.
    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    /// Adds an event of `key` at `timestamp`. `inputs[i]` is the input of aggregate `i` (ignored
    /// for `count`, but present). Results of windows that had already fired are updated and
    /// emitted into `out` right away, with `is_update` set.
    ///
    /// Nothing is changed if an error is returned: when the number of inputs is wrong, when a
    /// `sum` or `avg` input is neither a number nor null, or when the event's windows do not fit
    /// in `i64`.
    pub fn add(
        &mut self,
        key: &Value,
        timestamp: i64,
        inputs: &[Value],
        out: &mut Vec<WindowResult>,
    ) -> Result<Admission> {
        check_inputs(&self.config.aggregates, inputs)?;
        match self.layout {
            Layout::Panes(layout) => self.add_to_pane(layout, key, timestamp, inputs, out),
            Layout::Sessions { gap } => self.add_to_session(gap, key, timestamp, inputs, out),
        }
    }

    fn add_to_pane(
        &mut self,
        layout: PaneLayout,
        key: &Value,
        timestamp: i64,
        inputs: &[Value],
        out: &mut Vec<WindowResult>,
    ) -> Result<Admission> {
        let placement = layout
            .place(timestamp)
            .ok_or(WindowError::TimestampOutOfRange { timestamp })?;
        let lateness = self.config.allowed_lateness;
        let watermark = self.watermark;
        // The pane is purged with the latest window containing the event.
        let purge_time = (placement.last_start + layout.size()).saturating_add(lateness);
        if purge_time <= watermark {
            return Ok(Admission::TooLate);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        let config = &self.config;
        let slice_count = &mut self.slice_count;
        self.states.update(key, |state| {
            let panes = &mut state.slices;
            // Events mostly arrive in order: look at the latest pane before searching.
            let index = match panes.last() {
                Some(last) if last.start == placement.pane_start => panes.len() - 1,
                Some(last) if last.start < placement.pane_start => panes.len(),
                None => 0,
                Some(_) => panes
                    .binary_search_by_key(&placement.pane_start, |pane| pane.start)
                    .unwrap_or_else(|insert_at| insert_at),
            };
            // A late event can change a pane the running combination covers: it is rebuilt.
            if state
                .running
                .as_ref()
                .is_some_and(|running| placement.pane_start < running.high())
            {
                state.running = None;
            }
            let panes = &mut state.slices;
            if panes
                .get(index)
                .is_none_or(|pane| pane.start != placement.pane_start)
            {
                let end = placement.pane_start + layout.pane();
                panes.insert(index, Slice::new(placement.pane_start, end, config));
                *slice_count += 1;
                let next_window = layout
                    .next_window_of_pane(placement.pane_start, watermark)
                    .map_or(purge_time, |(_, end)| end.min(purge_time));
                state.schedule(next_window);
            }
            let panes = &mut state.slices;
            panes[index].add(inputs, timestamp, seq);

            // Windows of the event that have fired but are not purged get an updated result. An
            // on-time event (timestamp >= watermark) has none, and skips the loop.
            let mut admission = Admission::OnTime;
            let (size, slide) = (layout.size(), layout.slide());
            let mut start = placement.first_start;
            // `last_start + size` fits in i64 (see `Placement`), so neither sum below overflows.
            while start <= placement.last_start && start + size <= watermark {
                let end = start + size;
                if end.saturating_add(lateness) > watermark {
                    if let Some(values) = window_values(panes, start, end) {
                        out.push(WindowResult {
                            key: key.clone(),
                            start,
                            end,
                            values,
                            is_update: true,
                        });
                        admission = Admission::LateUpdated;
                    }
                }
                start += slide;
            }
            admission
        })
    }

    fn add_to_session(
        &mut self,
        gap: i64,
        key: &Value,
        timestamp: i64,
        inputs: &[Value],
        out: &mut Vec<WindowResult>,
    ) -> Result<Admission> {
        let end = timestamp
            .checked_add(gap)
            .ok_or(WindowError::TimestampOutOfRange { timestamp })?;
        let lateness = self.config.allowed_lateness;
        let watermark = self.watermark;
        let config = &self.config;
        let slice_count = &mut self.slice_count;
        let next_seq = &mut self.next_seq;
        self.states.update(key, |state| {
            let sessions = &mut state.slices;
            let (low, high) = intersecting(sessions, timestamp, end);
            // Sessions in the state are not purged, so merging with one is never too late.
            if low == high && end.saturating_add(lateness) <= watermark {
                return Admission::TooLate;
            }
            let seq = *next_seq;
            *next_seq = next_seq.saturating_add(1);
            if low == high {
                sessions.insert(low, Slice::new(timestamp, end, config));
                *slice_count += 1;
            } else if sessions[low].start > timestamp
                || sessions[high - 1].end < end
                || high > low + 1
            {
                // Extend the first intersecting session over the event and the others.
                let absorbed: Vec<Slice> = sessions.drain(low + 1..high).collect();
                *slice_count -= absorbed.len();
                let session = &mut sessions[low];
                session.start = session.start.min(timestamp);
                session.end = session.end.max(end);
                for other in absorbed {
                    session.end = session.end.max(other.end);
                    session.fired |= other.fired;
                    let others = other.accumulators.into_vec();
                    for (accumulator, other) in session.accumulators.iter_mut().zip(others) {
                        accumulator.absorb(other);
                    }
                }
            }
            let session = &mut sessions[low];
            session.add(inputs, timestamp, seq);

            // A session in the state that has not fired ends after the watermark, so only a new
            // session can need firing right away.
            let admission = if session.fired || session.end <= watermark {
                session.fired = true;
                out.push(session_result(key, session, true));
                Admission::LateUpdated
            } else {
                Admission::OnTime
            };
            let next = session_time(session, lateness);
            state.schedule(next);
            admission
        })
    }

    /// Advances the watermark: fires every window with `end <= watermark` that has not fired,
    /// emitting results sorted by `(end, start, key)`, then purges the state of windows with
    /// `end + allowed_lateness <= watermark`. A watermark at or below the current one is
    /// ignored.
    pub fn advance_watermark(&mut self, watermark: i64, out: &mut Vec<WindowResult>) -> Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        let previous = self.watermark;
        self.watermark = watermark;
        let first = out.len();
        // What a bounded advance left of a time fires first (it is due: its time is at or
        // below the watermark it was reaching).
        if let Some(firing) = self.firing.take() {
            for key in firing.keys {
                self.process_key(&key, firing.time, previous, watermark, out)?;
            }
        }
        while let Some((time, keys)) = self.states.pop_due(watermark)? {
            for key in keys {
                self.process_key(&key, time, previous, watermark, out)?;
            }
        }
        out[first..]
            .sort_unstable_by(|a, b| (a.end, a.start, &a.key).cmp(&(b.end, b.start, &b.key)));
        Ok(())
    }

    /// Like [`KeyedWindows::advance_watermark`], in bounded batches: advances the watermark
    /// towards `watermark` one timer time at a time (the end of the next windows to fire, or a
    /// purge time), and returns once this call emitted at least `limit` results (at least one)
    /// or the watermark is reached. Returns whether it was reached; if not,
    /// [`KeyedWindows::watermark`] is the time reached so far (every window ending at or below
    /// it has fired), and the caller calls again, after forwarding the results, to go on,
    /// before anything else: until then the windows are part way through a time
    /// ([`KeyedWindows::is_firing`]), and neither adding events nor a snapshot is consistent.
    ///
    /// With tumbling or sliding windows, the keys due at one time fire in key order, and a
    /// call stops between two of them: it emits at most `limit - 1` results plus one key's
    /// (every key's windows at one time end at that time, so key order is result order).
    /// Session windows at one time end at different times, and all the keys due at one time
    /// fire in one call, as their results are sorted together. Calling until it returns `true`
    /// emits what one `advance_watermark` call emits, in the same order, `(end, start, key)`.
    pub fn advance_watermark_bounded(
        &mut self,
        watermark: i64,
        limit: usize,
        out: &mut Vec<WindowResult>,
    ) -> Result<bool> {
        let limit = limit.max(1);
        let first = out.len();
        loop {
            if let Some(mut firing) = self.firing.take() {
                let previous = self.watermark;
                let step = out.len();
                let split = matches!(self.layout, Layout::Panes(_));
                for key in firing.keys.by_ref() {
                    self.process_key(&key, firing.time, previous, firing.time, out)?;
                    if split && out.len() - first >= limit {
                        break;
                    }
                }
                out[step..].sort_unstable_by(|a, b| {
                    (a.end, a.start, &a.key).cmp(&(b.end, b.start, &b.key))
                });
                if firing.keys.len() > 0 {
                    self.firing = Some(firing);
                    return Ok(false);
                }
                self.watermark = firing.time.max(previous);
                continue;
            }
            if watermark <= self.watermark {
                break;
            }
            if out.len() - first >= limit {
                return Ok(false);
            }
            let Some((time, mut keys)) = self.states.pop_due(watermark)? else {
                self.watermark = watermark;
                break;
            };
            if keys.len() > 1 {
                // Key order is result order for one time's panes; sessions sort their results.
                keys.sort_unstable();
            }
            self.firing = Some(Firing {
                time,
                keys: keys.into_iter(),
            });
        }
        Ok(true)
    }

    /// Refuses a snapshot while a bounded advance is part way through a time
    /// ([`KeyedWindows::is_firing`]): it would hold some of the time's keys fired, the others
    /// not, under one watermark.
    pub fn check_snapshot(&self) -> Result<()> {
        if self.firing.is_some() {
            return Err(WindowError::InvalidSnapshot(
                "taken while the windows of one time were part way through firing".to_string(),
            ));
        }
        Ok(())
    }

    /// Whether a bounded advance stopped part way through the keys of one time
    /// ([`KeyedWindows::advance_watermark_bounded`]): it must be called again before events
    /// are added or a snapshot is taken.
    pub fn is_firing(&self) -> bool {
        self.firing.is_some()
    }

    /// Fires and purges the windows of `key` after the watermark moved up from `previous` to
    /// `watermark`, if `time` is the key's live timer.
    fn process_key(
        &mut self,
        key: &Value,
        time: i64,
        previous: i64,
        watermark: i64,
        out: &mut Vec<WindowResult>,
    ) -> Result<()> {
        let lateness = self.config.allowed_lateness;
        let layout = self.layout;
        let aggregates = &self.config.aggregates;
        let slice_count = &mut self.slice_count;
        self.states.update(key, |state| {
            if state.timer != Some(time) {
                return;
            }
            let slices = &mut state.slices;
            let running = &mut state.running;
            let purged;
            match layout {
                Layout::Panes(layout) => {
                    // Windows ending at or below `previous` fired before (or, if they got data
                    // late, when it was added), so fire those ending in (previous, watermark].
                    let mut bound = previous;
                    while let Some((start, end)) =
                        layout.next_window(slices.len(), |index| slices[index].start, bound)
                    {
                        if end > watermark {
                            break;
                        }
                        let values = if layout.size() / layout.pane() >= INCREMENTAL_PANES {
                            running
                                .get_or_insert_with(|| Box::new(Running::new(aggregates, start)))
                                .window(aggregates, slices, start, end)
                        } else {
                            window_values(slices, start, end)
                        };
                        if let Some(values) = values {
                            out.push(WindowResult {
                                key: key.clone(),
                                start,
                                end,
                                values,
                                is_update: false,
                            });
                        }
                        bound = end;
                    }
                    purged = slices.partition_point(|pane| {
                        layout.purge_time(pane.start, lateness) <= watermark
                    });
                    // The running combination lets go of purged panes while they are there.
                    if let (Some(running), Some(last)) = (
                        running.as_mut(),
                        purged.checked_sub(1).and_then(|i| slices.get(i)),
                    ) {
                        running.evict(aggregates, slices, last.end);
                    }
                }
                Layout::Sessions { .. } => {
                    for session in slices.iter_mut() {
                        if !session.fired && session.end <= watermark {
                            session.fired = true;
                            out.push(session_result(key, session, false));
                        }
                    }
                    purged = slices.partition_point(|session| {
                        session.end.saturating_add(lateness) <= watermark
                    });
                }
            }
            slices.drain(..purged);
            *slice_count -= purged;
            // With no slice left there is no next time, and the store drops the key.
            state.timer = None;
            if let Some(next) = next_time(layout, &state.slices, watermark, lateness) {
                state.schedule(next);
            }
        })
    }

    /// Ends a bounded input: fires every window that has not fired yet (results not updates,
    /// sorted by `(end, start, key)`), then drops all state. The watermark becomes `i64::MAX`, so
    /// events added afterwards are too late.
    pub fn finish(&mut self, out: &mut Vec<WindowResult>) -> Result<()> {
        self.advance_watermark(i64::MAX, out)?;
        self.states.clear()?;
        self.slice_count = 0;
        Ok(())
    }

    /// Like [`KeyedWindows::finish`], in bounded batches as
    /// [`KeyedWindows::advance_watermark_bounded`] emits them: returns `false` while windows are
    /// left to fire (call again after forwarding the results), and `true` once everything
    /// fired and the state was dropped.
    pub fn finish_bounded(&mut self, limit: usize, out: &mut Vec<WindowResult>) -> Result<bool> {
        if !self.advance_watermark_bounded(i64::MAX, limit, out)? {
            return Ok(false);
        }
        self.states.clear()?;
        self.slice_count = 0;
        Ok(true)
    }

    /// The current watermark (`i64::MIN` until one is given).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The number of keys that hold state.
    pub fn key_count(&self) -> usize {
        self.states.len()
    }

    /// The number of windows holding state over all keys. Sliding windows keep their state in
    /// panes shared by overlapping windows: for them this counts panes.
    pub fn open_windows(&self) -> usize {
        self.slice_count
    }

    /// Where the keys' states are kept.
    pub fn states(&self) -> &S {
        &self.states
    }

    /// The store of the keys' states, to reuse it (for example to restore into it).
    pub fn into_states(self) -> S {
        self.states
    }

    /// The complete state, deterministic (keys sorted), for checkpoints.
    pub fn snapshot(&self) -> Result<WindowSnapshot> {
        self.check_snapshot()?;
        let mut keys: Vec<KeySnapshot> = Vec::with_capacity(self.states.len());
        self.states.for_each(&mut |key, state| {
            keys.push(KeySnapshot {
                key: key.clone(),
                slices: state.slices.iter().map(Slice::snapshot).collect(),
            })
        })?;
        keys.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(WindowSnapshot {
            kind: self.config.kind,
            aggregates: self.config.aggregates.clone(),
            watermark: self.watermark,
            next_seq: self.next_seq,
            keys,
        })
    }

    /// What [`KeyedWindows::snapshot`]'s serialized form starts with, for writing a snapshot
    /// key by key from [`KeyedWindows::states`] (see [`SnapshotHeader`]).
    pub fn snapshot_header(&self) -> SnapshotHeader<'_> {
        SnapshotHeader {
            kind: self.config.kind,
            aggregates: self.config.aggregates.as_slice().into(),
            watermark: self.watermark,
            next_seq: self.next_seq,
        }
    }

    /// Windows for `config` holding the state of `snapshot`, kept in `states` (cleared first).
    /// The snapshot must have been taken with the same window kind and aggregates; the allowed
    /// lateness may differ.
    pub fn restore_with(
        config: WindowConfig,
        states: S,
        snapshot: WindowSnapshot,
    ) -> Result<KeyedWindows<S>> {
        let WindowSnapshot {
            kind,
            aggregates,
            watermark,
            next_seq,
            keys,
        } = snapshot;
        let header = SnapshotHeader {
            kind,
            aggregates: aggregates.into(),
            watermark,
            next_seq,
        };
        let keys = keys
            .into_iter()
            .map(|key| Ok((key.key, StoredKey::from_slices(key.slices))));
        KeyedWindows::restore_keys(config, states, &header, keys)
    }

    /// Like [`KeyedWindows::restore_with`], from a snapshot read one key at a time: its
    /// `header`, then its keys with their windows in the snapshot's order (ascending), so that
    /// a restore never holds the whole snapshot decoded. The first error of `keys` ends the
    /// restore with it.
    pub fn restore_keys(
        config: WindowConfig,
        states: S,
        header: &SnapshotHeader<'_>,
        keys: impl Iterator<Item = Result<(Value, StoredKey)>>,
    ) -> Result<KeyedWindows<S>> {
        let mut windows = KeyedWindows::with_states(config, states)?;
        let invalid = |reason: String| Err(WindowError::InvalidSnapshot(reason));
        if header.kind != windows.config.kind {
            return invalid(format!(
                "taken with window kind {:?}, restored with {:?}",
                header.kind, windows.config.kind
            ));
        }
        if *header.aggregates != windows.config.aggregates {
            return invalid(format!(
                "taken with aggregates {:?}, restored with {:?}",
                header.aggregates, windows.config.aggregates
            ));
        }
        windows.watermark = header.watermark;
        windows.next_seq = header.next_seq;
        let mut batch = Vec::with_capacity(RESTORE_BATCH);
        let mut previous: Option<Value> = None;
        for entry in keys {
            let (key, stored) = entry?;
            // Ascending keys are distinct: the store need not look for a key loaded twice.
            if let Some(previous) = &previous {
                if *previous == key {
                    return invalid(format!("key {key:?} appears twice"));
                }
                if *previous > key {
                    return invalid(format!(
                        "key {key:?} comes after {previous:?}: keys out of order"
                    ));
                }
            }
            let state = windows.restored_state(&key, stored)?;
            previous = Some(key.clone());
            batch.push((key, state));
            if batch.len() == RESTORE_BATCH {
                windows.states.load(std::mem::take(&mut batch))?;
            }
        }
        windows.states.load(batch)?;
        Ok(windows)
    }

    /// The state of a restored `key` from its `stored` windows, checked against the config,
    /// with its timer scheduled.
    fn restored_state(&mut self, key: &Value, stored: StoredKey) -> Result<KeyState> {
        let invalid = |reason: String| Err(WindowError::InvalidSnapshot(reason));
        let slices = stored.into_slices();
        if slices.is_empty() {
            return invalid(format!("key {key:?} has no windows"));
        }
        let aggregates = &self.config.aggregates;
        let mut restored = Vec::with_capacity(slices.len());
        for slice in slices {
            if slice.accumulators.len() != aggregates.len() {
                return invalid(format!(
                    "key {key:?}: window at {} has {} accumulators, expected {}",
                    slice.start,
                    slice.accumulators.len(),
                    aggregates.len()
                ));
            }
            let mut accumulators = Vec::with_capacity(slice.accumulators.len());
            for (accumulator, kind) in slice.accumulators.into_iter().zip(aggregates) {
                if let Some(seq) = accumulator.max_seq() {
                    self.next_seq = self.next_seq.max(seq.saturating_add(1));
                }
                let accumulator = accumulator.restore();
                if accumulator.kind() != *kind {
                    return invalid(format!(
                        "key {key:?}: window at {}: a {} accumulator where {} is expected",
                        slice.start,
                        accumulator.kind().name(),
                        kind.name()
                    ));
                }
                accumulators.push(accumulator);
            }
            restored.push(Slice {
                start: slice.start,
                end: slice.end,
                fired: slice.fired,
                accumulators: accumulators.into_boxed_slice(),
            });
        }
        self.check_slices(key, &restored)?;
        self.slice_count += restored.len();
        let mut state = KeyState {
            slices: restored,
            timer: None,
            scheduled: None,
            running: None,
        };
        // The earliest time the restored state needs attention.
        let lateness = self.config.allowed_lateness;
        if let Some(next) = next_time(self.layout, &state.slices, self.watermark, lateness) {
            state.schedule(next);
        }
        Ok(state)
    }

    /// Checks that restored slices are consistent with the layout.
    fn check_slices(&self, key: &Value, slices: &[Slice]) -> Result<()> {
        let invalid = |reason: String| {
            Err(WindowError::InvalidSnapshot(format!(
                "key {key:?}: {reason}"
            )))
        };
        for pair in slices.windows(2) {
            if pair[0].end > pair[1].start {
                return invalid(format!(
                    "windows [{}, {}) and [{}, {}) overlap or are out of order",
                    pair[0].start, pair[0].end, pair[1].start, pair[1].end
                ));
            }
        }
        for slice in slices {
            let fits = match self.layout {
                Layout::Panes(layout) => {
                    layout.place(slice.start).is_some_and(|placement| {
                        placement.pane_start == slice.start
                            && slice.end == slice.start + layout.pane()
                    }) && !slice.fired
                }
                Layout::Sessions { gap } => slice
                    .start
                    .checked_add(gap)
                    .is_some_and(|end| end <= slice.end),
            };
            if !fits {
                return invalid(format!(
                    "window [{}, {}) does not fit the window kind",
                    slice.start, slice.end
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AggregateKind;

    fn windows(kind: WindowKind, lateness: i64) -> KeyedWindows {
        KeyedWindows::new(WindowConfig {
            kind,
            allowed_lateness: lateness,
            aggregates: vec![AggregateKind::Count, AggregateKind::Sum],
        })
        .expect("valid config")
    }

    fn add(windows: &mut KeyedWindows, key: &str, timestamp: i64, out: &mut Vec<WindowResult>) {
        let admission = windows
            .add(
                &Value::str(key),
                timestamp,
                &[Value::Null, Value::Int(1)],
                out,
            )
            .expect("valid event");
        assert_eq!(admission, Admission::OnTime);
    }

    #[test]
    fn errors_change_nothing() {
        let mut windows = windows(WindowKind::Sliding { size: 10, slide: 5 }, 0);
        let mut out = Vec::new();
        let key = Value::str("k");
        let before = windows.snapshot().expect("snapshot");
        assert!(windows.add(&key, 3, &[Value::Null], &mut out).is_err());
        assert!(windows
            .add(&key, 3, &[Value::Null, Value::str("x")], &mut out)
            .is_err());
        assert_eq!(
            windows.add(&key, i64::MAX, &[Value::Null, Value::Null], &mut out),
            Err(WindowError::TimestampOutOfRange {
                timestamp: i64::MAX
            })
        );
        assert_eq!(windows.snapshot().expect("snapshot"), before);
        assert_eq!(windows.key_count(), 0);
        assert!(out.is_empty());

        let mut sessions = self::windows(WindowKind::Session { gap: 10 }, 0);
        assert!(sessions
            .add(&key, i64::MAX - 5, &[Value::Null, Value::Null], &mut out)
            .is_err());
        assert_eq!(sessions.open_windows(), 0);
    }

    #[test]
    fn state_is_purged_and_keys_dropped() {
        let mut windows = windows(WindowKind::Sliding { size: 10, slide: 5 }, 10);
        let mut out = Vec::new();
        add(&mut windows, "a", 0, &mut out);
        add(&mut windows, "a", 7, &mut out);
        add(&mut windows, "b", 12, &mut out);
        assert_eq!((windows.key_count(), windows.open_windows()), (2, 3));
        windows.advance_watermark(10, &mut out).expect("advance");
        let fired: Vec<(i64, i64)> = out
            .iter()
            .map(|result| (result.start, result.end))
            .collect();
        assert_eq!(fired, vec![(-5, 5), (0, 10)]);
        // Pane [5, 10) of a ends its last window at 15, purged at 25.
        windows.advance_watermark(24, &mut out).expect("advance");
        assert_eq!(windows.key_count(), 2);
        windows.advance_watermark(25, &mut out).expect("advance");
        assert_eq!((windows.key_count(), windows.open_windows()), (1, 1));
        windows
            .advance_watermark(i64::MAX, &mut out)
            .expect("advance");
        assert_eq!((windows.key_count(), windows.open_windows()), (0, 0));
        assert!(windows.states().timer_count() == 0);
    }

    /// A 60 by 1 sliding window fired once a second over a long stream merges a bounded number
    /// of accumulators per fired window, not one per pane of the window.
    #[test]
    fn sliding_windows_merge_a_bounded_number_of_panes_per_window() {
        use crate::aggregate::tests::MERGES;
        let aggregates = vec![
            AggregateKind::Count,
            AggregateKind::Sum,
            AggregateKind::Avg,
            AggregateKind::Min,
            AggregateKind::Max,
            AggregateKind::CountBy,
        ];
        let mut windows = KeyedWindows::new(WindowConfig {
            kind: WindowKind::Sliding { size: 60, slide: 1 },
            allowed_lateness: 0,
            aggregates: aggregates.clone(),
        })
        .expect("valid config");
        let mut out = Vec::new();
        let key = Value::str("k");
        let inputs: Vec<Value> = (0..aggregates.len()).map(|_| Value::Int(3)).collect();
        MERGES.with(|merges| merges.set(0));
        for timestamp in 0..600 {
            windows
                .add(&key, timestamp, &inputs, &mut out)
                .expect("valid event");
            windows
                .advance_watermark(timestamp, &mut out)
                .expect("advance");
        }
        windows.finish(&mut out).expect("finish");
        let merges = MERGES.with(std::cell::Cell::get);
        // Windows [-59, 1) to [599, 659): every one holding an event.
        assert_eq!(out.len(), 659);
        assert!(out.iter().all(|result| !result.is_update));
        assert_eq!(out[100].values[0], Value::Int(60));
        assert_eq!(out[100].values[1], Value::Int(180));
        // Two-stacks merges each pane about three times for each stacked aggregate (sum, avg,
        // min, max); a merge of every window's panes would take 59 per window and aggregate.
        let per_window = merges as f64 / out.len() as f64 / 4.0;
        assert!(
            per_window <= 4.0,
            "{merges} merges for {} windows",
            out.len()
        );
    }

    #[test]
    fn touching_sessions_stay_apart_and_bridging_merges_them() {
        let mut windows = windows(WindowKind::Session { gap: 10 }, 0);
        let mut out = Vec::new();
        add(&mut windows, "a", 0, &mut out);
        add(&mut windows, "a", 10, &mut out);
        assert_eq!(windows.open_windows(), 2);
        add(&mut windows, "a", 25, &mut out);
        add(&mut windows, "a", 18, &mut out);
        assert_eq!(windows.open_windows(), 2);
        add(&mut windows, "a", 9, &mut out);
        assert_eq!(windows.open_windows(), 1);
        windows.finish(&mut out).expect("finish");
        assert_eq!(
            out,
            vec![WindowResult {
                key: Value::str("a"),
                start: 0,
                end: 35,
                values: vec![Value::Int(5), Value::Int(5)],
                is_update: false,
            }]
        );
    }

    #[test]
    fn restore_refuses_snapshots_of_other_configs() {
        let mut tumbling = windows(WindowKind::Tumbling { size: 10 }, 0);
        let mut out = Vec::new();
        add(&mut tumbling, "a", 3, &mut out);
        let snapshot = tumbling.snapshot().expect("snapshot");
        let config = |kind| WindowConfig {
            kind,
            allowed_lateness: 0,
            aggregates: vec![AggregateKind::Count, AggregateKind::Sum],
        };
        assert!(matches!(
            KeyedWindows::restore(config(WindowKind::Tumbling { size: 5 }), snapshot.clone()),
            Err(WindowError::InvalidSnapshot(_))
        ));
        let mut other_aggregates = config(WindowKind::Tumbling { size: 10 });
        other_aggregates.aggregates.reverse();
        assert!(KeyedWindows::restore(other_aggregates, snapshot.clone()).is_err());
        let mut restored =
            KeyedWindows::restore(config(WindowKind::Tumbling { size: 10 }), snapshot.clone())
                .expect("same config");
        assert_eq!(restored.snapshot().expect("snapshot"), snapshot);
        restored.finish(&mut out).expect("finish");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn restore_refuses_inconsistent_snapshots() {
        let config = WindowConfig {
            kind: WindowKind::Session { gap: 10 },
            allowed_lateness: 0,
            aggregates: vec![AggregateKind::Count, AggregateKind::Sum],
        };
        let mut sessions = KeyedWindows::new(config.clone()).expect("valid config");
        let mut out = Vec::new();
        add(&mut sessions, "a", 0, &mut out);
        add(&mut sessions, "a", 20, &mut out);
        let json = serde_json::to_value(sessions.snapshot().expect("snapshot")).expect("encodable");
        let restore = |json: serde_json::Value| {
            let snapshot: WindowSnapshot = serde_json::from_value(json).expect("decodable");
            KeyedWindows::restore(config.clone(), snapshot)
        };
        assert!(restore(json.clone()).is_ok());

        let mut overlapping = json.clone();
        overlapping["keys"][0]["slices"][1]["start"] = serde_json::json!(5);
        let error = restore(overlapping).expect_err("overlapping sessions");
        assert!(
            error
                .to_string()
                .starts_with("invalid window snapshot: key \"a\": windows [0, 10) and [5, 30)"),
            "{error}"
        );
        let mut too_short = json.clone();
        too_short["keys"][0]["slices"][0]["end"] = serde_json::json!(5);
        assert!(restore(too_short).is_err());
        let mut wrong_accumulator = json.clone();
        wrong_accumulator["keys"][0]["slices"][0]["accumulators"][0] =
            serde_json::json!({"min": null});
        assert!(restore(wrong_accumulator).is_err());
        let mut duplicate = json;
        let key = duplicate["keys"][0].clone();
        duplicate["keys"]
            .as_array_mut()
            .expect("keys are a list")
            .push(key);
        assert!(restore(duplicate).is_err());
    }
}
