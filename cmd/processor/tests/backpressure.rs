//! Backpressure end to end: a fast generator into a sink that drains slowly. The sources wait
//! for the sink instead of buffering: memory stays bounded and every event arrives.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs the processor on `config`, draining its standard output with `pause` after every 16 KiB;
/// returns the lines and bytes read, the peak RSS the run reported (KiB) and its standard error.
fn run_draining(config: &std::path::Path, pause: Duration) -> (u64, u64, u64, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_processor"))
        .args(["run", "--no-progress", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start processor");
    let mut stdout = child.stdout.take().expect("stdout");
    // The sink's speed is the reader's: the pause shapes the load; nothing waits on it.
    let mut buffer = vec![0u8; 16 << 10];
    let (mut lines, mut bytes) = (0u64, 0u64);
    loop {
        let read = stdout.read(&mut buffer).expect("read stdout");
        if read == 0 {
            break;
        }
        bytes += read as u64;
        lines += buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{stderr}");
    let peak_kib: u64 = stderr
        .split("peak RSS ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {stderr}"));
    (lines, bytes, peak_kib, stderr)
}

#[test]
fn a_slow_sink_slows_the_source_loses_nothing_and_bounds_memory() {
    const EVENTS: u64 = 250_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("slow.yaml");
    std::fs::write(
        &config,
        format!(
            "name: slow-sink\nsources:\n  - name: bids\n    type: generator\n    count: {EVENTS}\n    watermark: {{ out_of_orderness: 2s }}\nsinks:\n  - type: stdout\ndead_letters: {{ type: file, path: dead.jsonl }}\n"
        ),
    )
    .expect("write config");
    // A sink as fast as the pipeline, then one draining at most 8 MB/s: several times slower
    // than the generator, so without backpressure most of the output would pile up in memory.
    let (_, _, fast_peak, _) = run_draining(&config, Duration::ZERO);
    let (lines, bytes, slow_peak, stderr) = run_draining(&config, Duration::from_millis(2));

    // Nothing lost: counts in equal counts out.
    assert_eq!(lines, EVENTS, "{stderr}");
    assert!(
        stderr.contains(&format!("read {EVENTS} events, emitted {EVENTS},")),
        "{stderr}"
    );
    // Bounded: the slow run used about the memory of the fast one (its queues: channel capacity
    // times batch size), far less than the output it produced.
    assert!(bytes > 32 << 20, "only {bytes} bytes of output");
    assert!(
        slow_peak < fast_peak + (8 << 10),
        "peak RSS {slow_peak} KiB with a slow sink, {fast_peak} KiB with a fast one, for {bytes} bytes of output"
    );
}
