//! Event-time windows, incremental aggregates and watermarks of dataflow.
//!
//! This crate is the pure core of windowed aggregation: it does no IO, starts no threads and
//! reads no clock (callers pass `now` where processing time matters). The pipeline feeds it
//! events and watermarks and forwards the [`WindowResult`]s it emits.
//!
//! - [`KeyedWindows`] holds the windows of every key of one operator: tumbling, sliding or
//!   session windows ([`WindowKind`]), each computing a list of aggregates ([`AggregateKind`])
//!   incrementally. Only accumulators are kept, never events; sliding windows keep one
//!   accumulator per pane of `gcd(size, slide)`. Windows of a few panes merge them when they
//!   fire; windows of many panes are combined incrementally as they slide, so that a fired
//!   window costs about the same whatever `size / slide`.
//! - [`BoundedOutOfOrderness`] derives a watermark from event times, and [`WatermarkCombiner`]
//!   combines the watermarks of several inputs, with idle detection.
//! - [`KeyStates`] is where the keys' states and timers live: in memory ([`HeapStates`]) by
//!   default, or in any key-value store that keeps [`StoredKey`]s, with the timers in memory
//!   beside it ([`Timers`]).
//! - [`WindowSnapshot`] is the serializable state of a [`KeyedWindows`], for checkpoints; its
//!   [`SnapshotHeader`] lets a store write one key by key, without gathering it.
//!
//! # Conventions
//!
//! Times are epoch milliseconds. Windows are half-open `[start, end)` and aligned to epoch 0,
//! also for negative times. A watermark `W` says no more events with a timestamp below `W` are
//! expected: an event at `t < W` is late. A window fires (its result is emitted) when
//! `W >= end`, and its state is purged when `W >= end + allowed_lateness`. Late events that
//! still find a window that is not purged update it, and the updated result is emitted at once
//! with [`WindowResult::is_update`] set; events whose windows are all purged are
//! [`Admission::TooLate`] and change nothing. Sessions merge when their intervals intersect
//! (`a.start < b.end && b.start < a.end`): sessions that only touch stay apart.
//!
//! # Example
//!
//! ```
//! use dataflow_event::Value;
//! use dataflow_window::{
//!     Admission, AggregateKind, BoundedOutOfOrderness, KeyedWindows, WindowConfig, WindowKind,
//! };
//!
//! let config = WindowConfig {
//!     kind: WindowKind::Tumbling { size: 10 },
//!     allowed_lateness: 0,
//!     aggregates: vec![AggregateKind::Count, AggregateKind::Sum],
//! };
//! let mut windows = KeyedWindows::new(config)?;
//! let mut watermarks = BoundedOutOfOrderness::new(2);
//! let mut out = Vec::new();
//! let user = Value::str("u1");
//! for (timestamp, amount) in [(1, 5), (8, 2), (11, 1), (9, 4), (15, 3)] {
//!     let admission = windows.add(&user, timestamp, &[Value::Null, Value::Int(amount)], &mut out)?;
//!     assert_eq!(admission, Admission::OnTime);
//!     watermarks.observe(timestamp);
//!     windows.advance_watermark(watermarks.current(), &mut out)?;
//! }
//! // The event at 9 arrived out of order but within the bound. The watermark reached 13 at the
//! // event at 15, which fired [0, 10).
//! assert_eq!(out.len(), 1);
//! assert_eq!((out[0].start, out[0].end), (0, 10));
//! assert_eq!(out[0].values, vec![Value::Int(3), Value::Int(11)]);
//! windows.finish(&mut out)?;
//! assert_eq!((out[1].start, out[1].end), (10, 20));
//! assert_eq!(out[1].values, vec![Value::Int(2), Value::Int(4)]);
//! # Ok::<(), dataflow_window::WindowError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod aggregate;
mod config;
mod error;
mod layout;
mod running;
mod snapshot;
mod states;
mod watermark;
mod windows;

pub use aggregate::{aggregate_rows, check_aggregate_inputs};
pub use config::{AggregateKind, WindowConfig, WindowKind};
pub use error::{Result, WindowError};
pub use snapshot::{
    key_hash, key_partition, SnapshotHeader, SnapshotKey, SnapshotWindow, WindowSnapshot,
};
pub use states::{HeapStates, KeyState, KeyStates, StoredKey, Timers};
pub use watermark::{BoundedOutOfOrderness, WatermarkCombiner};
pub use windows::{Admission, KeyedWindows, WindowResult};
