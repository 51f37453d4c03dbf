//! The dashboard embedded in the binary is what its sources build to: `scripts/ui-build.sh`
//! (which installs the locked npm packages when missing) rebuilds `ui/dist` into a temporary
//! directory, and every file must equal the committed one. Also runs the page's own unit tests
//! (`node --test ui/test/`) and checks the size budget of the embedded files.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The budget for the embedded files, gzipped.
const MAX_GZIPPED: u64 = 300 * 1024;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_committed_dashboard_equals_a_rebuild_from_its_sources() {
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new("bash")
        .arg(workspace().join("scripts/ui-build.sh"))
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("run scripts/ui-build.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "scripts/ui-build.sh failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let committed = workspace().join("ui/dist");
    assert_eq!(
        files(out.path()),
        files(&committed),
        "ui/dist has other files"
    );
    for name in files(&committed) {
        let built = std::fs::read(out.path().join(&name)).expect("built file");
        let kept = std::fs::read(committed.join(&name)).expect("committed file");
        assert!(
            built == kept,
            "ui/dist/{name} differs from a rebuild of ui/src: run scripts/ui-build.sh and commit ui/dist"
        );
    }
    // "<dir>: N bytes, M bytes gzipped"
    let gzipped: u64 = stdout
        .rsplit(", ")
        .next()
        .and_then(|tail| tail.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in the build's output: {stdout}"));
    assert!(
        gzipped > 0 && gzipped < MAX_GZIPPED,
        "the dashboard is {gzipped} bytes gzipped, over its budget of {MAX_GZIPPED}"
    );
}

#[test]
fn the_dashboard_logic_passes_its_unit_tests() {
    let output = Command::new("node")
        .args(["--test", "test/"])
        .current_dir(workspace().join("ui"))
        .output()
        .expect("run node --test (Node.js is needed to build and test the dashboard)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node --test ui/test/ failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
