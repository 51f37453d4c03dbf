//! Checkpoints: their identifiers today; their on-disk format (magic, version, codec, sha256,
//! bincode payload), storage and retention with the checkpoint issue.
//!
//! This crate will be the only one that knows the checkpoint file format and sha2. Identifiers
//! are validated here once, so that nothing built from one can escape the checkpoint directory.
//!
//! ```
//! use dataflow_checkpoint::CheckpointId;
//!
//! let id: CheckpointId = "42".parse().unwrap();
//! assert_eq!(id.to_string(), "42");
//! assert!("../x".parse::<CheckpointId>().is_err());
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of checkpoints.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// Text that is not a checkpoint id.
    #[error("invalid checkpoint id `{0}`: expected a decimal number")]
    InvalidId(String),
}

/// The result of checkpoint operations.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// A checkpoint's id: a number that grows with each checkpoint of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckpointId(pub u64);

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for CheckpointId {
    type Err = CheckpointError;

    /// Only ASCII digits are accepted, so an id never holds a path separator or `..`.
    fn from_str(text: &str) -> Result<Self> {
        if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CheckpointError::InvalidId(text.chars().take(64).collect()));
        }
        text.parse()
            .map(CheckpointId)
            .map_err(|_| CheckpointError::InvalidId(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_decimal_numbers_only() {
        assert_eq!("7".parse(), Ok(CheckpointId(7)));
        for bad in [
            "",
            "-1",
            "1.0",
            "../1",
            "%2e%2e",
            "1/2",
            "99999999999999999999999",
        ] {
            assert!(bad.parse::<CheckpointId>().is_err(), "{bad}");
        }
    }
}
