//! `admin --dir`: reading checkpoints with no processor running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dataflow_checkpoint::{
    Checkpoint, CheckpointId, CheckpointStorage, LocalStorage, OperatorState, PartitionState,
    SourceState,
};

fn admin(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_admin"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run admin")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The checkpoint the processor's fixture test restores, written by an earlier build.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../processor/tests/fixtures/checkpoint-v1/checkpoints")
}

fn copy_fixture(to: &Path) {
    for entry in std::fs::read_dir(fixture()).expect("fixture").flatten() {
        let target = to.join(entry.file_name());
        std::fs::create_dir_all(&target).expect("create");
        for file in std::fs::read_dir(entry.path())
            .expect("checkpoint")
            .flatten()
        {
            std::fs::copy(file.path(), target.join(file.file_name())).expect("copy");
        }
    }
}

#[test]
fn list_show_and_verify_the_committed_fixture() {
    let list = admin(&fixture(), &["checkpoints", "list"]);
    let (stdout, stderr) = text(&list);
    assert!(list.status.success(), "{stderr}");
    assert!(
        stdout
            .lines()
            .nth(1)
            .is_some_and(|row| row.trim_start().starts_with('4') && row.ends_with("valid")),
        "{stdout}"
    );

    let json = admin(&fixture(), &["--output", "json", "checkpoints", "list"]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(rows[0]["id"], 4);
    assert_eq!(rows[0]["verified"], true);

    let show = admin(&fixture(), &["checkpoints", "show", "4"]);
    let (stdout, stderr) = text(&show);
    assert!(show.status.success(), "{stderr}");
    assert!(
        stdout.contains("operator steps[2].window (window): 50 keys"),
        "{stdout}"
    );
    assert!(
        stdout.contains("source clicks partition generator: offset 17000"),
        "{stdout}"
    );

    let verify = admin(&fixture(), &["checkpoints", "verify", "4"]);
    assert!(verify.status.success());
    assert!(text(&verify).0.starts_with("checkpoint 4: ok (sha256 "));
}

#[test]
fn corruption_bad_ids_and_unknown_ids_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_fixture(dir.path());
    let data = dir.path().join("00000000000000000004/data.bin");
    let mut bytes = std::fs::read(&data).expect("data");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&data, bytes).expect("damage");

    let verify = admin(dir.path(), &["checkpoints", "verify", "4"]);
    let (_, stderr) = text(&verify);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        stderr.starts_with("error: ") && stderr.contains("checksum mismatch"),
        "{stderr}"
    );
    let list = admin(dir.path(), &["checkpoints", "list"]);
    assert!(text(&list).0.contains("invalid: "), "{}", text(&list).0);

    for bad in ["../x", "%2e%2e", "4/../../etc"] {
        let output = admin(dir.path(), &["checkpoints", "show", bad]);
        assert_eq!(output.status.code(), Some(1), "{bad}");
        assert!(
            text(&output).1.contains("invalid checkpoint id"),
            "{bad}: {}",
            text(&output).1
        );
    }
    let unknown = admin(dir.path(), &["checkpoints", "show", "99"]);
    assert_eq!(unknown.status.code(), Some(1));
    // Reading never changes the directory.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn diff_shows_how_operators_sources_and_the_watermark_moved() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = LocalStorage::new(dir.path(), 5).expect("storage");
    let checkpoint = |id: u64, offset: u64, keys: u64, watermark: i64| Checkpoint {
        id: CheckpointId(id),
        created_at_ms: 1_700_000_000_000 + id as i64,
        pipeline_fingerprint: "f".into(),
        sources: vec![SourceState {
            name: "bids".into(),
            partitions: vec![PartitionState {
                name: "bids.jsonl".into(),
                offset,
                line: offset / 100,
                watermark,
            }],
        }],
        operators: vec![OperatorState {
            name: "steps[1].window".into(),
            kind: "window".into(),
            key_count: keys,
            state: vec![7; keys as usize],
        }],
        watermark,
    };
    storage.save(&checkpoint(1, 1_000, 3, 5_000)).expect("save");
    storage
        .save(&checkpoint(2, 9_000, 8, 12_000))
        .expect("save");
    let diff = admin(dir.path(), &["checkpoints", "diff", "1", "2"]);
    let (stdout, stderr) = text(&diff);
    assert!(diff.status.success(), "{stderr}");
    // These states are not real window snapshots: the key-level diff says so, and the rest
    // still shows.
    let (compared, summary): (Vec<&str>, Vec<&str>) = stdout
        .lines()
        .partition(|line| line.starts_with("    keys not compared: operator `steps[1].window`"));
    assert_eq!(compared.len(), 1, "{stdout}");
    assert_eq!(
        summary.join("\n") + "\n",
        "checkpoint 1 -> 2\n  watermark: 5000 -> 12000\n  operator steps[1].window: keys 3 -> 8, bytes 3 -> 8\n  source bids partition bids.jsonl: offset 1000 -> 9000, watermark 5000 -> 12000\n"
    );
}

/// `state keys` and `state get` read the committed fixture with no processor: every key of
/// the window operator, and one key's windows with their aggregates (golden values).
#[test]
fn offline_state_reads_the_fixture() {
    let dir = fixture();
    let dir = dir.to_string_lossy();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_admin"))
            .args([&["--dir", &dir, "--output", "json"][..], args].concat())
            .output()
            .expect("run admin");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("json")
    };
    let page = run(&[
        "state",
        "keys",
        "--checkpoint",
        "4",
        "--operator",
        "steps[2].window",
        "--limit",
        "1000",
    ]);
    assert_eq!(page["total"], 50);
    assert_eq!(page["keys"][0], "u01");
    assert_eq!(page["next_offset"], serde_json::Value::Null);
    let second = run(&[
        "state",
        "keys",
        "--checkpoint",
        "4",
        "--operator",
        "steps[2].window",
        "--offset",
        "48",
        "--limit",
        "5",
    ]);
    assert_eq!(second["keys"].as_array().map(Vec::len), Some(2));
    for key in ["u01", "\"u01\""] {
        let value = run(&[
            "state",
            "get",
            "--checkpoint",
            "4",
            "--operator",
            "steps[2].window",
            "--key",
            key,
        ]);
        let windows = value["value"]["windows"].as_array().expect("windows");
        assert_eq!(windows.len(), 5);
        assert_eq!(windows[0]["start"], 1704067195000i64);
        assert_eq!(
            windows[0]["aggregates"][0],
            serde_json::json!({"aggregate": "count", "value": 38})
        );
        assert_eq!(windows[1]["aggregates"][0]["value"], 210);
    }
    let same = run(&["checkpoints", "diff", "4", "4"]);
    assert_eq!(same["keys"][0]["added"], serde_json::json!([]));
    assert_eq!(same["keys"][0]["changed"], serde_json::json!([]));
    // Unknown operator or key: one line, non-zero exit.
    for (args, says) in [
        (
            vec![
                "state",
                "get",
                "--checkpoint",
                "4",
                "--operator",
                "nope",
                "--key",
                "u01",
            ],
            "holds no state for operator `nope`",
        ),
        (
            vec![
                "state",
                "get",
                "--checkpoint",
                "4",
                "--operator",
                "steps[2].window",
                "--key",
                "zz",
            ],
            "holds no key \"zz\"",
        ),
        (
            vec!["checkpoints", "restore", "4"],
            "needs a running processor",
        ),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_admin"))
            .args([&["--dir", &dir][..], &args[..]].concat())
            .output()
            .expect("run admin");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// An IO error is printed with its OS cause once: the checkpoint error's message already holds
/// it, and it is also the error's source.
#[test]
fn an_io_error_names_its_cause_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_fixture(dir.path());
    let data = dir.path().join("00000000000000000004/data.bin");
    std::fs::remove_file(&data).expect("remove data file");
    std::fs::create_dir(&data).expect("a directory where the data file was");
    for args in [["checkpoints", "show", "4"], ["checkpoints", "verify", "4"]] {
        let output = admin(dir.path(), &args);
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("data.bin"), "{args:?}: {stderr}");
        assert_eq!(
            stderr.matches("(os error 21)").count(),
            1,
            "{args:?}: {stderr}"
        );
    }
}
