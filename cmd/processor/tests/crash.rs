//! Crash recovery: a processor killed with SIGKILL at random instants, and restarted each
//! time, ends with committed output identical to a run that was never killed.

mod kills;

use std::path::{Path, PathBuf};
use std::process::Command;

use dataflow_connectors::parts::read_committed;

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

/// Where the window state lives during a run.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Sled,
}

fn config(dir: &Path, input: &Path, name: &str) -> PathBuf {
    config_with(dir, input, name, Backend::Memory)
}

fn config_with(dir: &Path, input: &Path, name: &str, backend: Backend) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let state = match backend {
        Backend::Memory => String::new(),
        Backend::Sled => format!("state: {{ backend: sled, dir: {name}-state }}\n"),
    };
    std::fs::write(
        &path,
        format!(
            "{state}name: crash\nsources:\n  - name: bids\n    type: file\n    path: {}\n    format: {{ schema: {{ auction: int, price: int }} }}\n    watermark: {{ out_of_orderness: 2s }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count, total: sum(price) }} }}\nsinks:\n  - {{ type: parts, path: {name}-out }}\ndead_letters: {{ type: file, path: {name}-dead.jsonl }}\ncheckpoint: {{ dir: {name}-checkpoints, interval: 100ms, retain: 3 }}\n",
            input.display()
        ),
    )
    .expect("write config");
    path
}

/// Writes `count` generated bids into `dir` and returns the file.
fn generate_bids(dir: &Path, count: u64, seed: u64) -> PathBuf {
    let input = dir.join("bids.jsonl");
    let generated = processor()
        .args([
            "generate",
            "--profile",
            "bids",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(&input)
        .output()
        .expect("generate");
    assert!(generated.status.success());
    input
}

#[test]
fn sigkill_at_twenty_instants_loses_and_duplicates_nothing_in_memory() {
    sigkill_at_twenty_instants(Backend::Memory, 20_261_124);
}

#[test]
fn sigkill_at_twenty_instants_loses_and_duplicates_nothing_in_sled() {
    sigkill_at_twenty_instants(Backend::Sled, 20_261_125);
}

/// Kills a run with the window state in `backend` at 20 instants drawn from `seed`, and compares
/// its committed output with an uninterrupted run keeping its state in memory.
fn sigkill_at_twenty_instants(backend: Backend, seed: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate_bids(dir.path(), 1000000, 7);

    let reference = config(dir.path(), &input, "reference");
    let run = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&reference)
        .output()
        .expect("reference run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let expected = read_committed(&dir.path().join("reference-out")).expect("committed output");
    assert!(expected.lines().count() > 10_000);

    let crashed = config_with(dir.path(), &input, "crashed", backend);
    let mut kills = 0;
    // Runs that end before their instant come do not count: keep going until 20 were killed
    // mid-run (each restart resumes from the last checkpoint, so the input may run out first).
    for delay in kills::delays(seed, 60, 30, 270) {
        if kills == 20 {
            break;
        }
        let child = processor()
            .args(["run", "--no-progress", "--config"])
            .arg(&crashed)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start processor");
        if kills::kill_after(child, delay).is_none() {
            kills += 1;
        }
    }
    let last = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&crashed)
        .output()
        .expect("final run");
    let stderr = String::from_utf8_lossy(&last.stderr);
    assert!(last.status.success(), "{stderr}");
    assert_eq!(kills, 20, "the input ran out after {kills} kills");
    let found = read_committed(&dir.path().join("crashed-out")).expect("committed output");
    assert_eq!(found.lines().count(), expected.lines().count());
    assert!(
        found == expected,
        "the committed output after {kills} kills ({backend:?}) differs from the reference"
    );
}

/// A checkpoint whose data file was damaged is refused by its checksum, loudly, and the
/// previous one is restored; the output is still exact.
#[test]
fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate_bids(dir.path(), 200000, 8);
    let reference = config(dir.path(), &input, "reference");
    let run = |config: &Path| {
        let output = processor()
            .args(["run", "--no-progress", "--config"])
            .arg(config)
            .output()
            .expect("run processor");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    run(&reference);
    let expected = read_committed(&dir.path().join("reference-out")).expect("committed output");

    let damaged = config(dir.path(), &input, "damaged");
    let text = std::fs::read_to_string(&damaged).expect("config");
    std::fs::write(&damaged, text.replace("interval: 100ms", "interval: 10ms")).expect("config");
    run(&damaged);
    let checkpoints = dir.path().join("damaged-checkpoints");
    let mut ids: Vec<PathBuf> = std::fs::read_dir(&checkpoints)
        .expect("checkpoints")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    ids.sort();
    assert!(ids.len() >= 2, "{ids:?}");
    let newest = ids.last().expect("a checkpoint").join("data.bin");
    let mut bytes = std::fs::read(&newest).expect("data file");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&newest, bytes).expect("damage");

    let stderr = run(&damaged);
    assert!(stderr.contains("checkpoint refused"), "{stderr}");
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(stderr.contains("restored checkpoint"), "{stderr}");
    assert!(
        read_committed(&dir.path().join("damaged-out")).expect("committed output") == expected,
        "output differs after the fallback"
    );
}
