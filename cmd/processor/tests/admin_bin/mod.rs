//! The `admin` binary beside `processor`, for the tests that drive a running processor with it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `admin` (a no-op when it is fresh: a stale binary left by an earlier build would test
/// old code) and returns its path. Call it before starting a processor, so that the build's
/// time does not run out the processor's.
pub fn admin_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_processor")).with_file_name("admin");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "dataflow-admin", "--bin", "admin"])
        .status()
        .expect("build admin");
    assert!(status.success(), "cannot build admin");
    path
}
