//! The `processor` binary end to end, as a user runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

/// Writes a config file into `dir`.
fn write_config(dir: &Path, name: &str, text: impl AsRef<str>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text.as_ref()).expect("write config");
    path
}

/// Asks a running processor to stop, as `kill` or a service manager does.
#[cfg(unix)]
fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
}

/// The shipped config, with its input taken from the repository and its outputs in `dir`.
fn shipped_config_in(dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(root().join("configs/pipeline.yaml")).expect("shipped config");
    let data = root().join("data/clicks.jsonl");
    let text = text
        .replace("../data/clicks.jsonl", &data.display().to_string())
        .replace("../out/", &format!("{}/", dir.display()));
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn run_on_the_shipped_sample_prints_the_golden_windows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = shipped_config_in(dir.path());
    let output = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .output()
        .expect("run processor");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "processor failed: {stderr}");
    let golden = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/user_analytics.jsonl"),
    )
    .expect("golden file");
    assert_eq!(String::from_utf8_lossy(&output.stdout), golden);
    assert!(
        stderr.contains("read 306 events, emitted 20, late 2, dead-lettered 3"),
        "unexpected summary: {stderr}"
    );

    let dead =
        std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).expect("dead letters");
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let reasons: Vec<(u64, &str)> = lines
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap_or(0),
                r["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0].0, 62);
    assert!(reasons[0].1.contains("invalid JSON"), "{reasons:?}");
    assert_eq!(reasons[1].0, 153);
    assert!(reasons[1].1.contains("invalid timestamp"), "{reasons:?}");
    assert_eq!(
        reasons[2],
        (
            245,
            "line 245: field `duration_ms`: expected int, found string \"slow\""
        )
    );

    let late = std::fs::read_to_string(dir.path().join("late-events.jsonl")).expect("late events");
    let ids: Vec<String> = late
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["record"]["id"].to_string()
        })
        .collect();
    assert_eq!(ids, vec!["\"clicks-late-1\"", "\"clicks-late-2\""]);
}

#[test]
fn check_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("x.jsonl"), "").expect("write input");
    let config = write_config(dir.path(), "bad.yaml", "sources:\n  - name: s\n    type: file\n    path: x.jsonl\n    format: { schema: { n: int } }\nsteps:\n  - filter: m > 1\n  - window: { type: tumbling, size: -1s, aggregates: { c: count } }\nsinks:\n  - type: stdout\n");
    let output = processor()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run processor");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(stderr.contains("line 7:13: steps[0].filter"), "{stderr}");
    assert!(
        stderr.contains("line 8:37: steps[1].window.size: invalid duration `-1s`"),
        "{stderr}"
    );
}

/// Paths a run could not use fail `check` and `run` alike, before anything starts: exit 2, every
/// problem once with its place, the system's cause once, and nothing created on disk.
#[test]
fn unusable_paths_fail_check_and_run_with_exit_2_creating_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().display();
    std::fs::write(dir.path().join("file.txt"), "not a directory").expect("write file");
    let config = write_config(
        dir.path(),
        "paths.yaml",
        "sources:\n  - name: s\n    type: file\n    path: missing.jsonl\nsteps:\n  - key_by: payload.user\n  - window: { type: tumbling, size: 1s, aggregates: { n: count } }\nsinks:\n  - type: parts\n    path: file.txt/parts\ndead_letters: { type: file, path: file.txt/dead.jsonl }\nlate_events: { type: file, path: out/late.jsonl }\ncheckpoint: { dir: file.txt }\nstate: { backend: sled, dir: state }\n",
    );
    let expected = [
        format!("line 4:11: sources[0].path: cannot read {d}/missing.jsonl: No such file or directory (os error 2)"),
        format!("line 10:11: sinks[0].path: cannot create {d}/file.txt/parts: {d}/file.txt is not a directory"),
        format!("line 11:35: dead_letters.path: cannot create {d}/file.txt/dead.jsonl: {d}/file.txt is not a directory"),
        format!("line 13:20: checkpoint.dir: {d}/file.txt is not a directory"),
    ];
    for command in ["check", "run"] {
        let output = processor()
            .args([command, "--config"])
            .arg(&config)
            .output()
            .expect("run processor");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert_eq!(output.stdout, b"", "{command}");
        let mut lines: Vec<&str> = stderr.lines().map(str::trim).collect();
        assert_eq!(
            lines.remove(0),
            "error: invalid pipeline: 4 problems",
            "{command}: {stderr}"
        );
        assert_eq!(lines, expected, "{command}");
        assert_eq!(
            stderr.matches("No such file or directory").count(),
            1,
            "{command}: {stderr}"
        );
        let mut entries: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            ["file.txt", "paths.yaml"],
            "{command} created something"
        );
    }
}

/// A `--config` that cannot be read is one line naming it, exit 2, for `check` and `run`.
#[test]
fn a_missing_config_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("nope.yaml");
    for command in ["check", "run"] {
        let output = processor()
            .args([command, "--config"])
            .arg(&config)
            .output()
            .expect("run processor");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert_eq!(
            stderr,
            format!(
                "error: cannot read config {}: No such file or directory (os error 2)\n",
                config.display()
            ),
            "{command}"
        );
    }
}

/// An error of a run gives its system cause once: reading `/proc/self/mem` from its start fails
/// with EIO once the run has started.
#[cfg(target_os = "linux")]
#[test]
fn a_read_error_of_a_run_names_its_cause_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        "mem.yaml",
        "sources:\n  - name: s\n    type: file\n    path: /proc/self/mem\nsinks:\n  - type: stdout\ndead_letters: { type: file, path: dead.jsonl }\n",
    );
    let output = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .output()
        .expect("run processor");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let error = stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert_eq!(
        error,
        "error: source s: cannot read /proc/self/mem: Input/output error (os error 5)"
    );
}

#[test]
fn generated_bids_run_through_a_benchmark_workload() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bids = dir.path().join("bids.jsonl");
    let status = processor()
        .args(["generate", "--profile", "bids", "--count", "20000", "--out"])
        .arg(&bids)
        .status()
        .expect("run generate");
    assert!(status.success());
    let text = std::fs::read_to_string(root().join("configs/bench/w2-tumbling.yaml"))
        .expect("bench config");
    let text = text
        .replace("../../target/bench/bids.jsonl", &bids.display().to_string())
        .replace(
            "../../target/bench/out/",
            &format!("{}/", dir.path().display()),
        );
    let config = dir.path().join("w2.yaml");
    std::fs::write(&config, text).expect("write config");
    let output = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .output()
        .expect("run processor");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("read 20000 events"), "{stderr}");
    assert!(stderr.contains("late 0, dead-lettered 0"), "{stderr}");
    // Every bid is counted in exactly one tumbling window.
    let results = std::fs::read_to_string(dir.path().join("w2.jsonl")).expect("results");
    let total: u64 = results
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["count"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(total, 20000);
}

/// Ctrl-C or SIGTERM stops cleanly: with `on_stop: fire` the open windows fire, even while the
/// source is blocked reading standard input.
#[cfg(unix)]
#[test]
fn sigterm_stops_cleanly_and_fires_open_windows() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "stdin.yaml", "sources:\n  - name: in\n    type: stdin\n    watermark: { every: 1 }\nsteps:\n  - key_by: user\n  - window: { type: tumbling, size: 10s, aggregates: { n: count } }\nsinks:\n  - { type: stdout, time_format: millis }\ndead_letters: { type: file, path: dead.jsonl }\nruntime: { on_stop: fire }\n");
    let mut child = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start processor");
    let mut stdin = child.stdin.take().expect("stdin");
    for (time, user) in [(1000, "a"), (2000, "b"), (15000, "c")] {
        writeln!(stdin, r#"{{"timestamp":{time},"user":"{user}"}}"#).expect("write event");
    }
    stdin.flush().expect("flush");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // The watermark of the third event fires [0, 10 s): once both results are out, all three
    // events have been processed.
    let mut fired = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read result");
        fired.push(line);
    }
    assert_eq!(
        fired,
        vec![
            "{\"key\":\"a\",\"window_start\":0,\"window_end\":10000,\"n\":1,\"is_update\":false}\n",
            "{\"key\":\"b\",\"window_start\":0,\"window_end\":10000,\"n\":1,\"is_update\":false}\n",
        ]
    );
    sigterm(&child);
    let output = child.wait_with_output().expect("wait for processor");
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read rest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        rest,
        "{\"key\":\"c\",\"window_start\":10000,\"window_end\":20000,\"n\":1,\"is_update\":false}\n"
    );
    assert!(stderr.contains("read 3 events, emitted 3"), "{stderr}");
}

/// A followed file is read as it grows, and the windows its new lines close fire at once.
#[cfg(unix)]
#[test]
fn follow_mode_reads_appended_lines() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("growing.jsonl");
    std::fs::write(
        &input,
        "{\"timestamp\":1000,\"user\":\"a\"}\n{\"timestamp\":15000,\"user\":\"b\"}\n",
    )
    .expect("write input");
    let config = write_config(dir.path(), "follow.yaml", format!(
            "sources:\n  - name: in\n    type: file\n    path: {}\n    follow: true\n    watermark: {{ every: 1 }}\nsteps:\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count }} }}\nsinks:\n  - {{ type: stdout, time_format: millis }}\ndead_letters: {{ type: file, path: dead.jsonl }}\n",
            input.display()
        ));
    let mut child = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start processor");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut next_line = || {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read result");
        line
    };
    assert_eq!(
        next_line(),
        "{\"window_start\":0,\"window_end\":10000,\"n\":1,\"is_update\":false}\n"
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .expect("open input");
    writeln!(file, "{{\"timestamp\":25000,\"user\":\"c\"}}").expect("append");
    file.flush().expect("flush");
    // Only a line read after the append can close [10 s, 20 s).
    assert_eq!(
        next_line(),
        "{\"window_start\":10000,\"window_end\":20000,\"n\":1,\"is_update\":false}\n"
    );
    sigterm(&child);
    let output = child.wait_with_output().expect("wait for processor");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        next_line(),
        "{\"window_start\":20000,\"window_end\":30000,\"n\":1,\"is_update\":false}\n"
    );
}

/// A stop takes a final checkpoint and keeps open windows in it; the next run restores it and
/// ends with exactly the output of a run that was never stopped.
#[cfg(unix)]
#[test]
fn stop_and_restore_give_the_output_of_an_uninterrupted_run() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = |rate: &str, checkpoint: &str| {
        format!(
            "name: restore\nsources:\n  - name: bids\n    type: generator\n    count: 20000\n{rate}    watermark: {{ out_of_orderness: 2s }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 2s, aggregates: {{ n: count, top: max(price) }} }}\nsinks:\n  - type: stdout\ndead_letters: {{ type: file, path: dead.jsonl }}\n{checkpoint}"
        )
    };
    let checkpointed = dir.path().join("checkpointed.yaml");
    std::fs::write(
        &checkpointed,
        pipeline(
            "    rate: 20000\n",
            "checkpoint: { dir: checkpoints, interval: 100ms, retain: 2 }\n",
        ),
    )
    .expect("write config");
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, pipeline("", "")).expect("write config");

    // First run: stopped by SIGTERM once results flow.
    let mut child = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&checkpointed)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start processor");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first result");
    sigterm(&child);
    let mut rest = String::new();
    stdout
        .read_to_string(&mut rest)
        .expect("rest of the results");
    let output = child.wait_with_output().expect("wait for processor");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let first_run = first + &rest;

    // Second run: restores the final checkpoint and runs to the end.
    let second = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&checkpointed)
        .output()
        .expect("run processor");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("restored checkpoint"), "{stderr}");

    let uninterrupted = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&plain)
        .output()
        .expect("run processor");
    assert!(uninterrupted.status.success());
    let expected = String::from_utf8_lossy(&uninterrupted.stdout).into_owned();
    assert!(
        first_run.len() < expected.len(),
        "the first run was not stopped before its end"
    );
    assert_eq!(
        first_run + &String::from_utf8_lossy(&second.stdout),
        expected
    );
}

/// One HTTP/1.1 request over a plain socket: status and body.
fn http(address: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the API");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// The processor serves its API on an ephemeral loopback port: health openly, checkpoints
/// behind the token, and the checkpoints it takes are listed as they complete.
#[cfg(unix)]
#[test]
fn the_api_serves_checkpoints_of_a_running_processor() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "api.yaml", "sources:\n  - name: bids\n    type: generator\n    count: 200000\n    rate: 20000\n    watermark: { out_of_orderness: 2s }\nsteps:\n  - key_by: auction\n  - window: { type: tumbling, size: 10s, aggregates: { n: count } }\nsinks:\n  - { type: parts, path: out }\ndead_letters: { type: file, path: dead.jsonl }\ncheckpoint: { dir: checkpoints, interval: 100ms }\napi: { listen: \"127.0.0.1:0\", token_env: DATAFLOW_TEST_TOKEN }\n");
    let mut child = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .env("DATAFLOW_TEST_TOKEN", "t0ken")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start processor");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut address = None;
    let mut line = String::new();
    // The log says where the API listens, then when the first checkpoint completes.
    while stderr.read_line(&mut line).expect("read log") > 0 {
        if let Some(rest) = line.split("address=").nth(1) {
            address = rest.split_whitespace().next().map(str::to_string);
        }
        if line.contains("checkpoint completed") {
            break;
        }
        line.clear();
    }
    let address = address.expect("the API's address in the log");
    // Keep draining the log so the processor never blocks writing it.
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    });
    assert_eq!(
        http(&address, "GET", "/health", None),
        (200, "ok".to_string())
    );
    assert_eq!(http(&address, "GET", "/api/v1/checkpoints", None).0, 401);
    assert_eq!(
        http(&address, "GET", "/api/v1/checkpoints", Some("wrong")).0,
        401
    );
    let (status, body) = http(&address, "GET", "/api/v1/checkpoints", Some("t0ken"));
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).expect("json list");
    let first = rows[0]["id"].as_u64().expect("a checkpoint");
    assert_eq!(rows[0]["verified"], true);
    let (status, body) = http(
        &address,
        "POST",
        &format!("/api/v1/checkpoints/{first}/verify"),
        Some("t0ken"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        http(
            &address,
            "GET",
            "/api/v1/checkpoints/%2e%2e%2fx",
            Some("t0ken")
        )
        .0,
        400
    );
    assert_eq!(
        http(&address, "GET", "/api/v1/checkpoints/999999", Some("t0ken")).0,
        404
    );
    assert_eq!(http(&address, "GET", "/metrics", None).0, 401);
    let (status, text) = http(&address, "GET", "/metrics", Some("t0ken"));
    assert_eq!(status, 200);
    assert!(
        text.contains("dataflow_checkpoints_completed_total"),
        "{text}"
    );
    let read: f64 = text
        .lines()
        .find(|line| line.starts_with("dataflow_source_events_read_total{"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .expect("events read by the source");
    assert!(read > 0.0, "{text}");
    sigterm(&child);
    let status = child.wait().expect("wait for processor");
    assert!(status.success());
    drain.join().expect("log drained");
}
