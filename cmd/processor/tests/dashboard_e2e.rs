//! The dashboard end to end, in a real browser: a processor on generated data with `api:` and
//! checkpoints, `/ui` opened in headless Chromium (Debian's, driven by Playwright:
//! `ui/e2e/dashboard.mjs`). A wrong token shows a clear message and no data; with the right one
//! the graph shows every node, the rates move, a checkpoint is listed, verified and diffed, an
//! API failure is shown in words, and a restore through the page (dry run, confirm) resumes the
//! pipeline from the checkpoint, which `admin status` then reports. Screenshots of every view
//! are saved under `target/ui-artifacts/`.
//!
//! `scripts/ui-test-deps.sh --browser` installs what it needs (chromium from apt, the npm
//! packages of `ui/package-lock.json`), each only when missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod admin_bin;
use admin_bin::admin_binary;

const TOKEN: &str = "dashboard-e2e-t0ken";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/`, from the processor binary's place (`target/debug/processor`).
fn target_dir() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_processor"));
    binary
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Kills the processor however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

const CONFIG: &str = "name: dashboard-e2e
sources:
  - name: bids
    type: generator
    rate: 4000
    watermark: { out_of_orderness: 2s }
steps:
  - filter: payload.price > 0
  - key_by: auction
  - window: { type: tumbling, size: 2s, aggregates: { n: count, top: max(price) } }
sinks:
  - { type: parts, path: out }
dead_letters: { type: file, path: dead.jsonl }
checkpoint: { dir: checkpoints, interval: 500ms, retain: 1000 }
api: { listen: \"127.0.0.1:0\", token_env: DATAFLOW_DASHBOARD_TOKEN }
";

#[test]
fn the_dashboard_shows_the_pipeline_and_restores_a_checkpoint_in_a_browser() {
    let admin_binary = admin_binary();
    let deps = Command::new("bash")
        .arg(workspace().join("scripts/ui-test-deps.sh"))
        .arg("--browser")
        .status()
        .expect("run scripts/ui-test-deps.sh");
    assert!(deps.success(), "scripts/ui-test-deps.sh --browser failed");

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("pipeline.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    let address_file = dir.path().join("api-address");
    let processor = Running(
        Command::new(env!("CARGO_BIN_EXE_processor"))
            .args(["run", "--no-progress", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .env("DATAFLOW_DASHBOARD_TOKEN", TOKEN)
            .env("DATAFLOW_API_ADDRESS_FILE", &address_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start processor"),
    );
    let address = wait_for("the API's address", || {
        std::fs::read_to_string(&address_file).ok()
    });
    let url = format!("http://{address}");

    let artifacts = target_dir().join("ui-artifacts");
    let output = Command::new("node")
        .arg(workspace().join("ui/e2e/dashboard.mjs"))
        .args(["--url", &url, "--token", TOKEN, "--nodes"])
        .arg("bids,steps[0].filter,steps[1].key_by,steps[2].window,sinks[0]")
        .arg("--out")
        .arg(&artifacts)
        .output()
        .expect("run ui/e2e/dashboard.mjs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the dashboard's checks failed:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("bad report from dashboard.mjs: {e}\n{stderr}"));
    let restored = report["restored"].as_u64().expect("a restored id");
    let screenshots = report["screenshots"].as_array().expect("screenshots");
    assert_eq!(screenshots.len(), 8, "{report}");
    for shot in screenshots {
        let path = PathBuf::from(shot.as_str().expect("a path"));
        let bytes = std::fs::read(&path).expect("a screenshot");
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is no PNG",
            path.display()
        );
    }

    // `admin status` says the running pipeline was restored from the checkpoint the page chose.
    let admin = Command::new(&admin_binary)
        .args(["--output", "json", "status"])
        .env("DATAFLOW_URL", &url)
        .env("DATAFLOW_TOKEN", TOKEN)
        .output()
        .expect("run admin");
    assert!(
        admin.status.success(),
        "admin status failed: {}",
        String::from_utf8_lossy(&admin.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&admin.stdout).expect("status JSON");
    assert_eq!(status["restored_from"], restored, "{status}");
    assert_eq!(status["restores"], 1, "{status}");
    assert_eq!(status["state"], "running", "{status}");
    drop(processor);
}
