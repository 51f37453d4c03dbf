//! Records that leave the main stream — dead letters and late events — with their reason. Every
//! one of them is written to the dead-letter or late-events sink and counted: nothing is dropped
//! silently. Sources, operators and sinks all speak this type.

use std::sync::Arc;

use crate::{Event, Layout};

/// Why a record left the main stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideKind {
    /// It could not be decoded or evaluated.
    DeadLetter,
    /// It arrived after its windows were closed for good.
    Late,
    /// A partial match of a `pattern` step whose `within` ran out (an expected event that did
    /// not come).
    TimedOut,
}

impl SideKind {
    /// The name written in side records.
    pub fn name(self) -> &'static str {
        match self {
            SideKind::DeadLetter => "dead_letter",
            SideKind::Late => "late",
            SideKind::TimedOut => "timed_out",
        }
    }
}

/// A record routed away from the main stream, with its reason. Nothing is dropped silently:
/// every side record is written to the dead-letter or late-events sink and counted.
#[derive(Clone, Debug, PartialEq)]
pub struct SideRecord {
    /// Dead letter or late event.
    pub kind: SideKind,
    /// Where it left: a source name or an operator name.
    pub stage: Arc<str>,
    /// Why, as a sentence fragment.
    pub reason: String,
    /// The 1-based line number in its source, when known.
    pub line: Option<u64>,
    /// The record: the event as a JSON object, or the raw text that could not be decoded.
    pub record: SideData,
}

/// The body of a side record.
#[derive(Clone, Debug, PartialEq)]
pub enum SideData {
    /// The raw input text (not valid JSON, or not decodable).
    Raw(String),
    /// The event, encoded by the writer as a JSON object in the sink's time format.
    Event {
        /// The event.
        event: Box<Event>,
        /// Its payload layout.
        layout: Layout,
    },
}

impl SideData {
    /// An event of `layout`.
    pub fn event(event: &Event, layout: &Layout) -> SideData {
        SideData::Event {
            event: Box::new(event.clone()),
            layout: layout.clone(),
        }
    }
}
