//! The processor's HTTP server: a plain [`router`] that tests drive without a socket.
//!
//! Every route but `GET /health` and `GET /ready` requires `Authorization: Bearer <token>` when
//! a token is configured; the token is compared in constant time and never logged. Bodies are
//! capped at [`MAX_BODY`] and requests time out after [`REQUEST_TIMEOUT`]. Errors are an
//! [`ErrorBody`] with a stable code; no input makes a handler panic or answer 500 (a 500 means
//! the server itself failed, for instance the checkpoint directory became unreadable).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dataflow_checkpoint::{CheckpointError, CheckpointId, CheckpointStorage, Manifest};
use dataflow_metrics::Metrics;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::{routes, CheckpointSummary, ErrorBody, VerifyResponse};

/// The largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 << 10;
/// How long a request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers serve.
#[derive(Clone)]
pub struct ApiState {
    /// The checkpoints, if the pipeline takes any.
    pub storage: Option<Arc<dyn CheckpointStorage>>,
    /// The bearer token protected routes require; `None` leaves them open (the processor then
    /// binds only to loopback).
    pub token: Option<String>,
    /// The run's metrics, served at `/metrics`.
    pub metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("ApiState")
            .field("storage", &self.storage.is_some())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// The API's routes with their layers.
pub fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    let protected = Router::new()
        .route(routes::CHECKPOINTS, get(list_checkpoints))
        .route(routes::CHECKPOINT, get(show_checkpoint))
        .route(routes::CHECKPOINT_VERIFY, post(verify_checkpoint))
        .route(routes::METRICS, get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route(routes::HEALTH, get(|| async { "ok" }))
        .route(routes::READY, get(|| async { "ready" }))
        .merge(protected)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Refuses by Content-Length before any handler runs, whether or not it reads the body.
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// Serves [`router`] on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// An error answer: a status and an [`ErrorBody`] with a stable code.
#[derive(Debug)]
pub enum ApiError {
    /// 401 `unauthorized`.
    Unauthorized,
    /// 400 `bad_request`.
    BadRequest(String),
    /// 404 `not_found`.
    NotFound(String),
    /// 409 `no_checkpoints`: the pipeline takes none.
    NoCheckpoints,
    /// 422 `verification_failed`: the checkpoint exists but fails its checks.
    VerificationFailed(String),
    /// 500 `internal`.
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid `Authorization: Bearer <token>` header is required".to_string(),
            ),
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, "bad_request", message),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            ApiError::NoCheckpoints => (
                StatusCode::CONFLICT,
                "no_checkpoints",
                "this pipeline takes no checkpoints".to_string(),
            ),
            ApiError::VerificationFailed(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "verification_failed",
                message,
            ),
            ApiError::Internal(message) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        };
        let body = ErrorBody {
            code: code.into(),
            message,
        };
        (status, Json(body)).into_response()
    }
}

impl From<CheckpointError> for ApiError {
    fn from(error: CheckpointError) -> Self {
        match error {
            CheckpointError::NotFound { .. } => ApiError::NotFound(error.to_string()),
            CheckpointError::InvalidId(_) => ApiError::BadRequest(error.to_string()),
            CheckpointError::Corrupt { .. } | CheckpointError::TooLarge { .. } => {
                ApiError::VerificationFailed(error.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Equal contents, in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let allowed =
            given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()));
        if !allowed {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let metrics = state
        .metrics
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("no metrics are kept".into()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response())
}

fn storage(state: &ApiState) -> Result<Arc<dyn CheckpointStorage>, ApiError> {
    state.storage.clone().ok_or(ApiError::NoCheckpoints)
}

fn parse_id(text: &str) -> Result<CheckpointId, ApiError> {
    text.parse::<CheckpointId>()
        .map_err(|error| ApiError::BadRequest(error.to_string()))
}

/// Runs blocking checkpoint IO off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::Internal(format!("request failed: {error}")))?
}

async fn list_checkpoints(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<Vec<CheckpointSummary>>, ApiError> {
    let storage = storage(&state)?;
    let rows = blocking(move || Ok(CheckpointSummary::list(storage.as_ref())?)).await?;
    Ok(Json(rows))
}

async fn show_checkpoint(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Manifest>, ApiError> {
    let id = parse_id(&id)?;
    let storage = storage(&state)?;
    let manifest = blocking(move || Ok(storage.verify(id)?)).await?;
    Ok(Json(manifest))
}

async fn verify_checkpoint(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let id = parse_id(&id)?;
    let storage = storage(&state)?;
    let manifest = blocking(move || Ok(storage.verify(id)?)).await?;
    Ok(Json(VerifyResponse {
        id: manifest.id.0,
        verified: true,
        sha256: manifest.payload_sha256,
    }))
}
