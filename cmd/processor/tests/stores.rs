//! The postgres and redis sinks end to end, against private instances of the stores
//! (`scripts/services.sh`, through `services`): SIGKILL at seeded random instants leaves
//! exactly the table and the keys of an uninterrupted run; a store stopped for 10 s mid-run
//! is waited for; bad mappings are refused by `processor check` or at start.

mod kills;
mod services;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use services::{Kind, Store};

fn processor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_processor"))
}

/// Writes `count` generated bids into `dir` and returns the file.
fn generate_bids(dir: &Path, count: u64, seed: u64) -> PathBuf {
    let input = dir.join("bids.jsonl");
    let generated = processor()
        .args(["generate", "--profile", "bids", "--count"])
        .arg(count.to_string())
        .args(["--seed", &seed.to_string(), "--out"])
        .arg(&input)
        .output()
        .expect("generate");
    assert!(generated.status.success());
    input
}

/// A windowed pipeline named `name` over `input`, into three sinks: the postgres table `name`
/// (insert: a doubled row shows), the table `<name>_latest` (upsert on the window), and the
/// redis database `db` (SET of each window's key). `source_extra` is added to the source.
fn pipeline(
    dir: &Path,
    input: &Path,
    name: &str,
    stores: (&Store, &Store, u32),
    source_extra: &str,
) -> PathBuf {
    let (pg, redis, db) = stores;
    let path = dir.join(format!("{name}.yaml"));
    let config = format!(
        r#"name: {name}
sources:
  - name: bids
    type: file
    path: {input}
    format: {{ schema: {{ auction: int, price: int }} }}
    watermark: {{ out_of_orderness: 2s }}
{source_extra}
steps:
  - key_by: auction
  - window: {{ type: tumbling, size: 10s, allowed_lateness: 5s, aggregates: {{ n: count, total: sum(price) }} }}
sinks:
  - {{ type: postgres, url: "{pg_url}", table: {name}, create_table: true, batch_size: 500, retry_timeout: 60s }}
  - {{ type: postgres, url: "{pg_url}", table: {name}_latest, create_table: true, mode: upsert, key: [key, window_start] }}
  - {{ type: redis, url: "{redis_url}", key: "string(key) + '@' + string(window_start)", retry_timeout: 60s }}
dead_letters: {{ type: file, path: {name}-dead.jsonl }}
checkpoint: {{ dir: {name}-checkpoints, interval: 200ms, retain: 3 }}
"#,
        input = input.display(),
        pg_url = pg.url(0),
        redis_url = redis.url(db),
    );
    std::fs::write(&path, config).expect("write config");
    path
}

fn run_to_end(config: &Path) -> Output {
    let output = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(config)
        .output()
        .expect("run processor");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A table's rows, every column, sorted: one line per row (a doubled row shows twice).
fn rows(pg: &Store, table: &str) -> String {
    pg.sql(&format!(
        "SELECT key, window_start, window_end, n, total, is_update FROM {table} ORDER BY key, window_start, is_update, n, total::text"
    ))
}

/// Every key of redis database `db` with its value, sorted.
fn keys(redis: &Store, db: u32) -> String {
    let script = "local r = {} for _, k in ipairs(redis.call('KEYS', '*')) do r[#r + 1] = k .. '=' .. redis.call('GET', k) end table.sort(r) return r";
    redis.redis(&["-n", &db.to_string(), "EVAL", script, "0"])
}

/// The number of events of the crash test: 1M, as the store sinks' issue asks.
const CRASH_EVENTS: u64 = 1_000_000;

#[test]
fn sigkill_at_ten_instants_leaves_the_table_and_keys_of_an_uninterrupted_run() {
    let pg = Store::start(Kind::Postgres);
    let redis = Store::start(Kind::Redis);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate_bids(dir.path(), CRASH_EVENTS, 7);

    let reference = pipeline(dir.path(), &input, "reference", (&pg, &redis, 1), "");
    run_to_end(&reference);
    let expected_rows = rows(&pg, "reference");
    let expected_latest = rows(&pg, "reference_latest");
    let expected_keys = keys(&redis, 1);
    assert!(expected_rows.lines().count() > 10_000);
    assert_eq!(
        expected_keys.lines().count(),
        expected_latest.lines().count()
    );

    let crashed = pipeline(dir.path(), &input, "crashed", (&pg, &redis, 2), "");
    let mut kills = 0;
    // Runs that end before their instant do not count: keep going until 10 were killed mid-run.
    for delay in kills::delays(20_261_204, 60, 100, 500) {
        if kills == 10 {
            break;
        }
        let log = dir.path().join("crashed-run.log");
        let child = processor()
            .args(["run", "--no-progress", "--config"])
            .arg(&crashed)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start processor");
        match kills::kill_after(child, delay) {
            None => kills += 1,
            // A run that ended before its instant must have run to the end.
            Some(status) => assert!(
                status.success(),
                "a restarted run failed: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }
    assert_eq!(kills, 10, "the input ran out after {kills} kills");
    // The killed runs got far enough to commit checkpoints: the kills fell amid the output.
    let committed =
        pg.sql("SELECT checkpoint_id FROM dataflow_sink_progress WHERE sink = 'crashed'");
    assert!(
        committed.trim().parse::<u64>().expect("progress") > 0,
        "no killed run committed a checkpoint"
    );
    run_to_end(&crashed);
    let found = rows(&pg, "crashed");
    assert_eq!(found.lines().count(), expected_rows.lines().count());
    assert!(
        found == expected_rows,
        "the table after 10 kills differs from the reference"
    );
    assert!(
        rows(&pg, "crashed_latest") == expected_latest,
        "the upserted table after 10 kills differs from the reference"
    );
    assert!(
        keys(&redis, 2) == expected_keys,
        "the redis keys after 10 kills differ from the reference"
    );
    // Nothing is left staged once the run is over.
    assert_eq!(
        pg.sql("SELECT count(*) FROM crashed_dataflow_staging")
            .trim(),
        "0"
    );
}

/// Polls `ready` every 50 ms until it holds, for up to `limit`.
fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn stores_stopped_for_ten_seconds_mid_run_are_waited_for_and_the_results_are_exact() {
    let pg = Store::start(Kind::Postgres);
    let redis = Store::start(Kind::Redis);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate_bids(dir.path(), 100_000, 11);
    // Paced, so that the run is still going when the stores go away.
    let paced = "    rate_limit: { events_per_second: 25000 }";
    let reference = pipeline(dir.path(), &input, "reference", (&pg, &redis, 1), paced);
    run_to_end(&reference);

    let interrupted = pipeline(dir.path(), &input, "interrupted", (&pg, &redis, 2), paced);
    let child = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&interrupted)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start processor");
    let started = wait_until(Duration::from_secs(30), || {
        pg.try_sql("SELECT count(*) FROM dataflow_sink_progress WHERE sink = 'interrupted' AND checkpoint_id > 0")
            .is_some_and(|count| count.trim() == "1")
    });
    assert!(started, "the run committed nothing");
    pg.stop();
    redis.stop();
    // The point of the test: the stores are away for 10 s.
    std::thread::sleep(Duration::from_secs(10));
    pg.restart();
    redis.restart();
    let output = child.wait_with_output().expect("wait for the run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("store unavailable, retrying"), "{stderr}");
    assert!(rows(&pg, "interrupted") == rows(&pg, "reference"));
    assert!(rows(&pg, "interrupted_latest") == rows(&pg, "reference_latest"));
    assert!(keys(&redis, 2) == keys(&redis, 1));
}

/// `processor check` on a config with `sinks`, over bids with a schema; its stderr.
fn check(dir: &Path, sinks: &str) -> (i32, String) {
    let input = dir.join("bids.jsonl");
    std::fs::write(&input, "").expect("input");
    let path = dir.join("check.yaml");
    std::fs::write(
        &path,
        format!(
            "name: check\nsources:\n  - {{ name: bids, type: file, path: bids.jsonl, format: {{ schema: {{ auction: int, price: int }} }} }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count }} }}\nsinks:\n{sinks}"
        ),
    )
    .expect("config");
    let output = processor()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout),
    )
}

#[test]
fn bad_mappings_are_refused_by_check_with_their_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Port 1: validation must not connect, so nothing needs to listen.
    let (code, text) = check(
        dir.path(),
        "  - { type: postgres, url: \"postgres://postgres@127.0.0.1:1/test\", table: out, columns: { auction: key, price_total: total } }\n  - { type: postgres, url: \"postgres://127.0.0.1:1/test\", table: out, mode: upsert, key: [auction] }\n  - { type: postgres, url: \"postgres://127.0.0.1:1/test\", table: \"bad table\", mode: replace }\n  - { type: redis, url: \"redis://127.0.0.1:1/\", key: \"string(nope)\" }\n  - { type: redis, command: del }\n",
    );
    assert_eq!(code, 2, "{text}");
    for expected in [
        "sinks[0].columns.price_total: column `price_total` takes field `total`, which the results do not have (they have key, window_start, window_end, n, is_update)",
        "sinks[1].key: key `auction` is not one of the columns written",
        "sinks[2].table: invalid table `bad table`",
        "sinks[2].mode: unknown mode `replace`: expected insert or upsert",
        "sinks[3].key: ",
        "sinks[4].command: unknown command `del`: expected set or hset",
        "sinks[4]: a redis sink needs `key`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(text.contains("nope"), "{text}");
}

#[test]
fn columns_the_table_lacks_and_types_that_do_not_fit_are_refused_at_start() {
    let pg = Store::start(Kind::Postgres);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("bids.jsonl"),
        "{\"timestamp\": 1000, \"auction\": 1, \"price\": 5}\n",
    )
    .expect("input");
    pg.sql(
        "CREATE TABLE narrow (key bigint, n bigint); CREATE TABLE mistyped (key boolean, n bigint)",
    );
    let start = |table: &str, extra: &str| {
        let path = dir.path().join(format!("{table}.yaml"));
        std::fs::write(
            &path,
            format!(
                "name: start\nsources:\n  - {{ name: bids, type: file, path: bids.jsonl, format: {{ schema: {{ auction: int, price: int }} }} }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count }} }}\nsinks:\n  - {{ type: postgres, url: \"{}\", table: {table}, retry_timeout: 2s{extra} }}\n",
                pg.url(0)
            ),
        )
        .expect("config");
        let output = processor()
            .args(["run", "--no-progress", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = start("narrow", "");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "table narrow has no column window_start, window_end, is_update (it has key, n)"
        ),
        "{stderr}"
    );
    let (code, stderr) = start("mistyped", ", columns: [key]");
    assert_eq!(code, 1, "{stderr}");
    // The store's own words.
    assert!(
        stderr.contains("column \"key\" is of type boolean but expression is of type bigint"),
        "{stderr}"
    );
    let (code, stderr) = start("absent", "");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("table absent does not exist (set `create_table: true`"),
        "{stderr}"
    );
    // Nothing was started against a table that could not take the results.
    assert_eq!(pg.sql("SELECT count(*) FROM narrow").trim(), "0");
}

#[test]
fn a_store_down_beyond_the_retry_timeout_fails_the_run_with_the_reason() {
    let pg = Store::start(Kind::Postgres);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate_bids(dir.path(), 100_000, 12);
    let path = dir.path().join("down.yaml");
    std::fs::write(
        &path,
        format!(
            "name: down\nsources:\n  - {{ name: bids, type: file, path: {}, format: {{ schema: {{ auction: int, price: int }} }}, rate_limit: {{ events_per_second: 20000 }} }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ n: count }} }}\nsinks:\n  - {{ type: postgres, url: \"{}\", table: down, create_table: true, retry_timeout: 2s }}\ncheckpoint: {{ dir: down-checkpoints, interval: 200ms }}\n",
            input.display(),
            pg.url(0)
        ),
    )
    .expect("config");
    let child = processor()
        .args(["run", "--no-progress", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start processor");
    let started = wait_until(Duration::from_secs(30), || {
        pg.try_sql("SELECT count(*) FROM dataflow_sink_progress WHERE checkpoint_id > 0")
            .is_some_and(|count| count.trim() == "1")
    });
    assert!(started, "the run committed nothing");
    pg.stop();
    let output = child.wait_with_output().expect("wait for the run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("sink sinks[0] (postgres) failed: postgres table down: the store failed for"),
        "{stderr}"
    );
    assert!(stderr.contains("giving up: "), "{stderr}");
}

#[test]
fn without_checkpoints_rows_and_hashes_are_written_at_once() {
    let pg = Store::start(Kind::Postgres);
    let redis = Store::start(Kind::Redis);
    let dir = tempfile::tempdir().expect("temp dir");
    let input = generate_bids(dir.path(), 50_000, 13);
    let path = dir.path().join("plain.yaml");
    std::fs::write(
        &path,
        format!(
            "name: plain\nsources:\n  - {{ name: bids, type: file, path: {}, format: {{ schema: {{ auction: int, price: int }} }}, watermark: {{ out_of_orderness: 2s }} }}\nsteps:\n  - key_by: auction\n  - window: {{ type: tumbling, size: 10s, aggregates: {{ bids: count, total: sum(price) }} }}\nsinks:\n  - {{ type: postgres, url: \"{}\", table: plain, create_table: true, batch_size: 100, columns: {{ auction: key, start: window_start, bids: bids }} }}\n  - {{ type: redis, url: \"{}\", command: hset, ttl: 1h, key: \"'a:' + string(key) + ':' + string(window_start)\" }}\n  - {{ type: file, path: plain.jsonl, time_format: millis }}\n",
            input.display(),
            pg.url(0),
            redis.url(0)
        ),
    )
    .expect("config");
    run_to_end(&path);
    let lines = std::fs::read_to_string(dir.path().join("plain.jsonl")).expect("file sink");
    let results: Vec<serde_json::Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    assert!(results.len() > 1000);
    // Every result is a row, its window start a time.
    let count = pg.sql("SELECT count(*), sum(bids) FROM plain");
    let bids: i64 = results
        .iter()
        .map(|r| r["bids"].as_i64().expect("bids"))
        .sum();
    assert_eq!(count.trim(), format!("{}|{bids}", results.len()));
    let first = &results[0];
    let (auction, start) = (
        first["key"].as_i64().expect("key"),
        first["window_start"].as_i64().expect("start"),
    );
    let found = pg.sql(&format!(
        "SELECT bids, (extract(epoch from start) * 1000)::bigint FROM plain WHERE auction = {auction} AND start = timestamptz 'epoch' + {start} * interval '1 millisecond'"
    ));
    assert_eq!(found.trim(), format!("{}|{start}", first["bids"]));
    // Every result is a hash of its fields, expiring.
    assert_eq!(redis.redis(&["DBSIZE"]).trim(), results.len().to_string());
    let key = format!("a:{auction}:{start}");
    let hash = redis.redis(&["HGET", &key, "bids"]);
    assert_eq!(hash.trim(), first["bids"].to_string());
    let ttl: i64 = redis.redis(&["PTTL", &key]).trim().parse().expect("ttl");
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
}
