//! A run that fails while its API serves an `http` source: the failure shows at once (ingest
//! refused with 503, `/ready` 503 and the status `failed`, each with the reason), and the
//! processor exits 1 by itself, the reason on its standard error.

#![cfg(unix)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

/// Kills the processor if the test ends before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `condition` until it holds, up to a generous deadline (the machine may be loaded).
fn wait_for<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request over a plain socket: status and body.
fn http(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the API");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
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

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_sink_failure_with_an_http_source_fails_the_run_visibly_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(
        &config,
        "name: failing\nsources:\n  - name: in\n    type: http\n    watermark: { out_of_orderness: 1s }\nsteps:\n  - key_by: user\n  - window: { type: tumbling, size: 1s, aggregates: { n: count } }\nsinks:\n  - { type: parts, path: out }\ndead_letters: { type: file, path: dead.jsonl }\ncheckpoint: { dir: checkpoints, interval: 100ms }\napi: { listen: \"127.0.0.1:0\" }\n",
    )
    .expect("write config");
    let address_file = dir.path().join("api-address");
    let stderr_path = dir.path().join("stderr.txt");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Running(
        processor()
            .args(["run", "--no-progress", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env("DATAFLOW_API_ADDRESS_FILE", &address_file)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start processor"),
    );
    let address = wait_for("the API's address", || {
        std::fs::read_to_string(&address_file).ok()
    });

    // Events reach the sink: its directory gets a part.
    let out = dir.path().join("out");
    let mut time = 0;
    wait_for("the sink's first part", || {
        time += 500;
        let event = format!("{{\"timestamp\":{time},\"user\":\"u{}\"}}\n", time % 3);
        let (status, body) = http(&address, "POST", "/ingest", &event);
        assert_eq!(status, 202, "{body}");
        names(&out)
            .iter()
            .any(|name| name.starts_with("part-") || name.starts_with(".pending-"))
            .then_some(())
    });
    // Gone at once (a rename is atomic; deleting races with the sink creating its next file).
    let moved = dir.path().join("out-removed");
    std::fs::rename(&out, &moved).expect("take the sink's directory away");
    let _ = std::fs::remove_dir_all(&moved);

    // The next checkpoint's commit finds the directory gone: the run fails, and says why.
    let (_, ready) = wait_for("`/ready` to answer 503", || {
        let (status, body) = http(&address, "GET", "/ready", "");
        (status == 503).then_some((status, body))
    });
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("an error body");
    assert_eq!(ready["code"], "failed", "{ready}");
    let reason = ready["message"].as_str().expect("a message").to_string();
    assert!(
        reason.starts_with("the pipeline failed: sink sinks[0] (parts) failed: "),
        "{reason}"
    );
    assert_eq!(
        reason.matches("No such file or directory").count(),
        1,
        "{reason}"
    );

    let (status, body) = http(&address, "GET", "/api/v1/status", "");
    assert_eq!(status, 200, "{body}");
    let status_body: serde_json::Value = serde_json::from_str(&body).expect("a status");
    assert_eq!(status_body["state"], "failed", "{body}");
    let error = status_body["error"]
        .as_str()
        .expect("the status names the error");
    assert!(
        error.starts_with("sink sinks[0] (parts) failed: "),
        "{body}"
    );

    let (status, body) = http(
        &address,
        "POST",
        "/ingest",
        "{\"timestamp\":99000,\"user\":\"late\"}\n",
    );
    assert_eq!(status, 503, "{body}");
    let refusal: serde_json::Value = serde_json::from_str(&body).expect("an error body");
    assert_eq!(refusal["code"], "failed", "{body}");
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|m| m.contains("sink sinks[0] (parts) failed: ")),
        "{body}"
    );

    // It exits by itself, with 1.
    let exit = wait_for("the processor to exit", || {
        child.0.try_wait().expect("wait")
    });
    assert_eq!(exit.code(), Some(1));
    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: sink sinks[0] (parts) failed: "),
        "{stderr}"
    );
    assert_eq!(
        last.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}
