//! The parquet sink end to end: files read back by pyarrow (installed by `scripts/pyenv.sh` when
//! absent) hold, as a multiset, the rows the same pipeline writes as JSON Lines; a run killed
//! with SIGKILL at random instants and restarted each time publishes the rows of an
//! uninterrupted run; bad settings are refused by `processor check` with their place.

mod kills;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The python of the project's environment with pyarrow, made by `scripts/pyenv.sh` once.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let output = Command::new("bash")
            .arg(workspace().join("scripts/pyenv.sh"))
            .output()
            .expect("run scripts/pyenv.sh");
        assert!(
            output.status.success(),
            "scripts/pyenv.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
        PathBuf::from(path)
    })
}

/// What pyarrow reads from a parquet sink's directory (see `tests/parquet_rows.py`).
#[derive(Debug)]
struct ReadBack {
    /// Every row, as canonical JSON text, sorted: a multiset.
    rows: Vec<String>,
    files: Vec<serde_json::Value>,
}

fn read_back(dir: &Path) -> ReadBack {
    read_back_with(dir, &[])
}

/// [`read_back`], with the distinct values of `distinct` (none or one column) per file.
fn read_back_with(dir: &Path, distinct: &[&str]) -> ReadBack {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parquet_rows.py");
    let output = Command::new(python())
        .arg(script)
        .arg(dir)
        .args(distinct)
        .output()
        .expect("run pyarrow");
    assert!(
        output.status.success(),
        "pyarrow could not read {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let mut rows: Vec<String> = read["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(serde_json::Value::to_string)
        .collect();
    rows.sort();
    let files = read["files"].as_array().expect("files").clone();
    ReadBack { rows, files }
}

/// The lines of a JSON Lines file, canonical and sorted: a multiset.
fn json_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("json lines output");
    let mut rows: Vec<String> = text
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .expect("a json line")
                .to_string()
        })
        .collect();
    rows.sort();
    rows
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn run(config: &Path) -> String {
    let output = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(config)
        .output()
        .expect("run processor");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// Window results partitioned by hour of their start and by key, in row groups of 500 rows:
/// pyarrow reads back exactly the rows of the JSON Lines sink of the same run, every file sits
/// in the partition of its rows, and no row group is larger than asked.
#[test]
fn window_results_read_back_by_pyarrow_equal_the_json_lines_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        "windows.yaml",
        "name: lake\nsources:\n  - name: clicks\n    type: generator\n    profile: clicks\n    count: 30000\n    seed: 3\n    events_per_second: 20\n    watermark: { out_of_orderness: 2s }\nsteps:\n  - key_by: user_id\n  - window: { type: sliding, size: 1m, slide: 30s, aggregates: { clicks: count, pages: count_by(page), longest: max(duration_ms), mean: avg(duration_ms), first_page: first(page) } }\nsinks:\n  - { type: parquet, path: lake, partition_time: window_start, partition_by: key, row_group_size: 500 }\n  - { type: file, path: results.jsonl, time_format: millis }\ndead_letters: { type: file, path: dead.jsonl }\n",
    );
    run(&config);
    let expected = json_lines(&dir.path().join("results.jsonl"));
    assert!(expected.len() > 1000, "{} results", expected.len());
    let read = read_back_with(&dir.path().join("lake"), &["key"]);
    assert_eq!(read.rows.len(), expected.len());
    assert!(
        read.rows == expected,
        "pyarrow's rows differ from the json lines"
    );

    // 30000 clicks at 20 a second span 25 minutes from 2024-01-01T00:00: the windows start in
    // the hours 23 (the window before midnight) and 00.
    let mut partitions = BTreeMap::new();
    for file in &read.files {
        let partition = file["partition"].as_str().expect("partition");
        let hour = partition.split("/key=").next().expect("hour").to_string();
        *partitions.entry(hour).or_insert(0) += 1;
        for rows in file["row_groups"].as_array().expect("row groups") {
            assert!(rows.as_u64().expect("rows") <= 500, "{file}");
        }
        assert_eq!(file["compression"], "SNAPPY");
        assert_eq!(file["schema"]["window_start"], "timestamp[ms, tz=UTC]");
        assert_eq!(file["schema"]["clicks"], "int64");
        assert_eq!(file["schema"]["mean"], "double");
    }
    assert_eq!(
        partitions.keys().collect::<Vec<_>>(),
        ["dt=2023-12-31/hour=23", "dt=2024-01-01/hour=00"]
    );
    // Each file holds the rows of its own partition.
    for file in &read.files {
        let partition = file["partition"].as_str().expect("partition");
        let key = partition.rsplit("key=").next().expect("key");
        assert_eq!(file["distinct"], serde_json::json!([key]), "{partition}");
    }
}

/// Results that are not window results keep their event time, type and id as columns, as the
/// JSON Lines sink writes them, partitioned by the hour of the event time, uncompressed.
#[test]
fn filtered_events_read_back_by_pyarrow_equal_the_json_lines_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("events.jsonl");
    let mut lines = String::new();
    for index in 0..3000_i64 {
        let time = 1_704_065_000_000 + index * 2_000;
        let user = format!("u{:02}", index % 7);
        lines.push_str(&format!(
            "{{\"id\":\"e{index}\",\"type\":\"{}\",\"timestamp\":{time},\"user\":\"{user}\",\"ms\":{},\"score\":{}}}\n",
            if index % 3 == 0 { "view" } else { "click" },
            index % 500,
            (index as f64) / 8.0,
        ));
    }
    std::fs::write(&input, lines).expect("input");
    let config = write_config(
        dir.path(),
        "events.yaml",
        "name: events\nsources:\n  - name: events\n    type: file\n    path: events.jsonl\n    format: { schema: { user: string, ms: int, score: float } }\nsteps:\n  - filter: event.type == \"click\" && ms > 20\n  - map: { fields: { slow: ms > 250 } }\nsinks:\n  - { type: parquet, path: lake, partition_time: event_time, compression: none }\n  - { type: file, path: results.jsonl, time_format: millis }\ndead_letters: { type: file, path: dead.jsonl }\n",
    );
    run(&config);
    let expected = json_lines(&dir.path().join("results.jsonl"));
    assert!(expected.len() > 1500, "{} results", expected.len());
    let read = read_back(&dir.path().join("lake"));
    assert!(
        read.rows == expected,
        "pyarrow's rows differ from the json lines"
    );
    let partitions: Vec<&str> = read
        .files
        .iter()
        .map(|file| file["partition"].as_str().expect("partition"))
        .collect();
    // 3000 events 2 s apart from 2023-12-31T23:23:20Z: the hours 23, 00 and 01.
    assert_eq!(
        partitions,
        [
            "dt=2023-12-31/hour=23",
            "dt=2024-01-01/hour=00",
            "dt=2024-01-01/hour=01"
        ]
    );
    for file in &read.files {
        assert_eq!(file["compression"], "UNCOMPRESSED");
        assert_eq!(file["schema"]["timestamp"], "timestamp[ms, tz=UTC]");
        assert_eq!(file["schema"]["slow"], "bool");
    }
}

/// The shipped example, `configs/parquet.yaml`, run on the shipped sample: its lake holds the
/// rows a JSON Lines sink beside it writes.
#[test]
fn the_shipped_parquet_example_writes_the_windows_of_the_sample() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shipped =
        std::fs::read_to_string(workspace().join("configs/parquet.yaml")).expect("config");
    let sample = workspace().join("data/clicks.jsonl");
    let text = shipped
        .replace("../data/clicks.jsonl", &sample.display().to_string())
        .replace("../out/", "out/")
        .replace(
            "sinks:\n",
            "sinks:\n  - { type: file, path: out/windows.jsonl, time_format: millis }\n",
        );
    assert_ne!(text, shipped);
    let config = write_config(dir.path(), "parquet.yaml", &text);
    run(&config);
    let expected = json_lines(&dir.path().join("out/windows.jsonl"));
    assert!(expected.len() > 20, "{} windows", expected.len());
    let read = read_back(&dir.path().join("out/lake"));
    assert!(
        read.rows == expected,
        "pyarrow's rows differ from the json lines"
    );
}

/// Bad settings are refused before anything starts, each at its line and path.
#[test]
fn bad_parquet_settings_are_refused_by_check_with_their_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        "bad.yaml",
        "sources:\n  - name: bids\n    type: generator\n    count: 10\nsteps:\n  - key_by: auction\n  - window: { type: tumbling, size: 10s, aggregates: { bids: count } }\nsinks:\n  - { type: parquet, path: a, partition_by: auction, row_group_size: 0 }\n  - { type: parquet, path: b, partition_time: bids, compression: brotli }\n  - { type: parquet, path: c, partition_time: hour }\n  - { type: parquet }\n  - { type: parquet, path: ./a }\n",
    );
    let output = processor()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let columns = "`key`, `window_start`, `window_end`, `bids`, `is_update`";
    let expected = [
        "error: invalid pipeline: 7 problems".to_string(),
        format!("  line 9:45: sinks[0].partition_by: unknown partition field `auction`: the results have {columns}"),
        "  line 9:70: sinks[0].row_group_size: `row_group_size` must be between 1 and 16777216 rows, not 0".into(),
        "  line 10:47: sinks[1].partition_time: `partition_time` must be `event_time` or a timestamp field, and `bids` is int".into(),
        "  line 10:66: sinks[1].compression: unknown compression `brotli`: expected snappy or none".into(),
        format!("  line 11:47: sinks[2].partition_time: unknown partition time `hour`: expected `event_time` or a timestamp field of the results ({columns})"),
        "  line 12:5: sinks[3]: a parquet sink needs `path` (a directory)".into(),
        format!("  line 13:5: sinks[4]: another parquet sink writes in {}: each needs a directory of its own", dir.path().join("./a").display()),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected);
    // Results without a schema have no columns to derive.
    let untyped = write_config(
        dir.path(),
        "untyped.yaml",
        "sources:\n  - name: events\n    type: stdin\nsinks:\n  - type: parquet\n    path: lake\n",
    );
    let output = processor()
        .args(["check", "--config"])
        .arg(&untyped)
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 5:5: sinks[0]: a parquet sink needs typed results: declare the source's `format.schema`, or end the pipeline in a window"),
        "{stderr}"
    );
    assert!(!dir.path().join("a").exists() && !dir.path().join("lake").exists());
}

/// The number of bids of the crash test.
const CRASH_EVENTS: u64 = 1_000_000;

fn crash_config(dir: &Path, input: &Path, name: &str) -> PathBuf {
    write_config(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "name: crash\nsources:\n  - name: bids\n    type: file\n    path: {}\n    format: {{ schema: {{ auction: int, price: int }} }}\n    watermark: {{ out_of_orderness: 2s }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count, total: sum(price) }} }}\nsinks:\n  - {{ type: parquet, path: {name}-lake, partition_time: window_start, row_group_size: 4096 }}\ndead_letters: {{ type: file, path: {name}-dead.jsonl }}\ncheckpoint: {{ dir: {name}-checkpoints, interval: 200ms, retain: 3 }}\n",
            input.display()
        ),
    )
}

/// SIGKILL at 10 seeded instants of a windowed run over 1M bids with checkpoints every 200 ms,
/// restarted after each: the rows pyarrow reads back equal an uninterrupted run's, as a
/// multiset (none lost, none twice), and nothing but published files is visible to it.
#[test]
fn sigkill_at_ten_instants_publishes_the_rows_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("bids.jsonl");
    let generated = processor()
        .args(["generate", "--profile", "bids", "--seed", "9", "--count"])
        .arg(CRASH_EVENTS.to_string())
        .arg("--out")
        .arg(&input)
        .output()
        .expect("generate");
    assert!(generated.status.success());

    let reference = crash_config(dir.path(), &input, "reference");
    run(&reference);
    let expected = read_back(&dir.path().join("reference-lake"));
    assert!(expected.rows.len() > 50_000, "{}", expected.rows.len());

    let crashed = crash_config(dir.path(), &input, "crashed");
    let mut kills = 0;
    // A run that ends before its instant does not count: keep going until 10 were killed
    // mid-run (each restart resumes from the last checkpoint, so the input may run out first).
    for delay in kills::delays(20_261_204, 40, 150, 600) {
        if kills == 10 {
            break;
        }
        let child = processor()
            .args(["run", "--no-progress", "--config"])
            .arg(&crashed)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start processor");
        if kills::kill_after(child, delay).is_none() {
            kills += 1;
        }
    }
    assert_eq!(kills, 10, "the input ran out after {kills} kills");
    let stderr = run(&crashed);
    assert!(stderr.contains("restored checkpoint"), "{stderr}");
    let found = read_back(&dir.path().join("crashed-lake"));
    assert_eq!(found.rows.len(), expected.rows.len());
    assert!(
        found.rows == expected.rows,
        "the rows published after {kills} kills differ from the reference"
    );
    // Nothing is left pending or in progress after the final run.
    let hidden: Vec<String> = std::fs::read_dir(dir.path().join("crashed-lake"))
        .expect("list")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}
