//! Crash recovery of the Nexmark join queries q3 (lookup join), q8 (window join, then a
//! window) and q6 (interval join, then a session window and an `over` step): a processor killed
//! with SIGKILL at 20 seeded instants, and restarted each time, ends with committed output
//! (`parts` sink) identical to a run that was never killed, in memory, with the state in
//! memory and in sled. In sled, the join's and the later steps' keys live in their stores with
//! only 50 keys cached as objects (of thousands), so most of the state goes through sled, and
//! every restart rebuilds the stores from the checkpoint.

mod kills;
mod nexmark_data;

use std::path::{Path, PathBuf};
use std::process::Command;

use dataflow_connectors::parts::read_committed;

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

/// The shipped query `query` reading `input`, its results in a `parts` sink named `name-out`,
/// checkpoints every 100 ms, the state in sled under `name-state` when `sled`, caching 50 keys
/// as objects per operator.
fn config(dir: &Path, input: &Path, query: &str, name: &str, sled: bool) -> PathBuf {
    let mut extra =
        format!("checkpoint: {{ dir: {name}-checkpoints, interval: 100ms, retain: 3 }}\n");
    if sled {
        extra.push_str(&format!(
            "state: {{ backend: sled, dir: {name}-state, cache_keys: 50 }}\n"
        ));
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

fn check(query: &str, sled: bool, seed: u64, order: Order) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("nexmark.jsonl");
    nexmark_data::write_events(&nexmark_data::generate(400_000, seed), &input);

    // The reference keeps its state in memory: sled must give the same output.
    let reference = config(dir.path(), &input, query, "reference", false);
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
    if sled {
        // The join (the first step) kept its keys in a sled store of its own.
        let store = dir.path().join("crashed-state/steps_0_.join/instance-0");
        assert!(
            store.is_dir(),
            "{query}: no join state in {}",
            store.display()
        );
    }
    let found = read_committed(&dir.path().join("crashed-out")).expect("committed output");
    assert_eq!(found.lines().count(), expected.lines().count(), "{query}");
    let (found, expected) = match order {
        Order::Lines => (found, expected),
        Order::Multiset => (sorted_lines(&found), sorted_lines(&expected)),
    };
    assert!(
        found == expected,
        "{query}: the committed output after {kills} kills differs from the reference"
    );
}

/// How a crashed run's committed output must equal the reference.
#[derive(Clone, Copy)]
enum Order {
    /// Line for line.
    Lines,
    /// As a multiset of lines: the same results, in an order that may differ across keys.
    Multiset,
}

fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.join("\n")
}

#[test]
fn sigkill_at_twenty_instants_of_q3_loses_and_duplicates_nothing() {
    check("q3", false, 3, Order::Lines);
    check("q3", true, 33, Order::Lines);
}

#[test]
fn sigkill_at_twenty_instants_of_q8_loses_and_duplicates_nothing() {
    check("q8", false, 8, Order::Lines);
    check("q8", true, 88, Order::Lines);
}

/// q6's results are compared as a multiset: its `over` step hands on each seller's closed
/// auctions up to the watermark when the seller is due, so how results of different sellers
/// interleave follows where the watermarks fall, and a restart (resuming mid-file) moves them.
/// Every result, with its seller's running count and average (which a lost, doubled or
/// reordered auction of the seller would change), must be the reference's.
#[test]
fn sigkill_at_twenty_instants_of_q6_loses_and_duplicates_nothing() {
    check("q6", false, 6, Order::Multiset);
    check("q6", true, 66, Order::Multiset);
}
