//! The file operations that change a checkpoint directory, behind a trait so that tests can
//! make any step fail.
//!
//! Only the operations that write, rename or delete go through [`FileSystem`]; reads use
//! `std::fs` directly, since a failing read needs no special double: a corrupt file is one.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The file operations [`LocalStorage`](crate::LocalStorage) uses to write and delete
/// checkpoints.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates the directory `path`; its parent exists.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Creates the file `path` (which must not exist), writes `contents` and fsyncs it through
    /// the same handle, so that a writeback error is seen.
    fn write_file_synced(&self, path: &Path, contents: &[u8]) -> io::Result<()>;
    /// Creates the file `path` (which must not exist), lets `fill` write it through the handle
    /// (it may seek), and fsyncs it through the same handle: how a data file is written, in
    /// pieces. By default as [`StdFs`] does it; a test double that fails writes overrides it.
    fn write_file_synced_with(
        &self,
        path: &Path,
        fill: &mut dyn FnMut(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        StdFs.write_file_synced_with(path, fill)
    }
    /// Fsyncs the directory `path`, making the entries in it durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to` atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the directory `path` and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Removes the file `path` (a temporary epoch file left by an interrupted claim).
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl FileSystem for StdFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn write_file_synced(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    }

    fn write_file_synced_with(
        &self,
        path: &Path,
        fill: &mut dyn FnMut(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
        fill(&mut file)?;
        file.sync_all()
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        sync_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
}

#[cfg(unix)]
fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Directories cannot be opened for fsync on this platform; renames are made durable by the
/// file system itself.
#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// An operation of a [`FileSystem`], for choosing which one a [`FailingFs`] fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsOp {
    /// [`FileSystem::create_dir`].
    CreateDir,
    /// [`FileSystem::write_file_synced`] or [`FileSystem::write_file_synced_with`], failing
    /// before anything is written.
    WriteFile,
    /// [`FileSystem::write_file_synced`] or [`FileSystem::write_file_synced_with`], failing at
    /// the fsync, after the contents are written.
    SyncFile,
    /// [`FileSystem::sync_dir`].
    SyncDir,
    /// [`FileSystem::rename`], failing without renaming.
    Rename,
    /// [`FileSystem::remove_dir_all`].
    RemoveDir,
}

/// A test double: the real file system, except that the `nth` call (counting from 0) of one
/// operation fails with an IO error. Every other call, before and after, succeeds.
///
/// A save calls, in order: `CreateDir` (the temporary directory), `WriteFile`/`SyncFile` for
/// `data.bin` then `manifest.json`, `SyncDir` for the temporary directory, `Rename` to the
/// final name, and `SyncDir` for the parent directory. So `FailingFs::new(FsOp::SyncDir, 1)`
/// fails a save after its rename, at the parent directory's fsync.
#[derive(Debug)]
pub struct FailingFs {
    op: FsOp,
    nth: usize,
    calls: AtomicUsize,
    failed: AtomicBool,
    /// Fail every call from the `nth` on, not only the `nth`: a disk that stays broken.
    from_then_on: bool,
}

impl FailingFs {
    /// Fails the `nth` call (from 0) of `op`.
    pub fn new(op: FsOp, nth: usize) -> Self {
        FailingFs {
            op,
            nth,
            calls: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            from_then_on: false,
        }
    }

    /// Fails every call of `op` from the `nth` (from 0) on.
    pub fn from_then_on(op: FsOp, nth: usize) -> Self {
        FailingFs {
            from_then_on: true,
            ..FailingFs::new(op, nth)
        }
    }

    /// Whether the failure has happened.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Whether this call of `op` is the one to fail.
    fn fails(&self, op: FsOp) -> bool {
        if op != self.op {
            return false;
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.nth || (call > self.nth && !self.from_then_on) {
            return false;
        }
        self.failed.store(true, Ordering::SeqCst);
        true
    }

    fn error(&self, path: &Path) -> io::Error {
        io::Error::other(format!(
            "injected failure of {:?} call {} on {}",
            self.op,
            self.nth,
            path.display()
        ))
    }
}

impl FileSystem for FailingFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        if self.fails(FsOp::CreateDir) {
            return Err(self.error(path));
        }
        StdFs.create_dir(path)
    }

    fn write_file_synced(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        // One write is one call of each of `WriteFile` and `SyncFile`.
        if self.fails(FsOp::WriteFile) {
            return Err(self.error(path));
        }
        let sync_fails = self.fails(FsOp::SyncFile);
        StdFs.write_file_synced(path, contents)?;
        if sync_fails {
            return Err(self.error(path));
        }
        Ok(())
    }

    fn write_file_synced_with(
        &self,
        path: &Path,
        fill: &mut dyn FnMut(&mut File) -> io::Result<()>,
    ) -> io::Result<()> {
        // As `write_file_synced`: one call of each of `WriteFile` and `SyncFile`.
        if self.fails(FsOp::WriteFile) {
            return Err(self.error(path));
        }
        let sync_fails = self.fails(FsOp::SyncFile);
        StdFs.write_file_synced_with(path, fill)?;
        if sync_fails {
            return Err(self.error(path));
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if self.fails(FsOp::SyncDir) {
            return Err(self.error(path));
        }
        StdFs.sync_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.fails(FsOp::Rename) {
            return Err(self.error(from));
        }
        StdFs.rename(from, to)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        if self.fails(FsOp::RemoveDir) {
            return Err(self.error(path));
        }
        StdFs.remove_dir_all(path)
    }
}
