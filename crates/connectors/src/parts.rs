//! `type: parts`: exactly-once JSON Lines part files, committed with checkpoints.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use dataflow_event::Event;
use tokio::io::AsyncWriteExt;

use dataflow_event::json::Encoder;

use crate::config::{PathUse, Settings};
use crate::jsonl::{encode_batch, result_encoder, WRITE_CHUNK};
use crate::registry::{SinkKind, SinkSpec};
use crate::sink::{ResultFormat, Sink};
use crate::{ConnectorError, Result};

/// Exactly-once part files (see [`SinkKind::Parts`]). In its directory:
/// `part-<id>.jsonl` are committed, `.pending-<id>.jsonl` wait for checkpoint `id` to be saved,
/// and `.in-progress.jsonl` takes what is written now. Ids are 20-digit checkpoint ids, so the
/// committed parts in name order are the output in order.
pub struct PartsSink {
    dir: PathBuf,
    encoder: Encoder,
    buffer: Vec<u8>,
    current: Option<tokio::fs::File>,
    /// The newest checkpoint whose barrier passed, so the final part is named after it.
    last_prepared: u64,
}

impl std::fmt::Debug for PartsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartsSink")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

const IN_PROGRESS: &str = ".in-progress.jsonl";

fn part_name(id: u64) -> String {
    format!("part-{id:020}.jsonl")
}

fn pending_name(id: u64) -> String {
    format!(".pending-{id:020}.jsonl")
}

/// The id in a part or pending file name.
fn part_id(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(".jsonl")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> ConnectorError {
    move |source| ConnectorError::Io {
        context,
        cause: source,
    }
}

impl PartsSink {
    /// Opens the directory of `spec` and recovers it to `restored`, the checkpoint the run
    /// starts from: committed parts after it are deleted (their output will be produced
    /// again), pending parts up to it are committed (it completed), later ones and anything in
    /// progress are discarded. `None` (a fresh start) deletes every part.
    pub async fn open(
        spec: &SinkSpec,
        format: ResultFormat,
        restored: Option<u64>,
    ) -> Result<PartsSink> {
        let SinkKind::Parts { dir } = &spec.kind else {
            return Err(ConnectorError::Runtime(
                "a parts sink needs a directory".into(),
            ));
        };
        let listing = format!("cannot list {}", dir.display());
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io_error(format!(
                "cannot create directory {}",
                dir.display()
            )))?;
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(io_error(listing.clone()))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io_error(listing.clone()))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let covered = |id: u64| restored.is_some_and(|restored| id <= restored);
            let commit_as = if let Some(id) = part_id(&name, "part-") {
                if covered(id) {
                    continue;
                }
                None
            } else if let Some(id) = part_id(&name, ".pending-") {
                covered(id).then(|| dir.join(part_name(id)))
            } else if name == IN_PROGRESS {
                None
            } else {
                continue;
            };
            match commit_as {
                Some(committed) => tokio::fs::rename(&path, &committed)
                    .await
                    .map_err(io_error(format!("cannot commit {}", path.display())))?,
                None => tokio::fs::remove_file(&path)
                    .await
                    .map_err(io_error(format!("cannot discard {}", path.display())))?,
            }
        }
        sync_dir(dir).await?;
        let encoder = result_encoder(spec, format);
        Ok(PartsSink {
            dir: dir.clone(),
            encoder,
            buffer: Vec::with_capacity(WRITE_CHUNK * 2),
            current: None,
            last_prepared: restored.unwrap_or(0),
        })
    }

    async fn drain(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let path = self.dir.join(IN_PROGRESS);
            let file = tokio::fs::File::create(&path)
                .await
                .map_err(io_error(format!("cannot create {}", path.display())))?;
            self.current = Some(file);
        }
        if let Some(file) = &mut self.current {
            file.write_all(&self.buffer)
                .await
                .map_err(io_error(format!(
                    "cannot write to {}",
                    self.dir.join(IN_PROGRESS).display()
                )))?;
        }
        self.buffer.clear();
        Ok(())
    }

    /// Closes the in-progress part durably under `name`, if anything was written.
    async fn seal(&mut self, name: &str) -> Result<()> {
        self.drain().await?;
        let Some(mut file) = self.current.take() else {
            return Ok(());
        };
        let context = format!("cannot make {} durable", self.dir.display());
        file.flush().await.map_err(io_error(context.clone()))?;
        file.sync_all().await.map_err(io_error(context))?;
        drop(file);
        let path = self.dir.join(name);
        tokio::fs::rename(self.dir.join(IN_PROGRESS), &path)
            .await
            .map_err(io_error(format!("cannot seal {}", path.display())))?;
        sync_dir(&self.dir).await
    }
}

/// The committed output of a parts sink's directory: its `part-*.jsonl` files concatenated in
/// name order (pending and in-progress files are not output yet).
pub fn read_committed(dir: &Path) -> std::io::Result<String> {
    let mut parts: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            part_id(&name, "part-").map(|id| (id, entry.path()))
        })
        .collect();
    parts.sort();
    let mut output = String::new();
    for (_, path) in parts {
        output.push_str(&std::fs::read_to_string(path)?);
    }
    Ok(output)
}

/// Makes renames in `dir` durable.
async fn sync_dir(dir: &Path) -> Result<()> {
    let owned = dir.to_path_buf();
    let synced = tokio::task::spawn_blocking(move || {
        std::fs::File::open(&owned).and_then(|handle| handle.sync_all())
    })
    .await
    .map_err(|error| ConnectorError::Runtime(format!("directory sync failed: {error}")))?;
    synced.map_err(io_error(format!("cannot sync directory {}", dir.display())))
}

#[async_trait]
impl Sink for PartsSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        if encode_batch(&self.encoder, events, &mut self.buffer) {
            self.drain().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        // Pending output is not for readers until committed: flushing only hands it to the file.
        self.drain().await
    }

    async fn prepare(&mut self, checkpoint: u64) -> Result<()> {
        self.last_prepared = checkpoint;
        self.seal(&pending_name(checkpoint)).await
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let listing = format!("cannot list {}", self.dir.display());
        let mut entries = tokio::fs::read_dir(&self.dir)
            .await
            .map_err(io_error(listing.clone()))?;
        let mut committed = false;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io_error(listing.clone()))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = part_id(&name, ".pending-").filter(|id| *id <= checkpoint) {
                let target = self.dir.join(part_name(id));
                tokio::fs::rename(entry.path(), &target)
                    .await
                    .map_err(io_error(format!("cannot commit {}", target.display())))?;
                committed = true;
            }
        }
        if committed {
            sync_dir(&self.dir).await?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        // The end of the run: everything written is final, pending parts included, and what
        // follows the last barrier is committed after it. A later restore from an earlier
        // checkpoint deletes these parts with every part after that checkpoint.
        self.commit(u64::MAX).await?;
        let id = self.last_prepared + 1;
        self.seal(&part_name(id)).await
    }
}

/// The settings `configure` takes.
pub(crate) const KEYS: &[&str] = &["path"];

/// `type: parts` settings: `path`, a directory.
pub(crate) fn configure(settings: &mut Settings<'_>) -> Option<SinkKind> {
    match settings.path("path", PathUse::WriteDir) {
        Some(dir) => Some(SinkKind::Parts { dir }),
        None => {
            let place = settings.place();
            settings.problem(place, "a parts sink needs `path` (a directory)");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflow_event::Layout;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn parts_recover_to_the_restored_checkpoint() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = SinkSpec {
            kind: SinkKind::Parts {
                dir: dir.path().to_path_buf(),
            },
            time_format: Default::default(),
        };
        let setup = |files: &[&str]| {
            for name in names(dir.path()) {
                std::fs::remove_file(dir.path().join(name)).expect("clear");
            }
            for file in files {
                std::fs::write(dir.path().join(file), file.as_bytes()).expect("write");
            }
        };
        let all = [
            "part-00000000000000000001.jsonl",
            "part-00000000000000000004.jsonl",
            ".pending-00000000000000000002.jsonl",
            ".pending-00000000000000000003.jsonl",
            ".in-progress.jsonl",
            "notes.txt",
        ];
        setup(&all);
        PartsSink::open(&spec, ResultFormat::new(Layout::Object, true), Some(2))
            .await
            .expect("open");
        assert_eq!(
            names(dir.path()),
            [
                "notes.txt",
                "part-00000000000000000001.jsonl",
                "part-00000000000000000002.jsonl"
            ]
        );
        // The committed part keeps the pending part's contents.
        let kept = std::fs::read_to_string(dir.path().join("part-00000000000000000002.jsonl"));
        assert_eq!(kept.expect("read"), ".pending-00000000000000000002.jsonl");
        setup(&all);
        PartsSink::open(&spec, ResultFormat::new(Layout::Object, true), None)
            .await
            .expect("open");
        assert_eq!(names(dir.path()), ["notes.txt"]);
    }

    #[tokio::test]
    async fn parts_are_pending_until_committed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = SinkSpec {
            kind: SinkKind::Parts {
                dir: dir.path().to_path_buf(),
            },
            time_format: Default::default(),
        };
        let mut sink = PartsSink::open(&spec, ResultFormat::new(Layout::Object, false), None)
            .await
            .expect("open");
        let event = Event::object(0, Default::default());
        sink.write(std::slice::from_ref(&event))
            .await
            .expect("write");
        sink.prepare(1).await.expect("prepare");
        assert_eq!(names(dir.path()), [".pending-00000000000000000001.jsonl"]);
        sink.write(std::slice::from_ref(&event))
            .await
            .expect("write");
        sink.prepare(2).await.expect("prepare");
        sink.commit(1).await.expect("commit");
        assert_eq!(
            names(dir.path()),
            [
                ".pending-00000000000000000002.jsonl",
                "part-00000000000000000001.jsonl"
            ]
        );
        sink.write(std::slice::from_ref(&event))
            .await
            .expect("write");
        sink.finish().await.expect("finish");
        assert_eq!(
            names(dir.path()),
            [
                "part-00000000000000000001.jsonl",
                "part-00000000000000000002.jsonl",
                "part-00000000000000000003.jsonl"
            ]
        );
    }
}
