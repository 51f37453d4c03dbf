//! Issue 10, item 1, end to end over real HTTP on loopback: restores of the oldest retained
//! checkpoint and triggers, 20 at a time, against a processor taking a checkpoint every 100 ms
//! and keeping 3. Every answer is a real HTTP answer with 200/202, 404 or 409 (never 500, never a
//! dropped connection), the processor stays up, ends cleanly with its input, and its committed
//! output is the uninterrupted run's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "r4ce-t0ken";
/// Parallel requests per round: half restores, half triggers.
const PARALLEL: usize = 20;
const ROUNDS: usize = 3;

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

fn config(dir: &Path, live: bool) -> PathBuf {
    // Long enough (12 s at this rate) for every round to end well before the input does.
    let rate = if live { "    rate: 5000\n" } else { "" };
    let rest = if live {
        "checkpoint: { dir: checkpoints, interval: 100ms, retain: 3 }\napi: { listen: \"127.0.0.1:0\", token_env: DATAFLOW_RACE_TOKEN }\n"
    } else {
        ""
    };
    let text = format!(
        "name: race\nsources:\n  - name: bids\n    type: generator\n    count: 60000\n{rate}    watermark: {{ out_of_orderness: 2s }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 2s, aggregates: {{ n: count, top: max(price) }} }}\nsinks:\n  - {{ type: parts, path: out }}\ndead_letters: {{ type: file, path: dead.jsonl }}\n{rest}"
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// An HTTP answer's status code and body, or why none came (a dropped connection).
type Answer = Result<(u16, String), String>;

/// One request on a connection of its own.
fn http(address: &str, method: &str, path: &str, body: &str) -> Answer {
    let mut stream =
        TcpStream::connect(address).map_err(|e| format!("{method} {path}: connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{method} {path}: write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("{method} {path}: read: {e}"))?;
    let code = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no HTTP answer: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Polls `condition` until it holds, up to a generous deadline (the machine may be loaded).
fn wait_for<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The ids of the verified checkpoints the API lists, oldest first.
fn listed(address: &str) -> Result<Vec<u64>, String> {
    let (code, body) = http(address, "GET", "/api/v1/checkpoints", "")?;
    if code != 200 {
        return Err(format!("list: {code} {body}"));
    }
    let rows: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(rows
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|row| row["verified"] == true)
                .filter_map(|row| row["id"].as_u64())
                .collect()
        })
        .unwrap_or_default())
}

fn state(address: &str) -> Option<String> {
    let (code, body) = http(address, "GET", "/api/v1/status", "").ok()?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    (code == 200).then(|| status["state"].as_str().unwrap_or("").to_string())
}

#[test]
fn parallel_restores_of_the_oldest_checkpoint_and_triggers_never_take_the_processor_down() {
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

    let dir = tempfile::tempdir().expect("temp dir");
    let address_file = dir.path().join("api-address");
    let mut child = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(config(dir.path(), true))
        .current_dir(dir.path())
        .env("DATAFLOW_RACE_TOKEN", TOKEN)
        .env("DATAFLOW_API_ADDRESS_FILE", &address_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start processor");
    let address = wait_for("the API's address", || {
        std::fs::read_to_string(&address_file).ok()
    });
    wait_for("three checkpoints", || {
        listed(&address).ok().filter(|ids| ids.len() >= 3)
    });

    let mut answers: Vec<(String, Answer)> = Vec::new();
    for _ in 0..ROUNDS {
        wait_for("the pipeline to run", || {
            if let Some(exit) = child.try_wait().expect("processor state") {
                let mut stderr = String::new();
                if let Some(pipe) = child.stderr.as_mut() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("the processor exited ({exit}) after {answers:?}:\n{stderr}");
            }
            (state(&address).as_deref() == Some("running")).then_some(())
        });
        let threads: Vec<_> = (0..PARALLEL)
            .map(|index| {
                let address = address.clone();
                std::thread::spawn(move || {
                    if index % 2 == 0 {
                        let oldest = match listed(&address) {
                            Ok(ids) => ids.first().copied().unwrap_or(1),
                            Err(error) => return ("list".to_string(), Err(error)),
                        };
                        let path = format!("/api/v1/checkpoints/{oldest}/restore");
                        (
                            format!("restore {oldest}"),
                            http(&address, "POST", &path, "{}"),
                        )
                    } else {
                        let answer = http(&address, "POST", "/api/v1/checkpoints", "");
                        ("trigger".to_string(), answer)
                    }
                })
            })
            .collect();
        answers.extend(
            threads
                .into_iter()
                .map(|t| t.join().expect("request thread")),
        );
        assert!(
            child.try_wait().expect("processor state").is_none(),
            "the processor exited during the requests: {answers:?}"
        );
    }

    let mut restored = 0;
    for (what, answer) in &answers {
        let (code, body) = answer
            .as_ref()
            .unwrap_or_else(|error| panic!("{what}: no answer: {error}"));
        let allowed: &[u16] = if what == "trigger" {
            &[202, 409]
        } else {
            &[200, 404, 409]
        };
        assert!(allowed.contains(code), "{what}: {code} {body}");
        if *code == 200 {
            restored += 1;
        }
        if [404, 409].contains(code) {
            let error: serde_json::Value = serde_json::from_str(body).expect("an error body");
            assert!(
                ["not_found", "not_running"].contains(&error["code"].as_str().unwrap_or("")),
                "{what}: {code} {body}"
            );
        }
    }
    let mut tally = std::collections::BTreeMap::new();
    for (what, answer) in &answers {
        let kind = what.split(' ').next().unwrap_or("").to_string();
        let code = answer.as_ref().map(|(code, _)| *code).unwrap_or(0);
        *tally.entry((kind, code)).or_insert(0) += 1;
    }
    eprintln!("answers (request, status): {tally:?}");
    assert!(restored >= 1, "no restore went through: {answers:?}");
    // Each restore that answered 200 is counted, and the pipeline still runs (or restarts).
    let status: serde_json::Value = serde_json::from_str(
        &http(&address, "GET", "/api/v1/status", "")
            .expect("status")
            .1,
    )
    .expect("status body");
    assert_eq!(status["restores"], restored, "{status}");
    assert!(
        ["running", "restoring", "starting"].contains(&status["state"].as_str().unwrap_or("")),
        "{status}"
    );

    // The run ends with its input and exits 0; the committed output is the uninterrupted run's.
    let output = child.wait_with_output().expect("wait for processor");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    let found =
        dataflow_connectors::parts::read_committed(&dir.path().join("out")).expect("output");
    assert!(
        found == expected,
        "the committed output differs from the uninterrupted run's"
    );
}
