//! End to end over real HTTP on an ephemeral loopback port: a processor on generated data,
//! driven with the `admin` binary — list, show, verify, diff, state, trigger --wait, and a
//! restore of an older checkpoint on the running processor whose later output follows from
//! that checkpoint (the committed output equals an uninterrupted run's).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod admin_bin;
use admin_bin::admin_binary;

const TOKEN: &str = "e2e-t0ken";

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

struct Admin {
    binary: PathBuf,
    url: String,
}

impl Admin {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args(args)
            .env("DATAFLOW_URL", &self.url)
            .env("DATAFLOW_TOKEN", TOKEN)
            .output()
            .expect("run admin")
    }

    /// Runs a command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "admin {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let text = self.ok(&[&["--output", "json"][..], args].concat());
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("admin {args:?}: {e}: {text}"))
    }

    fn ids(&self) -> Vec<u64> {
        self.json(&["checkpoints", "list"])
            .as_array()
            .expect("a list")
            .iter()
            .filter(|row| row["verified"] == true)
            .filter_map(|row| row["id"].as_u64())
            .collect()
    }
}

/// Polls `condition` until it holds, up to a generous deadline (the machine may be loaded).
fn wait_for<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ids of the checkpoints stored in `dir`: its directories named by twenty digits (not the
/// temporary ones of a checkpoint being written).
fn stored_ids(dir: &Path) -> BTreeSet<u64> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.path().is_dir())
                .filter_map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| name.parse().ok())
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Per key of the committed window results in `output` (JSON lines): the sum of their counts
/// `n`.
fn counts_by_key(output: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in output.lines() {
        let row: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad output line {line}: {e}"));
        let n = row["n"]
            .as_u64()
            .unwrap_or_else(|| panic!("no count: {line}"));
        *counts.entry(row["key"].to_string()).or_insert(0) += n;
    }
    counts
}

fn config(dir: &Path, live: bool) -> PathBuf {
    let rate = if live { "    rate: 8000\n" } else { "" };
    let rest = if live {
        "checkpoint: { dir: checkpoints, interval: 150ms, retain: 100 }\napi: { listen: \"127.0.0.1:0\", token_env: DATAFLOW_E2E_TOKEN }\n"
    } else {
        ""
    };
    let text = format!(
        "name: e2e\nsources:\n  - name: bids\n    type: generator\n    count: 40000\n{rate}    watermark: {{ out_of_orderness: 2s }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 2s, aggregates: {{ n: count, top: max(price) }} }}\nsinks:\n  - {{ type: parts, path: out }}\ndead_letters: {{ type: file, path: dead.jsonl }}\n{rest}"
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn admin_drives_a_running_processor_and_a_restore_replays_from_the_checkpoint() {
    let admin_binary = admin_binary();
    // The reference: the same pipeline, uninterrupted.
    let reference = tempfile::tempdir().expect("temp dir");
    let status = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(config(reference.path(), false))
        .current_dir(reference.path())
        .stderr(Stdio::null())
        .status()
        .expect("reference run");
    assert!(status.success());
    let expected =
        dataflow_connectors::parts::read_committed(&reference.path().join("out")).expect("output");
    assert!(expected.lines().count() > 10, "{expected}");
    // Every auction of the input, with how many of its bids the windows counted.
    let expected_counts = counts_by_key(&expected);
    assert_eq!(expected_counts.values().sum::<u64>(), 40_000);

    let dir = tempfile::tempdir().expect("temp dir");
    let address_file = dir.path().join("api-address");
    let mut child = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(config(dir.path(), true))
        .current_dir(dir.path())
        .env("DATAFLOW_E2E_TOKEN", TOKEN)
        .env("DATAFLOW_API_ADDRESS_FILE", &address_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start processor");
    let address = wait_for("the API's address", || {
        std::fs::read_to_string(&address_file).ok()
    });
    let admin = Admin {
        binary: admin_binary,
        url: format!("http://{address}"),
    };

    let ids = wait_for("three checkpoints", || {
        let ids = admin.ids();
        (ids.len() >= 3).then_some(ids)
    });
    let (older, newer) = (ids[0], ids[2]);
    // The list names the checkpoints in the checkpoint directory: every one stored before it
    // was asked for, and none that is not stored after (the run retains all it takes).
    let checkpoint_dir = dir.path().join("checkpoints");
    let stored_before = stored_ids(&checkpoint_dir);
    let rows = admin.json(&["checkpoints", "list"]);
    let rows = rows.as_array().expect("a list");
    let listed: BTreeSet<u64> = rows
        .iter()
        .map(|row| row["id"].as_u64().expect("an id"))
        .collect();
    // Each checkpoint this run took records how long it took, from its trigger.
    for row in rows {
        assert!(row["duration_ms"].is_u64(), "no duration in {row}");
    }
    let table = admin.ok(&["checkpoints", "list"]);
    let stored_after = stored_ids(&checkpoint_dir);
    assert!(
        stored_before.is_subset(&listed) && listed.is_subset(&stored_after),
        "stored {stored_before:?}, listed {listed:?}, then stored {stored_after:?}"
    );
    assert!(
        ids.iter().all(|id| listed.contains(id)),
        "{ids:?} {listed:?}"
    );
    // The table: a row per listed checkpoint, by id, valid.
    for id in &stored_before {
        assert!(
            table
                .lines()
                .any(|line| line.trim_start().starts_with(&format!("{id} "))
                    && line.trim_end().ends_with("valid")),
            "checkpoint {id} not listed as valid:\n{table}"
        );
    }
    let manifest = admin.json(&["checkpoints", "show", &older.to_string()]);
    assert_eq!(manifest["id"], older);
    assert!(manifest["duration_ms"].is_u64(), "{manifest}");
    assert_eq!(manifest["sources"][0]["name"], "bids", "{manifest}");
    assert_eq!(manifest["sources"].as_array().map(Vec::len), Some(1));
    let operators = manifest["operators"].as_array().expect("operators");
    assert_eq!(
        operators.len(),
        1,
        "only the window keeps state: {manifest}"
    );
    let operator = operators[0]["name"]
        .as_str()
        .expect("a window operator")
        .to_string();
    assert_eq!(operator, "steps[1].window", "{manifest}");
    assert_eq!(operators[0]["kind"], "window", "{manifest}");
    let verified = admin.json(&["checkpoints", "verify", &older.to_string()]);
    assert_eq!(verified["id"], older);
    assert_eq!(verified["verified"], true);
    assert_eq!(verified["sha256"], manifest["payload_sha256"], "{verified}");
    assert_eq!(
        admin
            .ok(&["checkpoints", "verify", &older.to_string()])
            .trim(),
        format!(
            "checkpoint {older}: ok (sha256 {})",
            manifest["payload_sha256"].as_str().expect("a digest")
        )
    );

    // Diff: the source moved forward, keys are accounted for by the key counts.
    let diff = admin.json(&[
        "checkpoints",
        "diff",
        &older.to_string(),
        &newer.to_string(),
    ]);
    let offsets = &diff["summary"]["partitions"][0]["offset"];
    assert!(offsets[0].as_u64() < offsets[1].as_u64(), "{diff}");
    let keys = &diff["keys"][0];
    let count = |id: u64| {
        admin.json(&["checkpoints", "show", &id.to_string()])["operators"][0]["key_count"]
            .as_u64()
            .expect("key count")
    };
    let (before, after) = (count(older) as usize, count(newer) as usize);
    let len = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
    assert_eq!(
        before + len(&keys["added"]) - len(&keys["removed"]),
        after,
        "{diff}"
    );
    let diff_table = admin.ok(&[
        "checkpoints",
        "diff",
        &older.to_string(),
        &newer.to_string(),
    ]);
    assert!(
        diff_table.starts_with(&format!("checkpoint {older} -> {newer}\n")),
        "{diff_table}"
    );
    assert!(
        diff_table.contains(&format!(
            "keys added {}, removed {},",
            len(&keys["added"]),
            len(&keys["removed"])
        )),
        "{diff_table}"
    );
    assert!(
        diff_table.contains(&format!(
            "  source bids partition {}: offset {} -> {}",
            diff["summary"]["partitions"][0]["partition"]
                .as_str()
                .expect("a partition name"),
            offsets[0],
            offsets[1]
        )),
        "{diff_table}"
    );

    // State: every listed key can be looked up, and its windows hold counts.
    let page = admin.json(&[
        "state",
        "keys",
        "--checkpoint",
        &older.to_string(),
        "--operator",
        &operator,
        "--limit",
        "1000",
    ]);
    assert_eq!(page["total"].as_u64(), Some(before as u64));
    // The keys are distinct auctions of the input: each has results in the complete output.
    let page_keys: Vec<String> = page["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key.to_string())
        .collect();
    assert_eq!(page_keys.len(), before.min(1000), "{page}");
    assert_eq!(
        page_keys.iter().collect::<BTreeSet<_>>().len(),
        page_keys.len(),
        "{page}"
    );
    for key in &page_keys {
        assert!(
            expected_counts.contains_key(key),
            "key {key} is not an auction of the input"
        );
    }
    let key = page_keys[0].clone();
    let value = admin.json(&[
        "state",
        "get",
        "--checkpoint",
        &older.to_string(),
        "--operator",
        &operator,
        "--key",
        &key,
    ]);
    assert_eq!(value["key"].to_string(), key);
    let windows = value["value"]["windows"].as_array().expect("windows");
    assert!(!windows.is_empty());
    // The bids counted so far for the key (the `count` aggregate, `n` in the output): some, and
    // no more than the whole run counts for it.
    let counted: u64 = windows
        .iter()
        .map(|window| {
            let n = window["aggregates"]
                .as_array()
                .expect("aggregates")
                .iter()
                .find(|aggregate| aggregate["aggregate"] == "count")
                .unwrap_or_else(|| panic!("no count in {value}"));
            n["value"].as_u64().expect("a count")
        })
        .sum();
    assert!(
        (1..=expected_counts[&key]).contains(&counted),
        "key {key}: {counted} bids in the checkpoint, {} in the whole run: {value}",
        expected_counts[&key]
    );

    // Trigger and wait: the new checkpoint is listed and verifies.
    let triggered = admin.json(&["checkpoints", "trigger", "--wait"]);
    assert_eq!(triggered["state"], "completed", "{triggered}");
    let triggered_id = triggered["id"].as_u64().expect("id");
    assert!(admin.ids().contains(&triggered_id));
    let status = admin.json(&["status"]);
    assert_eq!(status["pipeline"], "e2e", "{status}");
    assert_eq!(status["state"], "running");
    assert!(status["last_checkpoint"].as_u64() >= Some(triggered_id));
    let steps: Vec<(String, String)> = status["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .map(|op| (op["name"].to_string(), op["kind"].to_string()))
        .collect();
    assert_eq!(
        steps,
        [
            (
                r#""steps[0].key_by""#.to_string(),
                r#""key_by""#.to_string()
            ),
            (
                r#""steps[1].window""#.to_string(),
                r#""window""#.to_string()
            ),
        ],
        "{status}"
    );
    let read = status["events_read"].as_u64().expect("events read");
    assert!(read <= 40_000, "{status}");
    let status_table = admin.ok(&["status"]);
    assert!(
        status_table.starts_with("pipeline e2e: running\n"),
        "{status_table}"
    );
    assert!(
        status_table.lines().any(|line| line
            .split_whitespace()
            .take(2)
            .eq(["steps[1].window", "window"])),
        "{status_table}"
    );
    let marks = admin.json(&["watermarks"]);
    let sources: Vec<&str> = marks["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|source| source["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(sources, ["bids"], "{marks}");
    assert_eq!(marks["holding_back"], "bids");
    let marks_table = admin.ok(&["watermarks"]);
    assert!(
        marks_table.lines().any(|line| line.starts_with("bids ")),
        "{marks_table}"
    );
    assert!(marks_table.contains("held back by bids"), "{marks_table}");

    // A dry run changes nothing and says what would be restored.
    let dry = admin.json(&["checkpoints", "restore", &older.to_string(), "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        dry["operators"][0]["key_count"].as_u64(),
        Some(before as u64)
    );
    assert_eq!(admin.json(&["status"])["restores"], 0);

    // Restore the oldest checkpoint on the running processor.
    let restored = admin.json(&["checkpoints", "restore", &older.to_string()]);
    assert_eq!(restored["dry_run"], false);
    assert_eq!(restored["checkpoint"], older);
    let status = admin.json(&["status"]);
    assert_eq!(status["restored_from"], older, "{status}");
    assert_eq!(status["restores"], 1);
    // The next checkpoint continues from the restored one's position.
    let next = admin.json(&["checkpoints", "trigger", "--wait"]);
    let next_id = next["id"].as_u64().expect("id");
    assert!(next_id > triggered_id);
    let moved = admin.json(&[
        "checkpoints",
        "diff",
        &older.to_string(),
        &next_id.to_string(),
    ]);
    assert!(moved["summary"]["partitions"][0]["offset"][1].as_u64() >= offsets[0].as_u64());

    // The run ends with its input; the committed output is exactly the uninterrupted run's:
    // what followed the restore came from the checkpoint's state and positions.
    let status = child.wait().expect("wait for processor");
    assert!(status.success());
    let output =
        dataflow_connectors::parts::read_committed(&dir.path().join("out")).expect("output");
    assert_eq!(output, expected);
}
