//! The restore body and the checkpoint status, router-level with exact codes and bodies: a
//! restore body must be empty or the documented object (`[]`, `null`, `"x"`, a `dry_run` of
//! another type, unknown fields are 400 and restore nothing), and a checkpoint that completed
//! and was later removed is `removed`, not `failed`; id 0 is 404.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dataflow_api::server::{router, ApiState};
use dataflow_api::{Control, ControlError, PipelineStatus, Progress, RestoreReport, Watermarks};
use dataflow_checkpoint::{CheckpointStorage, LocalStorage};
use http_body_util::BodyExt;
use tower::ServiceExt;

const TOKEN: &str = "t0ken";

/// The committed checkpoint fixture: checkpoint 4 only.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../cmd/processor/tests/fixtures/checkpoint-v1/checkpoints")
}

/// A pipeline that records the restores it is asked for, with set progress and a set of
/// checkpoints it completed.
struct Fake {
    restores: Mutex<Vec<(u64, bool)>>,
    progress: Progress,
    completed: BTreeSet<u64>,
}

impl Fake {
    fn new(last_completed: u64, last_triggered: u64, completed: &[u64]) -> Arc<Fake> {
        Arc::new(Fake {
            restores: Mutex::new(Vec::new()),
            progress: Progress {
                last_completed,
                last_triggered,
                live: true,
                first_own: 1,
            },
            completed: completed.iter().copied().collect(),
        })
    }

    fn restores(&self) -> Vec<(u64, bool)> {
        self.restores.lock().expect("lock").clone()
    }
}

#[async_trait::async_trait]
impl Control for Fake {
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
            last_checkpoint: Some(self.progress.last_completed),
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
        Ok(self.progress.last_triggered + 1)
    }
    fn progress(&self) -> Progress {
        self.progress
    }
    async fn restore(&self, id: u64, dry_run: bool) -> Result<RestoreReport, ControlError> {
        self.restores.lock().expect("lock").push((id, dry_run));
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
    fn was_completed(&self, id: u64) -> bool {
        self.completed.contains(&id)
    }
}

fn state(dir: &Path, control: Arc<Fake>) -> ApiState {
    let storage: Arc<dyn CheckpointStorage> =
        Arc::new(LocalStorage::open_for_reading(dir).expect("storage"));
    ApiState {
        storage: Some(storage),
        token: Some(TOKEN.into()),
        control: Some(control),
        ..ApiState::default()
    }
}

async fn call(
    state: ApiState,
    method: &str,
    uri: &str,
    body: &[u8],
) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Body::from(body.to_vec()))
        .expect("request");
    let response = router(state)
        .oneshot(request)
        .await
        .expect("infallible service");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    (status, json)
}

#[tokio::test]
async fn a_restore_body_that_is_not_the_documented_object_is_refused_and_restores_nothing() {
    let dir = fixture();
    let control = Fake::new(4, 4, &[4]);
    let refused: [(&[u8], &str); 10] = [
        (b"[]", "the body is an array, not an object"),
        (b"[true]", "the body is an array, not an object"),
        (b"null", "the body is null, not an object"),
        (br#""x""#, "the body is a string, not an object"),
        (b"true", "the body is a boolean, not an object"),
        (b"7", "the body is a number, not an object"),
        (
            br#"{"dry_run": "yes"}"#,
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            br#"{"dry_run": null}"#,
            "invalid type: null, expected a boolean",
        ),
        (
            br#"{"dryrun": true}"#,
            "unknown field `dryrun`, expected `dry_run`",
        ),
        (br#"{"dry_run": true"#, "EOF while parsing an object"),
    ];
    for (body, why) in refused {
        let text = String::from_utf8_lossy(body);
        let (status, answer) = call(
            state(&dir, control.clone()),
            "POST",
            "/api/v1/checkpoints/4/restore",
            body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}: {answer}");
        assert_eq!(answer["code"], "bad_request", "{text}");
        let message = answer["message"].as_str().expect("a message");
        assert!(
            message.starts_with("bad restore request: ") && message.contains(why),
            "{text}: {message}"
        );
        assert!(
            message.ends_with(r#"send an empty body or an object such as {"dry_run": true}"#),
            "{text}: {message}"
        );
    }
    assert_eq!(control.restores(), Vec::<(u64, bool)>::new());

    // What is taken: an empty (or blank) body and `{}` restore for real, `dry_run` a boolean.
    let taken: [(&[u8], bool); 5] = [
        (b"", false),
        (b" \n", false),
        (b"{}", false),
        (br#"{"dry_run": false}"#, false),
        (br#" {"dry_run": true} "#, true),
    ];
    for (body, dry_run) in taken {
        let (status, answer) = call(
            state(&dir, control.clone()),
            "POST",
            "/api/v1/checkpoints/4/restore",
            body,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["checkpoint"], 4);
        assert_eq!(answer["dry_run"], dry_run);
    }
    assert_eq!(
        control.restores(),
        vec![(4, false), (4, false), (4, false), (4, false), (4, true)]
    );
}

#[tokio::test]
async fn a_checkpoint_removed_after_it_completed_is_removed_and_id_0_is_not_found() {
    // Stored: 4. Completed by the pipeline: 2, 3 (since removed) and 4; 1 and 5 never
    // completed; 6 is triggered and pending; 7 was never asked for.
    let dir = fixture();
    let control = Fake::new(5, 6, &[2, 3, 4]);
    let expect = [
        (
            "2",
            StatusCode::OK,
            serde_json::json!({"id": 2, "state": "removed"}),
        ),
        (
            "3",
            StatusCode::OK,
            serde_json::json!({"id": 3, "state": "removed"}),
        ),
        (
            "4",
            StatusCode::OK,
            serde_json::json!({"id": 4, "state": "completed"}),
        ),
        (
            "1",
            StatusCode::OK,
            serde_json::json!({"id": 1, "state": "failed"}),
        ),
        (
            "5",
            StatusCode::OK,
            serde_json::json!({"id": 5, "state": "failed"}),
        ),
        (
            "6",
            StatusCode::OK,
            serde_json::json!({"id": 6, "state": "pending"}),
        ),
        (
            "0",
            StatusCode::NOT_FOUND,
            serde_json::json!({"code": "not_found", "message": "no checkpoint 0: checkpoint ids start at 1"}),
        ),
        (
            "00",
            StatusCode::NOT_FOUND,
            serde_json::json!({"code": "not_found", "message": "no checkpoint 0: checkpoint ids start at 1"}),
        ),
        (
            "7",
            StatusCode::NOT_FOUND,
            serde_json::json!({"code": "not_found", "message": "no checkpoint 7: none was triggered with that id"}),
        ),
    ];
    expect_statuses(&dir, control, expect).await;
}

#[tokio::test]
async fn a_checkpoint_of_an_earlier_run_that_is_gone_is_not_found_not_failed() {
    // This process started after checkpoint 4 (stored): 1 to 3 were an earlier run's and are
    // gone; 5 failed in this process; 6 completed here and was removed.
    let dir = fixture();
    let control = Arc::new(Fake {
        restores: Mutex::new(Vec::new()),
        progress: Progress {
            last_completed: 6,
            last_triggered: 0,
            live: true,
            first_own: 5,
        },
        completed: [6].into_iter().collect(),
    });
    let gone = serde_json::json!({
        "code": "not_found",
        "message": "no checkpoint 2: it is not stored, and an earlier run of the processor took it (removed since, or never completed)",
    });
    let expect = [
        ("2", StatusCode::NOT_FOUND, gone),
        (
            "4",
            StatusCode::OK,
            serde_json::json!({"id": 4, "state": "completed"}),
        ),
        (
            "5",
            StatusCode::OK,
            serde_json::json!({"id": 5, "state": "failed"}),
        ),
        (
            "6",
            StatusCode::OK,
            serde_json::json!({"id": 6, "state": "removed"}),
        ),
    ];
    expect_statuses(&dir, control, expect).await;
}

/// Asks the status of each checkpoint of `expect` and checks the answer's code and body.
async fn expect_statuses<const N: usize>(
    dir: &Path,
    control: Arc<Fake>,
    expect: [(&str, StatusCode, serde_json::Value); N],
) {
    for (id, status, body) in expect {
        let answer = call(
            state(dir, control.clone()),
            "GET",
            &format!("/api/v1/checkpoints/{id}/status"),
            b"",
        )
        .await;
        assert_eq!(answer, (status, body), "checkpoint {id}");
    }
}
