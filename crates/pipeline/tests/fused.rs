//! `runtime.fuse_source`: with one worker and one source that never waits in a read, the
//! operator chain runs on the source's thread. It must give exactly what the chain on a task of
//! its own gives: the same results, late events and dead letters byte for byte, the same
//! counts, and the same checkpoints to restore from.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use dataflow_connectors::parts::read_committed;
use dataflow_metrics::RunSummary;
use dataflow_pipeline::config::parse_and_plan;
use dataflow_pipeline::runtime::{Pipeline, RestoreMode, RestoreOptions};

/// Bids with event times that wander back by up to 3 s, now and then much further (late
/// events), and every 997th line malformed (dead letters).
fn write_input(path: &Path, lines: u64) {
    let mut text = String::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base = 1_700_000_000_000i64;
    for i in 0..lines {
        if i % 997 == 500 {
            text.push_str("{\"timestamp\": \"not a time\", \"auction\": 1}\n");
            continue;
        }
        let mut time = base + i as i64 * 37 - (next() % 3_000) as i64;
        if i % 211 == 0 {
            time -= 60_000;
        }
        let auction = next() % 40;
        let price = next() % 5_000;
        let channel = ["web", "app", "partner"][(next() % 3) as usize];
        let _ = writeln!(
            text,
            "{{\"timestamp\":{time},\"type\":\"bid\",\"id\":\"b{i}\",\"auction\":{auction},\"bidder\":{},\"price\":{price},\"channel\":\"{channel}\"}}",
            next() % 300
        );
    }
    std::fs::write(path, text).expect("write input");
}

/// The workloads: the benchmark's four shapes.
const STEPS: &[(&str, &str)] = &[
    (
        "filter-map",
        "  - filter: price >= 1000 && channel != \"partner\"\n  - map:\n      fields:\n        price_usd: double(price) / 100.0\n      drop: [price]\n",
    ),
    (
        "tumbling",
        "  - key_by: auction\n  - window: { type: tumbling, size: 10s, aggregates: { n: count, total: sum(price) } }\n",
    ),
    (
        "sliding",
        "  - key_by: auction\n  - window: { type: sliding, size: 10s, slide: 2s, aggregates: { n: count, top: max(price) } }\n",
    ),
    (
        "session",
        "  - key_by: bidder\n  - window: { type: session, gap: 5s, aggregates: { n: count } }\n",
    ),
];

fn config(input: &Path, out: &Path, steps: &str, fuse: bool) -> String {
    format!(
        "name: fused\nsources:\n  - name: bids\n    type: file\n    path: {}\n    format:\n      schema: {{ auction: int, bidder: int, price: int, channel: string }}\n    watermark: {{ out_of_orderness: 2s }}\nsteps:\n{steps}sinks:\n  - {{ type: file, path: {} }}\ndead_letters: {{ type: file, path: {} }}\nlate_events: {{ type: file, path: {} }}\nruntime: {{ batch_size: 7, fuse_source: {fuse} }}\n",
        input.display(),
        out.join("results.jsonl").display(),
        out.join("dead.jsonl").display(),
        out.join("late.jsonl").display(),
    )
}

fn run_config(dir: &Path, text: &str) -> RunSummary {
    common::run(Pipeline::new(
        parse_and_plan(text, dir).expect("valid config"),
    ))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_fused_chain_gives_what_a_chain_on_its_own_task_gives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("bids.jsonl");
    write_input(&input, 20_000);
    for (name, steps) in STEPS {
        let fused = dir.path().join(format!("{name}-fused"));
        let threaded = dir.path().join(format!("{name}-threaded"));
        let a = run_config(dir.path(), &config(&input, &fused, steps, true));
        let b = run_config(dir.path(), &config(&input, &threaded, steps, false));
        assert_eq!(
            (
                a.events_read,
                a.events_emitted,
                a.late_events,
                a.dead_letters
            ),
            (
                b.events_read,
                b.events_emitted,
                b.late_events,
                b.dead_letters
            ),
            "{name}: {a} / {b}"
        );
        // The input has late events and dead letters, and every workload has results.
        assert_eq!(a.dead_letters, 20, "{name}: {a}");
        assert!(a.events_emitted > 0, "{name}: {a}");
        if *name != "filter-map" {
            assert!(a.late_events > 0, "{name}: {a}");
        }
        for file in ["results.jsonl", "dead.jsonl", "late.jsonl"] {
            assert_eq!(
                read(&fused.join(file)),
                read(&threaded.join(file)),
                "{name}: {file} differs"
            );
        }
    }
}

/// Generated bids whose disorder (1 s) stays within the watermark's bound (3 s): no event is
/// ever late, so a window's result does not depend on where a stop cut the stream.
fn checkpointed(dir: &Path, count: u64, fuse: bool) -> String {
    format!(
        "name: fused-restore\nsources:\n  - name: bids\n    type: generator\n    count: {count}\n    max_disorder: 1s\n    watermark: {{ out_of_orderness: 3s }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count, total: sum(price) }} }}\nsinks:\n  - {{ type: parts, path: {} }}\ndead_letters: {{ type: file, path: {} }}\nruntime: {{ on_stop: keep, fuse_source: {fuse} }}\ncheckpoint: {{ dir: {}, interval: 50ms }}\n",
        dir.join("out").display(),
        dir.join("dead.jsonl").display(),
        dir.join("checkpoints").display(),
    )
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

#[test]
fn a_fused_run_stopped_and_restored_gives_the_results_of_one_uninterrupted_run() {
    const COUNT: u64 = 300_000;
    let reference = tempfile::tempdir().expect("temp dir");
    let whole = run_config(
        reference.path(),
        &checkpointed(reference.path(), COUNT, false),
    );
    assert_eq!((whole.late_events, whole.dead_letters), (0, 0), "{whole}");
    let expected = read_committed(&reference.path().join("out")).expect("committed output");

    let dir = tempfile::tempdir().expect("temp dir");
    let text = checkpointed(dir.path(), COUNT, true);
    let plan = |text: &str| parse_and_plan(text, dir.path()).expect("valid config");
    common::run_until_read(Pipeline::new(plan(&text)), 100_000);
    let second = common::run(Pipeline::new(plan(&text)).with_restore(RestoreOptions {
        mode: RestoreMode::Latest,
        allow_non_restored_state: false,
    }));
    assert!(second.events_read < COUNT, "not restored: {second}");
    assert_eq!(second.late_events, 0, "{second}");
    let got = read_committed(&dir.path().join("out")).expect("committed output");
    assert_eq!(sorted_lines(&got), sorted_lines(&expected));
}
