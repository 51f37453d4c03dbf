//! Memory stays bounded by keys and panes, not by the stream or its output: a sliding window of
//! 60 s by 1 s over 1M generated bids on 1,000 keys (about a million result rows) runs under a
//! fixed peak RSS, read from the kernel (`VmHWM` of `/proc/<pid>/status`) while the process
//! runs, and as the process itself reads it at its end (its summary line).
//!
//! The bound is far above what the run needs (about 50 MiB for this debug build) and far below
//! what holding the output would take (the rows are 150 MB as JSON Lines). Speed is not
//! asserted: it lives in `scripts/bench.sh`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: u64 = 1_000_000;
const KEYS: u64 = 1_000;
const BOUND_KIB: u64 = 128 * 1024;

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("pipeline.yaml");
    std::fs::write(
        &path,
        format!(
            "name: sliding-memory
sources:
  - name: bids
    type: generator
    count: {EVENTS}
    watermark: {{ out_of_orderness: 2s }}
steps:
  - key_by: auction % {KEYS}
  - window: {{ type: sliding, size: 60s, slide: 1s, aggregates: {{ bids: count, total: sum(price), top: max(price) }} }}
sinks:
  - {{ type: file, path: out.jsonl }}
dead_letters: {{ type: file, path: dead.jsonl }}
"
        ),
    )
    .expect("write config");
    path
}

/// The `VmHWM` line of a `/proc/<pid>/status`, in KiB.
fn high_water_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_long_sliding_window_over_a_million_events_stays_under_a_memory_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_processor"))
        .args(["run", "--no-progress", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start processor");
    let status_path = format!("/proc/{}/status", child.id());
    let mut polled = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        // The high-water mark only grows: the last reading before the exit is the largest.
        if let Some(kib) = std::fs::read_to_string(&status_path)
            .ok()
            .as_deref()
            .and_then(high_water_kib)
        {
            polled = polled.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait for processor") {
            break status;
        }
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::io::read_to_string(child.stderr.take().expect("stderr")).expect("stderr");
    assert!(status.success(), "{stderr}");

    // The run did the work: every event read, one row per key and window holding data.
    let summary = stderr
        .lines()
        .find(|line| line.starts_with("sliding-memory: read "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    assert!(
        summary.contains(&format!("read {EVENTS} events")),
        "{summary}"
    );
    let rows = std::fs::read_to_string(dir.path().join("out.jsonl"))
        .expect("output")
        .lines()
        .count();
    assert!(summary.contains(&format!("emitted {rows},")), "{summary}");
    assert!(rows as u64 > EVENTS, "{rows} rows");

    // Peak RSS as the process read it at its end, and as polled from outside while it ran.
    let reported: u64 = summary
        .split("peak RSS ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {summary}"));
    // The kernel syncs threads' RSS counters in batches, so the two can differ by a few pages.
    assert!(polled > 0, "never read /proc while the processor ran");
    let peak = reported.max(polled);
    assert!(
        peak < BOUND_KIB,
        "peak RSS {peak} KiB (reported {reported}, polled {polled}) over the bound of {BOUND_KIB} KiB"
    );
}
