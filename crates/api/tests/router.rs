//! The API router driven without a socket: auth, ids, errors, limits, and a property test that
//! no route parameter or body makes it panic or answer 500.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dataflow_api::server::{router, ApiState, MAX_BODY, OPENAPI_JSON};
use dataflow_api::state::KeyState;
use dataflow_api::{
    routes, Control, ControlError, PipelineStatus, Progress, RestoreReport, StateDecoder,
    Watermarks,
};
use dataflow_checkpoint::{CheckpointStorage, LocalStorage};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../cmd/processor/tests/fixtures/checkpoint-v1/checkpoints")
}

fn copy_fixture(to: &Path) {
    for entry in std::fs::read_dir(fixture()).expect("fixture").flatten() {
        let target = to.join(entry.file_name());
        std::fs::create_dir_all(&target).expect("create");
        for file in std::fs::read_dir(entry.path())
            .expect("checkpoint")
            .flatten()
        {
            std::fs::copy(file.path(), target.join(file.file_name())).expect("copy");
        }
    }
}

/// A pipeline that counts the restores it is asked for.
#[derive(Default)]
struct FakeControl {
    restores: AtomicUsize,
}

#[async_trait::async_trait]
impl Control for FakeControl {
    fn status(&self) -> PipelineStatus {
        PipelineStatus {
            pipeline: "fake".into(),
            state: "running".into(),
            uptime_ms: 1,
            events_read: 0,
            events_emitted: 0,
            late_events: 0,
            dead_letters: 0,
            watermark: 0,
            last_checkpoint: Some(4),
            restored_from: None,
            restores: 0,
            operators: Vec::new(),
        }
    }
    fn watermarks(&self) -> Watermarks {
        Watermarks {
            watermark: 0,
            holding_back: None,
            sources: Vec::new(),
            operators: Vec::new(),
            now_ms: 0,
        }
    }
    async fn trigger(&self) -> Result<u64, ControlError> {
        Ok(5)
    }
    fn progress(&self) -> Progress {
        Progress {
            last_completed: 4,
            last_triggered: 5,
            live: true,
        }
    }
    async fn restore(&self, id: u64, dry_run: bool) -> Result<RestoreReport, ControlError> {
        self.restores.fetch_add(1, Ordering::SeqCst);
        Ok(RestoreReport {
            checkpoint: id,
            dry_run,
            watermark: 0,
            operators: Vec::new(),
            empty: Vec::new(),
            sources: Vec::new(),
            dropped: Vec::new(),
            discarded: String::new(),
            last_checkpoint_before: None,
        })
    }
}

/// Keys are the state's bytes' length, for routing tests; the real decoder is tested in the
/// admin and processor tests.
struct FakeDecoder;

impl StateDecoder for FakeDecoder {
    fn decode(&self, kind: &str, state: &[u8]) -> Result<Vec<KeyState>, String> {
        if kind != "window" {
            return Err(format!("cannot show `{kind}`"));
        }
        Ok(vec![KeyState {
            key: serde_json::json!("u01"),
            value: serde_json::json!({"bytes": state.len()}),
        }])
    }
}

fn state_with(dir: &Path, control: Arc<FakeControl>) -> ApiState {
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalStorage::open_for_reading(dir).expect("storage"));
    ApiState {
        storage: Some(storage),
        token: Some(TOKEN.into()),
        control: Some(control),
        decoder: Some(Arc::new(FakeDecoder)),
        ..ApiState::default()
    }
}

fn state(dir: &Path) -> ApiState {
    state_with(dir, Arc::new(FakeControl::default()))
}

async fn call(
    state: ApiState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if !body.is_empty() {
        request = request.header("content-length", body.len());
    }
    let response = router(state)
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible service");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
        String::from_utf8_lossy(&bytes).into_owned(),
    ));
    (status, json)
}

#[tokio::test]
async fn health_is_open_and_everything_else_needs_the_token() {
    let dir = fixture();
    let (status, _) = call(state(&dir), "GET", "/health", None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    for (method, path) in routes::ALL {
        if [routes::HEALTH, routes::READY].contains(path) {
            continue;
        }
        let method = method.to_uppercase();
        let uri = path
            .replace("{id}", "4")
            .replace("{other}", "4")
            .replace("{operator}", "w");
        for token in [None, Some("wrong"), Some("s3cret-token-but-longer")] {
            let (status, body) = call(state(&dir), &method, &uri, token, vec![]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {token:?}");
            assert_eq!(body["code"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn list_show_and_verify_the_fixture() {
    let dir = fixture();
    let (status, rows) = call(
        state(&dir),
        "GET",
        "/api/v1/checkpoints",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows[0]["id"], 4);
    assert_eq!(rows[0]["verified"], true);
    let (status, manifest) = call(
        state(&dir),
        "GET",
        "/api/v1/checkpoints/4",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(manifest["operators"][0]["key_count"], 50);
    let (status, verified) = call(
        state(&dir),
        "POST",
        "/api/v1/checkpoints/4/verify",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verified["verified"], true);
}

#[tokio::test]
async fn bad_and_unknown_ids_and_corruption_have_their_own_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_fixture(dir.path());
    for uri in [
        "/api/v1/checkpoints/%2e%2e%2fx",
        "/api/v1/checkpoints/-1",
        "/api/v1/checkpoints/4x",
        "/api/v1/checkpoints/..%2f..%2fetc/status",
        "/api/v1/checkpoints/4/diff/%2e%2e",
        "/api/v1/checkpoints/%252e%252e/operators/w/keys",
        "/api/v1/checkpoints/4/operators/w/keys?offset=-1",
        "/api/v1/checkpoints/4/operators/w/state",
    ] {
        let (status, body) = call(state(dir.path()), "GET", uri, Some(TOKEN), vec![]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["code"], "bad_request");
    }
    for uri in [
        "/api/v1/checkpoints/../x",
        "/api/v1/checkpoints/99",
        "/api/v2/anything",
    ] {
        let (status, body) = call(state(dir.path()), "GET", uri, Some(TOKEN), vec![]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body["code"], "not_found");
    }
    for (method, uri) in [
        ("DELETE", "/api/v1/checkpoints/99"),
        ("DELETE", "/api/v1/checkpoints/..%2f4"),
        ("POST", "/api/v1/checkpoints/99/restore"),
        ("POST", "/api/v1/checkpoints/%2e%2e/restore"),
    ] {
        let (status, body) = call(state(dir.path()), method, uri, Some(TOKEN), vec![]).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "{method} {uri}: {status} {body}"
        );
    }
    // Nothing was touched: the fixture's files are all there.
    assert!(dir.path().join("00000000000000000004/data.bin").exists());
    assert!(dir
        .path()
        .join("00000000000000000004/manifest.json")
        .exists());
    let data = dir.path().join("00000000000000000004/data.bin");
    let mut bytes = std::fs::read(&data).expect("data");
    bytes[60] ^= 0x80;
    std::fs::write(&data, bytes).expect("damage");
    // A corrupt checkpoint's restore is refused before the pipeline is asked.
    let control = Arc::new(FakeControl::default());
    for body in [vec![], br#"{"dry_run":true}"#.to_vec()] {
        let (status, answer) = call(
            state_with(dir.path(), control.clone()),
            "POST",
            "/api/v1/checkpoints/4/restore",
            Some(TOKEN),
            body,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["code"], "verification_failed");
    }
    assert_eq!(control.restores.load(Ordering::SeqCst), 0);
    let (status, body) = call(
        state(dir.path()),
        "POST",
        "/api/v1/checkpoints/4/verify",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "verification_failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("checksum mismatch"),
        "{body}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let dir = fixture();
    let (status, _) = call(
        state(&dir),
        "POST",
        "/api/v1/checkpoints/4/verify",
        Some(TOKEN),
        vec![b'x'; MAX_BODY + 1],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = call(
        state(&dir),
        "POST",
        "/api/v1/checkpoints/4/verify",
        Some(TOKEN),
        vec![b'x'; 16],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_is_served_checked_in_and_names_every_route() {
    let (status, served) = call(
        state(&fixture()),
        "GET",
        routes::OPENAPI,
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let checked_in: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"),
        )
        .expect("docs/openapi.json"),
    )
    .expect("valid JSON");
    assert_eq!(served, checked_in);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(OPENAPI_JSON).expect("json"),
        checked_in
    );
    for (method, path) in routes::ALL {
        assert!(
            checked_in["paths"][path][method].is_object(),
            "{method} {path} is not in docs/openapi.json"
        );
        // And the router serves it (the fallback answers `no such route`). On a copy: this
        // calls DELETE too.
        let copy = tempfile::tempdir().expect("temp dir");
        copy_fixture(copy.path());
        let uri = path
            .replace("{id}", "4")
            .replace("{other}", "4")
            .replace("{operator}", "w");
        let (_, body) = call(
            state(copy.path()),
            &method.to_uppercase(),
            &uri,
            Some(TOKEN),
            vec![],
        )
        .await;
        assert_ne!(body["message"], "no such route", "{method} {path}");
    }
    let documented: usize = checked_in["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| {
            ["get", "post", "delete", "put", "patch"]
                .iter()
                .filter(|m| item[**m].is_object())
                .count()
        })
        .sum();
    assert_eq!(
        documented,
        routes::ALL.len(),
        "the document has routes the router lacks"
    );
}

#[tokio::test]
async fn control_routes_answer_through_the_control() {
    let dir = fixture();
    let control = Arc::new(FakeControl::default());
    let (status, body) = call(
        state_with(&dir, control.clone()),
        "POST",
        "/api/v1/checkpoints",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["id"], 5);
    let (status, body) = call(
        state(&dir),
        "GET",
        "/api/v1/checkpoints/5/status",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
    let (_, body) = call(
        state(&dir),
        "GET",
        "/api/v1/checkpoints/4/status",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(body["state"], "completed");
    let (status, body) = call(
        state_with(&dir, control.clone()),
        "POST",
        "/api/v1/checkpoints/4/restore",
        Some(TOKEN),
        br#"{"dry_run":true}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["dry_run"], true);
    let (status, body) = call(
        state(&dir),
        "POST",
        "/api/v1/checkpoints/4/restore",
        Some(TOKEN),
        br#"{"dry_run":"yes"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(control.restores.load(Ordering::SeqCst), 1);
    let (status, body) = call(
        state(&dir),
        "GET",
        "/api/v1/checkpoints/4/operators/steps%5B2%5D.window/state?key=%22u01%22",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"], "u01");
    let (status, _) = call(
        state(&dir),
        "GET",
        "/api/v1/checkpoints/4/operators/steps%5B2%5D.window/state?key=u01",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let no_pipeline = ApiState {
        control: None,
        ..state(&dir)
    };
    let (status, body) = call(no_pipeline, "GET", "/api/v1/status", Some(TOKEN), vec![]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("no_pipeline"))
    );
}

#[tokio::test]
async fn delete_removes_the_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_fixture(dir.path());
    let (status, _) = call(
        state(dir.path()),
        "DELETE",
        "/api/v1/checkpoints/4",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        state(dir.path()),
        "GET",
        "/api/v1/checkpoints/4",
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    #[test]
    fn no_route_parameter_or_body_panics_or_answers_500(
        segment in "[a-zA-Z0-9%./_-]{0,24}",
        method in proptest::sample::select(vec!["GET", "POST", "DELETE", "PUT"]),
        tail in proptest::sample::select(vec!["", "/verify", "/x", "/status", "/restore", "/diff/4", "/diff/", "/operators/", "/operators/w/keys", "/operators/steps%5B2%5D.window/keys?offset=", "/operators/steps%5B2%5D.window/state?key=", "/operators/a%2Fb/state?key=%ff"]),
        query in "[a-zA-Z0-9%=&_-]{0,12}",
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let uri = format!("/api/v1/checkpoints/{segment}{tail}{query}");
        if uri.parse::<axum::http::Uri>().is_err() {
            return Ok(());
        }
        let (status, _) = runtime.block_on(call(state(&fixture()), method, &uri, Some(TOKEN), body));
        proptest::prop_assert!(status != StatusCode::INTERNAL_SERVER_ERROR, "{method} {uri}: {status}");
    }
}
