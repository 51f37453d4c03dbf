use serde::{Deserialize, Serialize};

use crate::{Result, WindowError};

/// How events are grouped into windows. All lengths are in milliseconds; windows are half-open
/// `[start, end)` and aligned to epoch 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Back-to-back windows of `size`: an event at `t` belongs to the one starting at
    /// `floor(t / size) * size`.
    Tumbling {
        /// The length of a window.
        size: i64,
    },
    /// Windows of `size` starting at every multiple of `slide`: an event belongs to about
    /// `size / slide` of them.
    Sliding {
        /// The length of a window.
        size: i64,
        /// The distance between the starts of consecutive windows, at most `size`.
        slide: i64,
    },
    /// Per-key sessions: an event at `t` opens `[t, t + gap)`, which merges with every session
    /// of the same key it intersects.
    Session {
        /// The inactivity that closes a session.
        gap: i64,
    },
}

/// An incremental aggregate computed per window.
///
/// Null inputs are ignored by every aggregate but [`AggregateKind::Count`]; an aggregate that saw
/// no non-null input gives [`dataflow_event::Value::Null`], except the counts
/// [`AggregateKind::CountDistinct`] (`0`) and [`AggregateKind::CountBy`] (an empty map), and the
/// lists [`AggregateKind::ArgMax`], [`AggregateKind::ArgMin`] and [`AggregateKind::TopK`] (an
/// empty list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    /// The number of events, as an int; its input is ignored.
    Count,
    /// The sum of numeric inputs: an int while every input is an int and the sum fits in `i64`,
    /// a float otherwise.
    Sum,
    /// The smallest input. Numbers compare numerically across ints and floats (an int before an
    /// equal float); values of different types compare by [`dataflow_event::Value`]'s order.
    Min,
    /// The largest input, in the order of [`AggregateKind::Min`].
    Max,
    /// The mean of numeric inputs, as a float.
    Avg,
    /// The number of distinct inputs, as an int.
    CountDistinct,
    /// The input of the event with the smallest timestamp; the first to arrive among equals.
    First,
    /// The input of the event with the largest timestamp; the last to arrive among equals.
    Last,
    /// A map from each input's [`dataflow_event::Value::to_key_string`] to its number of events.
    CountBy,
    /// Every argument tied for the largest value: the input is the list `[value, argument]`
    /// (any other input is its own argument), values compare as in [`AggregateKind::Max`], and
    /// the result is the list of the distinct arguments of the events whose value is the
    /// largest, in [`dataflow_event::Value`]'s order. Events whose value is null are ignored.
    ArgMax,
    /// Every argument tied for the smallest value, as [`AggregateKind::ArgMax`].
    ArgMin,
    /// The `k` largest inputs, in the order of [`AggregateKind::Max`], as a list from the
    /// largest down; equal inputs each take a place.
    TopK {
        /// How many inputs are kept, at least 1.
        k: u32,
    },
}

impl AggregateKind {
    /// Every aggregate, in declaration order (`top_k` with `k` 3).
    pub const ALL: [AggregateKind; 12] = [
        AggregateKind::Count,
        AggregateKind::Sum,
        AggregateKind::Min,
        AggregateKind::Max,
        AggregateKind::Avg,
        AggregateKind::CountDistinct,
        AggregateKind::First,
        AggregateKind::Last,
        AggregateKind::CountBy,
        AggregateKind::ArgMax,
        AggregateKind::ArgMin,
        AggregateKind::TopK { k: 3 },
    ];

    /// The name used in configs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            AggregateKind::Count => "count",
            AggregateKind::Sum => "sum",
            AggregateKind::Min => "min",
            AggregateKind::Max => "max",
            AggregateKind::Avg => "avg",
            AggregateKind::CountDistinct => "count_distinct",
            AggregateKind::First => "first",
            AggregateKind::Last => "last",
            AggregateKind::CountBy => "count_by",
            AggregateKind::ArgMax => "arg_max",
            AggregateKind::ArgMin => "arg_min",
            AggregateKind::TopK { .. } => "top_k",
        }
    }

    /// Whether the aggregate accepts only numbers (and nulls).
    pub fn is_numeric(self) -> bool {
        matches!(self, AggregateKind::Sum | AggregateKind::Avg)
    }
}

/// The configuration of one windowed aggregation operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowConfig {
    /// How events are grouped into windows.
    pub kind: WindowKind,
    /// How long after firing a window still accepts late events (which emit updated results),
    /// in milliseconds of watermark.
    pub allowed_lateness: i64,
    /// The aggregates computed per window; results list their values in this order.
    pub aggregates: Vec<AggregateKind>,
}

impl WindowConfig {
    /// Checks that lengths are positive, the lateness is not negative, a sliding window's slide
    /// is at most its size (a larger slide would leave gaps), and there is an aggregate.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(WindowError::InvalidConfig(reason));
        match self.kind {
            WindowKind::Tumbling { size } if size <= 0 => {
                return invalid(format!(
                    "tumbling window size must be positive, found {size}"
                ));
            }
            WindowKind::Sliding { size, .. } if size <= 0 => {
                return invalid(format!(
                    "sliding window size must be positive, found {size}"
                ));
            }
            WindowKind::Sliding { slide, .. } if slide <= 0 => {
                return invalid(format!(
                    "sliding window slide must be positive, found {slide}"
                ));
            }
            WindowKind::Sliding { size, slide } if slide > size => {
                return invalid(format!(
                    "sliding window slide {slide} exceeds its size {size}: events would fall in gaps"
                ));
            }
            WindowKind::Session { gap } if gap <= 0 => {
                return invalid(format!("session gap must be positive, found {gap}"));
            }
            _ => {}
        }
        if self.allowed_lateness < 0 {
            return invalid(format!(
                "allowed lateness must not be negative, found {}",
                self.allowed_lateness
            ));
        }
        if self.aggregates.is_empty() {
            return invalid("at least one aggregate is required".to_string());
        }
        if self.aggregates.contains(&AggregateKind::TopK { k: 0 }) {
            return invalid("top_k needs k of at least 1".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: WindowKind) -> WindowConfig {
        WindowConfig {
            kind,
            allowed_lateness: 0,
            aggregates: vec![AggregateKind::Count],
        }
    }

    #[test]
    fn validate_accepts_sound_configs() {
        for kind in [
            WindowKind::Tumbling { size: 10 },
            WindowKind::Sliding {
                size: 10,
                slide: 10,
            },
            WindowKind::Sliding { size: 10, slide: 4 },
            WindowKind::Session { gap: 1 },
        ] {
            assert_eq!(config(kind).validate(), Ok(()), "{kind:?}");
        }
    }

    #[test]
    fn validate_refuses_unsound_configs() {
        for kind in [
            WindowKind::Tumbling { size: 0 },
            WindowKind::Sliding { size: -1, slide: 1 },
            WindowKind::Sliding { size: 10, slide: 0 },
            WindowKind::Sliding {
                size: 10,
                slide: 11,
            },
            WindowKind::Session { gap: -5 },
        ] {
            assert!(config(kind).validate().is_err(), "{kind:?}");
        }
        let mut late = config(WindowKind::Tumbling { size: 10 });
        late.allowed_lateness = -1;
        assert!(late.validate().is_err());
        let mut no_top = config(WindowKind::Tumbling { size: 10 });
        no_top.aggregates.push(AggregateKind::TopK { k: 0 });
        assert_eq!(
            no_top.validate().unwrap_err().to_string(),
            "invalid window config: top_k needs k of at least 1"
        );
        let mut empty = config(WindowKind::Tumbling { size: 10 });
        empty.aggregates.clear();
        let error = empty.validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid window config: at least one aggregate is required"
        );
    }
}
