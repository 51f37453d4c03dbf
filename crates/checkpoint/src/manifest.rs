//! `manifest.json`: a readable summary of a checkpoint that must agree with its data file.

use serde::{Deserialize, Serialize};

use crate::codec::{self, Header, CODEC_BINCODE_STANDARD, FORMAT_VERSION, HEADER_LEN};
use crate::stream::Outline;
use crate::{Checkpoint, CheckpointId, Corruption, SourceState};

/// The largest `manifest.json` accepted, in bytes (16 MiB).
pub const MAX_MANIFEST_LEN: u64 = 16 << 20;

/// The readable summary of a checkpoint, written beside its data file as `manifest.json`.
///
/// Every field is derived from the checkpoint and its data file; loading a checkpoint checks
/// that the manifest agrees with the data field by field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The checkpoint's id.
    pub id: CheckpointId,
    /// When the checkpoint was taken, epoch milliseconds.
    pub created_at_ms: i64,
    /// The same instant in RFC 3339, UTC, for people.
    pub created_at: String,
    /// The fingerprint of the pipeline's shape.
    pub pipeline_fingerprint: String,
    /// The pipeline's combined watermark, epoch milliseconds.
    pub watermark: i64,
    /// The position of every source.
    pub sources: Vec<SourceState>,
    /// A summary of every operator's state.
    pub operators: Vec<OperatorSummary>,
    /// The data file's format version.
    pub format_version: u16,
    /// The data file's codec id.
    pub codec: u16,
    /// The data file's length in bytes, header included.
    pub data_file_size: u64,
    /// The sha256 of the data file's payload, lowercase hex.
    pub payload_sha256: String,
    /// How long the checkpoint took, in milliseconds, from the coordinator's trigger until its
    /// data file was durable: the barrier's way through the queues, the alignment, the
    /// snapshot, the sinks' flushes and the write. Recorded when saved, not derived from the
    /// data file, so it is not checked against it; absent in checkpoints written before it
    /// existed or saved without a timing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// The summary of one operator's state in a [`Manifest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSummary {
    /// The operator's name.
    pub name: String,
    /// The operator's kind.
    pub kind: String,
    /// How many keys its state holds.
    pub key_count: u64,
    /// The length of its state in bytes.
    pub bytes: u64,
}

impl Manifest {
    /// The manifest of `checkpoint` stored in a data file with this header.
    pub(crate) fn describe(checkpoint: &Checkpoint, header: &Header) -> Manifest {
        Manifest::describe_outline(Outline::of(checkpoint), header)
    }

    /// The manifest of the checkpoint `outline` stored in a data file with this header.
    pub(crate) fn describe_outline(outline: Outline, header: &Header) -> Manifest {
        Manifest {
            id: outline.id,
            created_at_ms: outline.created_at_ms,
            created_at: rfc3339(outline.created_at_ms),
            pipeline_fingerprint: outline.pipeline_fingerprint,
            watermark: outline.watermark,
            sources: outline.sources,
            operators: outline.operators,
            format_version: FORMAT_VERSION,
            codec: CODEC_BINCODE_STANDARD,
            data_file_size: HEADER_LEN as u64 + header.payload_len,
            payload_sha256: codec::hex(&header.sha256),
            duration_ms: None,
        }
    }

    /// The manifest as written: pretty JSON and a final newline.
    pub(crate) fn to_json(&self) -> Result<Vec<u8>, String> {
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        json.push(b'\n');
        Ok(json)
    }

    /// Parses a manifest.
    pub(crate) fn from_json(json: &[u8]) -> Result<Manifest, Corruption> {
        serde_json::from_slice(json).map_err(|e| Corruption::BadManifest(e.to_string()))
    }

    /// Checks that this manifest (as read) agrees with `expected` (derived from the data
    /// file), naming the first field that does not.
    pub(crate) fn check_agrees(&self, expected: &Manifest) -> Result<(), Corruption> {
        macro_rules! check {
            ($($field:ident),*) => {$(
                if self.$field != expected.$field {
                    return Err(Corruption::ManifestMismatch {
                        field: stringify!($field),
                        manifest: shorten(format!("{:?}", self.$field)),
                        data: shorten(format!("{:?}", expected.$field)),
                    });
                }
            )*};
        }
        if self.id != expected.id {
            return Err(Corruption::IdMismatch {
                expected: expected.id,
                found: self.id,
            });
        }
        check!(
            format_version,
            codec,
            payload_sha256,
            data_file_size,
            created_at_ms,
            created_at,
            pipeline_fingerprint,
            watermark,
            sources,
            operators
        );
        Ok(())
    }
}

/// `text`, cut to a length fit for an error message.
fn shorten(text: String) -> String {
    const MAX: usize = 120;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// Epoch milliseconds as RFC 3339 in UTC with milliseconds, e.g. `2023-11-14T22:13:20.123Z`.
pub(crate) fn rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (second, milli) = (in_day / 1000 % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`). Exact for every `i64` day count an `i64` of milliseconds yields.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        // The extremes do not overflow.
        assert!(rfc3339(i64::MIN).ends_with('Z'));
        assert!(rfc3339(i64::MAX).ends_with('Z'));
    }

    #[test]
    fn shorten_cuts_long_values() {
        assert_eq!(shorten("abc".into()), "abc");
        assert_eq!(shorten("é".repeat(200)).chars().count(), 123);
    }
}

/// What changed between two checkpoints, from their manifests: per operator the key count and
/// size, per partition the position and watermark, and the pipeline's watermark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDiff {
    /// The older checkpoint.
    pub from: CheckpointId,
    /// The newer checkpoint.
    pub to: CheckpointId,
    /// Whether both were taken by a pipeline of the same shape.
    pub same_pipeline: bool,
    /// The pipeline watermark in each.
    pub watermark: (i64, i64),
    /// Operators, by name: key counts and bytes in each (`None` where absent).
    pub operators: Vec<OperatorDiff>,
    /// Partitions, by source and partition name: offsets and watermarks in each.
    pub partitions: Vec<PartitionDiff>,
}

/// One operator's change between two checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorDiff {
    /// The operator.
    pub name: String,
    /// Key count in the older and newer checkpoint.
    pub key_count: (Option<u64>, Option<u64>),
    /// State bytes in the older and newer checkpoint.
    pub bytes: (Option<u64>, Option<u64>),
}

/// One partition's move between two checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDiff {
    /// The source.
    pub source: String,
    /// The partition.
    pub partition: String,
    /// Offset in the older and newer checkpoint.
    pub offset: (Option<u64>, Option<u64>),
    /// Watermark in the older and newer checkpoint.
    pub watermark: (Option<i64>, Option<i64>),
}

impl Manifest {
    /// What changed from `self` to `newer`.
    pub fn diff(&self, newer: &Manifest) -> ManifestDiff {
        let mut names: Vec<&str> = self.operators.iter().map(|o| o.name.as_str()).collect();
        for operator in &newer.operators {
            if !names.contains(&operator.name.as_str()) {
                names.push(&operator.name);
            }
        }
        let find = |manifest: &Manifest, name: &str| {
            manifest
                .operators
                .iter()
                .find(|o| o.name == name)
                .map(|o| (o.key_count, o.bytes))
        };
        let operators = names
            .into_iter()
            .map(|name| {
                let (a, b) = (find(self, name), find(newer, name));
                OperatorDiff {
                    name: name.to_string(),
                    key_count: (a.map(|x| x.0), b.map(|x| x.0)),
                    bytes: (a.map(|x| x.1), b.map(|x| x.1)),
                }
            })
            .collect();
        let mut keys: Vec<(String, String)> = Vec::new();
        for manifest in [self, newer] {
            for source in &manifest.sources {
                for partition in &source.partitions {
                    let key = (source.name.clone(), partition.name.clone());
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
        }
        let position = |manifest: &Manifest, source: &str, partition: &str| {
            manifest
                .sources
                .iter()
                .filter(|s| s.name == source)
                .flat_map(|s| s.partitions.iter())
                .find(|p| p.name == partition)
                .map(|p| (p.offset, p.watermark))
        };
        let partitions = keys
            .into_iter()
            .map(|(source, partition)| {
                let (a, b) = (
                    position(self, &source, &partition),
                    position(newer, &source, &partition),
                );
                PartitionDiff {
                    offset: (a.map(|x| x.0), b.map(|x| x.0)),
                    watermark: (a.map(|x| x.1), b.map(|x| x.1)),
                    source,
                    partition,
                }
            })
            .collect();
        ManifestDiff {
            from: self.id,
            to: newer.id,
            same_pipeline: self.pipeline_fingerprint == newer.pipeline_fingerprint,
            watermark: (self.watermark, newer.watermark),
            operators,
            partitions,
        }
    }
}
