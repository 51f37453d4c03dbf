//! A checkpoint written by an earlier version, committed under `tests/fixtures/checkpoint-v1/`,
//! still restores, and the run from it produces the output recorded with it. A format change
//! that breaks this must migrate old checkpoints, not drop them.
//!
//! To rewrite the fixture (only when the format changes on purpose, with a migration):
//! `DATAFLOW_WRITE_FIXTURES=1 cargo test -p dataflow-processor --test fixture`.

use std::path::{Path, PathBuf};
use std::process::Command;

use dataflow_connectors::parts::read_committed;

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-v1")
}

/// A keyed session and tumbling pipeline over generated clicks, with state worth restoring.
fn config(dir: &Path, rate: bool) -> PathBuf {
    let path = dir.join("pipeline.yaml");
    let rate = if rate { "    rate: 20000\n" } else { "" };
    std::fs::write(
        &path,
        format!(
            "name: fixture\nsources:\n  - name: clicks\n    type: generator\n    profile: clicks\n    count: 20000\n    seed: 11\n{rate}    watermark: {{ out_of_orderness: 2s }}\nsteps:\n  - filter: event.type == \"user_click\"\n  - key_by: user_id\n  - window: {{ type: sliding, size: 20s, slide: 5s, allowed_lateness: 2s, aggregates: {{ clicks: count, pages: count_by(page), longest: max(duration_ms), first_page: first(page) }} }}\nsinks:\n  - {{ type: parts, path: out }}\ndead_letters: {{ type: file, path: dead.jsonl }}\ncheckpoint: {{ dir: checkpoints, interval: 200ms, retain: 3 }}\n"
        ),
    )
    .expect("write config");
    path
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("list").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn restore_and_run(work: &Path, id: &str) -> String {
    let config = config(work, false);
    let output = processor()
        .args(["run", "--no-progress", "--restore", id, "--config"])
        .arg(&config)
        .output()
        .expect("run processor");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("restored checkpoint"), "{stderr}");
    read_committed(&work.join("out")).expect("committed output")
}

#[test]
fn the_committed_checkpoint_fixture_restores_and_resumes_exactly() {
    if std::env::var_os("DATAFLOW_WRITE_FIXTURES").is_some() {
        write_fixture();
    }
    let fixture = fixture_dir();
    let id = std::fs::read_to_string(fixture.join("id")).expect("fixture id");
    let id = id.trim();
    let work = tempfile::tempdir().expect("temp dir");
    copy_dir(
        &fixture.join("checkpoints"),
        &work.path().join("checkpoints"),
    );
    let output = restore_and_run(work.path(), id);
    let expected =
        std::fs::read_to_string(fixture.join("expected.jsonl")).expect("expected output");
    assert!(!expected.is_empty());
    assert!(
        output == expected,
        "the run restored from the fixture gave other results"
    );
}

/// Runs the pipeline with checkpoints, keeps its newest checkpoint and the output of a run
/// restored from it.
fn write_fixture() {
    let work = tempfile::tempdir().expect("temp dir");
    let config = config(work.path(), true);
    let output = processor()
        .args(["run", "--no-progress", "--fresh", "--config"])
        .arg(&config)
        .output()
        .expect("run processor");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut ids: Vec<String> = std::fs::read_dir(work.path().join("checkpoints"))
        .expect("checkpoints")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    let newest = ids.last().expect("a checkpoint was taken").clone();
    let id = newest.trim_start_matches('0').to_string();
    let fixture = fixture_dir();
    let _ = std::fs::remove_dir_all(&fixture);
    copy_dir(
        &work.path().join("checkpoints").join(&newest),
        &fixture.join("checkpoints").join(&newest),
    );
    std::fs::write(fixture.join("id"), format!("{id}\n")).expect("write id");
    let again = tempfile::tempdir().expect("temp dir");
    copy_dir(
        &fixture.join("checkpoints"),
        &again.path().join("checkpoints"),
    );
    let expected = restore_and_run(again.path(), &id);
    std::fs::write(fixture.join("expected.jsonl"), expected).expect("write expected");
}
