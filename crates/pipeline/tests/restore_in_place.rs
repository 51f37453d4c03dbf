//! A restore in place racing with checkpoint retention (issue 10, item 1), made deterministic
//! by a file system that holds the save of one checkpoint until the test lets it go: the
//! restore is asked for the oldest retained checkpoint while that save waits, then the save and
//! the ones queued behind it complete, and their retention would delete the checkpoint the
//! restarted run is about to load.

mod common;

use std::io;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dataflow_checkpoint::{FileSystem, StdFs};
use dataflow_connectors::parts::read_committed;
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::control::{ControlError, ControlHandle};
use dataflow_pipeline::plan;
use dataflow_pipeline::runtime::Pipeline;
use dataflow_pipeline::spec::{CheckpointSpec, SinkKind, SinkSpec};

const EVENTS: u64 = 40_000;

fn builder(dir: &Path, name: &str, checkpoints: bool) -> PipelineBuilder {
    // Slow enough for many checkpoints every 50 ms during the run.
    let source = common::generated_bids(EVENTS, 20_000);
    let mut builder = PipelineBuilder::new("restore-race")
        .source(source)
        .key_by("auction")
        .tumbling_ms(2_000)
        .aggregate("n", "count")
        .aggregate("total", "sum(price)")
        .sink(SinkSpec {
            kind: SinkKind::Parts {
                dir: dir.join(format!("{name}-out")),
            },
            ..SinkSpec::stdout()
        })
        .dead_letters(SinkSpec::file(dir.join(format!("{name}-dead.jsonl"))));
    if checkpoints {
        builder = builder.checkpoint(CheckpointSpec {
            dir: dir.join(format!("{name}-checkpoints")),
            interval: 50,
            retain: 3,
        });
    }
    builder
}

/// A pipeline that can restart in place (it is planned again for each restart).
fn restartable(dir: &Path, name: &str) -> Pipeline {
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    let replan = move || plan::plan(builder(&dir, &name, true).spec()?);
    Pipeline::new(replan().expect("valid pipeline")).with_replan(replan)
}

/// The real file system, except that the save of checkpoint `held` (the rename of its
/// temporary directory to its final name) waits until [`GateFs::release`].
#[derive(Debug)]
struct GateFs {
    held: String,
    state: Mutex<Gate>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Gate {
    waiting: bool,
    released: bool,
}

impl GateFs {
    fn new(held: u64) -> Arc<GateFs> {
        Arc::new(GateFs {
            held: format!("{held:020}"),
            state: Mutex::new(Gate::default()),
            changed: Condvar::new(),
        })
    }

    fn is_waiting(&self) -> bool {
        self.state.lock().expect("gate").waiting
    }

    fn release(&self) {
        self.state.lock().expect("gate").released = true;
        self.changed.notify_all();
    }
}

impl FileSystem for GateFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        StdFs.create_dir(path)
    }
    fn write_file_synced(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        StdFs.write_file_synced(path, contents)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        StdFs.sync_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if to.file_name().is_some_and(|name| *name == *self.held) {
            let mut gate = self.state.lock().expect("gate");
            gate.waiting = true;
            self.changed.notify_all();
            while !gate.released {
                gate = self.changed.wait(gate).expect("gate");
            }
        }
        StdFs.rename(from, to)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_dir_all(path)
    }
}

/// Polls `condition` until it holds, up to a generous deadline (the machine may be loaded).
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn checkpoint_ids(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .expect("checkpoint dir")
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            (name.len() == 20).then(|| name.parse().ok()).flatten()
        })
        .collect();
    ids.sort_unstable();
    ids
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `pipeline` with its checkpoint saves through a gate holding checkpoint 4: once 1, 2
/// and 3 are stored and 4's save waits, asks for a restore of 1, lets `meanwhile` act on the
/// checkpoint directory, then releases the saves; returns the restore's answer, the control
/// handle and the run's result.
fn restore_while_a_save_waits(
    dir: &Path,
    name: &str,
    meanwhile: impl FnOnce(&Path, &dataflow_pipeline::runtime::StopHandle),
) -> (
    Result<u64, ControlError>,
    ControlHandle,
    dataflow_pipeline::Result<dataflow_metrics::RunSummary>,
) {
    let gate = GateFs::new(4);
    let pipeline = restartable(dir, name).with_checkpoint_fs(gate.clone());
    let control = pipeline.control();
    let stop = pipeline.stop_handle();
    let checkpoints = dir.join(format!("{name}-checkpoints"));
    let runtime = runtime();
    let run = runtime.spawn(pipeline.run());
    let answer = runtime.block_on(async {
        wait_for("checkpoint 4's save to wait", || gate.is_waiting()).await;
        assert_eq!(checkpoint_ids(&checkpoints), vec![1, 2, 3]);
        let restoring = control.clone();
        let restore = tokio::spawn(async move { restoring.restore(1, false).await });
        wait_for("the restore to halt the run", || {
            control.status().state == "restoring" || restore.is_finished()
        })
        .await;
        meanwhile(&checkpoints, &stop);
        gate.release();
        restore
            .await
            .expect("restore task")
            .map(|report| report.checkpoint)
    });
    let result = runtime.block_on(run).expect("run task");
    (answer, control, result)
}

fn reference(dir: &Path) -> String {
    common::run(
        builder(dir, "reference", false)
            .build()
            .expect("valid pipeline"),
    );
    let expected = read_committed(&dir.join("reference-out")).expect("committed output");
    assert!(expected.lines().count() > 100, "{expected}");
    expected
}

#[test]
fn retention_cannot_delete_the_checkpoint_a_restore_in_place_is_about_to_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = reference(dir.path());

    let (answer, control, result) = restore_while_a_save_waits(dir.path(), "pinned", |_, _| {});
    assert_eq!(answer, Ok(1), "the restore of checkpoint 1");
    let summary = result.expect("the run goes on after the restore and ends cleanly");
    let status = control.status();
    assert_eq!(
        (status.restored_from, status.restores, status.state.as_str()),
        (Some(1), 1, "stopped")
    );
    // Read twice up to checkpoint 1's positions: everything once, plus the replay.
    assert!(summary.events_read > EVENTS, "{summary:?}");
    let found = read_committed(&dir.path().join("pinned-out")).expect("committed output");
    assert!(found == expected, "the output after the restore differs");
    // Unpinned once restored: retention has since removed it.
    let stored = checkpoint_ids(&dir.path().join("pinned-checkpoints"));
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(!stored.contains(&1), "{stored:?}");
}

#[test]
fn a_restore_whose_checkpoint_vanishes_anyway_is_404_and_the_run_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = reference(dir.path());

    // Deleted from outside the processor, which no pin can prevent.
    let (answer, control, result) =
        restore_while_a_save_waits(dir.path(), "vanished", |checkpoints, _| {
            std::fs::remove_dir_all(checkpoints.join(format!("{:020}", 1))).expect("delete 1");
        });
    match answer {
        Err(ControlError::NotFound(message)) => {
            assert!(message.contains("checkpoint 1"), "{message}")
        }
        other => panic!("expected not found, got {other:?}"),
    }
    result.expect("the run resumes and ends cleanly instead of failing");
    let status = control.status();
    assert_eq!((status.restores, status.state.as_str()), (0, "stopped"));
    // Resumed from the newest checkpoint, not the one asked for.
    assert!(
        status.restored_from.is_some_and(|id| id > 1),
        "{:?}",
        status.restored_from
    );
    let found = read_committed(&dir.path().join("vanished-out")).expect("committed output");
    assert!(found == expected, "the output after resuming differs");
}

/// A stop (SIGTERM) that arrives while a restore waits for the run to halt ends the run; the
/// restore is answered "not running" (409), not as a server fault, and the run ends cleanly.
#[test]
fn a_stop_during_a_restore_answers_not_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (answer, control, result) =
        restore_while_a_save_waits(dir.path(), "stopped", |_, stop| stop.stop());
    match answer {
        Err(ControlError::NotRunning(message)) => {
            assert!(message.contains("stopped"), "{message}")
        }
        other => panic!("expected not running, got {other:?}"),
    }
    result.expect("the stopped run ends cleanly");
    let status = control.status();
    assert_eq!((status.restores, status.state.as_str()), (0, "stopped"));
}
