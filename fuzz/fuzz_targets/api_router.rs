//! The API router, called as a tower service on a current-thread runtime, with checkpoint
//! storage in a temporary directory (a copy of the processor's fixture), the real state
//! decoder, metrics, and no running pipeline: no request may make it panic or answer 5xx.
//!
//! The input is a request written like HTTP/1.1, with `\n` or `\r\n` line ends:
//!
//! ```text
//! METHOD /path?query
//! Header-Name: value
//!
//! body
//! ```
//!
//! A request line or header that `http` refuses is one a server never routes, so the input is
//! skipped (a bad header is left out). `Content-Length` is set to the body's length, as hyper
//! guarantees the router; the token is `fuzz-token`.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri};
use dataflow_api::server::{router, ApiState};
use dataflow_api::state::KeyState;
use dataflow_api::StateDecoder;
use dataflow_checkpoint::{CheckpointStorage, LocalStorage};
use dataflow_metrics::Metrics;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token";
const FIXTURE: &str = "00000000000000000004";
const FIXTURE_DATA: &[u8] = include_bytes!(
    "../../cmd/processor/tests/fixtures/checkpoint-v1/checkpoints/00000000000000000004/data.bin"
);
const FIXTURE_MANIFEST: &[u8] = include_bytes!(
    "../../cmd/processor/tests/fixtures/checkpoint-v1/checkpoints/00000000000000000004/manifest.json"
);

/// The processor's decoder: operator state as `dataflow_operators` reads it.
struct Decoder;

impl StateDecoder for Decoder {
    fn decode(&self, kind: &str, state: &[u8]) -> Result<Vec<KeyState>, String> {
        let view = dataflow_operators::kind::decode_state(kind, state)
            .map_err(|error| error.to_string())?;
        Ok(view
            .keys
            .into_iter()
            .map(|k| KeyState {
                key: k.key,
                value: k.value,
            })
            .collect())
    }
}

struct Fixture {
    _temp: tempfile::TempDir,
    dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    state: ApiState,
}

/// Puts the fixture checkpoint back (a request may have deleted it).
fn restore_fixture(dir: &Path) {
    let checkpoint = dir.join(FIXTURE);
    if checkpoint.join("manifest.json").is_file() && checkpoint.join("data.bin").is_file() {
        return;
    }
    let _ = std::fs::remove_dir_all(&checkpoint);
    std::fs::create_dir_all(&checkpoint).expect("the fixture directory");
    std::fs::write(checkpoint.join("data.bin"), FIXTURE_DATA).expect("write data.bin");
    std::fs::write(checkpoint.join("manifest.json"), FIXTURE_MANIFEST).expect("write manifest");
}

static FIXTURE_STATE: LazyLock<Fixture> = LazyLock::new(|| {
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = temp.path().to_path_buf();
    restore_fixture(&dir);
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalStorage::new(&dir, 3).expect("storage"));
    let state = ApiState {
        storage: Some(storage),
        token: Some(TOKEN.into()),
        metrics: Some(Arc::new(Metrics::new())),
        decoder: Some(Arc::new(Decoder)),
        ..ApiState::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    Fixture {
        _temp: temp,
        dir,
        runtime,
        state,
    }
});

/// The request `data` writes, if `http` accepts its request line.
fn request(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match find(data, b"\r\n\r\n") {
        Some(at) => (&data[..at], &data[at + 4..]),
        None => match find(data, b"\n\n") {
            Some(at) => (&data[..at], &data[at + 2..]),
            None => (data, &[][..]),
        },
    };
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let target = first[space + 1..]
        .strip_suffix(b" HTTP/1.1")
        .unwrap_or(&first[space + 1..]);
    let uri = Uri::try_from(target).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        if name == axum::http::header::CONTENT_LENGTH
            || name == axum::http::header::TRANSFER_ENCODING
        {
            continue;
        }
        builder = builder.header(name, value);
    }
    if !body.is_empty() {
        builder = builder.header(axum::http::header::CONTENT_LENGTH, body.len());
    }
    builder.body(Body::from(body.to_vec())).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else {
        return;
    };
    let fixture = &*FIXTURE_STATE;
    let what = format!("{} {}", request.method(), request.uri());
    let response = fixture.runtime.block_on(async {
        router(fixture.state.clone())
            .oneshot(request)
            .await
            .expect("the router is infallible")
    });
    let status = response.status();
    let body = fixture.runtime.block_on(async {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default()
    });
    assert!(
        status.as_u16() < 500,
        "{what} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    restore_fixture(&fixture.dir);
});
