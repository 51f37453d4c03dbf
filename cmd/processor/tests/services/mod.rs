//! Private PostgreSQL and Redis instances for tests, started by `scripts/services.sh` (which
//! installs the servers when they are absent), each in a temporary directory of its own on a
//! free loopback port, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh")
}

/// `services.sh BEFORE... DIR AFTER...`, which must succeed; its output.
fn run(before: &[&str], dir: &Path, after: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(script())
        .args(before)
        .arg(dir)
        .args(after)
        .output()
        .expect("run scripts/services.sh");
    assert!(
        output.status.success(),
        "services.sh {before:?} {after:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Which store.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Postgres,
    Redis,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
        }
    }
}

/// A running private instance.
#[derive(Debug)]
pub struct Store {
    kind: Kind,
    dir: tempfile::TempDir,
    /// Its loopback port.
    pub port: u16,
}

impl Store {
    /// Starts a new instance of `kind`.
    pub fn start(kind: Kind) -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = run(&["start", kind.name()], dir.path(), &[])
            .trim()
            .parse()
            .expect("services.sh start prints the port");
        Store { kind, dir, port }
    }

    /// Stops it (its data stays).
    pub fn stop(&self) {
        run(&["stop", self.kind.name()], self.dir.path(), &[]);
    }

    /// Starts it again on the same port, with the same data.
    pub fn restart(&self) {
        let port: u16 = run(&["start", self.kind.name()], self.dir.path(), &[])
            .trim()
            .parse()
            .expect("port");
        assert_eq!(port, self.port);
    }

    /// The connection URL of database `test` (postgres) or database `db` (redis).
    pub fn url(&self, db: u32) -> String {
        match self.kind {
            Kind::Postgres => format!("postgres://postgres@127.0.0.1:{}/test", self.port),
            Kind::Redis => format!("redis://127.0.0.1:{}/{db}", self.port),
        }
    }

    /// Runs `sql` with psql, unaligned and tuples only: one line per row, `|` between fields.
    pub fn sql(&self, sql: &str) -> String {
        run(&["psql"], self.dir.path(), &["-At", "-c", sql])
    }

    /// Runs `sql` as [`sql`](Self::sql) does, `None` when psql fails (a table not created
    /// yet), for polling.
    pub fn try_sql(&self, sql: &str) -> Option<String> {
        let output = Command::new("bash")
            .arg(script())
            .arg("psql")
            .arg(self.dir.path())
            .args(["-At", "-c", sql])
            .output()
            .expect("run scripts/services.sh");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs a redis-cli command (raw output: one line per reply element).
    pub fn redis(&self, args: &[&str]) -> String {
        let mut all = vec!["--raw"];
        all.extend_from_slice(args);
        run(&["redis-cli"], self.dir.path(), &all)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", self.kind.name()])
            .arg(self.dir.path())
            .output();
    }
}
