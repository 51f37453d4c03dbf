//! A checkpoint write that fails at any step is reported and never counts: recovery uses the
//! last complete checkpoint, and the committed output is still exact.

mod common;

use std::path::Path;
use std::sync::Arc;

use dataflow_checkpoint::{CheckpointStorage, FailingFs, FileSystem, FsOp, LocalStorage};
use dataflow_connectors::parts::read_committed;
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::runtime::Pipeline;
use dataflow_pipeline::spec::{CheckpointSpec, SinkKind, SinkSpec};

fn pipeline(dir: &Path, name: &str, checkpoints: bool) -> Pipeline {
    // Slow enough for a checkpoint every 50 ms to land in the middle of the run.
    let source = common::generated_bids(40_000, 40_000);
    let mut builder = PipelineBuilder::new("failures")
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
    builder.build().expect("valid pipeline")
}

#[test]
fn a_failed_checkpoint_write_never_counts_and_recovery_stays_exact() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::run(pipeline(dir.path(), "reference", false));
    let expected = read_committed(&dir.path().join("reference-out")).expect("committed output");
    assert!(expected.lines().count() > 1_000);

    // From the third save on, every save fails at this step: the disk stays broken.
    let cases = [
        ("before the rename", FsOp::Rename, 2),
        ("at the data file's fsync", FsOp::SyncFile, 4),
        (
            "after the rename, at the parent directory's fsync",
            FsOp::SyncDir,
            5,
        ),
    ];
    for (index, (step, op, nth)) in cases.into_iter().enumerate() {
        let name = format!("case{index}");
        let fs: Arc<dyn FileSystem> = Arc::new(FailingFs::from_then_on(op, nth));
        let summary = common::run(pipeline(dir.path(), &name, true).with_checkpoint_fs(fs));
        assert_eq!(summary.events_read, 40_000, "{step}");

        let storage =
            LocalStorage::new(dir.path().join(format!("{name}-checkpoints")), 3).expect("storage");
        let ids: Vec<u64> = storage
            .list()
            .expect("list")
            .iter()
            .map(|e| e.id.0)
            .collect();
        assert_eq!(
            ids,
            [1, 2],
            "{step}: only the complete checkpoints may remain"
        );

        // As after a crash: restore the last complete checkpoint and run to the end.
        common::run(pipeline(dir.path(), &name, true));
        let found =
            read_committed(&dir.path().join(format!("{name}-out"))).expect("committed output");
        assert!(
            found == expected,
            "{step}: the output after recovery differs"
        );
    }
}
