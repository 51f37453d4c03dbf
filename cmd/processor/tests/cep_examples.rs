//! The shipped CEP examples (`configs/examples/cep/`) run end to end on their sample data and
//! write exactly their golden outputs: results, timed-out partial matches, late events and dead
//! letters; and exactly the same with their state in sled (`state.backend: sled`, caching one
//! key as objects, so that the keys' state goes through sled) as in memory.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the example `name` with its data taken from the repository and its outputs in a
/// temporary directory, and compares every output file with its golden copy; then again with
/// its state in sled.
fn check(name: &str, outputs: &[&str]) {
    check_in(name, outputs, false);
    check_in(name, outputs, true);
}

fn check_in(name: &str, outputs: &[&str], sled: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let examples = root().join("configs/examples/cep");
    let text = std::fs::read_to_string(examples.join(format!("{name}.yaml"))).expect("config");
    let text = text
        .replace(
            "../../../data/cep/",
            &format!("{}/", root().join("data/cep").display()),
        )
        .replace("../../../out/cep/", &format!("{}/", dir.path().display()));
    assert!(
        !text.contains("\nstate:"),
        "the example sets its state backend"
    );
    let text = if sled {
        let state = dir.path().join("state");
        text + &format!(
            "state: {{ backend: sled, dir: {}, cache_keys: 1 }}\n",
            state.display()
        )
    } else {
        text
    };
    let config = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&config, text).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_processor"))
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .output()
        .expect("run processor");
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for output in outputs {
        let file = format!("{name}{output}.jsonl");
        let actual = std::fs::read_to_string(dir.path().join(&file))
            .unwrap_or_else(|error| panic!("{file}: {error}"));
        let golden = std::fs::read_to_string(examples.join("golden").join(&file))
            .unwrap_or_else(|error| panic!("golden {file}: {error}"));
        assert_eq!(
            actual, golden,
            "{file} differs from its golden copy (sled: {sled})"
        );
    }
    if sled {
        // The pattern or alert step kept its state in a sled database of its own.
        let state = std::fs::read_dir(dir.path().join("state"))
            .expect("a state directory")
            .map(|entry| entry.expect("an entry").file_name())
            .collect::<Vec<_>>();
        assert_eq!(state.len(), 1, "{state:?}");
    }
}

#[test]
fn card_fraud_gives_its_golden_matches_timeouts_and_late_events() {
    check("card-fraud", &["", "-timed-out", "-late", "-dead-letters"]);
}

#[test]
fn brute_force_gives_its_golden_matches_and_timeouts() {
    check("brute-force", &["", "-timed-out", "-late", "-dead-letters"]);
}

#[test]
fn sensor_threshold_alerts_start_and_stop_once() {
    check("sensor-threshold", &["", "-late", "-dead-letters"]);
}

#[test]
fn missed_heartbeats_are_the_timed_out_matches() {
    check("missed-heartbeat", &["", "-timed-out", "-dead-letters"]);
}
