//! The composition of dataflow pipelines: configuration, typed specs, planning, the builder API,
//! run control, and the tokio runtime that runs the operators of `dataflow-operators` between
//! the sources and sinks of `dataflow-connectors`.
//!
//! A pipeline is described by a [`spec::PipelineSpec`], written either as YAML
//! ([`config::load`]) or in code ([`builder::PipelineBuilder`]). [`plan::plan`] checks it and
//! compiles every CEL expression against the layout of the stream it runs on, listing every
//! problem with its place; [`runtime::Pipeline::run`] runs the plan on tokio.
//!
//! The traits it composes are small: a [`dataflow_operators::Operator`] implements `process`
//! over a batch and names its kind; a [`dataflow_connectors::Source`] reads batches on a thread
//! of its own; a [`dataflow_connectors::Sink`] writes batches. Control (watermarks, barriers,
//! end of input) travels in band with the events.
//!
//! ```no_run
//! use dataflow_pipeline::builder::PipelineBuilder;
//! use dataflow_pipeline::spec::SinkSpec;
//!
//! # async fn demo() -> dataflow_pipeline::Result<()> {
//! let summary = PipelineBuilder::new("clicks")
//!     .file_source("clicks", "data/clicks.jsonl")
//!     .out_of_orderness_ms(5_000)
//!     .filter("event.type == 'user_click'")
//!     .key_by("user_id")
//!     .tumbling_ms(60_000)
//!     .aggregate("clicks", "count")
//!     .sink(SinkSpec::stdout())
//!     .build()?
//!     .run()
//!     .await?;
//! println!("{summary}");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod builder;
pub mod config;
pub mod control;
mod error;
pub mod plan;
pub mod runtime;
pub mod scale_out;
pub mod spec;

pub use error::{PipelineError, Result};
