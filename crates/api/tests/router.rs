//! The API router driven without a socket: auth, ids, errors, limits, and a property test that
//! no route parameter or body makes it panic or answer 500.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dataflow_api::server::{router, ApiState, MAX_BODY};
use dataflow_checkpoint::{CheckpointStorage, LocalStorage};
use http_body_util::BodyExt;
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

fn state(dir: &Path) -> ApiState {
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalStorage::open_for_reading(dir).expect("storage"));
    ApiState {
        storage: Some(storage),
        token: Some(TOKEN.into()),
        metrics: None,
    }
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
    for (method, uri) in [
        ("GET", "/api/v1/checkpoints"),
        ("GET", "/api/v1/checkpoints/4"),
        ("POST", "/api/v1/checkpoints/4/verify"),
    ] {
        for token in [None, Some("wrong"), Some("s3cret-token-but-longer")] {
            let (status, body) = call(state(&dir), method, uri, token, vec![]).await;
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
    let data = dir.path().join("00000000000000000004/data.bin");
    let mut bytes = std::fs::read(&data).expect("data");
    bytes[60] ^= 0x80;
    std::fs::write(&data, bytes).expect("damage");
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

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    #[test]
    fn no_route_parameter_or_body_panics_or_answers_500(
        segment in "[a-zA-Z0-9%./_-]{0,24}",
        method in proptest::sample::select(vec!["GET", "POST", "DELETE", "PUT"]),
        tail in proptest::sample::select(vec!["", "/verify", "/x"]),
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let uri = format!("/api/v1/checkpoints/{segment}{tail}");
        if uri.parse::<axum::http::Uri>().is_err() {
            return Ok(());
        }
        let (status, _) = runtime.block_on(call(state(&fixture()), method, &uri, Some(TOKEN), body));
        proptest::prop_assert!(status != StatusCode::INTERNAL_SERVER_ERROR, "{method} {uri}: {status}");
    }
}
