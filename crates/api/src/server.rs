//! The processor's HTTP server: a plain [`router`] that tests drive without a socket.
//!
//! Every route but `GET /health` and `GET /ready` requires `Authorization: Bearer <token>` when
//! a token is configured; the token is compared in constant time and never logged. Bodies are
//! capped at [`MAX_BODY`] and requests time out after [`REQUEST_TIMEOUT`]. Errors are an
//! [`ErrorBody`] with a stable code; no input makes a handler panic or answer 500 (a 500 means
//! the server itself failed, for instance the checkpoint directory became unreadable).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dataflow_checkpoint::{Checkpoint, CheckpointError, CheckpointId, CheckpointStorage, Manifest};
use dataflow_metrics::{BackpressureReport, Counters, Metrics, RefuseReason};
use std::collections::HashMap;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::state::{self, CheckpointDiff, KeyPage, StateError, StateValue};
pub use crate::ServeLimits;
use crate::{
    routes, CheckpointProgress, CheckpointSummary, Control, ControlError, ErrorBody, GraphNode,
    Ingest, IngestError, IngestFormat, IngestResponse, LatencyReading, PipelineGraph,
    PipelineStatus, RestoreReport, RestoreRequest, StateDecoder, TriggerResponse, VerifyResponse,
    Watermarks,
};

/// The OpenAPI document of the routes, served at [`routes::OPENAPI`]; the same file as
/// `docs/openapi.json` (hand-written; a test checks it names every route).
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

/// The largest `POST /ingest` body accepted, in bytes (larger ones answer 413).
pub const MAX_INGEST_BODY: usize = 8 << 20;

/// The largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 << 10;
/// How long a request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers serve. Fields are added as the API grows: build it with
/// `ApiState { storage, token, ..ApiState::default() }`.
#[derive(Clone, Default)]
pub struct ApiState {
    /// The checkpoints, if the pipeline takes any.
    pub storage: Option<Arc<dyn CheckpointStorage>>,
    /// The bearer token protected routes require; `None` leaves them open (the processor then
    /// binds only to loopback).
    pub token: Option<String>,
    /// The run's metrics, served at `/metrics`.
    pub metrics: Option<Arc<Metrics>>,
    /// The running pipeline: status, watermarks, trigger, restore.
    pub control: Option<Arc<dyn Control>>,
    /// Reads operator state for the state and diff routes.
    pub decoder: Option<Arc<dyn StateDecoder>>,
    /// Takes `POST /ingest` bodies, when the pipeline has `http` sources.
    pub ingest: Option<Arc<dyn Ingest>>,
    /// The pipeline's sources, steps and sinks, for [`routes::GRAPH`] (their counts come from
    /// `metrics`).
    pub graph: Option<Arc<GraphShape>>,
    /// The run's counters: the end-to-end latency of [`routes::GRAPH`].
    pub counters: Option<Arc<Counters>>,
}

/// One source, step or sink of a [`GraphShape`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeNode {
    /// Its name, as in the metrics: the source's name, `steps[1].filter`, `sinks[0]`.
    pub name: String,
    /// A source's or sink's `type:`, or a step's operator kind.
    pub kind: String,
}

/// What [`routes::GRAPH`] draws: the pipeline's name and its nodes in pipeline order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphShape {
    /// The pipeline's name (the metrics' `pipeline` label).
    pub pipeline: String,
    /// The sources.
    pub sources: Vec<ShapeNode>,
    /// The steps (operators), in order.
    pub steps: Vec<ShapeNode>,
    /// The result sinks, named `sinks[i]`.
    pub sinks: Vec<ShapeNode>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in logs.
        f.debug_struct("ApiState")
            .field("storage", &self.storage.is_some())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("metrics", &self.metrics.is_some())
            .field("control", &self.control.is_some())
            .field("decoder", &self.decoder.is_some())
            .field("ingest", &self.ingest.is_some())
            .field("graph", &self.graph.is_some())
            .field("counters", &self.counters.is_some())
            .finish()
    }
}

/// The API's routes with their layers.
pub fn router(state: ApiState) -> Router {
    let state = Arc::new(state);
    let protected = Router::new()
        .route(routes::OPENAPI, get(openapi))
        .route(routes::STATUS, get(status))
        .route(routes::WATERMARKS, get(watermarks))
        .route(
            routes::CHECKPOINTS,
            get(list_checkpoints).post(trigger_checkpoint),
        )
        .route(
            routes::CHECKPOINT,
            get(show_checkpoint).delete(delete_checkpoint),
        )
        .route(routes::CHECKPOINT_VERIFY, post(verify_checkpoint))
        .route(routes::CHECKPOINT_STATUS, get(checkpoint_status))
        .route(routes::CHECKPOINT_RESTORE, post(restore_checkpoint))
        .route(routes::CHECKPOINT_DIFF, get(diff_checkpoints))
        .route(routes::STATE_KEYS, get(state_keys))
        .route(routes::STATE_KEY, get(state_key))
        .route(routes::METRICS, get(metrics))
        .route(routes::BACKPRESSURE, get(backpressure))
        .route(routes::GRAPH, get(graph))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // Ingest bodies have a limit of their own, checked by the handler so that a refusal is
    // counted; its refusals for bad credentials are counted too.
    let ingest = Router::new()
        .route(routes::INGEST, post(ingest))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_token_ingest,
        ))
        .layer(DefaultBodyLimit::max(MAX_INGEST_BODY));
    let limited = Router::new()
        .route(routes::HEALTH, get(|| async { "ok" }))
        .route(routes::READY, get(ready))
        .merge(crate::ui::routes())
        .merge(protected)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Refuses by Content-Length before any handler runs, whether or not it reads the body.
        .layer(RequestBodyLimitLayer::new(MAX_BODY));
    Router::new()
        .merge(ingest)
        .merge(limited)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

/// Serves [`router`] on `listener` within the default [`ServeLimits`] until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState) -> std::io::Result<()> {
    serve_with_limits(listener, state, ServeLimits::default()).await
}

/// Serves [`router`] on `listener` within `limits` (connections at once, header and idle
/// timeouts, header size, requests per connection) until the task is dropped; see
/// [`ServeLimits`].
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    state: ApiState,
    limits: ServeLimits,
) -> std::io::Result<()> {
    crate::connections::serve(listener, router(state), limits).await
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
    /// 409 with a code: `no_pipeline` (no running pipeline behind this API), `not_running`,
    /// `incompatible`.
    Conflict(&'static str, String),
    /// 422 `verification_failed`: the checkpoint exists but fails its checks.
    VerificationFailed(String),
    /// 500 `internal`.
    Internal(String),
    /// 413 `payload_too_large`.
    PayloadTooLarge(String),
    /// 415 `unsupported_media_type`.
    UnsupportedMediaType(String),
    /// 429 with a code (`queue_full`, `rate_limited`) and a `Retry-After`.
    TooManyRequests(&'static str, String, Duration),
    /// 503 `shutting_down`, with a `Retry-After`.
    Unavailable(String, Duration),
    /// 503 `failed`: the pipeline failed, for the reason given; retrying will not help.
    Failed(String),
}

/// A `Retry-After` value: whole seconds, at least 1.
fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
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
            ApiError::Conflict(code, message) => (StatusCode::CONFLICT, code, message),
            ApiError::VerificationFailed(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "verification_failed",
                message,
            ),
            ApiError::Internal(message) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
            ApiError::PayloadTooLarge(message) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            ApiError::UnsupportedMediaType(message) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            ),
            ApiError::TooManyRequests(code, message, wait) => {
                retry_after = Some(wait);
                (StatusCode::TOO_MANY_REQUESTS, code, message)
            }
            ApiError::Unavailable(message, wait) => {
                retry_after = Some(wait);
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            ApiError::Failed(message) => (StatusCode::SERVICE_UNAVAILABLE, "failed", message),
        };
        let body = ErrorBody {
            code: code.into(),
            message,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(wait) = retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(retry_after_seconds(wait)),
            );
        }
        response
    }
}

impl From<CheckpointError> for ApiError {
    fn from(error: CheckpointError) -> Self {
        match error {
            CheckpointError::NotFound { .. } => ApiError::NotFound(error.to_string()),
            // A checkpoint whose files vanish while read was deleted meanwhile (by retention or
            // a `DELETE`): gone, not a server fault, whichever route was reading it.
            CheckpointError::Io { ref cause, .. }
                if cause.kind() == std::io::ErrorKind::NotFound =>
            {
                ApiError::NotFound(error.to_string())
            }
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

/// Whether `request` carries the token (or none is required).
fn authorized(state: &ApiState, request: &Request) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

async fn require_token(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    if !authorized(&state, &request) {
        return ApiError::Unauthorized.into_response();
    }
    next.run(request).await
}

/// [`require_token`] for `POST /ingest`, counting refusals in the ingest metrics.
async fn require_token_ingest(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    if !authorized(&state, &request) {
        if let Some(ingest) = &state.ingest {
            ingest.refused(RefuseReason::Unauthorized);
        }
        return ApiError::Unauthorized.into_response();
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
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Manifest>, ApiError> {
    let id = parse_id(&id?.0)?;
    let storage = storage(&state)?;
    let manifest = blocking(move || Ok(storage.verify(id)?)).await?;
    Ok(Json(manifest))
}

async fn verify_checkpoint(
    State(state): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let id = parse_id(&id?.0)?;
    let storage = storage(&state)?;
    let manifest = blocking(move || Ok(storage.verify(id)?)).await?;
    Ok(Json(VerifyResponse {
        id: manifest.id.0,
        verified: true,
        sha256: manifest.payload_sha256,
    }))
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::NoCheckpoints => ApiError::NoCheckpoints,
            ControlError::NotRunning(message) => ApiError::Conflict("not_running", message),
            ControlError::NotFound(message) => ApiError::NotFound(message),
            ControlError::Verification(message) => ApiError::VerificationFailed(message),
            ControlError::Incompatible(message) => ApiError::Conflict("incompatible", message),
            ControlError::Failed(message) => ApiError::Internal(message),
        }
    }
}

impl From<StateError> for ApiError {
    fn from(error: StateError) -> Self {
        match error {
            StateError::UnknownOperator(message) | StateError::UnknownKey(message) => {
                ApiError::NotFound(message)
            }
            StateError::Undecodable(message) => ApiError::VerificationFailed(message),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(error: PathRejection) -> Self {
        ApiError::BadRequest(format!("bad path: {error}"))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(error: QueryRejection) -> Self {
        ApiError::BadRequest(format!("bad query: {error}"))
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// `GET /api/v1/graph`: the graph's nodes with their counts from the metrics, and the latency.
async fn graph(State(state): State<Arc<ApiState>>) -> Result<Json<PipelineGraph>, ApiError> {
    let no_graph = || {
        ApiError::Conflict(
            "no_pipeline",
            "no running pipeline is behind this API: it has no graph to show".into(),
        )
    };
    let shape = state.graph.as_ref().ok_or_else(no_graph)?;
    let metrics = state.metrics.as_ref().ok_or_else(no_graph)?;
    let pipeline = &shape.pipeline;
    let node = |role: &str, shape: &ShapeNode, events_in, events_out| GraphNode {
        name: shape.name.clone(),
        role: role.into(),
        kind: shape.kind.clone(),
        events_in,
        events_out,
    };
    let mut nodes = Vec::new();
    for source in &shape.sources {
        let read = metrics.source(pipeline, &source.name).events_read_count();
        nodes.push(node("source", source, None, Some(read)));
    }
    for step in &shape.steps {
        let counts = metrics.operator(pipeline, &step.name, &step.kind);
        nodes.push(node(
            "step",
            step,
            Some(counts.events_received_count()),
            Some(counts.events_sent_count()),
        ));
    }
    for sink in &shape.sinks {
        // Sinks count as operators of kind `sink` (docs/metrics.md).
        let counts = metrics.operator(pipeline, &sink.name, "sink");
        nodes.push(node(
            "sink",
            sink,
            Some(counts.events_received_count()),
            None,
        ));
    }
    let latency = state
        .counters
        .as_ref()
        .map(|counters| {
            let latency = counters.latency();
            LatencyReading {
                count: latency.count(),
                p50_ms: latency.quantile(0.5),
                p99_ms: latency.quantile(0.99),
                buckets: latency.buckets(),
            }
        })
        .unwrap_or_default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        });
    Ok(Json(PipelineGraph {
        pipeline: pipeline.clone(),
        now_ms,
        nodes,
        latency,
    }))
}

fn control(state: &ApiState) -> Result<Arc<dyn Control>, ApiError> {
    state.control.clone().ok_or_else(|| {
        ApiError::Conflict(
            "no_pipeline",
            "no running pipeline is behind this API".into(),
        )
    })
}

fn decoder(state: &ApiState) -> Result<Arc<dyn StateDecoder>, ApiError> {
    state.decoder.clone().ok_or_else(|| {
        ApiError::Conflict("no_pipeline", "this API cannot read operator state".into())
    })
}

async fn status(State(state): State<Arc<ApiState>>) -> Result<Json<PipelineStatus>, ApiError> {
    Ok(Json(control(&state)?.status()))
}

async fn watermarks(State(state): State<Arc<ApiState>>) -> Result<Json<Watermarks>, ApiError> {
    Ok(Json(control(&state)?.watermarks()))
}

async fn trigger_checkpoint(
    State(state): State<Arc<ApiState>>,
) -> Result<(StatusCode, Json<TriggerResponse>), ApiError> {
    storage(&state)?;
    let id = control(&state)?.trigger().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TriggerResponse {
            id,
            state: "pending".into(),
        }),
    ))
}

/// Whether `id` is a complete checkpoint of the storage.
async fn exists(storage: Arc<dyn CheckpointStorage>, id: CheckpointId) -> Result<bool, ApiError> {
    blocking(move || Ok(storage.list()?.iter().any(|entry| entry.id == id))).await
}

async fn checkpoint_status(
    State(state): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<CheckpointProgress>, ApiError> {
    let id = parse_id(&id?.0)?;
    let storage = storage(&state)?;
    let answer = |state: &str| {
        Ok(Json(CheckpointProgress {
            id: id.0,
            state: state.into(),
        }))
    };
    if id.0 == 0 {
        return Err(ApiError::NotFound(
            "no checkpoint 0: checkpoint ids start at 1".into(),
        ));
    }
    if exists(storage, id).await? {
        return answer("completed");
    }
    let (progress, completed) = match &state.control {
        Some(control) => (control.progress(), control.was_completed(id.0)),
        None => return Err(ApiError::NotFound(format!("no checkpoint {id}"))),
    };
    if completed {
        // Completed, then deleted (by retention, or through this API).
        return answer("removed");
    }
    if id.0 < progress.first_own {
        // Not this process's: whether it completed before it was removed is not known here.
        return Err(ApiError::NotFound(format!(
            "no checkpoint {id}: it is not stored, and an earlier run of the processor took it \
             (removed since, or never completed)"
        )));
    }
    if id.0 > progress.last_triggered.max(progress.last_completed) {
        return Err(ApiError::NotFound(format!(
            "no checkpoint {id}: none was triggered with that id"
        )));
    }
    if id.0 > progress.last_completed && progress.live {
        answer("pending")
    } else {
        answer("failed")
    }
}

async fn delete_checkpoint(
    State(state): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = parse_id(&id?.0)?;
    let storage = storage(&state)?;
    if !exists(storage.clone(), id).await? {
        return Err(ApiError::NotFound(format!("no checkpoint {id}")));
    }
    blocking(move || Ok(storage.delete(id)?)).await?;
    tracing::info!(checkpoint = id.0, "checkpoint deleted through the API");
    Ok(Json(serde_json::json!({"id": id.0, "deleted": true})))
}

async fn restore_checkpoint(
    State(state): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<RestoreReport>, ApiError> {
    let id = parse_id(&id?.0)?;
    let request = restore_request(&body)?;
    let storage = storage(&state)?;
    let control = control(&state)?;
    // Verified here first: a checkpoint that fails is refused before the pipeline is asked
    // (one whose files vanish while read is a 404, as on every route).
    blocking(move || Ok(storage.verify(id)?)).await?;
    Ok(Json(control.restore(id.0, request.dry_run).await?))
}

/// The body of a restore: empty (a real restore), or a JSON object with at most `dry_run`, a
/// boolean. Anything else (an array, `null`, a string, another type for `dry_run`, another
/// field) is refused, since reading it as a default request would restore for real.
fn restore_request(body: &[u8]) -> Result<RestoreRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RestoreRequest::default());
    }
    let bad = |why: String| {
        ApiError::BadRequest(format!(
            "bad restore request: {why}; send an empty body or an object such as \
             {{\"dry_run\": true}}"
        ))
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| bad(error.to_string()))?;
    if !value.is_object() {
        let kind = match value {
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::Object(_) => "an object",
        };
        return Err(bad(format!("the body is {kind}, not an object")));
    }
    serde_json::from_value(value).map_err(|error| bad(error.to_string()))
}

/// Loads (and so verifies) checkpoint `id`, with its manifest.
async fn load(
    storage: Arc<dyn CheckpointStorage>,
    id: CheckpointId,
) -> Result<(Checkpoint, Manifest), ApiError> {
    blocking(move || {
        let checkpoint = storage.load(id)?;
        let manifest = storage.manifest(id)?;
        Ok((checkpoint, manifest))
    })
    .await
}

async fn diff_checkpoints(
    State(state): State<Arc<ApiState>>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<CheckpointDiff>, ApiError> {
    let Path((from, to)) = ids?;
    let (from, to) = (parse_id(&from)?, parse_id(&to)?);
    let storage = storage(&state)?;
    let decoder = decoder(&state)?;
    let older = load(storage.clone(), from).await?;
    let newer = load(storage, to).await?;
    let diff = blocking(move || {
        Ok(state::diff(
            (&older.0, &older.1),
            (&newer.0, &newer.1),
            decoder.as_ref(),
        ))
    })
    .await?;
    Ok(Json(diff))
}

async fn state_keys(
    State(state): State<Arc<ApiState>>,
    params: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<KeyPage>, ApiError> {
    let Path((id, operator)) = params?;
    let Query(query) = query?;
    let number = |name: &str, default: usize| -> Result<usize, ApiError> {
        match query.get(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "`{name}` must be a non-negative integer, not `{text}`"
                ))
            }),
        }
    };
    let offset = number("offset", 0)?;
    let limit = number("limit", 100)?;
    let id = parse_id(&id)?;
    let storage = storage(&state)?;
    let decoder = decoder(&state)?;
    let (checkpoint, _) = load(storage, id).await?;
    let page = blocking(move || {
        Ok(state::page(
            &checkpoint,
            &operator,
            offset,
            limit,
            decoder.as_ref(),
        )?)
    })
    .await?;
    Ok(Json(page))
}

async fn state_key(
    State(state): State<Arc<ApiState>>,
    params: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<StateValue>, ApiError> {
    let Path((id, operator)) = params?;
    let Query(query) = query?;
    let key = query
        .get("key")
        .map(|text| state::parse_key(text))
        .ok_or_else(|| ApiError::BadRequest("the `key` query parameter is required".into()))?;
    let id = parse_id(&id)?;
    let storage = storage(&state)?;
    let decoder = decoder(&state)?;
    let (checkpoint, _) = load(storage, id).await?;
    let value = blocking(move || {
        Ok(state::lookup(
            &checkpoint,
            &operator,
            &key,
            decoder.as_ref(),
        )?)
    })
    .await?;
    Ok(Json(value))
}

async fn backpressure(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<BackpressureReport>, ApiError> {
    let metrics = state.metrics.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "no_pipeline",
            "no running pipeline is behind this API".into(),
        )
    })?;
    Ok(Json(metrics.backpressure().report()))
}

/// The body's layout from its `Content-Type`; `None` for a type this route does not take.
fn ingest_format(headers: &HeaderMap) -> Result<IngestFormat, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(IngestFormat::JsonLines);
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(IngestFormat::Json),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines"
        | "application/json-lines" => Ok(IngestFormat::JsonLines),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "`Content-Type: {text}` is not taken: send `application/json` (an object or an \
             array) or `application/x-ndjson` (JSON Lines)"
        ))),
    }
}

async fn ingest(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let ingest = state.ingest.clone().ok_or_else(|| {
        ApiError::Conflict(
            "no_ingest",
            "this pipeline has no source of `type: http`: nothing takes `POST /ingest`".into(),
        )
    })?;
    let refuse = |reason: RefuseReason, error: ApiError| {
        ingest.refused(reason);
        error
    };
    let Query(query) = query.map_err(|e| refuse(RefuseReason::Malformed, e.into()))?;
    let format = ingest_format(&headers).map_err(|error| refuse(RefuseReason::Malformed, error))?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            refuse(
                RefuseReason::TooLarge,
                ApiError::PayloadTooLarge(format!(
                    "the body is larger than {MAX_INGEST_BODY} bytes: send fewer events per request"
                )),
            )
        } else {
            refuse(
                RefuseReason::Malformed,
                ApiError::BadRequest(format!("cannot read the body: {rejection}")),
            )
        }
    })?;
    let source = query.get("source").map(String::as_str);
    match ingest.ingest(source, format, &body) {
        Ok(accepted) => Ok((StatusCode::ACCEPTED, Json(IngestResponse { accepted }))),
        Err(IngestError::NoSource(message)) => Err(ApiError::NotFound(message)),
        Err(IngestError::Malformed(message)) => Err(ApiError::BadRequest(format!(
            "{message}; nothing of this body was accepted"
        ))),
        Err(IngestError::QueueFull(wait)) => Err(ApiError::TooManyRequests(
            "queue_full",
            "the source's queue is full: nothing of this body was accepted, retry later".into(),
            wait,
        )),
        Err(IngestError::RateLimited(wait)) => Err(ApiError::TooManyRequests(
            "rate_limited",
            "the source's rate limit is reached: nothing of this body was accepted, retry later"
                .into(),
            wait,
        )),
        Err(IngestError::ShuttingDown(wait)) => Err(ApiError::Unavailable(
            "the source is stopping or restoring: nothing of this body was accepted".into(),
            wait,
        )),
        Err(IngestError::Failed(reason)) => Err(ApiError::Failed(format!(
            "{reason}; nothing of this body was accepted"
        ))),
    }
}

/// `GET /ready`: `ready`, or 503 `failed` with the reason once the pipeline has failed.
async fn ready(State(state): State<Arc<ApiState>>) -> Result<&'static str, ApiError> {
    match state.control.as_ref().map(|control| control.ready()) {
        Some(Err(reason)) => Err(ApiError::Failed(reason)),
        _ => Ok("ready"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> CheckpointError {
        CheckpointError::Io {
            checkpoint: Some(CheckpointId(7)),
            action: "read /ckpt/00000000000000000007/data.bin".into(),
            cause: std::io::Error::from(kind),
        }
    }

    /// A checkpoint deleted while a route reads it is gone (404), on every route; other IO
    /// errors stay server faults.
    #[test]
    fn a_checkpoint_that_vanishes_while_read_is_not_found() {
        let not_found = ApiError::from(io(std::io::ErrorKind::NotFound)).into_response();
        assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
        let denied = ApiError::from(io(std::io::ErrorKind::PermissionDenied)).into_response();
        assert_eq!(denied.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
