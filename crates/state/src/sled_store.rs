//! The on-disk store, for state larger than memory.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::{Result, Scan, StateError, StateSnapshot, StateStore};

/// What the sled tree of a namespace is named: this prefix, then the namespace.
///
/// The prefix keeps namespaces apart from sled's own default tree (`__sled__default`), so that
/// every string is a valid namespace.
const TREE_PREFIX: &[u8] = b"ns:";

/// The key of the format marker, in sled's default tree (which holds nothing else).
const FORMAT_KEY: &[u8] = b"dataflow-state/format";

/// The format this version writes: one tree per namespace, keys and values as given.
const FORMAT: &[u8] = b"1";

/// How long opening waits for a held lock to be released before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// The default cap of sled's page cache, in bytes ([`SledStore::open_with_cache`]). sled's own
/// default is 1 GiB, which lets a store of a million keys grow the process by hundreds of
/// megabytes; state kept on disk is meant to stay out of memory.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// Keyed state in a sled database on disk, for state larger than memory.
///
/// **Layout.** One sled tree per namespace, named `ns:<namespace>`: a namespace is scanned,
/// counted and dropped on its own, and keys are stored as given (no namespace prefix to encode
/// or strip). sled's default tree holds only a format marker. A namespace exists while it has
/// entries: an emptied tree is kept on disk but not listed by [`StateStore::namespaces`].
///
/// **Durability.** Writes are durable once [`SledStore::flush`] returns, and when the store is
/// dropped (the drop flushes). sled's periodic background flush is turned off: a crash may lose
/// any write made since the last flush, and that is by design, because the checkpoint, not sled,
/// is the source of truth: a restart rebuilds the directory from the checkpoint being restored
/// with [`SledStore::rebuild`].
///
/// **Unopenable directories** (a file where the directory should be, a garbled log that sled
/// would open empty, a database without this crate's format marker, corrupt or foreign files,
/// a sled version mismatch, even a panic inside sled) are never deleted: they are moved aside to
/// `<dir>.corrupt-<unix-seconds>` (with `-1`, `-2`, … if that exists) with a `tracing` warning,
/// and a fresh store is created. What sled refuses is moved untouched; a garbled log is only
/// found out after sled's recovery has read it, and may have rewritten its first bytes.
///
/// A directory locked by another open store is not touched: opening waits up to a second for the
/// lock (a store just closed in this process can hold it a moment longer, in sled's background
/// threads), then fails with [`StateError::Locked`]. A permission error is returned as is.
///
/// ```
/// use dataflow_state::{SledStore, StateStore};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("state");
/// let mut store = SledStore::open(&path)?;
/// store.put("window", b"a", b"1")?;
/// store.flush()?;
/// drop(store);
/// let store = SledStore::open(&path)?;
/// assert_eq!(store.get("window", b"a")?, Some(b"1".to_vec()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    namespaces: BTreeMap<String, Namespace>,
}

/// The tree of one namespace, with its number of keys once counted.
struct Namespace {
    tree: sled::Tree,
    /// Counted on first use, then kept up to date by `put` and `delete`.
    count: OnceLock<u64>,
}

impl Namespace {
    fn new(tree: sled::Tree) -> Self {
        Namespace {
            tree,
            count: OnceLock::new(),
        }
    }
}

/// Why sled did not open a directory.
enum OpenFailure {
    /// Another store holds the directory's lock.
    Locked,
    /// Moving the directory aside would not help (permission denied).
    Fatal(sled::Error),
    /// The directory is not a store sled can open: it is moved aside.
    Unopenable(String),
}

impl OpenFailure {
    fn into_error(self, path: &Path) -> StateError {
        match self {
            OpenFailure::Locked => StateError::Locked {
                path: path.to_owned(),
            },
            OpenFailure::Fatal(source) => StateError::Sled {
                path: path.to_owned(),
                op: "open",
                cause: source,
            },
            OpenFailure::Unopenable(reason) => StateError::Unopenable {
                path: path.to_owned(),
                reason,
            },
        }
    }
}

impl SledStore {
    /// Opens the store in `dir`, creating it (and its parents) if needed.
    ///
    /// A directory that sled cannot open is moved aside to `<dir>.corrupt-<unix-seconds>` with a
    /// warning, never deleted, and a fresh store is created in its place.
    ///
    /// # Errors
    ///
    /// [`StateError::Locked`] if another store keeps `dir` open for a second;
    /// [`StateError::MoveAside`] if an unopenable `dir` cannot be moved; [`StateError::Sled`] or
    /// [`StateError::Unopenable`] if even a fresh store cannot be opened.
    pub fn open(dir: &Path) -> Result<SledStore> {
        SledStore::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`SledStore::open`] with sled's page cache capped at about `cache_bytes` (sled's own
    /// estimate of the pages it holds; its other buffers come on top).
    ///
    /// # Errors
    ///
    /// As [`SledStore::open`].
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<SledStore> {
        let db = match open_db(dir, cache_bytes) {
            Ok(db) => db,
            Err(OpenFailure::Unopenable(reason)) => {
                if !exists(dir)? {
                    return Err(OpenFailure::Unopenable(reason).into_error(dir));
                }
                move_aside(dir, &reason)?;
                open_db(dir, cache_bytes).map_err(|failure| failure.into_error(dir))?
            }
            Err(failure) => return Err(failure.into_error(dir)),
        };
        SledStore::from_db(dir, db)
    }

    /// Opens a fresh store in `dir` holding exactly the contents of `snapshot`, flushed.
    ///
    /// Whatever `dir` held is discarded, since the checkpoint is the truth: a store sled opens and
    /// whose directory holds only sled's files (`conf`, `db`, `blobs/`, `snap.*`) is deleted,
    /// with an info log; anything else that is not missing or empty (a file, foreign files, a
    /// store sled cannot open) is moved aside as in [`SledStore::open`], never deleted.
    ///
    /// # Errors
    ///
    /// As [`SledStore::open`], plus [`StateError::Io`] if the old store cannot be removed and
    /// [`StateError::Sled`] if the snapshot cannot be written.
    pub fn rebuild(dir: &Path, snapshot: &StateSnapshot) -> Result<SledStore> {
        SledStore::rebuild_with_cache(dir, snapshot, DEFAULT_CACHE_BYTES)
    }

    /// [`SledStore::rebuild`] with sled's page cache capped at about `cache_bytes`, as
    /// [`SledStore::open_with_cache`].
    ///
    /// # Errors
    ///
    /// As [`SledStore::rebuild`].
    pub fn rebuild_with_cache(
        dir: &Path,
        snapshot: &StateSnapshot,
        cache_bytes: u64,
    ) -> Result<SledStore> {
        discard(dir)?;
        let mut store = SledStore::open_with_cache(dir, cache_bytes)?;
        store.restore(snapshot)?;
        store.flush()?;
        Ok(store)
    }

    /// Makes every write so far durable.
    ///
    /// # Errors
    ///
    /// [`StateError::Sled`] if sled cannot write or sync its files.
    pub fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map(drop)
            .map_err(|source| self.error("flush", source))
    }

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn from_db(dir: &Path, db: sled::Db) -> Result<SledStore> {
        let mut namespaces = BTreeMap::new();
        for name in db.tree_names() {
            let Some(namespace) = name.strip_prefix(TREE_PREFIX) else {
                continue; // sled's default tree, with the format marker
            };
            let Ok(namespace) = std::str::from_utf8(namespace) else {
                warn!(
                    path = %dir.display(),
                    tree = ?name,
                    "ignoring a sled tree whose namespace is not UTF-8",
                );
                continue;
            };
            let tree = db.open_tree(&name).map_err(|source| StateError::Sled {
                path: dir.to_owned(),
                op: "open tree",
                cause: source,
            })?;
            namespaces.insert(namespace.to_owned(), Namespace::new(tree));
        }
        Ok(SledStore {
            path: dir.to_owned(),
            db,
            namespaces,
        })
    }

    fn error(&self, op: &'static str, source: sled::Error) -> StateError {
        StateError::Sled {
            path: self.path.clone(),
            op,
            cause: source,
        }
    }

    /// The tree of `namespace`, created if needed.
    fn tree_for_write(&mut self, namespace: &str) -> Result<sled::Tree> {
        if let Some(ns) = self.namespaces.get(namespace) {
            return Ok(ns.tree.clone());
        }
        let tree = self
            .db
            .open_tree(tree_name(namespace))
            .map_err(|source| self.error("create tree", source))?;
        self.namespaces
            .insert(namespace.to_owned(), Namespace::new(tree.clone()));
        Ok(tree)
    }

    /// Adds `delta` to the count of `namespace`, if it was counted.
    fn adjust_count(&mut self, namespace: &str, add: bool) {
        if let Some(count) = self
            .namespaces
            .get_mut(namespace)
            .and_then(|ns| ns.count.get_mut())
        {
            *count = if add {
                count.saturating_add(1)
            } else {
                count.saturating_sub(1)
            };
        }
    }
}

impl StateStore for SledStore {
    fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Ok(None);
        };
        let value = ns.tree.get(key).map_err(|e| self.error("get", e))?;
        Ok(value.map(|value| value.to_vec()))
    }

    fn put(&mut self, namespace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let tree = self.tree_for_write(namespace)?;
        let old = tree.insert(key, value).map_err(|e| self.error("put", e))?;
        if old.is_none() {
            self.adjust_count(namespace, true);
        }
        Ok(())
    }

    fn put_batch(&mut self, namespace: &str, entries: &[crate::Entry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let tree = self.tree_for_write(namespace)?;
        // One insert per entry, not a `sled::Batch`: sled 0.34 holds far more memory for
        // batches (1M entries in batches of 1,024 into a fresh tree peaked at 1.6 GB, one by
        // one at 0.3 GB, and took less CPU), and nothing here needs a batch's atomicity: the
        // checkpoint, not sled, is the source of truth.
        for (key, value) in entries {
            tree.insert(key.as_slice(), value.as_slice())
                .map_err(|source| self.error("put a batch", source))?;
        }
        // A batch does not say which keys were new: the namespace is counted again when asked.
        if let Some(ns) = self.namespaces.get_mut(namespace) {
            ns.count = OnceLock::new();
        }
        Ok(())
    }

    fn delete(&mut self, namespace: &str, key: &[u8]) -> Result<()> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Ok(());
        };
        let old = ns.tree.remove(key).map_err(|e| self.error("delete", e))?;
        if old.is_some() {
            self.adjust_count(namespace, false);
        }
        Ok(())
    }

    fn scan_prefix(&self, namespace: &str, prefix: &[u8]) -> Result<Scan<'_>> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Ok(Scan::empty());
        };
        Ok(Scan::new(ns.tree.scan_prefix(prefix).map(move |entry| {
            entry
                .map(|(key, value)| (key.to_vec(), value.to_vec()))
                .map_err(|source| self.error("scan", source))
        })))
    }

    fn snapshot(&self) -> Result<StateSnapshot> {
        let mut namespaces = BTreeMap::new();
        for (namespace, ns) in &self.namespaces {
            let entries = ns
                .tree
                .iter()
                .map(|entry| {
                    entry
                        .map(|(key, value)| (key.to_vec(), value.to_vec()))
                        .map_err(|source| self.error("snapshot", source))
                })
                .collect::<Result<BTreeMap<_, _>>>()?;
            namespaces.insert(namespace.clone(), entries);
        }
        Ok(StateSnapshot::from_map(namespaces))
    }

    /// Drops every namespace's tree, then writes the snapshot's. Not atomic: after an error the
    /// contents are unspecified, and the store should be rebuilt.
    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        for namespace in std::mem::take(&mut self.namespaces).into_keys() {
            self.db
                .drop_tree(tree_name(&namespace))
                .map_err(|source| self.error("drop tree", source))?;
        }
        for (namespace, entries) in snapshot.as_map() {
            let tree = self.tree_for_write(namespace)?;
            // One insert per entry, as `put_batch` does, for the same reason.
            for (key, value) in entries {
                tree.insert(key.as_slice(), value.as_slice())
                    .map_err(|source| self.error("restore", source))?;
            }
            if let Some(ns) = self.namespaces.get_mut(namespace) {
                ns.count = OnceLock::from(entries.len() as u64);
            }
        }
        Ok(())
    }

    fn key_count(&self, namespace: &str) -> Result<u64> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Ok(0);
        };
        if let Some(count) = ns.count.get() {
            return Ok(*count);
        }
        let mut count = 0u64;
        for entry in ns.tree.iter().keys() {
            entry.map_err(|source| self.error("count", source))?;
            count += 1;
        }
        // `put` and `delete` take `&mut self`, so nothing changed the tree while it was counted.
        Ok(*ns.count.get_or_init(|| count))
    }

    fn namespaces(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for (namespace, ns) in &self.namespaces {
            let non_empty = match ns.count.get() {
                Some(count) => *count > 0,
                None => ns
                    .tree
                    .first()
                    .map_err(|source| self.error("list namespaces", source))?
                    .is_some(),
            };
            if non_empty {
                names.push(namespace.clone());
            }
        }
        Ok(names)
    }

    fn flush(&self) -> Result<()> {
        SledStore::flush(self)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(error) = self.db.flush() {
            warn!(path = %self.path.display(), %error, "could not flush the sled store on close");
        }
    }
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("namespaces", &self.namespaces.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn tree_name(namespace: &str) -> Vec<u8> {
    let mut name = Vec::with_capacity(TREE_PREFIX.len() + namespace.len());
    name.extend_from_slice(TREE_PREFIX);
    name.extend_from_slice(namespace.as_bytes());
    name
}

/// Opens the sled database in `dir`, telling a lock held elsewhere and a permission error from a
/// directory sled cannot use. A panic inside sled counts as the latter, and so does a database
/// without this crate's format marker whose log was not empty: sled treats a garbled log as torn
/// writes and opens it empty, so the marker is what tells a lost store from a new one.
fn open_db(dir: &Path, cache_bytes: u64) -> std::result::Result<sled::Db, OpenFailure> {
    let had_log = fs::metadata(dir.join("db")).is_ok_and(|log| log.len() > 0);
    let config = sled::Config::new()
        .path(dir)
        .flush_every_ms(None)
        .cache_capacity(cache_bytes);
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    let db = loop {
        match panic::catch_unwind(AssertUnwindSafe(|| config.open())) {
            Ok(Ok(db)) => break db,
            Ok(Err(error)) => match classify(error) {
                // A store of this process that was just closed can hold the lock for a moment
                // longer, in sled's background threads.
                OpenFailure::Locked if started.elapsed() < LOCK_WAIT => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                failure => return Err(failure),
            },
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|message| (*message).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                return Err(OpenFailure::Unopenable(format!("sled panicked: {message}")));
            }
        }
    };
    match db.get(FORMAT_KEY) {
        Ok(Some(format)) if format == FORMAT => Ok(db),
        Ok(Some(format)) => Err(OpenFailure::Unopenable(format!(
            "unknown state format {:?}",
            String::from_utf8_lossy(&format)
        ))),
        Ok(None) if had_log => Err(OpenFailure::Unopenable(
            "sled opened it without the state format marker: its log is corrupt, \
             or it is not a dataflow state store"
                .to_owned(),
        )),
        Ok(None) => {
            let marked = db.insert(FORMAT_KEY, FORMAT).and_then(|_| db.flush());
            marked.map(|_| db).map_err(OpenFailure::Fatal)
        }
        Err(error) => Err(OpenFailure::Unopenable(error.to_string())),
    }
}

fn classify(error: sled::Error) -> OpenFailure {
    match &error {
        // sled 0.34.7 reports a held lock as an `Other` IO error with this message.
        sled::Error::Io(io)
            if io.kind() == ErrorKind::Other
                && io.to_string().starts_with("could not acquire lock") =>
        {
            OpenFailure::Locked
        }
        sled::Error::Io(io) if io.kind() == ErrorKind::PermissionDenied => {
            OpenFailure::Fatal(error)
        }
        _ => OpenFailure::Unopenable(error.to_string()),
    }
}

/// Whether anything (a directory, a file, a dangling link) is at `path`.
fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StateError::Io {
            op: "inspect",
            path: path.to_owned(),
            cause: source,
        }),
    }
}

/// Renames `dir` to `<dir>.corrupt-<unix-seconds>[-n]`, returning the new path.
fn move_aside(dir: &Path, reason: &str) -> Result<PathBuf> {
    let Some(name) = dir.file_name() else {
        return Err(StateError::MoveAside {
            path: dir.to_owned(),
            reason: format!("the path has no file name, and it cannot be used: {reason}"),
        });
    };
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    for attempt in 0..1000u32 {
        let mut aside_name = name.to_os_string();
        aside_name.push(format!(".corrupt-{seconds}"));
        if attempt > 0 {
            aside_name.push(format!("-{attempt}"));
        }
        let aside = dir.with_file_name(aside_name);
        if exists(&aside)? {
            continue;
        }
        fs::rename(dir, &aside).map_err(|error| StateError::MoveAside {
            path: dir.to_owned(),
            reason: format!("renaming it to {}: {error}", aside.display()),
        })?;
        warn!(
            path = %dir.display(),
            moved_to = %aside.display(),
            reason,
            "state directory cannot be used as a sled store: moved it aside and starting fresh",
        );
        return Ok(aside);
    }
    Err(StateError::MoveAside {
        path: dir.to_owned(),
        reason: "every `.corrupt-` name for it is taken".to_owned(),
    })
}

/// Whether sled 0.34 created the directory entry `name`.
fn is_sled_entry(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|name| matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap."))
}

/// Empties the place of a store about to be rebuilt: see [`SledStore::rebuild`].
fn discard(dir: &Path) -> Result<()> {
    let io_error = |op: &'static str| {
        move |source| StateError::Io {
            op,
            path: dir.to_owned(),
            cause: source,
        }
    };
    let metadata = match fs::symlink_metadata(dir) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_error("inspect")(source)),
    };
    if !metadata.is_dir() {
        move_aside(dir, "not a directory")?;
        return Ok(());
    }
    let mut empty = true;
    for entry in fs::read_dir(dir).map_err(io_error("list"))? {
        let name = entry.map_err(io_error("list"))?.file_name();
        if !is_sled_entry(&name) {
            let reason = format!("it holds {name:?}, which sled did not create");
            move_aside(dir, &reason)?;
            return Ok(());
        }
        empty = false;
    }
    if empty {
        return Ok(());
    }
    // Opened only to tell a store from something else: no cache to speak of.
    match open_db(dir, 1 << 20) {
        Ok(db) => {
            drop(db);
            fs::remove_dir_all(dir).map_err(io_error("remove the old store in"))?;
            info!(
                path = %dir.display(),
                "removed the old sled store to rebuild it from a snapshot",
            );
            Ok(())
        }
        Err(OpenFailure::Unopenable(reason)) => move_aside(dir, &reason).map(drop),
        Err(failure) => Err(failure.into_error(dir)),
    }
}
