//! The operators of dataflow: the [`Operator`] trait, and the built-in filter, map, key-by,
//! window aggregate, pattern, alert and joins (interval, window, lookup), one module each.
//!
//! An operator processes batches of events and emits events and side records (dead letters,
//! late events) into an [`Output`]; control (watermarks, processing-time ticks, the end of
//! input, checkpoints) reaches it through the trait's other methods, in stream order. Each kind
//! declares its static facts beside its code as an [`OperatorKind`] (`window::KIND`): whether
//! it keeps state, how its input must be partitioned across parallel workers, and how its
//! snapshot is read. The runtime and the API ask those facts; they never match kind names.
//!
//! Adding an operator: a module with the operator, its `KIND`, and an entry in [`kind::ALL`].
#![forbid(unsafe_code)]

pub mod alert;
mod error;
pub mod filter;
pub mod join;
pub mod key_by;
pub mod kind;
pub mod map;
mod operator;
pub mod over;
pub mod pattern;
mod store_cache;
pub mod window;

pub use alert::Alert;
pub use error::{OperatorError, Result};
pub use filter::Filter;
pub use key_by::KeyBy;
pub use kind::{KeyEffect, OperatorKind, Partitioning};
pub use map::Map;
pub use operator::{
    Operator, OperatorInfo, OperatorNode, OperatorSnapshot, Output, SideData, SideKind, SideRecord,
    StreamedSnapshot,
};
pub use over::Over;
pub use pattern::Pattern;
pub use window::{TimeDomain, WindowAggregate};
