//! Where checkpoints are kept: the [`CheckpointStorage`] trait and [`LocalStorage`], one
//! directory per checkpoint.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tracing::{info, warn};

use crate::codec::{self, Header, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
use crate::fs::{FileSystem, StdFs};
use crate::manifest::MAX_MANIFEST_LEN;
use crate::stream::{check_payload, CheckFailure, Layout, Outline};
use crate::{
    Checkpoint, CheckpointError, CheckpointId, Corruption, FileKind, Manifest, Result, StateWriter,
    StreamedCheckpoint,
};

/// The data file's name in a checkpoint directory.
pub const DATA_FILE: &str = "data.bin";
/// The manifest's name in a checkpoint directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The prefix of the directories being written or deleted; never a complete checkpoint.
pub const TMP_PREFIX: &str = ".tmp-";
/// The file naming the epoch of a checkpoint directory's current owner, written by
/// [`LocalStorage::claim`] (a decimal number and a newline).
pub const EPOCH_FILE: &str = "epoch";
/// Where a claim writes the next epoch before renaming it over [`EPOCH_FILE`].
const EPOCH_TMP: &str = ".tmp-epoch";

/// A complete checkpoint in a storage: one that was fully written. Whether it is valid is
/// only known by [`CheckpointStorage::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// The checkpoint's id.
    pub id: CheckpointId,
    /// Its directory.
    pub dir: PathBuf,
}

/// A place to keep checkpoints.
pub trait CheckpointStorage: Send + Sync {
    /// Writes `checkpoint` durably and returns its manifest. On error nothing that
    /// [`list`](Self::list) reports is left behind.
    fn save(&self, checkpoint: &Checkpoint) -> Result<Manifest> {
        self.save_timed(checkpoint, None)
    }

    /// [`save`](Self::save), recording in the manifest how long the checkpoint took: from
    /// `triggered` (when its barrier was asked for) until its data file was durable.
    fn save_timed(&self, checkpoint: &Checkpoint, triggered: Option<Instant>) -> Result<Manifest>;

    /// Reads checkpoint `id`, checking every byte of it and that its manifest agrees.
    fn load(&self, id: CheckpointId) -> Result<Checkpoint>;

    /// The complete checkpoints, oldest first, valid or not.
    fn list(&self) -> Result<Vec<CheckpointEntry>>;

    /// Checks checkpoint `id` as [`load`](Self::load) does and returns its manifest.
    fn verify(&self, id: CheckpointId) -> Result<Manifest>;

    /// Deletes checkpoint `id`.
    fn delete(&self, id: CheckpointId) -> Result<()>;

    /// Reads the manifest of checkpoint `id` without checking its data file.
    fn manifest(&self, id: CheckpointId) -> Result<Manifest>;

    /// The newest checkpoint that loads and verifies, with every newer one that was refused
    /// and why (newest first): the caller should log those loudly.
    ///
    /// `Ok(None)` when there is no complete checkpoint at all. When there are some but every
    /// one is refused, the error is [`CheckpointError::NoValidCheckpoint`] holding each reason:
    /// starting from scratch then would silently lose state.
    #[allow(clippy::type_complexity)]
    fn latest_valid(&self) -> Result<Option<(Checkpoint, Vec<(CheckpointId, CheckpointError)>)>> {
        let entries = self.list()?;
        let mut refused = Vec::new();
        for entry in entries.iter().rev() {
            match self.load(entry.id) {
                Ok(checkpoint) => return Ok(Some((checkpoint, refused))),
                Err(error) => refused.push((entry.id, error)),
            }
        }
        if refused.is_empty() {
            Ok(None)
        } else {
            Err(CheckpointError::NoValidCheckpoint { refused })
        }
    }
}

/// What retention must keep for now, and which checkpoints were saved: shared (cloning shares
/// it) by the storages of successive runs of one pipeline and by whoever restores from them.
///
/// A [`Pin`] keeps its checkpoint from being deleted by retention until it is dropped (a
/// restore in place holds one from the moment it checks the checkpoint until the restarted run
/// has loaded it). Pins are checked and deletions done under one lock, so a checkpoint is
/// either pinned before retention looks at it, or already gone when the pin is taken (and
/// loading it then answers [`CheckpointError::NotFound`]).
#[derive(Clone, Debug, Default)]
pub struct Retention {
    inner: Arc<Mutex<RetentionState>>,
}

#[derive(Debug, Default)]
struct RetentionState {
    /// How many pins each pinned checkpoint has.
    pinned: BTreeMap<CheckpointId, usize>,
    /// The ids saved, as sorted, disjoint, non-adjacent inclusive ranges (ids grow by one per
    /// checkpoint, so this stays a handful of ranges however long the run).
    saved: Vec<(u64, u64)>,
}

impl RetentionState {
    fn record_saved(&mut self, id: u64) {
        let ranges = &mut self.saved;
        // The first range that ends at or after `id - 1`: the only ones `id` can touch.
        let at = ranges.partition_point(|&(_, end)| end.saturating_add(1) < id);
        match ranges.get(at).copied() {
            Some((start, end)) if start <= id && id <= end => {}
            Some((start, end)) if end.saturating_add(1) == id => {
                ranges[at] = (start, id);
                if let Some(&(next_start, next_end)) = ranges.get(at + 1) {
                    if next_start == id.saturating_add(1) {
                        ranges[at] = (start, next_end);
                        ranges.remove(at + 1);
                    }
                }
            }
            Some((start, end)) if start == id.saturating_add(1) => ranges[at] = (id, end),
            _ => ranges.insert(at, (id, id)),
        }
    }

    fn was_saved(&self, id: u64) -> bool {
        let at = self.saved.partition_point(|&(_, end)| end < id);
        self.saved
            .get(at)
            .is_some_and(|&(start, end)| start <= id && id <= end)
    }
}

/// Keeps one checkpoint from retention while it lives; see [`Retention::pin`].
#[derive(Debug)]
pub struct Pin {
    retention: Retention,
    id: CheckpointId,
}

impl Pin {
    /// The pinned checkpoint.
    pub fn id(&self) -> CheckpointId {
        self.id
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut state = self.retention.lock();
        if let Some(count) = state.pinned.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                state.pinned.remove(&self.id);
            }
        }
    }
}

impl Retention {
    /// Mutex poisoning only follows a panic elsewhere; the sets stay usable.
    fn lock(&self) -> MutexGuard<'_, RetentionState> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps checkpoint `id` from retention until the returned pin is dropped. Pinning a
    /// checkpoint that does not exist is harmless.
    pub fn pin(&self, id: CheckpointId) -> Pin {
        *self.lock().pinned.entry(id).or_insert(0) += 1;
        Pin {
            retention: self.clone(),
            id,
        }
    }

    /// Whether checkpoint `id` is pinned.
    pub fn is_pinned(&self, id: CheckpointId) -> bool {
        self.lock().pinned.contains_key(&id)
    }

    /// Whether a storage sharing this retention saved checkpoint `id` (whether or not it is
    /// still stored).
    pub fn was_saved(&self, id: CheckpointId) -> bool {
        self.lock().was_saved(id.0)
    }
}

/// Checkpoints in a local directory: `<dir>/<id as 20 digits>/` holding `data.bin` and
/// `manifest.json`.
///
/// A checkpoint is written into `<dir>/.tmp-<id as 20 digits>/`, each file fsynced, the
/// directory fsynced, renamed to its final name, and the parent directory fsynced; so a
/// directory with a final name is always complete. After each save, the newest `retain` valid
/// checkpoints are kept and older valid ones deleted, except those pinned in its
/// [`Retention`]; invalid ones are left in place for inspection and never count.
///
/// One writer per directory: two `LocalStorage`s must not save into the same directory at once.
/// Where that cannot be ruled out (the tasks of a scale-out processor, whose directory the
/// partition's next owner takes over while a paused previous owner may still save), each
/// owner [claims](LocalStorage::claim) the directory: a storage that claimed epoch `n` saves
/// only while the directory's epoch is still `n`.
#[derive(Clone, Debug)]
pub struct LocalStorage {
    dir: PathBuf,
    retain: usize,
    max_payload: u64,
    fs: Arc<dyn FileSystem>,
    retention: Retention,
    /// The epoch this storage claimed, if it did: saves check the directory's is still it.
    epoch: Option<u64>,
}

impl LocalStorage {
    /// Opens (creating it if needed) the checkpoint directory `dir`, keeping the newest
    /// `retain` valid checkpoints. Removes, with a warning, the temporary directories that
    /// interrupted saves or deletes left behind.
    pub fn new(dir: impl Into<PathBuf>, retain: usize) -> Result<Self> {
        Self::with_fs(dir, retain, Arc::new(StdFs))
    }

    /// Opens an existing checkpoint directory only to read it: nothing is created, cleaned up
    /// or deleted, so it is safe beside a running processor (the `admin` CLI's offline mode).
    /// Calls that write ([`CheckpointStorage::save`], [`CheckpointStorage::delete`]) still
    /// work; readers simply do not call them.
    pub fn open_for_reading(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        if !dir.is_dir() {
            return Err(CheckpointError::io(
                None,
                format!("open checkpoint directory {}", dir.display()),
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            ));
        }
        Ok(LocalStorage {
            dir,
            retain: usize::MAX,
            max_payload: DEFAULT_MAX_PAYLOAD,
            fs: Arc::new(StdFs),
            retention: Retention::default(),
            epoch: None,
        })
    }

    /// Like [`new`](Self::new), writing and deleting through `fs`.
    pub fn with_fs(
        dir: impl Into<PathBuf>,
        retain: usize,
        fs: Arc<dyn FileSystem>,
    ) -> Result<Self> {
        let dir = dir.into();
        if retain == 0 {
            return Err(CheckpointError::InvalidRetention(retain));
        }
        fs::create_dir_all(&dir).map_err(|e| {
            CheckpointError::io(
                None,
                format!("create checkpoint directory {}", dir.display()),
                e,
            )
        })?;
        let storage = LocalStorage {
            dir,
            retain,
            max_payload: DEFAULT_MAX_PAYLOAD,
            fs,
            retention: Retention::default(),
            epoch: None,
        };
        storage.remove_stale_tmp_dirs()?;
        Ok(storage)
    }

    /// Sets the largest payload saved or loaded, in bytes ([`DEFAULT_MAX_PAYLOAD`] unless
    /// set). A data file claiming more is refused before it is read.
    pub fn with_max_payload(mut self, bytes: u64) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Shares `retention` (its pins and its record of saved checkpoints) with this storage,
    /// instead of one of its own.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The pins retention honours and the record of saved checkpoints.
    pub fn retention(&self) -> &Retention {
        &self.retention
    }

    /// The epoch of the directory's current owner: what its [`EPOCH_FILE`] says, 0 without one.
    pub fn current_epoch(&self) -> Result<u64> {
        let file = self.dir.join(EPOCH_FILE);
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => {
                return Err(CheckpointError::io(
                    None,
                    format!("read {}", file.display()),
                    e,
                ))
            }
        };
        text.trim().parse().map_err(|_| CheckpointError::BadEpoch {
            file,
            text: text.chars().take(64).collect(),
        })
    }

    /// The epoch this storage claimed, if it did.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// Takes the directory over as its new owner: writes the epoch after the current one
    /// (into a temporary file, fsynced, renamed over [`EPOCH_FILE`], the directory fsynced)
    /// and returns it. From then on every save of this storage first checks that the
    /// directory's epoch is still this one, and is refused with [`CheckpointError::Fenced`]
    /// once a newer owner has claimed it. A new owner claims before it restores, so that the
    /// checkpoint it restores is the last the previous owner could save.
    ///
    /// The check is not atomic with a save's rename: a writer paused between the two can still
    /// put one checkpoint in place after a claim (the file system offers no compare-and-swap);
    /// the check right before the rename keeps that window to the rename itself.
    pub fn claim(&mut self) -> Result<u64> {
        let next =
            self.current_epoch()?
                .checked_add(1)
                .ok_or_else(|| CheckpointError::BadEpoch {
                    file: self.dir.join(EPOCH_FILE),
                    text: u64::MAX.to_string(),
                })?;
        let tmp = self.dir.join(EPOCH_TMP);
        let file = self.dir.join(EPOCH_FILE);
        let io_error = |action: String| move |e| CheckpointError::io(None, action, e);
        if tmp.exists() {
            self.fs
                .remove_file(&tmp)
                .map_err(io_error(format!("remove stale {}", tmp.display())))?;
        }
        self.fs
            .write_file_synced(&tmp, format!("{next}\n").as_bytes())
            .map_err(io_error(format!("write and fsync {}", tmp.display())))?;
        self.fs.rename(&tmp, &file).map_err(io_error(format!(
            "rename {} to {}",
            tmp.display(),
            file.display()
        )))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(io_error(format!("fsync directory {}", self.dir.display())))?;
        self.epoch = Some(next);
        info!(dir = %self.dir.display(), epoch = next, "checkpoint directory claimed");
        Ok(next)
    }

    /// Refuses a save of `id` when this storage claimed an epoch the directory no longer has.
    fn check_epoch(&self, id: CheckpointId) -> Result<()> {
        let Some(own) = self.epoch else {
            return Ok(());
        };
        let current = self.current_epoch()?;
        if current == own {
            return Ok(());
        }
        Err(CheckpointError::Fenced {
            checkpoint: Some(id),
            dir: self.dir.clone(),
            own,
            current,
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of checkpoint `id`: `<dir>/<id as 20 digits>`.
    pub fn checkpoint_dir(&self, id: CheckpointId) -> PathBuf {
        self.dir.join(dir_name(id))
    }

    fn tmp_dir(&self, id: CheckpointId) -> PathBuf {
        self.dir.join(format!("{TMP_PREFIX}{}", dir_name(id)))
    }

    fn remove_stale_tmp_dirs(&self) -> Result<()> {
        for name in self.dir_names()? {
            if name.starts_with(TMP_PREFIX) {
                let path = self.dir.join(&name);
                warn!(path = %path.display(), "removing a checkpoint directory left by an interrupted save or delete");
                if let Err(error) = self.fs.remove_dir_all(&path) {
                    warn!(path = %path.display(), %error, "cannot remove a stale temporary checkpoint directory");
                }
            }
        }
        Ok(())
    }

    /// The names of the entries of the checkpoint directory that are directories.
    fn dir_names(&self) -> Result<Vec<String>> {
        let read_error = |e| {
            CheckpointError::io(
                None,
                format!("read checkpoint directory {}", self.dir.display()),
                e,
            )
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let is_dir = entry.file_type().map_err(read_error)?.is_dir();
            // Names that are not UTF-8 are not ours.
            if let (true, Ok(name)) = (is_dir, entry.file_name().into_string()) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Writes the checkpoint's files into the temporary directory and renames it; on error
    /// removes what it wrote, so no complete-looking directory is left.
    /// Writes `data`, then the manifest `manifest` makes once the data is durable (so that it
    /// can say how long everything up to then took), into a new checkpoint directory.
    fn write(
        &self,
        id: CheckpointId,
        data: &mut dyn FnMut(&mut File) -> io::Result<()>,
        manifest: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<()> {
        let tmp = self.tmp_dir(id);
        let done = self.checkpoint_dir(id);
        let io_error = |action: String| move |e| CheckpointError::io(Some(id), action, e);

        if tmp.exists() {
            self.fs
                .remove_dir_all(&tmp)
                .map_err(io_error(format!("remove stale {}", tmp.display())))?;
        }
        self.fs
            .create_dir(&tmp)
            .map_err(io_error(format!("create directory {}", tmp.display())))?;
        let before_rename = (|| {
            let write = |name: &str, contents: &[u8]| {
                let path = tmp.join(name);
                self.fs
                    .write_file_synced(&path, contents)
                    .map_err(io_error(format!("write and fsync {}", path.display())))
            };
            let path = tmp.join(DATA_FILE);
            self.fs
                .write_file_synced_with(&path, data)
                .map_err(io_error(format!("write and fsync {}", path.display())))?;
            write(MANIFEST_FILE, &manifest()?)?;
            self.fs
                .sync_dir(&tmp)
                .map_err(io_error(format!("fsync directory {}", tmp.display())))?;
            // Checked again last: the directory may have been claimed while this was written.
            self.check_epoch(id)?;
            self.fs.rename(&tmp, &done).map_err(io_error(format!(
                "rename {} to {}",
                tmp.display(),
                done.display()
            )))
        })();
        if let Err(error) = before_rename {
            self.remove_quietly(&tmp);
            return Err(error);
        }
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            // The rename may not be durable: take the checkpoint back so that the caller's
            // view (it failed) and the directory agree.
            match self.fs.rename(&done, &tmp) {
                Ok(()) => self.remove_quietly(&tmp),
                Err(error) => {
                    warn!(path = %done.display(), %error, "cannot take back a checkpoint whose save failed")
                }
            }
            return Err(io_error(format!("fsync directory {}", self.dir.display()))(
                e,
            ));
        }
        Ok(())
    }

    /// Saves `checkpoint` as [`CheckpointStorage::save_timed`] does, into the same files, with
    /// each operator's state written by its [`StateWriter`] straight into the data file: neither
    /// the encoded payload nor the file's bytes are held in memory.
    pub fn save_streamed(
        &self,
        checkpoint: &StreamedCheckpoint,
        triggered: Option<Instant>,
    ) -> Result<Manifest> {
        let states = checkpoint.operators.iter().map(|op| &*op.state);
        self.save_outline(Outline::of_streamed(checkpoint), states, triggered)
    }

    /// Saves the checkpoint `outline` with the states of its operators, in order.
    fn save_outline<'a>(
        &self,
        outline: Outline,
        states: impl ExactSizeIterator<Item = &'a dyn StateWriter>,
        triggered: Option<Instant>,
    ) -> Result<Manifest> {
        let id = outline.id;
        self.check_epoch(id)?;
        let done = self.checkpoint_dir(id);
        if done.exists() {
            return Err(CheckpointError::AlreadyExists {
                checkpoint: id,
                dir: done,
            });
        }
        let layout = Layout::new(&outline, states).map_err(|message| CheckpointError::Encode {
            checkpoint: id,
            what: "payload",
            message,
        })?;
        if layout.payload_len() > self.max_payload {
            return Err(CheckpointError::TooLarge {
                checkpoint: id,
                len: layout.payload_len(),
                cap: self.max_payload,
            });
        }
        let header = std::cell::OnceCell::new();
        let mut data = |file: &mut File| {
            let _ = header.set(layout.write_file(file)?);
            Ok(())
        };
        let mut manifest = None;
        self.write(id, &mut data, || {
            let Some(header) = header.get() else {
                return Err(CheckpointError::Encode {
                    checkpoint: id,
                    what: "manifest",
                    message: "the data file was not written".to_string(),
                });
            };
            let mut described = Manifest::describe_outline(outline, header);
            described.duration_ms =
                triggered.map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
            let json = described
                .to_json()
                .map_err(|message| CheckpointError::Encode {
                    checkpoint: id,
                    what: "manifest",
                    message,
                });
            manifest = Some(described);
            json
        })?;
        self.retention.lock().record_saved(id.0);
        self.apply_retention();
        manifest.ok_or_else(|| CheckpointError::Encode {
            checkpoint: id,
            what: "manifest",
            message: "the manifest was not written".to_string(),
        })
    }

    fn remove_quietly(&self, path: &Path) {
        if let Err(error) = self.fs.remove_dir_all(path) {
            if error.kind() != io::ErrorKind::NotFound {
                warn!(path = %path.display(), %error, "cannot remove a temporary checkpoint directory; it is removed when the storage is next opened");
            }
        }
    }

    /// Keeps the newest `retain` valid checkpoints, deletes older valid ones unless pinned, and
    /// leaves invalid ones in place. Failures are logged: the checkpoint just saved is durable
    /// either way.
    fn apply_retention(&self) {
        let entries = match self.list() {
            Ok(entries) => entries,
            Err(error) => {
                warn!(%error, "checkpoint retention skipped");
                return;
            }
        };
        let mut kept = 0;
        for entry in entries.iter().rev() {
            match self.verify(entry.id) {
                Ok(_) if kept < self.retain => kept += 1,
                Ok(_) => {
                    // Held while deleting: a pin is taken either before this check or after
                    // the checkpoint is gone.
                    let state = self.retention.lock();
                    if state.pinned.contains_key(&entry.id) {
                        info!(checkpoint = %entry.id, "old checkpoint kept: a restore has pinned it");
                        continue;
                    }
                    match self.delete(entry.id) {
                        Ok(()) => info!(checkpoint = %entry.id, "deleted an old checkpoint"),
                        Err(error) => warn!(%error, "cannot delete an old checkpoint"),
                    }
                    drop(state);
                }
                Err(error) => {
                    warn!(%error, "invalid checkpoint left in place; it does not count toward retention")
                }
            }
        }
    }

    /// Reads and checks the manifest of checkpoint `id`.
    fn read_manifest(&self, id: CheckpointId) -> Result<Manifest> {
        let path = self.existing_dir(id)?.join(MANIFEST_FILE);
        let corrupt = |reason| corrupt(id, FileKind::Manifest, &path, reason);
        let io_error = |e| CheckpointError::io(Some(id), format!("read {}", path.display()), e);
        let file = File::open(&path).map_err(io_error)?;
        let len = file.metadata().map_err(io_error)?.len();
        if len > MAX_MANIFEST_LEN {
            return Err(corrupt(Corruption::ManifestTooLarge {
                len,
                cap: MAX_MANIFEST_LEN,
            }));
        }
        let mut json = Vec::new();
        file.take(MAX_MANIFEST_LEN + 1)
            .read_to_end(&mut json)
            .map_err(io_error)?;
        if json.len() as u64 > MAX_MANIFEST_LEN {
            return Err(corrupt(Corruption::ManifestTooLarge {
                len: json.len() as u64,
                cap: MAX_MANIFEST_LEN,
            }));
        }
        let manifest = Manifest::from_json(&json).map_err(corrupt)?;
        if manifest.id != id {
            return Err(corrupt(Corruption::IdMismatch {
                expected: id,
                found: manifest.id,
            }));
        }
        Ok(manifest)
    }

    /// Opens the data file at `path` and reads and checks its header, reporting through the
    /// caller's `corrupt` and `io_error`: the file is left just after the header.
    fn open_data(
        &self,
        path: &Path,
        corrupt: impl Fn(Corruption) -> CheckpointError,
        io_error: impl Fn(std::io::Error) -> CheckpointError,
    ) -> Result<(File, Header)> {
        let mut file = File::open(path).map_err(&io_error)?;
        let file_len = file.metadata().map_err(&io_error)?.len();
        let mut head = Vec::with_capacity(HEADER_LEN);
        (&mut file)
            .take(HEADER_LEN as u64)
            .read_to_end(&mut head)
            .map_err(&io_error)?;
        let header = codec::parse_header(&head, file_len, self.max_payload).map_err(corrupt)?;
        Ok((file, header))
    }

    /// Reads and checks the data file of checkpoint `id`. Allocates only after the header's
    /// length is checked against the cap and the file's length.
    fn read_data(&self, id: CheckpointId) -> Result<(Header, Checkpoint)> {
        let path = self.existing_dir(id)?.join(DATA_FILE);
        let corrupt = |reason| corrupt(id, FileKind::Data, &path, reason);
        let io_error = |e| CheckpointError::io(Some(id), format!("read {}", path.display()), e);
        let (file, header) = self.open_data(&path, corrupt, io_error)?;
        // At most the cap, and what the file holds.
        let capacity = usize::try_from(header.payload_len).map_err(|_| {
            corrupt(Corruption::PayloadTooLarge {
                len: header.payload_len,
                cap: usize::MAX as u64,
            })
        })?;
        let mut payload = Vec::with_capacity(capacity);
        // One byte more than expected, to see a file that grew since its length was taken.
        file.take(header.payload_len.saturating_add(1))
            .read_to_end(&mut payload)
            .map_err(io_error)?;
        let checkpoint = codec::decode_payload_owned(&header, payload).map_err(corrupt)?;
        if checkpoint.id != id {
            return Err(corrupt(Corruption::IdMismatch {
                expected: id,
                found: checkpoint.id,
            }));
        }
        Ok((header, checkpoint))
    }

    /// Checks checkpoint `id` entirely: its manifest, its data file, and that they agree.
    fn read_checked(&self, id: CheckpointId) -> Result<(Checkpoint, Manifest)> {
        let manifest = self.read_manifest(id)?;
        let (header, checkpoint) = self.read_data(id)?;
        let expected = Manifest::describe(&checkpoint, &header);
        manifest.check_agrees(&expected).map_err(|reason| {
            corrupt(
                id,
                FileKind::Manifest,
                &self.checkpoint_dir(id).join(MANIFEST_FILE),
                reason,
            )
        })?;
        Ok((checkpoint, manifest))
    }

    /// The directory of checkpoint `id`, if it exists.
    fn existing_dir(&self, id: CheckpointId) -> Result<PathBuf> {
        let dir = self.checkpoint_dir(id);
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => Ok(dir),
            Ok(_) => Err(self.not_found(id)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(id)),
            Err(e) => Err(CheckpointError::io(
                Some(id),
                format!("read {}", dir.display()),
                e,
            )),
        }
    }

    fn not_found(&self, id: CheckpointId) -> CheckpointError {
        CheckpointError::NotFound {
            checkpoint: id,
            dir: self.dir.clone(),
        }
    }
}

impl CheckpointStorage for LocalStorage {
    fn save_timed(&self, checkpoint: &Checkpoint, triggered: Option<Instant>) -> Result<Manifest> {
        let states = checkpoint
            .operators
            .iter()
            .map(|op| &op.state as &dyn StateWriter);
        self.save_outline(Outline::of(checkpoint), states, triggered)
    }

    fn load(&self, id: CheckpointId) -> Result<Checkpoint> {
        self.read_checked(id).map(|(checkpoint, _)| checkpoint)
    }

    fn list(&self) -> Result<Vec<CheckpointEntry>> {
        let mut entries: Vec<CheckpointEntry> = self
            .dir_names()?
            .into_iter()
            .filter_map(|name| {
                let id = name.parse::<CheckpointId>().ok()?;
                // Only the canonical name: `7` or `007` are not checkpoints.
                (name == dir_name(id)).then(|| CheckpointEntry {
                    id,
                    dir: self.dir.join(&name),
                })
            })
            .collect();
        entries.sort_by_key(|entry| entry.id);
        Ok(entries)
    }

    /// Reads the data file through a small buffer, never holding it (see [`crate::stream`]):
    /// retention verifies every kept checkpoint after each save.
    fn verify(&self, id: CheckpointId) -> Result<Manifest> {
        let manifest = self.read_manifest(id)?;
        let path = self.existing_dir(id)?.join(DATA_FILE);
        let corrupt = |reason| corrupt(id, FileKind::Data, &path, reason);
        let io_error = |e| CheckpointError::io(Some(id), format!("read {}", path.display()), e);
        let (file, header) = self.open_data(&path, corrupt, io_error)?;
        let outline = match check_payload(file, &header) {
            Ok(outline) => outline,
            Err(CheckFailure::Io(error)) => return Err(io_error(error)),
            Err(CheckFailure::Corrupt(reason)) => return Err(corrupt(reason)),
        };
        if outline.id != id {
            return Err(corrupt(Corruption::IdMismatch {
                expected: id,
                found: outline.id,
            }));
        }
        let expected = Manifest::describe_outline(outline, &header);
        manifest.check_agrees(&expected).map_err(|reason| {
            corrupt_manifest(id, &self.checkpoint_dir(id).join(MANIFEST_FILE), reason)
        })?;
        Ok(manifest)
    }

    fn delete(&self, id: CheckpointId) -> Result<()> {
        let dir = self.existing_dir(id)?;
        // Renamed first, so that a delete cut short leaves no complete-looking checkpoint.
        let doomed = self
            .dir
            .join(format!("{TMP_PREFIX}delete-{}", dir_name(id)));
        if doomed.exists() {
            self.remove_quietly(&doomed);
        }
        self.fs.rename(&dir, &doomed).map_err(|e| {
            CheckpointError::io(
                Some(id),
                format!("rename {} to {}", dir.display(), doomed.display()),
                e,
            )
        })?;
        self.fs
            .remove_dir_all(&doomed)
            .map_err(|e| CheckpointError::io(Some(id), format!("remove {}", doomed.display()), e))
    }

    fn manifest(&self, id: CheckpointId) -> Result<Manifest> {
        self.read_manifest(id)
    }
}

/// The directory name of checkpoint `id`: its id zero-padded to 20 digits, so names sort as ids.
fn dir_name(id: CheckpointId) -> String {
    format!("{:020}", id.0)
}

fn corrupt_manifest(id: CheckpointId, file: &Path, reason: Corruption) -> CheckpointError {
    corrupt(id, FileKind::Manifest, file, reason)
}

fn corrupt(id: CheckpointId, kind: FileKind, file: &Path, reason: Corruption) -> CheckpointError {
    CheckpointError::Corrupt {
        checkpoint: id,
        kind,
        file: file.to_path_buf(),
        reason,
    }
}
