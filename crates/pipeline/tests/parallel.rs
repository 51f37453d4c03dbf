//! Parallel workers: with `parallelism: N` a pipeline's results, late events and dead letters
//! are those of `parallelism: 1` (as multisets: workers interleave their outputs), for every
//! window kind; and a pipeline rescaled 1 -> 3 -> 2 through checkpoints commits exactly the
//! output of one uninterrupted run.

mod common;

use std::path::Path;

use dataflow_event::json::TimeFormat;
use dataflow_pipeline::builder::PipelineBuilder;
use dataflow_pipeline::runtime::Pipeline;
use dataflow_pipeline::spec::{
    CheckpointSpec, OnStop, RuntimeSpec, SinkSpec, SourceKind, StateSpec,
};

fn millis(spec: SinkSpec) -> SinkSpec {
    SinkSpec {
        time_format: TimeFormat::Millis,
        ..spec
    }
}

/// `count` input lines over 13 users: times that grow with up to 3 s of disorder, every 37th
/// event 4 to 24 s behind (late, some within the lateness, some beyond), every 53rd line malformed, and a value
/// that is sometimes a string (which `sum` refuses: a dead letter from the window).
fn input(count: usize) -> Vec<String> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound
    };
    let mut base = 1_000_000i64;
    (0..count)
        .map(|i| {
            base += next(400) as i64;
            if i % 53 == 52 {
                return format!("{{\"timestamp\":{base},\"user\":");
            }
            let mut time = base - next(3000) as i64;
            if i % 37 == 36 {
                time -= 4000 + next(20_000) as i64;
            }
            let user = format!("u{:02}", next(13));
            let value = if i % 41 == 40 {
                "\"x\"".to_string()
            } else {
                (next(100) as i64 - 20).to_string()
            };
            format!("{{\"timestamp\":{time},\"user\":\"{user}\",\"v\":{value}}}")
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tumbling,
    Sliding,
    Session,
}

fn steps(builder: PipelineBuilder, kind: Kind) -> PipelineBuilder {
    let builder = builder
        .out_of_orderness_ms(3000)
        .filter("v != 0")
        .key_by("user");
    let builder = match kind {
        Kind::Tumbling => builder.tumbling_ms(5000),
        Kind::Sliding => builder.sliding_ms(6000, 2000),
        Kind::Session => builder.session_ms(1500),
    };
    builder
        .allowed_lateness_ms(10_000)
        .aggregate("n", "count")
        .aggregate("total", "sum(v)")
        .aggregate("first", "first(v)")
        .aggregate("last", "last(v)")
        .aggregate("distinct", "count_distinct(v)")
}

/// The lines of a JSON Lines file, sorted.
fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Runs `kind` over `input` with `workers` workers; returns sorted results, late events and dead
/// letters.
fn run(dir: &Path, input: &Path, kind: Kind, workers: usize) -> [Vec<String>; 3] {
    let out = dir.join(format!("{kind:?}-{workers}"));
    std::fs::create_dir_all(&out).expect("out dir");
    let pipeline = steps(
        PipelineBuilder::new("parallel").file_source("events", input),
        kind,
    )
    .sink(millis(SinkSpec::file(out.join("results.jsonl"))))
    .late_events(millis(SinkSpec::file(out.join("late.jsonl"))))
    .dead_letters(millis(SinkSpec::file(out.join("dead.jsonl"))))
    .runtime(RuntimeSpec {
        batch_size: 3,
        ..RuntimeSpec::default()
    })
    // After `runtime`, which replaces every runtime setting.
    .parallelism(workers)
    .build()
    .expect("valid pipeline");
    assert_eq!(pipeline.plan().runtime.parallelism, workers);
    common::run(pipeline);
    ["results", "late", "dead"].map(|name| sorted_lines(&out.join(format!("{name}.jsonl"))))
}

#[test]
fn parallel_results_equal_serial_results_for_every_window_kind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lines = input(1500);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let input = common::write_lines(dir.path(), "in.jsonl", &lines);
    for kind in [Kind::Tumbling, Kind::Sliding, Kind::Session] {
        let serial = run(dir.path(), &input, kind, 1);
        let [results, late, dead] = &serial;
        // The input exercises what it should: results, updates, late events, dead letters from
        // the source and from the window.
        assert!(results.len() > 50, "{kind:?}: {} results", results.len());
        assert!(results.iter().any(|r| r.contains("\"is_update\":true")));
        assert!(!late.is_empty(), "{kind:?}: no late events");
        assert!(dead.iter().any(|d| d.contains("source events")));
        assert!(dead.iter().any(|d| d.contains("window")));
        for workers in [2, 3] {
            let parallel = run(dir.path(), &input, kind, workers);
            assert_eq!(parallel, serial, "{kind:?} with {workers} workers");
        }
    }
}

fn append(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open input");
    for line in lines {
        writeln!(file, "{line}").expect("append");
    }
}

/// A run over `input` with `workers` workers, committing to the parts sink in `dir/parts`,
/// following the file (until stopped) or reading it to its end.
fn rescaled(
    dir: &Path,
    input: &Path,
    kind: Kind,
    workers: usize,
    follow: bool,
    state: &StateSpec,
) -> Pipeline {
    let builder = steps(
        PipelineBuilder::new("rescaled").file_source("events", input),
        kind,
    )
    .watermark_every(1)
    .sink(millis(SinkSpec {
        kind: dataflow_pipeline::spec::SinkKind::Parts {
            dir: dir.join("parts"),
        },
        ..SinkSpec::stdout()
    }))
    .dead_letters(SinkSpec::file(dir.join("dead.jsonl")))
    .checkpoint(CheckpointSpec {
        dir: dir.join("checkpoints"),
        interval: 20,
        retain: 3,
    })
    .state(state.clone())
    .runtime(RuntimeSpec {
        batch_size: 1,
        on_stop: OnStop::Keep,
        ..RuntimeSpec::default()
    })
    // After `runtime`, which replaces every runtime setting.
    .parallelism(workers);
    let mut spec = builder.spec().expect("valid spec");
    for source in &mut spec.sources {
        if let SourceKind::File { follow: f, .. } = &mut source.kind {
            *f = follow;
        }
    }
    Pipeline::new(dataflow_pipeline::plan::plan(spec).expect("valid pipeline"))
}

#[test]
fn rescaling_one_to_three_to_two_through_checkpoints_gives_exact_results() {
    let memory = StateSpec::Memory;
    for (kind, sled) in [
        (Kind::Tumbling, false),
        (Kind::Session, false),
        (Kind::Session, true),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = if sled {
            StateSpec::Sled {
                dir: dir.path().join("state"),
                cache_bytes: dataflow_state::DEFAULT_CACHE_BYTES,
                cache_keys: dataflow_operators::window::DEFAULT_CACHE_KEYS,
            }
        } else {
            StateSpec::Memory
        };
        let lines = input(600);
        let all: Vec<&str> = lines.iter().map(String::as_str).collect();
        let whole = common::write_lines(dir.path(), "whole.jsonl", &all);
        let expected = {
            let out = dir.path().join("uninterrupted");
            std::fs::create_dir_all(&out).expect("dir");
            common::run(rescaled(&out, &whole, kind, 1, false, &memory));
            let mut lines: Vec<String> =
                dataflow_connectors::parts::read_committed(&out.join("parts"))
                    .expect("committed output")
                    .lines()
                    .map(str::to_owned)
                    .collect();
            lines.sort();
            lines
        };
        assert!(expected.len() > 20);

        let input = dir.path().join("growing.jsonl");
        append(&input, &lines[..200]);
        common::run_until_read(rescaled(dir.path(), &input, kind, 1, true, &state), 200);
        append(&input, &lines[200..400]);
        common::run_until_read(rescaled(dir.path(), &input, kind, 3, true, &state), 200);
        append(&input, &lines[400..]);
        common::run(rescaled(dir.path(), &input, kind, 2, false, &state));

        let mut committed: Vec<String> =
            dataflow_connectors::parts::read_committed(&dir.path().join("parts"))
                .expect("committed output")
                .lines()
                .map(str::to_owned)
                .collect();
        committed.sort();
        assert_eq!(committed, expected, "{kind:?}, sled: {sled}");
        if sled {
            // Each of the three workers of the middle run kept its state in a sled store.
            let window_dirs: Vec<_> = std::fs::read_dir(dir.path().join("state"))
                .expect("state directory")
                .flatten()
                .collect();
            assert_eq!(window_dirs.len(), 1, "one window operator");
            for instance in 0..3 {
                assert!(window_dirs[0]
                    .path()
                    .join(format!("instance-{instance}"))
                    .is_dir());
            }
        }
    }
}
