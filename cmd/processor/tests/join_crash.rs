//! Crash recovery of the Nexmark join queries q3 (lookup join) and q8 (window join, then a
//! window): a processor killed with SIGKILL at 20 seeded instants, and restarted each time,
//! ends with committed output (`parts` sink) identical to a run that was never killed, with the
//! window state in memory and in sled (the joins' own state is in memory either way, and in
//! every checkpoint).

mod kills;
mod nexmark_data;

use std::path::{Path, PathBuf};
use std::process::Command;

use dataflow_connectors::parts::read_committed;

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

/// The shipped query `query` reading `input`, its results in a `parts` sink named `name-out`,
/// checkpoints every 100 ms, the state in sled when `sled`.
fn config(dir: &Path, input: &Path, query: &str, name: &str, sled: bool) -> PathBuf {
    let mut extra =
        format!("checkpoint: {{ dir: {name}-checkpoints, interval: 100ms, retain: 3 }}\n");
    if sled {
        extra.push_str(&format!("state: {{ backend: sled, dir: {name}-state }}\n"));
    }
    let text = nexmark_data::query_config(
        query,
        input,
        &format!("  - {{ type: parts, path: {name}-out }}\n"),
        &dir.join(format!("{name}-dead.jsonl")),
        &extra,
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).expect("write config");
    path
}

fn run_to_end(config: &Path, dir: &Path) {
    let run = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(config)
        .current_dir(dir)
        .output()
        .expect("run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

fn check(query: &str, sled: bool, seed: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("nexmark.jsonl");
    nexmark_data::write_events(&nexmark_data::generate(400_000, seed), &input);

    let reference = config(dir.path(), &input, query, "reference", sled);
    run_to_end(&reference, dir.path());
    let expected = read_committed(&dir.path().join("reference-out")).expect("committed output");
    assert!(
        expected.lines().count() > 500,
        "{query}: {} results",
        expected.lines().count()
    );

    let crashed = config(dir.path(), &input, query, "crashed", sled);
    let kills = kills::kill_mid_run(
        || {
            processor()
                .args(["run", "--no-progress", "--config"])
                .arg(&crashed)
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start processor")
        },
        seed ^ 20_261_207,
        20,
    );
    run_to_end(&crashed, dir.path());
    assert_eq!(kills, 20, "{query}: the input ran out after {kills} kills");
    let found = read_committed(&dir.path().join("crashed-out")).expect("committed output");
    assert_eq!(found.lines().count(), expected.lines().count(), "{query}");
    assert!(
        found == expected,
        "{query}: the committed output after {kills} kills differs from the reference"
    );
}

#[test]
fn sigkill_at_twenty_instants_of_q3_loses_and_duplicates_nothing() {
    check("q3", false, 3);
    check("q3", true, 33);
}

#[test]
fn sigkill_at_twenty_instants_of_q8_loses_and_duplicates_nothing() {
    check("q8", false, 8);
    check("q8", true, 88);
}
