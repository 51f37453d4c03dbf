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
            error: None,
            tasks: Vec::new(),
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
            first_own: 1,
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
        if routes::PUBLIC.contains(path) {
            continue;
        }
        let method = method.to_uppercase();
        let uri = path
            .replace("{id}", "4")
            .replace("{other}", "4")
            .replace("{operator}", "w")
            .replace("{asset}", "app.js");
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
            .replace("{operator}", "w")
            .replace("{asset}", "app.js");
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

/// An ingest that answers by the body's first word, and records what it was told.
#[derive(Default)]
struct FakeIngest {
    refused: std::sync::Mutex<Vec<dataflow_metrics::RefuseReason>>,
}

impl dataflow_api::Ingest for FakeIngest {
    fn ingest(
        &self,
        source: Option<&str>,
        format: dataflow_api::IngestFormat,
        body: &[u8],
    ) -> Result<u64, dataflow_api::IngestError> {
        use dataflow_api::IngestError as E;
        use std::time::Duration;
        if source.is_some_and(|s| s != "in") {
            return Err(E::NoSource(format!(
                "no http source named `{}`",
                source.unwrap_or("")
            )));
        }
        let text = String::from_utf8_lossy(body);
        match text.split_whitespace().next() {
            Some("full") => Err(E::QueueFull(Duration::from_millis(100))),
            Some("limit") => Err(E::RateLimited(Duration::from_millis(1500))),
            Some("stop") => Err(E::ShuttingDown(Duration::from_secs(1))),
            Some("bad") => Err(E::Malformed("line 2: invalid JSON: oops".into())),
            _ => Ok(match format {
                dataflow_api::IngestFormat::Json => 1,
                dataflow_api::IngestFormat::JsonLines => text.lines().count() as u64,
            }),
        }
    }

    fn refused(&self, reason: dataflow_metrics::RefuseReason) {
        self.refused.lock().expect("lock").push(reason);
    }
}

fn ingest_state(ingest: Arc<FakeIngest>) -> ApiState {
    ApiState {
        token: Some(TOKEN.into()),
        ingest: Some(ingest),
        ..ApiState::default()
    }
}

/// `POST uri` with a content type; the status, the `Retry-After` header and the JSON body.
async fn post_ingest(
    state: ApiState,
    uri: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let mut request = Request::builder().method("POST").uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = router(state)
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible service");
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_string());
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, retry, json)
}

#[tokio::test]
async fn ingest_answers_202_429_400_503_and_counts_its_refusals() {
    use dataflow_metrics::RefuseReason;
    let ingest = Arc::new(FakeIngest::default());
    let post = |uri: &'static str, token, content_type, body: &str| {
        post_ingest(
            ingest_state(ingest.clone()),
            uri,
            token,
            content_type,
            body.as_bytes().to_vec(),
        )
    };
    let ndjson = Some("application/x-ndjson");
    let (status, retry, body) = post("/ingest", Some(TOKEN), ndjson, "{}\n{}\n{}").await;
    assert_eq!((status, retry), (StatusCode::ACCEPTED, None));
    assert_eq!(body, serde_json::json!({"accepted": 3}));
    let (status, _, body) = post(
        "/ingest?source=in",
        Some(TOKEN),
        Some("application/json; charset=utf-8"),
        "[{}]",
    )
    .await;
    assert_eq!(
        (status, &body["accepted"]),
        (StatusCode::ACCEPTED, &1.into())
    );
    // Without a Content-Type the body is JSON Lines.
    let (status, _, body) = post("/ingest", Some(TOKEN), None, "{}\n{}").await;
    assert_eq!(
        (status, &body["accepted"]),
        (StatusCode::ACCEPTED, &2.into())
    );

    for (text, code, retry) in [("full", "queue_full", "1"), ("limit", "rate_limited", "2")] {
        let (status, after, body) = post("/ingest", Some(TOKEN), ndjson, text).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
        assert_eq!(after.as_deref(), Some(retry), "{text}");
        assert_eq!(body["code"], code);
    }
    let (status, after, body) = post("/ingest", Some(TOKEN), ndjson, "stop").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        (after.as_deref(), &body["code"]),
        (Some("1"), &"shutting_down".into())
    );
    let (status, _, body) = post("/ingest", Some(TOKEN), ndjson, "bad").await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::BAD_REQUEST, &"bad_request".into())
    );
    let message = body["message"].as_str().expect("message");
    assert!(message.starts_with("line 2: invalid JSON"), "{message}");
    assert!(
        message.contains("nothing of this body was accepted"),
        "{message}"
    );
    let (status, _, body) = post("/ingest?source=nope", Some(TOKEN), ndjson, "{}").await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::NOT_FOUND, &"not_found".into())
    );

    // Refused before the body reaches the ingest: counted by the server.
    let (status, _, body) = post("/ingest", Some(TOKEN), Some("text/csv"), "a,b").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["code"], "unsupported_media_type");
    let (status, _, body) = post("/ingest", Some("wrong"), ndjson, "{}").await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::UNAUTHORIZED, &"unauthorized".into())
    );
    let (status, _, body) = post("/ingest", None, ndjson, "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let huge = vec![b'\n'; dataflow_api::server::MAX_INGEST_BODY + 1];
    let (status, _, body) = post_ingest(
        ingest_state(ingest.clone()),
        "/ingest",
        Some(TOKEN),
        ndjson,
        huge,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "payload_too_large");
    // Bodies above the other routes' limit are fine here.
    let big = "{}\n".repeat(MAX_BODY);
    let (status, _, body) = post("/ingest", Some(TOKEN), ndjson, &big).await;
    assert_eq!(
        (status, &body["accepted"]),
        (StatusCode::ACCEPTED, &MAX_BODY.into())
    );
    assert_eq!(
        *ingest.refused.lock().expect("lock"),
        vec![
            RefuseReason::Malformed,
            RefuseReason::Unauthorized,
            RefuseReason::Unauthorized,
            RefuseReason::TooLarge
        ]
    );
}

#[tokio::test]
async fn ingest_without_an_http_source_is_a_conflict() {
    let (status, _, body) = post_ingest(
        state(&fixture()),
        "/ingest",
        Some(TOKEN),
        Some("application/json"),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "no_ingest");
}

#[tokio::test]
async fn backpressure_reports_every_stage_and_the_bottleneck() {
    let metrics = Arc::new(dataflow_metrics::Metrics::new());
    metrics.source("p", "in");
    metrics.operator("p", "steps[0].filter", "filter");
    metrics.operator("p", "sinks[0]", "sink");
    let with_metrics = ApiState {
        token: Some(TOKEN.into()),
        metrics: Some(metrics),
        ..ApiState::default()
    };
    let (status, body) = call(
        with_metrics,
        "GET",
        routes::BACKPRESSURE,
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let report: dataflow_api::BackpressureReport =
        serde_json::from_value(body).expect("a backpressure report");
    let stages: Vec<(&str, &str)> = report
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.kind.as_str()))
        .collect();
    assert_eq!(
        stages,
        [
            ("in", "source"),
            ("steps[0].filter", "filter"),
            ("sinks[0]", "sink")
        ]
    );
    for stage in &report.stages {
        for share in [stage.busy, stage.backpressured, stage.starved] {
            assert!((0.0..=1.0).contains(&share), "{stage:?}");
        }
    }
    let (status, body) = call(
        ApiState {
            token: Some(TOKEN.into()),
            ..ApiState::default()
        },
        "GET",
        routes::BACKPRESSURE,
        Some(TOKEN),
        vec![],
    )
    .await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::CONFLICT, &"no_pipeline".into())
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    #[test]
    fn no_ingest_request_panics_or_answers_500(
        query in "[a-zA-Z0-9%=&?_-]{0,16}",
        content_type in proptest::sample::select(vec!["", "application/json", "application/x-ndjson", "text/plain", "application/json; charset=\u{ff}", "\u{1}"]),
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let uri = format!("/ingest{query}");
        if uri.parse::<axum::http::Uri>().is_err() {
            return Ok(());
        }
        let content_type = (!content_type.is_empty()).then_some(content_type);
        if content_type.is_some_and(|c| axum::http::HeaderValue::from_str(c).is_err()) {
            return Ok(());
        }
        let state = ingest_state(Arc::new(FakeIngest::default()));
        let (status, _, _) = runtime.block_on(post_ingest(state, &uri, Some(TOKEN), content_type, body));
        proptest::prop_assert!(status != StatusCode::INTERNAL_SERVER_ERROR, "{uri}: {status}");
    }
}
