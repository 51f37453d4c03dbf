//! Crash recovery of the card-fraud pattern example: a processor killed with SIGKILL at 20
//! seeded instants, and restarted each time, ends with committed output (`parts` sink)
//! identical to a run that was never killed; with the pattern's state in memory, and in sled
//! (where every restart rebuilds the sled database from the checkpoint, and the reference runs
//! in memory: sled gives the same output).

mod kills;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use dataflow_connectors::parts::read_committed;

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes `count` card transactions over `cards` cards into `dir`, in the example's format: a
/// few small charges, a few large ones, the rest ordinary, arriving up to 20 s out of order.
fn generate_transactions(dir: &Path, count: u64, cards: u64, seed: u64) -> PathBuf {
    let path = dir.join("transactions.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create input"));
    let mut mix = kills::Mix(seed);
    let start = 1_709_280_000_000i64;
    for index in 0..count {
        let time = start + index as i64 * 50 - (mix.next() % 20_000) as i64;
        let card = mix.next() % cards;
        let amount = match mix.next() % 100 {
            0..=4 => (mix.next() % 199) as f64 / 100.0 + 0.01,
            5..=7 => 500.0 + (mix.next() % 2000) as f64,
            _ => 2.0 + (mix.next() % 20_000) as f64 / 100.0,
        };
        writeln!(
            out,
            "{{\"time\":{time},\"card\":\"c{card}\",\"amount\":{amount:.2},\"merchant\":\"m{}\"}}",
            mix.next() % 50
        )
        .expect("write input");
    }
    out.flush().expect("flush input");
    path
}

/// The shipped card-fraud example reading `input`, with its results in a `parts` sink named
/// `name-out`, checkpoints every 100 ms, and its side outputs in `dir`; its state in sled under
/// `name-state` when `sled`, with 100 keys cached as objects (of 5,000 cards), so that most
/// keys' state goes through sled.
fn config(dir: &Path, input: &Path, name: &str, sled: bool) -> PathBuf {
    let text = std::fs::read_to_string(root().join("configs/examples/cep/card-fraud.yaml"))
        .expect("shipped config");
    let sink = "  - type: file\n    path: ../../../out/cep/card-fraud.jsonl\n";
    assert!(text.contains(sink), "the example's sink changed");
    let text = text
        .replace(
            "../../../data/cep/transactions.jsonl",
            &input.display().to_string(),
        )
        .replace(sink, &format!("  - {{ type: parts, path: {name}-out }}\n"))
        .replace("../../../out/cep/card-fraud", name)
        + &format!("checkpoint: {{ dir: {name}-checkpoints, interval: 100ms, retain: 3 }}\n");
    let text = if sled {
        text + &format!("state: {{ backend: sled, dir: {name}-state, cache_keys: 100 }}\n")
    } else {
        text
    };
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn sigkill_at_twenty_instants_of_the_fraud_pattern_loses_and_duplicates_nothing() {
    crash_and_compare(false);
}

#[test]
fn sigkill_at_twenty_instants_of_the_fraud_pattern_in_sled_loses_and_duplicates_nothing() {
    crash_and_compare(true);
}

/// Kills the fraud example 20 times (its state in sled if `sled`), restarting it each time, and
/// compares its committed output with a run in memory never killed.
fn crash_and_compare(sled: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate_transactions(dir.path(), 400_000, 5_000, 13);

    let reference = config(dir.path(), &input, "reference", false);
    let run = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&reference)
        .current_dir(dir.path())
        .output()
        .expect("reference run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let expected = read_committed(&dir.path().join("reference-out")).expect("committed output");
    assert!(
        expected.lines().count() > 1_000,
        "{}",
        expected.lines().count()
    );

    let crashed = config(dir.path(), &input, "crashed", sled);
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
        20_261_204,
        20,
    );
    let last = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&crashed)
        .current_dir(dir.path())
        .output()
        .expect("final run");
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert_eq!(kills, 20, "the input ran out after {kills} kills");
    assert_eq!(dir.path().join("crashed-state").is_dir(), sled);
    let found = read_committed(&dir.path().join("crashed-out")).expect("committed output");
    assert_eq!(found.lines().count(), expected.lines().count());
    assert!(
        found == expected,
        "the committed output after {kills} kills differs from the reference"
    );
}
