//! `admin --url`: the same commands against a processor's API over real HTTP on an ephemeral
//! loopback port, giving the same output as reading the directory offline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use dataflow_api::server::{serve, ApiState};
use dataflow_checkpoint::{CheckpointStorage, LocalStorage};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../processor/tests/fixtures/checkpoint-v1/checkpoints")
}

/// Serves the fixture's checkpoints on a free loopback port, in the background; returns the URL.
fn start_server(token: &str) -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalStorage::open_for_reading(fixture()).expect("storage"));
    let state = ApiState {
        storage: Some(storage),
        token: Some(token.into()),
        ..ApiState::default()
    };
    std::thread::spawn(move || {
        let _ = runtime.block_on(serve(listener, state));
    });
    format!("http://{address}")
}

fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_admin"))
        .args(args)
        .output()
        .expect("run admin")
}

#[test]
fn online_and_offline_give_the_same_answers() {
    let url = start_server("t0ken");
    let dir = fixture();
    let dir = dir.to_string_lossy();
    for command in [
        vec!["checkpoints", "list"],
        vec!["checkpoints", "show", "4"],
        vec!["checkpoints", "verify", "4"],
        vec!["--output", "json", "checkpoints", "show", "4"],
    ] {
        let online = admin(&[&["--url", &url, "--token", "t0ken"][..], &command[..]].concat());
        let offline = admin(&[&["--dir", &dir][..], &command[..]].concat());
        assert!(
            online.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&online.stderr)
        );
        assert_eq!(online.stdout, offline.stdout, "{command:?}");
    }
}

#[test]
fn failures_are_one_line_and_a_non_zero_exit() {
    let url = start_server("t0ken");
    let cases: [(&[&str], &str); 4] = [
        (&["--url", &url, "checkpoints", "list"], "401 unauthorized"),
        (
            &["--url", &url, "--token", "wrong", "checkpoints", "list"],
            "401 unauthorized",
        ),
        (
            &[
                "--url",
                &url,
                "--token",
                "t0ken",
                "checkpoints",
                "show",
                "99",
            ],
            "404 not_found",
        ),
        (
            &[
                "--url",
                &url,
                "--token",
                "t0ken",
                "checkpoints",
                "show",
                "../x",
            ],
            "400 bad_request",
        ),
    ];
    for (args, expected) in cases {
        let output = admin(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
    // Nothing listens on port 9 of loopback (discard), so the connection is refused.
    let output = admin(&["--url", "http://127.0.0.1:9", "checkpoints", "list"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach the processor"), "{stderr}");
    // The reason, not only reqwest's "error sending request".
    assert!(
        stderr.to_lowercase().contains("connection refused"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
