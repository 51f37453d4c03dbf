//! The crate's one error enum, and the reasons a checkpoint file is refused.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::CheckpointId;

/// Errors of checkpoints.
///
/// Every error names the checkpoint (when there is one) and the file or directory involved, so
/// that a message alone tells an operator what to look at.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Text that is not a checkpoint id.
    #[error("invalid checkpoint id `{0}`: expected a decimal number")]
    InvalidId(String),

    /// A retention count of zero, which would delete the checkpoint just written.
    #[error("invalid checkpoint retention {0}: at least one checkpoint must be kept")]
    InvalidRetention(usize),

    /// An IO operation failed; `action` names the operation and the path(s).
    #[error("{}{action}: {cause}", prefix(checkpoint))]
    Io {
        /// The checkpoint being read or written, if any.
        checkpoint: Option<CheckpointId>,
        /// What was being done, with the path, e.g. `fsync directory /ckpt/.tmp-00000000000000000012`.
        action: String,
        /// The underlying error.
        /// Part of the message, not a separate `source()`: printing the chain says it once.
        cause: io::Error,
    },

    /// A checkpoint file exists but is refused: corrupt, truncated, of an unknown format, too
    /// large, or disagreeing with the other file of its checkpoint.
    #[error("checkpoint {checkpoint}: {kind} {}: {reason}", file.display())]
    Corrupt {
        /// The checkpoint the file belongs to.
        checkpoint: CheckpointId,
        /// Which file of the checkpoint.
        kind: FileKind,
        /// The file's path.
        file: PathBuf,
        /// Why it is refused.
        reason: Corruption,
    },

    /// No complete checkpoint with this id exists.
    #[error("checkpoint {checkpoint}: not found in {}", dir.display())]
    NotFound {
        /// The checkpoint asked for.
        checkpoint: CheckpointId,
        /// The checkpoint directory searched.
        dir: PathBuf,
    },

    /// A complete checkpoint with this id already exists; checkpoints are never overwritten.
    #[error("checkpoint {checkpoint}: already exists at {}", dir.display())]
    AlreadyExists {
        /// The checkpoint being saved.
        checkpoint: CheckpointId,
        /// Its existing directory.
        dir: PathBuf,
    },

    /// An operator's state could not be encoded or decoded.
    #[error("operator state: {0}")]
    State(String),

    /// A checkpoint could not be encoded.
    #[error("checkpoint {checkpoint}: cannot encode {what}: {message}")]
    Encode {
        /// The checkpoint being saved.
        checkpoint: CheckpointId,
        /// What was being encoded (`payload` or `manifest`).
        what: &'static str,
        /// The encoder's message.
        message: String,
    },

    /// A checkpoint's encoded payload is larger than the storage's cap, so it could not be
    /// loaded back; it is refused before anything is written.
    #[error("checkpoint {checkpoint}: payload of {len} bytes exceeds the cap of {cap} bytes")]
    TooLarge {
        /// The checkpoint being saved.
        checkpoint: CheckpointId,
        /// The payload's length in bytes.
        len: u64,
        /// The cap in bytes.
        cap: u64,
    },

    /// A save refused because another writer has taken the checkpoint directory over: its
    /// epoch file names a newer owner than the one this storage claimed (a scale-out task whose
    /// partition moved while this process was paused).
    #[error("{}not saved: {} was taken over by a newer owner (epoch {current}; this writer's is {own})", prefix(checkpoint), dir.display())]
    Fenced {
        /// The checkpoint being saved.
        checkpoint: Option<CheckpointId>,
        /// The checkpoint directory.
        dir: PathBuf,
        /// The epoch this writer claimed.
        own: u64,
        /// The epoch the directory names now.
        current: u64,
    },

    /// A checkpoint directory's epoch file that does not hold a decimal number.
    #[error("epoch file {}: expected a decimal number, found `{text}`", file.display())]
    BadEpoch {
        /// The epoch file.
        file: PathBuf,
        /// What it holds (at most 64 characters of it).
        text: String,
    },

    /// Complete checkpoints exist but every one was refused; restoring from none of them
    /// silently would lose state, so this is an error. Holds each refused checkpoint, newest
    /// first, with its reason.
    #[error("no valid checkpoint: {} refused: {}", refused.len(), list_refused(refused))]
    NoValidCheckpoint {
        /// Each refused checkpoint with the reason, newest first.
        refused: Vec<(CheckpointId, CheckpointError)>,
    },
}

fn prefix(checkpoint: &Option<CheckpointId>) -> String {
    match checkpoint {
        Some(id) => format!("checkpoint {id}: "),
        None => String::new(),
    }
}

fn list_refused(refused: &[(CheckpointId, CheckpointError)]) -> String {
    let reasons: Vec<String> = refused.iter().map(|(_, error)| error.to_string()).collect();
    reasons.join("; ")
}

impl CheckpointError {
    /// An IO error while doing `action` (which names the path).
    pub(crate) fn io(
        checkpoint: Option<CheckpointId>,
        action: impl Into<String>,
        source: io::Error,
    ) -> Self {
        CheckpointError::Io {
            checkpoint,
            action: action.into(),
            cause: source,
        }
    }

    /// The reason a file was refused, if this is a [`CheckpointError::Corrupt`].
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            CheckpointError::Corrupt { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// The result of checkpoint operations.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Which file of a checkpoint an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `data.bin`: the header and the encoded checkpoint.
    Data,
    /// `manifest.json`: the readable summary.
    Manifest,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Data => "data file",
            FileKind::Manifest => "manifest",
        })
    }
}

/// Why a checkpoint file is refused: the reason inside [`CheckpointError::Corrupt`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The file is shorter than the fixed header.
    TruncatedHeader {
        /// The file's length in bytes.
        len: u64,
        /// The header's length in bytes.
        header_len: u64,
    },
    /// The file does not start with the checkpoint magic.
    BadMagic {
        /// The first eight bytes found.
        found: [u8; 8],
    },
    /// A format version this build cannot read.
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// A payload codec this build does not know.
    UnknownCodec {
        /// The codec id in the file.
        found: u16,
    },
    /// The header claims a payload larger than the configured cap.
    PayloadTooLarge {
        /// The claimed payload length.
        len: u64,
        /// The cap.
        cap: u64,
    },
    /// The header's payload length does not match the file's length.
    LengthMismatch {
        /// The payload length the header claims.
        header: u64,
        /// The payload bytes the file holds.
        actual: u64,
    },
    /// The payload's sha256 is not the one in the header.
    ChecksumMismatch {
        /// The sha256 in the header, hex.
        expected: String,
        /// The sha256 of the payload, hex.
        found: String,
    },
    /// The payload passed its checksum but is not a checkpoint of this format.
    Undecodable(String),
    /// The payload holds bytes after the checkpoint.
    TrailingBytes {
        /// The payload's length.
        len: u64,
        /// The bytes the checkpoint took.
        used: u64,
    },
    /// The file belongs to another checkpoint than its directory.
    IdMismatch {
        /// The id of the directory.
        expected: CheckpointId,
        /// The id in the file.
        found: CheckpointId,
    },
    /// The manifest is larger than any manifest this crate writes.
    ManifestTooLarge {
        /// The manifest's length.
        len: u64,
        /// The largest manifest accepted.
        cap: u64,
    },
    /// The manifest is not valid JSON of the manifest's shape.
    BadManifest(String),
    /// The manifest disagrees with the data file.
    ManifestMismatch {
        /// The manifest field that disagrees.
        field: &'static str,
        /// The manifest's value.
        manifest: String,
        /// The value the data file implies.
        data: String,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::TruncatedHeader { len, header_len } => write!(
                f,
                "truncated header: the file has {len} bytes, the header needs {header_len}"
            ),
            Corruption::BadMagic { found } => {
                write!(f, "bad magic: not a checkpoint file (starts with {found:02x?})")
            }
            Corruption::UnsupportedVersion { found, supported } => write!(
                f,
                "unsupported format version {found}: this build reads version {supported}"
            ),
            Corruption::UnknownCodec { found } => write!(f, "unknown codec id {found}"),
            Corruption::PayloadTooLarge { len, cap } => write!(
                f,
                "payload length {len} exceeds the cap of {cap} bytes (not read)"
            ),
            Corruption::LengthMismatch { header, actual } => write!(
                f,
                "length mismatch: the header says {header} payload bytes, the file holds {actual}"
            ),
            Corruption::ChecksumMismatch { expected, found } => write!(
                f,
                "checksum mismatch: expected {expected}, found {found}"
            ),
            Corruption::Undecodable(message) => write!(f, "undecodable payload: {message}"),
            Corruption::TrailingBytes { len, used } => write!(
                f,
                "trailing bytes: the checkpoint takes {used} of the payload's {len} bytes"
            ),
            Corruption::IdMismatch { expected, found } => write!(
                f,
                "id mismatch: the file is of checkpoint {found}, its directory of checkpoint {expected}"
            ),
            Corruption::ManifestTooLarge { len, cap } => {
                write!(f, "manifest of {len} bytes exceeds the cap of {cap} bytes")
            }
            Corruption::BadManifest(message) => write!(f, "unreadable manifest: {message}"),
            Corruption::ManifestMismatch {
                field,
                manifest,
                data,
            } => write!(
                f,
                "disagrees with the data file on `{field}`: the manifest says {manifest}, the data {data}"
            ),
        }
    }
}
