//! The data file format; the only module that knows bincode.
//!
//! ```text
//! offset  size  field
//!      0     8  magic            b"DFCKPT\0\0"
//!      8     2  format version   u16 little-endian (1)
//!     10     2  codec id         u16 little-endian (1 = bincode 2, standard config)
//!     12     8  payload length   u64 little-endian
//!     20    32  sha256           of the payload
//!     52     n  payload          the checkpoint, encoded by the codec
//! ```
//!
//! The payload of codec 1 is the [`wire`] structs encoded by bincode 2.0 with
//! `bincode::config::standard()` (little-endian, variable-length integers). The wire structs
//! are the frozen on-disk shape of format version 1, separate from the public [`Checkpoint`],
//! so that the API can change without changing the format by accident.
//!
//! Decoding checks the magic, the version, the codec, that the payload length is under the cap
//! and matches the file, then the sha256, and only then decodes. Decoding borrows strings and
//! state bytes from the payload, so no allocation is sized by a length field beyond what the
//! payload really holds; bincode's limit bounds the rest.

use sha2::{Digest, Sha256};

use crate::{Checkpoint, CheckpointId, Corruption};

/// The first eight bytes of every checkpoint data file.
pub const MAGIC: [u8; 8] = *b"DFCKPT\0\0";
/// The data file format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// The codec id of bincode 2 with its standard config: the only codec.
pub const CODEC_BINCODE_STANDARD: u16 = 1;
/// The length of the data file's fixed header, in bytes.
pub const HEADER_LEN: usize = 8 + 2 + 2 + 8 + 32;
/// The default cap on a data file's payload, in bytes (256 MiB).
pub const DEFAULT_MAX_PAYLOAD: u64 = 256 << 20;

/// A data file's fixed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The payload's length in bytes.
    pub(crate) payload_len: u64,
    /// The payload's sha256.
    pub(crate) sha256: [u8; 32],
}

/// A checkpoint encoded as a whole data file (the reference the streamed save is checked
/// against; saves stream, see [`crate::stream`]).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Encoded {
    /// The data file: header then payload.
    pub(crate) bytes: Vec<u8>,
    /// The payload's sha256.
    pub(crate) sha256: [u8; 32],
}

#[cfg(test)]
impl Encoded {
    /// The payload's length in bytes.
    pub(crate) fn payload_len(&self) -> u64 {
        (self.bytes.len() - HEADER_LEN) as u64
    }
}

/// Encodes `checkpoint` as a data file. Fails only if bincode fails (it does not for these
/// types); the message is bincode's.
#[cfg(test)]
pub(crate) fn encode(checkpoint: &Checkpoint) -> Result<Encoded, String> {
    let wire = wire::Checkpoint::from_checkpoint(checkpoint);
    // Sized for the operators' states up front: grown by doubling, the buffer of a large state
    // would hold up to twice its size, and copy it on every growth.
    let states: usize = checkpoint.operators.iter().map(|op| op.state.len()).sum();
    let mut bytes = Vec::with_capacity(HEADER_LEN + states + 4096);
    bytes.resize(HEADER_LEN, 0);
    bincode::serde::encode_into_std_write(&wire, &mut bytes, bincode::config::standard())
        .map_err(|e| e.to_string())?;
    let sha256 = sha256(&bytes[HEADER_LEN..]);
    let payload_len = (bytes.len() - HEADER_LEN) as u64;
    bytes[0..8].copy_from_slice(&MAGIC);
    bytes[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[10..12].copy_from_slice(&CODEC_BINCODE_STANDARD.to_le_bytes());
    bytes[12..20].copy_from_slice(&payload_len.to_le_bytes());
    bytes[20..52].copy_from_slice(&sha256);
    Ok(Encoded { bytes, sha256 })
}

/// Checks a data file's header: `head` is its first bytes (at most [`HEADER_LEN`] are looked
/// at), `file_len` its whole length. Checks the magic, version, codec, that the payload is at
/// most `max_payload` bytes and that the file holds exactly the header and the payload.
pub(crate) fn parse_header(
    head: &[u8],
    file_len: u64,
    max_payload: u64,
) -> Result<Header, Corruption> {
    let truncated = Corruption::TruncatedHeader {
        len: file_len,
        header_len: HEADER_LEN as u64,
    };
    let Some(head) = head.get(..HEADER_LEN) else {
        return Err(truncated);
    };
    if file_len < HEADER_LEN as u64 {
        return Err(truncated);
    }
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&head[0..8]);
    if magic != MAGIC {
        return Err(Corruption::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([head[8], head[9]]);
    if version != FORMAT_VERSION {
        return Err(Corruption::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let codec = u16::from_le_bytes([head[10], head[11]]);
    if codec != CODEC_BINCODE_STANDARD {
        return Err(Corruption::UnknownCodec { found: codec });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[12..20]);
    let payload_len = u64::from_le_bytes(len);
    if payload_len > max_payload {
        return Err(Corruption::PayloadTooLarge {
            len: payload_len,
            cap: max_payload,
        });
    }
    let actual = file_len - HEADER_LEN as u64;
    if payload_len != actual {
        return Err(Corruption::LengthMismatch {
            header: payload_len,
            actual,
        });
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&head[20..52]);
    Ok(Header {
        payload_len,
        sha256,
    })
}

/// Checks the payload against the header's length and sha256, then decodes it.
#[cfg(test)]
pub(crate) fn decode_payload(header: &Header, payload: &[u8]) -> Result<Checkpoint, Corruption> {
    let (mut checkpoint, states) = decode_outline(header, payload)?;
    for (operator, range) in checkpoint.operators.iter_mut().zip(states) {
        operator.state = payload[range].to_vec();
    }
    Ok(checkpoint)
}

/// [`decode_payload`], keeping the largest operator state in the payload's own buffer (moved
/// to its front) instead of a copy: a restore of one large state holds it once, not twice.
pub(crate) fn decode_payload_owned(
    header: &Header,
    mut payload: Vec<u8>,
) -> Result<Checkpoint, Corruption> {
    let (mut checkpoint, states) = decode_outline(header, &payload)?;
    let largest = (0..states.len()).max_by_key(|&index| states[index].len());
    for (index, (operator, range)) in checkpoint.operators.iter_mut().zip(&states).enumerate() {
        if Some(index) != largest {
            operator.state = payload[range.clone()].to_vec();
        }
    }
    if let Some(index) = largest {
        let range = states[index].clone();
        payload.truncate(range.end);
        payload.drain(..range.start);
        checkpoint.operators[index].state = payload;
    }
    Ok(checkpoint)
}

/// Checks the payload against the header's length and sha256, then decodes it, leaving the
/// operators' states empty: returns where each is in the payload.
fn decode_outline(
    header: &Header,
    payload: &[u8],
) -> Result<(Checkpoint, Vec<std::ops::Range<usize>>), Corruption> {
    if payload.len() as u64 != header.payload_len {
        return Err(Corruption::LengthMismatch {
            header: header.payload_len,
            actual: payload.len() as u64,
        });
    }
    let found = sha256(payload);
    if found != header.sha256 {
        return Err(Corruption::ChecksumMismatch {
            expected: hex(&header.sha256),
            found: hex(&found),
        });
    }
    let (decoded, used) =
        decode_bincode(payload).map_err(|e| Corruption::Undecodable(e.to_string()))?;
    if used != payload.len() {
        return Err(Corruption::TrailingBytes {
            len: payload.len() as u64,
            used: used as u64,
        });
    }
    Ok(decoded)
}

/// Decodes a whole data file held in memory.
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8], max_payload: u64) -> Result<(Header, Checkpoint), Corruption> {
    let header = parse_header(bytes, bytes.len() as u64, max_payload)?;
    let checkpoint = decode_payload(&header, &bytes[HEADER_LEN..])?;
    Ok((header, checkpoint))
}

/// Decodes with a bincode limit chosen from the payload's length.
///
/// bincode's limit is a constant and counts the in-memory size a value claims: at most 8
/// bytes for each byte it takes in this format (a one-byte varint claims 8). So the limit is
/// the smallest tier at least 8 times the payload: valid payloads always fit, and nothing is
/// claimed beyond a small multiple of what the payload holds.
type Decoded = ((Checkpoint, Vec<std::ops::Range<usize>>), usize);

fn decode_bincode(payload: &[u8]) -> Result<Decoded, bincode::error::DecodeError> {
    let need = payload.len().saturating_mul(8);
    if need <= 1 << 20 {
        decode_limited::<{ 1 << 20 }>(payload)
    } else if need <= 1 << 24 {
        decode_limited::<{ 1 << 24 }>(payload)
    } else if need <= 1 << 28 {
        decode_limited::<{ 1 << 28 }>(payload)
    } else {
        decode_limited::<{ u32::MAX as usize }>(payload)
    }
}

fn decode_limited<const LIMIT: usize>(
    payload: &[u8],
) -> Result<Decoded, bincode::error::DecodeError> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (wire, used): (wire::Checkpoint<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(payload, config)?;
    Ok((wire.into_checkpoint(payload), used))
}

/// Encodes an operator's state (any serde value) with the checkpoint codec, for
/// [`crate::OperatorState::state`].
pub fn encode_state<T: serde::Serialize>(state: &T) -> crate::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(state, bincode::config::standard())
        .map_err(|error| crate::CheckpointError::State(error.to_string()))
}

/// Decodes an operator's state written by [`encode_state`]. Like checkpoints, it never claims
/// memory beyond a small multiple of the bytes it is given, and refuses trailing bytes.
pub fn decode_state<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> crate::Result<T> {
    match decode_state_prefix(bytes)? {
        (state, used) if used == bytes.len() => Ok(state),
        (_, used) => Err(crate::CheckpointError::State(format!(
            "{} trailing bytes after the state",
            bytes.len() - used
        ))),
    }
}

/// Decodes a value written by [`encode_state`] at the start of `bytes`, returning it with the
/// number of bytes it took, so that a state written as several encoded values one after the
/// other can be read one value at a time. Claims no more memory than [`decode_state`].
pub fn decode_state_prefix<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> crate::Result<(T, usize)> {
    fn limited<T: serde::de::DeserializeOwned, const LIMIT: usize>(
        bytes: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard().with_limit::<LIMIT>())
    }
    let need = bytes.len().saturating_mul(8).max(1024);
    let decoded = if need <= 1 << 20 {
        limited::<T, { 1 << 20 }>(bytes)
    } else if need <= 1 << 24 {
        limited::<T, { 1 << 24 }>(bytes)
    } else if need <= 1 << 28 {
        limited::<T, { 1 << 28 }>(bytes)
    } else {
        limited::<T, { u32::MAX as usize }>(bytes)
    };
    decoded.map_err(|error| crate::CheckpointError::State(error.to_string()))
}

/// A fingerprint of a pipeline's shape: the sha256, in hex, of its parts in order. A
/// checkpoint records it; a restore compares it with the configured pipeline's.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex(&hasher.finalize())
}

/// The sha256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

/// What comes before the operators in a payload, in the wire shape: the fields of
/// `wire::Checkpoint` up to its operators.
pub(crate) fn wire_head(outline: &crate::stream::Outline) -> impl serde::Serialize + '_ {
    wire::Head::of(outline)
}

/// What comes before an operator's state bytes in a payload, in the wire shape.
pub(crate) fn wire_operator_head(summary: &crate::OperatorSummary) -> impl serde::Serialize + '_ {
    wire::OperatorHead {
        name: &summary.name,
        kind: &summary.kind,
        key_count: summary.key_count,
    }
}

/// The payload's shape in format version 1. Frozen: change it only with a new format version.
/// Strings and state bytes borrow from the payload when decoding.
mod wire {
    use serde::{Deserialize, Serialize, Serializer};

    use super::CheckpointId;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Checkpoint<'a> {
        id: u64,
        created_at_ms: i64,
        pipeline_fingerprint: &'a str,
        #[serde(borrow)]
        sources: Vec<Source<'a>>,
        #[serde(borrow)]
        operators: Vec<Operator<'a>>,
        watermark: i64,
    }

    #[derive(Serialize, Deserialize)]
    struct Source<'a> {
        name: &'a str,
        #[serde(borrow)]
        partitions: Vec<Partition<'a>>,
    }

    #[derive(Serialize, Deserialize)]
    struct Partition<'a> {
        name: &'a str,
        offset: u64,
        line: u64,
        watermark: i64,
    }

    #[derive(Serialize, Deserialize)]
    struct Operator<'a> {
        name: &'a str,
        kind: &'a str,
        key_count: u64,
        #[serde(serialize_with = "bytes")]
        state: &'a [u8],
    }

    /// The fields of [`Checkpoint`] before its operators, encoded as they are there: a
    /// struct's encoding is its fields' encodings one after the other, so a payload is this,
    /// the number of operators, each operator ([`OperatorHead`], then its state as bytes), then
    /// the watermark.
    #[derive(Serialize)]
    pub(super) struct Head<'a> {
        id: u64,
        created_at_ms: i64,
        pipeline_fingerprint: &'a str,
        sources: Vec<Source<'a>>,
    }

    /// The fields of [`Operator`] before its state.
    #[derive(Serialize)]
    pub(super) struct OperatorHead<'a> {
        pub(super) name: &'a str,
        pub(super) kind: &'a str,
        pub(super) key_count: u64,
    }

    impl<'a> Head<'a> {
        pub(super) fn of(outline: &'a crate::stream::Outline) -> Self {
            Head {
                id: outline.id.0,
                created_at_ms: outline.created_at_ms,
                pipeline_fingerprint: &outline.pipeline_fingerprint,
                sources: sources(&outline.sources),
            }
        }
    }

    fn sources(sources: &[crate::SourceState]) -> Vec<Source<'_>> {
        sources
            .iter()
            .map(|source| Source {
                name: &source.name,
                partitions: source
                    .partitions
                    .iter()
                    .map(|p| Partition {
                        name: &p.name,
                        offset: p.offset,
                        line: p.line,
                        watermark: p.watermark,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Writes bytes in one piece (the same encoding as a sequence of `u8`, only faster).
    fn bytes<S: Serializer>(value: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(value)
    }

    impl<'a> Checkpoint<'a> {
        #[cfg(test)]
        pub(super) fn from_checkpoint(cp: &'a crate::Checkpoint) -> Self {
            Checkpoint {
                id: cp.id.0,
                created_at_ms: cp.created_at_ms,
                pipeline_fingerprint: &cp.pipeline_fingerprint,
                sources: sources(&cp.sources),
                operators: cp
                    .operators
                    .iter()
                    .map(|op| Operator {
                        name: &op.name,
                        kind: &op.kind,
                        key_count: op.key_count,
                        state: &op.state,
                    })
                    .collect(),
                watermark: cp.watermark,
            }
        }

        /// The checkpoint, its operators' states left empty, with where each state is in
        /// `payload` (which this was decoded from, borrowing).
        pub(super) fn into_checkpoint(
            self,
            payload: &[u8],
        ) -> (crate::Checkpoint, Vec<std::ops::Range<usize>>) {
            let base = payload.as_ptr() as usize;
            let states = self
                .operators
                .iter()
                .map(|op| {
                    let start = op.state.as_ptr() as usize - base;
                    start..start + op.state.len()
                })
                .collect();
            let checkpoint = crate::Checkpoint {
                id: CheckpointId(self.id),
                created_at_ms: self.created_at_ms,
                pipeline_fingerprint: self.pipeline_fingerprint.to_owned(),
                sources: self
                    .sources
                    .into_iter()
                    .map(|source| crate::SourceState {
                        name: source.name.to_owned(),
                        partitions: source
                            .partitions
                            .into_iter()
                            .map(|p| crate::PartitionState {
                                name: p.name.to_owned(),
                                offset: p.offset,
                                line: p.line,
                                watermark: p.watermark,
                            })
                            .collect(),
                    })
                    .collect(),
                operators: self
                    .operators
                    .into_iter()
                    .map(|op| crate::OperatorState {
                        name: op.name.to_owned(),
                        kind: op.kind.to_owned(),
                        key_count: op.key_count,
                        state: Vec::new(),
                    })
                    .collect(),
                watermark: self.watermark,
            };
            (checkpoint, states)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OperatorState, PartitionState, SourceState};
    use proptest::prelude::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            id: CheckpointId(12),
            created_at_ms: 1_700_000_000_123,
            pipeline_fingerprint: "ab12cd34".into(),
            sources: vec![SourceState {
                name: "orders".into(),
                partitions: vec![PartitionState {
                    name: "data/orders.jsonl".into(),
                    offset: 4096,
                    line: 37,
                    watermark: -5,
                }],
            }],
            operators: vec![OperatorState {
                name: "totals".into(),
                kind: "window".into(),
                key_count: 3,
                state: vec![0, 1, 2, 255, 254],
            }],
            watermark: i64::MIN,
        }
    }

    #[test]
    fn round_trip() {
        let encoded = encode(&sample()).unwrap();
        assert_eq!(&encoded.bytes[..8], b"DFCKPT\0\0");
        assert_eq!(
            encoded.payload_len() as usize,
            encoded.bytes.len() - HEADER_LEN
        );
        let (header, decoded) = decode(&encoded.bytes, DEFAULT_MAX_PAYLOAD).unwrap();
        assert_eq!(decoded, sample());
        assert_eq!(header.sha256, encoded.sha256);
    }

    #[test]
    fn state_bytes_are_encoded_like_a_sequence_of_u8() {
        // The fast `serialize_bytes` path must not change the format.
        let state: Vec<u8> = (0..=255).collect();
        let config = bincode::config::standard();
        let as_seq = bincode::serde::encode_to_vec(&state, config).unwrap();
        let mut cp = sample();
        cp.operators[0].state = state;
        let encoded = encode(&cp).unwrap();
        let payload = &encoded.bytes[HEADER_LEN..];
        assert!(payload
            .windows(as_seq.len())
            .any(|w| w == as_seq.as_slice()));
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let bytes = encode(&sample()).unwrap().bytes;
        for position in 0..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[position] ^= mask;
                assert!(
                    decode(&bad, DEFAULT_MAX_PAYLOAD).is_err(),
                    "{position} {mask}"
                );
            }
        }
    }

    #[test]
    fn truncations_and_extensions_are_refused() {
        let bytes = encode(&sample()).unwrap().bytes;
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], DEFAULT_MAX_PAYLOAD).is_err(), "{len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer, DEFAULT_MAX_PAYLOAD).unwrap_err(),
            Corruption::LengthMismatch {
                header: bytes.len() as u64 - HEADER_LEN as u64,
                actual: bytes.len() as u64 + 1 - HEADER_LEN as u64,
            }
        );
    }

    fn with_payload(payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&CODEC_BINCODE_STANDARD.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&sha256(payload));
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_checksummed_payload_that_is_not_a_checkpoint_is_refused() {
        // A valid header and checksum around garbage, e.g. a string claiming 2^62 bytes:
        // decoding fails without allocating.
        let mut payload = vec![12u8, 0, 0];
        payload.push(253); // varint tag for a u64
        payload.extend_from_slice(&(1u64 << 62).to_le_bytes());
        let bytes = with_payload(&payload);
        assert!(matches!(
            decode(&bytes, DEFAULT_MAX_PAYLOAD),
            Err(Corruption::Undecodable(_))
        ));
    }

    #[test]
    fn trailing_bytes_in_the_payload_are_refused() {
        let encoded = encode(&sample()).unwrap();
        let mut payload = encoded.bytes[HEADER_LEN..].to_vec();
        payload.push(7);
        let bytes = with_payload(&payload);
        assert!(matches!(
            decode(&bytes, DEFAULT_MAX_PAYLOAD),
            Err(Corruption::TrailingBytes { .. })
        ));
    }

    #[test]
    fn header_fields_are_named() {
        let bytes = encode(&sample()).unwrap().bytes;
        let reason = |position: usize, mask: u8| {
            let mut bad = bytes.clone();
            bad[position] ^= mask;
            decode(&bad, DEFAULT_MAX_PAYLOAD).unwrap_err()
        };
        assert!(matches!(reason(0, 0x20), Corruption::BadMagic { .. }));
        assert_eq!(
            reason(8, 3),
            Corruption::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        );
        assert_eq!(reason(10, 8), Corruption::UnknownCodec { found: 9 });
        assert!(matches!(reason(19, 1), Corruption::PayloadTooLarge { .. }));
        assert!(matches!(reason(12, 1), Corruption::LengthMismatch { .. }));
        assert!(matches!(
            reason(30, 0xff),
            Corruption::ChecksumMismatch { .. }
        ));
        let message = reason(60, 0xff).to_string();
        assert!(
            message.starts_with("checksum mismatch: expected "),
            "{message}"
        );
    }

    #[test]
    fn the_cap_is_checked_before_anything_is_read() {
        let bytes = encode(&sample()).unwrap().bytes;
        let len = bytes.len() as u64 - HEADER_LEN as u64;
        assert_eq!(
            decode(&bytes, len - 1).unwrap_err(),
            Corruption::PayloadTooLarge { len, cap: len - 1 }
        );
        assert!(decode(&bytes, len).is_ok());
    }

    #[test]
    fn operator_state_round_trips_and_refuses_garbage() {
        let state: Vec<(String, u64)> = vec![("a".into(), 1), ("b".into(), u64::MAX)];
        let bytes = encode_state(&state).unwrap();
        assert_eq!(decode_state::<Vec<(String, u64)>>(&bytes).unwrap(), state);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_state::<Vec<(String, u64)>>(&longer).is_err());
        // A length prefix claiming far more than the bytes hold is refused, not allocated.
        assert!(decode_state::<Vec<u8>>(&[0xfc, 0xff, 0xff, 0xff, 0x7f]).is_err());
        assert_ne!(fingerprint(["ab", "c"]), fingerprint(["a", "bc"]));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0x1f]), "00ab1f");
    }

    fn arb_checkpoint() -> impl Strategy<Value = Checkpoint> {
        crate::arb::checkpoint(any::<u64>(), 64, 3)
    }

    proptest! {
        #[test]
        fn any_checkpoint_round_trips(cp in arb_checkpoint()) {
            let encoded = encode(&cp).unwrap();
            let (header, decoded) = decode(&encoded.bytes, DEFAULT_MAX_PAYLOAD).unwrap();
            prop_assert_eq!(&decoded, &cp);
            // Decoded in the payload's own buffer, it is the same checkpoint.
            let owned = decode_payload_owned(&header, encoded.bytes[HEADER_LEN..].to_vec());
            prop_assert_eq!(owned.unwrap(), cp);
        }

        #[test]
        fn any_byte_flip_is_refused(
            cp in arb_checkpoint(),
            position in any::<prop::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let mut bytes = encode(&cp).unwrap().bytes;
            let position = position.index(bytes.len());
            bytes[position] ^= mask;
            prop_assert!(decode(&bytes, DEFAULT_MAX_PAYLOAD).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes, DEFAULT_MAX_PAYLOAD);
        }

        #[test]
        fn arbitrary_checksummed_payloads_never_panic(
            payload in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = decode(&with_payload(&payload), DEFAULT_MAX_PAYLOAD);
        }
    }
}
