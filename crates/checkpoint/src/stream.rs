//! Writing a data file in pieces, and checking one without holding it: the streamed
//! counterparts of [`crate::codec`]'s whole-buffer encoding and decoding, byte for byte the same
//! format (version 1, codec 1).
//!
//! A save writes the header with the payload's length (known before anything is written: every
//! operator's state says its length), then the payload, hashing it as it goes, then puts the
//! sha256 in the header. So neither the encoded payload nor the whole file is ever held in
//! memory: an operator's state is written by its [`StateWriter`] straight into the file.
//!
//! A verify reads the payload through a small buffer, hashing it and parsing the bincode of the
//! [`wire`](crate::codec) shape by hand, skipping the operators' state bytes (it needs only
//! their lengths, for the manifest). It refuses what a load refuses, in the same order: a
//! checksum mismatch before anything about the payload's contents.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use crate::codec::{self, Header, CODEC_BINCODE_STANDARD, FORMAT_VERSION, HEADER_LEN, MAGIC};
use crate::manifest::OperatorSummary;
use crate::{Checkpoint, CheckpointId, Corruption, PartitionState, SourceState};

/// The state of one operator, as a writer of its bytes: what a checkpoint streams into its data
/// file instead of a buffer holding them (see [`StreamedCheckpoint`]).
///
/// `write_state` must write exactly `state_len` bytes, and the same bytes every time it is
/// called; a save that sees another length fails.
pub trait StateWriter: Send + Sync {
    /// How many bytes [`StateWriter::write_state`] writes.
    fn state_len(&self) -> u64;

    /// Writes the state into `out`.
    fn write_state(&self, out: &mut dyn Write) -> io::Result<()>;
}

impl StateWriter for Vec<u8> {
    fn state_len(&self) -> u64 {
        self.len() as u64
    }

    fn write_state(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self)
    }
}

/// A [`Checkpoint`] whose operators' states are [`StateWriter`]s, saved by
/// [`crate::LocalStorage::save_streamed`] into the same data file a [`Checkpoint`] with those
/// bytes gives, without the states being gathered in one buffer first.
pub struct StreamedCheckpoint {
    /// The checkpoint's id.
    pub id: CheckpointId,
    /// When the checkpoint was taken, epoch milliseconds.
    pub created_at_ms: i64,
    /// A fingerprint of the pipeline's shape, hex.
    pub pipeline_fingerprint: String,
    /// The position of every source.
    pub sources: Vec<SourceState>,
    /// The state of every stateful operator.
    pub operators: Vec<StreamedOperator>,
    /// The pipeline's combined watermark, epoch milliseconds.
    pub watermark: i64,
}

/// The state of one operator of a [`StreamedCheckpoint`].
pub struct StreamedOperator {
    /// The operator's name in the pipeline.
    pub name: String,
    /// The operator's kind, e.g. `window`.
    pub kind: String,
    /// How many keys the state holds.
    pub key_count: u64,
    /// The state's bytes, written when the checkpoint is saved.
    pub state: Box<dyn StateWriter>,
}

impl std::fmt::Debug for StreamedOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedOperator")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("key_count", &self.key_count)
            .field("bytes", &self.state.state_len())
            .finish()
    }
}

impl std::fmt::Debug for StreamedCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedCheckpoint")
            .field("id", &self.id)
            .field("operators", &self.operators)
            .finish_non_exhaustive()
    }
}

impl From<Checkpoint> for StreamedCheckpoint {
    fn from(checkpoint: Checkpoint) -> Self {
        StreamedCheckpoint {
            id: checkpoint.id,
            created_at_ms: checkpoint.created_at_ms,
            pipeline_fingerprint: checkpoint.pipeline_fingerprint,
            sources: checkpoint.sources,
            operators: checkpoint
                .operators
                .into_iter()
                .map(|op| StreamedOperator {
                    name: op.name,
                    kind: op.kind,
                    key_count: op.key_count,
                    state: Box::new(op.state),
                })
                .collect(),
            watermark: checkpoint.watermark,
        }
    }
}

/// What a checkpoint is apart from its operators' state bytes: what a manifest describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outline {
    pub(crate) id: CheckpointId,
    pub(crate) created_at_ms: i64,
    pub(crate) pipeline_fingerprint: String,
    pub(crate) sources: Vec<SourceState>,
    pub(crate) operators: Vec<OperatorSummary>,
    pub(crate) watermark: i64,
}

impl Outline {
    pub(crate) fn of(checkpoint: &Checkpoint) -> Outline {
        Outline {
            id: checkpoint.id,
            created_at_ms: checkpoint.created_at_ms,
            pipeline_fingerprint: checkpoint.pipeline_fingerprint.clone(),
            sources: checkpoint.sources.clone(),
            operators: checkpoint
                .operators
                .iter()
                .map(|op| OperatorSummary {
                    name: op.name.clone(),
                    kind: op.kind.clone(),
                    key_count: op.key_count,
                    bytes: op.state.len() as u64,
                })
                .collect(),
            watermark: checkpoint.watermark,
        }
    }

    pub(crate) fn of_streamed(checkpoint: &StreamedCheckpoint) -> Outline {
        Outline {
            id: checkpoint.id,
            created_at_ms: checkpoint.created_at_ms,
            pipeline_fingerprint: checkpoint.pipeline_fingerprint.clone(),
            sources: checkpoint.sources.clone(),
            operators: checkpoint
                .operators
                .iter()
                .map(|op| OperatorSummary {
                    name: op.name.clone(),
                    kind: op.kind.clone(),
                    key_count: op.key_count,
                    bytes: op.state.state_len(),
                })
                .collect(),
            watermark: checkpoint.watermark,
        }
    }
}

/// A checkpoint laid out for writing: the small encoded pieces around the operators' states.
pub(crate) struct Layout<'a> {
    /// The id, creation time, fingerprint, sources and the number of operators, encoded.
    head: Vec<u8>,
    /// Each operator's name, kind, key count and state length, encoded, with its state.
    operators: Vec<(Vec<u8>, &'a dyn StateWriter)>,
    /// The watermark, encoded.
    tail: Vec<u8>,
    payload_len: u64,
}

fn bincode_into(out: &mut Vec<u8>, value: &impl serde::Serialize) -> Result<(), String> {
    bincode::serde::encode_into_std_write(value, out, bincode::config::standard())
        .map(|_| ())
        .map_err(|error| error.to_string())
}

impl<'a> Layout<'a> {
    /// Lays out the checkpoint `outline` with the states of its operators, in order. Fails only
    /// if bincode fails (it does not for these types).
    pub(crate) fn new(
        outline: &Outline,
        states: impl ExactSizeIterator<Item = &'a dyn StateWriter>,
    ) -> Result<Layout<'a>, String> {
        let mut head = Vec::new();
        bincode_into(&mut head, &codec::wire_head(outline))?;
        bincode_into(&mut head, &(states.len() as u64))?;
        let mut payload_len = head.len() as u64;
        let mut operators = Vec::with_capacity(states.len());
        for (summary, state) in outline.operators.iter().zip(states) {
            let mut encoded = Vec::new();
            bincode_into(&mut encoded, &codec::wire_operator_head(summary))?;
            // Bytes are their length then themselves, as a sequence of `u8` would be.
            bincode_into(&mut encoded, &state.state_len())?;
            payload_len += encoded.len() as u64 + state.state_len();
            operators.push((encoded, state));
        }
        let mut tail = Vec::new();
        bincode_into(&mut tail, &outline.watermark)?;
        payload_len += tail.len() as u64;
        Ok(Layout {
            head,
            operators,
            tail,
            payload_len,
        })
    }

    /// The payload's length in bytes.
    pub(crate) fn payload_len(&self) -> u64 {
        self.payload_len
    }

    /// Writes the payload into `out`.
    fn write_payload(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.head)?;
        for (encoded, state) in &self.operators {
            out.write_all(encoded)?;
            state.write_state(out)?;
        }
        out.write_all(&self.tail)
    }

    /// Writes the whole data file into `file` (empty, just created): the header, the payload,
    /// then the payload's sha256 into the header. Returns the header.
    pub(crate) fn write_file(&self, file: &mut File) -> io::Result<Header> {
        let mut head = [0u8; HEADER_LEN];
        head[0..8].copy_from_slice(&MAGIC);
        head[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        head[10..12].copy_from_slice(&CODEC_BINCODE_STANDARD.to_le_bytes());
        head[12..20].copy_from_slice(&self.payload_len.to_le_bytes());
        file.write_all(&head)?;
        let (written, sha256) = {
            let mut hashing = Hashing {
                inner: BufWriter::with_capacity(WRITE_BUFFER, &mut *file),
                hasher: Sha256::new(),
                written: 0,
            };
            self.write_payload(&mut hashing)?;
            hashing.inner.flush()?;
            let sha256: [u8; 32] = hashing.hasher.finalize().into();
            (hashing.written, sha256)
        };
        if written != self.payload_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the operators' states wrote {written} bytes of payload, {} expected: a \
                     state writer wrote another length than it said",
                    self.payload_len
                ),
            ));
        }
        file.seek(SeekFrom::Start(20))?;
        file.write_all(&sha256)?;
        Ok(Header {
            payload_len: self.payload_len,
            sha256,
        })
    }
}

/// The write buffer of a streamed save.
const WRITE_BUFFER: usize = 256 << 10;
/// The read buffer of a streamed verify.
const READ_BUFFER: usize = 64 << 10;

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why a streamed check stopped.
pub(crate) enum CheckFailure {
    /// Reading the file failed.
    Io(io::Error),
    /// The file is corrupt.
    Corrupt(Corruption),
}

/// A payload being read: hashed as it is read, with how much of it is left.
struct Payload<R> {
    inner: R,
    hasher: Sha256,
    left: u64,
    buffer: Vec<u8>,
}

/// What stopped the parse of a payload.
enum Stop {
    Io(io::Error),
    /// Not a checkpoint of this format; bincode would refuse it too.
    Bad(String),
}

impl From<io::Error> for Stop {
    fn from(error: io::Error) -> Self {
        Stop::Io(error)
    }
}

impl<R: Read> Payload<R> {
    /// Reads exactly `n` bytes of the payload into the buffer (hashed), refusing to read past
    /// its end.
    fn take(&mut self, n: u64, what: &str) -> Result<&[u8], Stop> {
        if n > self.left {
            return Err(Stop::Bad(format!(
                "{what} claims {n} bytes where {} are left",
                self.left
            )));
        }
        let n = n as usize;
        self.buffer.clear();
        self.buffer.resize(n, 0);
        self.inner.read_exact(&mut self.buffer)?;
        self.hasher.update(&self.buffer);
        self.left -= n as u64;
        Ok(&self.buffer)
    }

    /// Reads and hashes `n` bytes without keeping them.
    fn skip(&mut self, mut n: u64, what: &str) -> Result<(), Stop> {
        if n > self.left {
            return Err(Stop::Bad(format!(
                "{what} claims {n} bytes where {} are left",
                self.left
            )));
        }
        while n > 0 {
            let piece = n.min(READ_BUFFER as u64);
            self.take(piece, what)?;
            n -= piece;
        }
        Ok(())
    }

    fn byte(&mut self, what: &str) -> Result<u8, Stop> {
        Ok(self.take(1, what)?[0])
    }

    /// A `u64` as bincode's standard config writes it: a byte below 251 is the value; 251,
    /// 252 and 253 are followed by the value as a little-endian u16, u32 and u64.
    fn varint(&mut self, what: &str) -> Result<u64, Stop> {
        let first = self.byte(what)?;
        let le = |bytes: &[u8]| {
            let mut value = [0u8; 8];
            value[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(value)
        };
        match first {
            0..=250 => Ok(u64::from(first)),
            251 => Ok(le(self.take(2, what)?)),
            252 => Ok(le(self.take(4, what)?)),
            253 => Ok(le(self.take(8, what)?)),
            other => Err(Stop::Bad(format!(
                "{what}: byte {other} does not start a u64"
            ))),
        }
    }

    /// An `i64`: zigzag, then as a `u64`.
    fn signed(&mut self, what: &str) -> Result<i64, Stop> {
        let n = self.varint(what)?;
        Ok(if n % 2 == 0 {
            (n / 2) as i64
        } else {
            !((n / 2) as i64)
        })
    }

    fn string(&mut self, what: &str) -> Result<String, Stop> {
        let len = self.varint(what)?;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|error| Stop::Bad(format!("{what}: {error}")))
    }

    /// The payload of format version 1: the fields of `codec::wire::Checkpoint` in order.
    fn outline(&mut self) -> Result<Outline, Stop> {
        let id = CheckpointId(self.varint("the id")?);
        let created_at_ms = self.signed("the creation time")?;
        let pipeline_fingerprint = self.string("the pipeline fingerprint")?;
        let mut sources = Vec::new();
        for _ in 0..self.varint("the number of sources")? {
            let name = self.string("a source's name")?;
            let mut partitions = Vec::new();
            for _ in 0..self.varint("the number of partitions")? {
                partitions.push(PartitionState {
                    name: self.string("a partition's name")?,
                    offset: self.varint("a partition's offset")?,
                    line: self.varint("a partition's line")?,
                    watermark: self.signed("a partition's watermark")?,
                });
            }
            sources.push(SourceState { name, partitions });
        }
        let mut operators = Vec::new();
        for _ in 0..self.varint("the number of operators")? {
            let name = self.string("an operator's name")?;
            let kind = self.string("an operator's kind")?;
            let key_count = self.varint("an operator's key count")?;
            let bytes = self.varint("an operator's state length")?;
            self.skip(bytes, "an operator's state")?;
            operators.push(OperatorSummary {
                name,
                kind,
                key_count,
                bytes,
            });
        }
        let watermark = self.signed("the watermark")?;
        Ok(Outline {
            id,
            created_at_ms,
            pipeline_fingerprint,
            sources,
            operators,
            watermark,
        })
    }
}

/// Checks the payload of a data file whose header is `header`, read from `file` (positioned just
/// after the header), without holding it: its length, its sha256, then that it is a checkpoint
/// with nothing after it. Refuses what [`codec::decode_payload`] refuses, checksum first.
pub(crate) fn check_payload(file: impl Read, header: &Header) -> Result<Outline, CheckFailure> {
    let ended_early = |actual: u64| {
        CheckFailure::Corrupt(Corruption::LengthMismatch {
            header: header.payload_len,
            actual,
        })
    };
    let mut payload = Payload {
        // One byte more than expected, to see a file that grew since its length was taken.
        inner: BufReader::with_capacity(READ_BUFFER, file.take(header.payload_len + 1)),
        hasher: Sha256::new(),
        left: header.payload_len,
        buffer: Vec::new(),
    };
    let parsed = match payload.outline() {
        Err(Stop::Io(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
            // The file ended before the payload did: it shrank since its length was taken.
            return Err(ended_early(header.payload_len - payload.left));
        }
        Err(Stop::Io(error)) => return Err(CheckFailure::Io(error)),
        parsed => parsed,
    };
    let used = header.payload_len - payload.left;
    // Hash what the parse did not read, so that the checksum is judged first.
    let rest = payload.left;
    match payload.skip(rest, "the rest of the payload") {
        Ok(()) => {}
        Err(Stop::Io(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ended_early(header.payload_len - payload.left))
        }
        Err(Stop::Io(error)) => return Err(CheckFailure::Io(error)),
        Err(Stop::Bad(message)) => {
            return Err(CheckFailure::Corrupt(Corruption::Undecodable(message)))
        }
    }
    let mut extra = [0u8; 1];
    match payload.inner.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => return Err(ended_early(header.payload_len + 1)),
        Err(error) => return Err(CheckFailure::Io(error)),
    }
    let found: [u8; 32] = payload.hasher.finalize().into();
    if found != header.sha256 {
        return Err(CheckFailure::Corrupt(Corruption::ChecksumMismatch {
            expected: codec::hex(&header.sha256),
            found: codec::hex(&found),
        }));
    }
    match parsed {
        Ok(outline) if rest == 0 => Ok(outline),
        Ok(_) => Err(CheckFailure::Corrupt(Corruption::TrailingBytes {
            len: header.payload_len,
            used,
        })),
        Err(Stop::Bad(message)) => Err(CheckFailure::Corrupt(Corruption::Undecodable(message))),
        Err(Stop::Io(error)) => Err(CheckFailure::Io(error)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::codec::{decode_payload, encode, parse_header, DEFAULT_MAX_PAYLOAD};
    use crate::fs::{FailingFs, FsOp};
    use crate::{CheckpointStorage, LocalStorage, OperatorState};

    fn arb_checkpoint() -> impl Strategy<Value = Checkpoint> {
        // States up to a few hundred bytes, so that lengths take one to three varint bytes.
        crate::arb::checkpoint(0..1_000_000u64, 400, 4)
    }

    /// A state written in pieces of `piece` bytes, as a snapshot writer writes its keys.
    struct Pieces {
        bytes: Vec<u8>,
        piece: usize,
    }

    impl StateWriter for Pieces {
        fn state_len(&self) -> u64 {
            self.bytes.len() as u64
        }

        fn write_state(&self, out: &mut dyn Write) -> io::Result<()> {
            for piece in self.bytes.chunks(self.piece.max(1)) {
                out.write_all(piece)?;
            }
            Ok(())
        }
    }

    fn streamed(checkpoint: &Checkpoint, piece: usize) -> StreamedCheckpoint {
        let mut streamed = StreamedCheckpoint::from(checkpoint.clone());
        for (op, original) in streamed.operators.iter_mut().zip(&checkpoint.operators) {
            op.state = Box::new(Pieces {
                bytes: original.state.clone(),
                piece,
            });
        }
        streamed
    }

    fn data_file(storage: &LocalStorage, id: CheckpointId) -> std::path::PathBuf {
        storage.checkpoint_dir(id).join(crate::DATA_FILE)
    }

    fn check(bytes: &[u8]) -> Result<Outline, Corruption> {
        let header = parse_header(bytes, bytes.len() as u64, DEFAULT_MAX_PAYLOAD)?;
        match check_payload(&bytes[HEADER_LEN..], &header) {
            Ok(outline) => Ok(outline),
            Err(CheckFailure::Corrupt(reason)) => Err(reason),
            Err(CheckFailure::Io(error)) => panic!("reading from memory failed: {error}"),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Checkpoint, Corruption> {
        let header = parse_header(bytes, bytes.len() as u64, DEFAULT_MAX_PAYLOAD)?;
        decode_payload(&header, &bytes[HEADER_LEN..])
    }

    fn with_payload(payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&CODEC_BINCODE_STANDARD.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&codec::sha256(payload));
        bytes.extend_from_slice(payload);
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A streamed save, with states written in pieces or whole, writes the bytes the whole
        /// encoding gives; it loads back and verifies, with the same manifest either way.
        #[test]
        fn streamed_saves_write_the_bytes_of_the_whole_encoding(
            cp in arb_checkpoint(),
            piece in 1usize..50,
        ) {
            let expected = encode(&cp).unwrap().bytes;
            let dir = tempfile::tempdir().unwrap();
            let whole = LocalStorage::new(dir.path().join("whole"), 5).unwrap();
            let pieces = LocalStorage::new(dir.path().join("pieces"), 5).unwrap();
            let saved = whole.save(&cp).unwrap();
            let streamed_saved = pieces.save_streamed(&streamed(&cp, piece), None).unwrap();
            prop_assert_eq!(&saved, &streamed_saved);
            for storage in [&whole, &pieces] {
                let written = std::fs::read(data_file(storage, cp.id)).unwrap();
                prop_assert_eq!(&written, &expected);
                prop_assert_eq!(storage.load(cp.id).unwrap(), cp.clone());
                prop_assert_eq!(storage.verify(cp.id).unwrap(), saved.clone());
            }
        }

        /// The streamed check refuses every single-byte change with the reason a whole decode
        /// gives, and on an intact file outlines the decoded checkpoint.
        #[test]
        fn the_streamed_check_refuses_what_a_load_refuses(
            cp in arb_checkpoint(),
            position in any::<prop::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let bytes = encode(&cp).unwrap().bytes;
            prop_assert_eq!(check(&bytes).unwrap(), Outline::of(&cp));
            let mut bad = bytes.clone();
            let position = position.index(bad.len());
            bad[position] ^= mask;
            let checked = check(&bad).unwrap_err();
            prop_assert_eq!(checked, decode(&bad).unwrap_err());
            for len in [0, HEADER_LEN, bytes.len() - 1] {
                prop_assert_eq!(check(&bytes[..len]).unwrap_err(), decode(&bytes[..len]).unwrap_err());
            }
        }

        /// On payloads that pass the checksum but are not checkpoints (or are, by chance), the
        /// streamed check and the decode agree, and neither panics.
        #[test]
        fn the_streamed_check_agrees_with_the_decode_on_any_payload(
            payload in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let bytes = with_payload(&payload);
            match (check(&bytes), decode(&bytes)) {
                (Ok(outline), Ok(decoded)) => prop_assert_eq!(outline, Outline::of(&decoded)),
                (Err(checked), Err(decoded)) => prop_assert_eq!(
                    std::mem::discriminant(&checked),
                    std::mem::discriminant(&decoded),
                    "{} against {}", checked, decoded
                ),
                (checked, decoded) => prop_assert!(false, "{:?} against {:?}", checked, decoded),
            }
        }
    }

    #[test]
    fn a_checkpoint_with_trailing_bytes_is_refused_by_both() {
        let cp = Checkpoint {
            id: CheckpointId(3),
            created_at_ms: 5,
            pipeline_fingerprint: "ab".into(),
            sources: Vec::new(),
            operators: Vec::new(),
            watermark: -1,
        };
        let mut payload = encode(&cp).unwrap().bytes[HEADER_LEN..].to_vec();
        payload.push(9);
        let bytes = with_payload(&payload);
        let checked = check(&bytes).unwrap_err();
        assert!(
            matches!(checked, Corruption::TrailingBytes { .. }),
            "{checked}"
        );
        assert_eq!(checked, decode(&bytes).unwrap_err());
    }

    #[test]
    fn a_corrupt_streamed_save_is_refused_by_its_checksum() {
        let cp = Checkpoint {
            id: CheckpointId(7),
            created_at_ms: 1_700_000_000_000,
            pipeline_fingerprint: "9f86".into(),
            sources: Vec::new(),
            operators: vec![OperatorState {
                name: "steps[1].window".into(),
                kind: "window".into(),
                key_count: 2,
                state: (0..5000u32).map(|i| (i % 251) as u8).collect(),
            }],
            watermark: 12,
        };
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path(), 3).unwrap();
        storage.save_streamed(&streamed(&cp, 333), None).unwrap();
        let path = data_file(&storage, cp.id);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN + 3000] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        for error in [
            storage.verify(cp.id).unwrap_err(),
            storage.load(cp.id).unwrap_err(),
        ] {
            assert!(
                matches!(
                    error,
                    crate::CheckpointError::Corrupt {
                        reason: Corruption::ChecksumMismatch { .. },
                        ..
                    }
                ),
                "{error}"
            );
        }
    }

    /// A state writer that writes one byte less than it says.
    struct Short;

    impl StateWriter for Short {
        fn state_len(&self) -> u64 {
            4
        }

        fn write_state(&self, out: &mut dyn Write) -> io::Result<()> {
            out.write_all(&[1, 2, 3])
        }
    }

    #[test]
    fn a_state_writer_that_writes_another_length_fails_the_save_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path(), 3).unwrap();
        let checkpoint = StreamedCheckpoint {
            id: CheckpointId(1),
            created_at_ms: 0,
            pipeline_fingerprint: String::new(),
            sources: Vec::new(),
            operators: vec![StreamedOperator {
                name: "w".into(),
                kind: "window".into(),
                key_count: 1,
                state: Box::new(Short),
            }],
            watermark: 0,
        };
        let error = storage.save_streamed(&checkpoint, None).unwrap_err();
        assert!(error.to_string().contains("another length"), "{error}");
        assert!(storage.list().unwrap().is_empty());
    }

    #[test]
    fn a_streamed_save_that_fails_at_the_data_file_leaves_nothing() {
        for op in [FsOp::WriteFile, FsOp::SyncFile] {
            let dir = tempfile::tempdir().unwrap();
            let fs = Arc::new(FailingFs::new(op, 0));
            let storage = LocalStorage::with_fs(dir.path(), 3, fs.clone()).unwrap();
            let cp = Checkpoint {
                id: CheckpointId(2),
                created_at_ms: 0,
                pipeline_fingerprint: String::new(),
                sources: Vec::new(),
                operators: Vec::new(),
                watermark: 0,
            };
            assert!(storage.save_streamed(&cp.clone().into(), None).is_err());
            assert!(fs.has_failed());
            assert!(storage.list().unwrap().is_empty(), "{op:?}");
            storage.save(&cp).unwrap();
            assert_eq!(storage.load(cp.id).unwrap(), cp);
        }
    }
}
