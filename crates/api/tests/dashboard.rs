//! The dashboard's side of the API: its embedded files are served to anyone with their content
//! types and security headers, and `GET /api/v1/graph` reports the pipeline's nodes with the
//! counts of the metrics and the latency histogram, behind the token.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use dataflow_api::server::{router, ApiState, GraphShape, ShapeNode};
use dataflow_api::{routes, GraphNode, PipelineGraph};
use dataflow_metrics::{Counters, Metrics};
use http_body_util::BodyExt;
use tower::ServiceExt;

const TOKEN: &str = "dash-t0ken";

async fn get(state: ApiState, uri: &str, token: Option<&str>) -> (StatusCode, String, Vec<u8>) {
    let mut request = Request::builder().uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router(state)
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible service");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if status == StatusCode::OK && uri.starts_with("/ui") {
        let csp = response
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.contains("default-src 'self'"), "{uri}: {csp}");
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
    }
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, content_type, body)
}

fn dist(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../ui/dist")
            .join(name),
    )
    .expect("ui/dist file")
}

fn protected() -> ApiState {
    ApiState {
        token: Some(TOKEN.into()),
        ..ApiState::default()
    }
}

#[tokio::test]
async fn the_dashboard_files_are_open_and_typed() {
    for (uri, file, content_type) in [
        (routes::UI, "index.html", "text/html; charset=utf-8"),
        (routes::UI_INDEX, "index.html", "text/html; charset=utf-8"),
        ("/ui/index.html", "index.html", "text/html; charset=utf-8"),
        ("/ui/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "app.css", "text/css; charset=utf-8"),
    ] {
        let (status, served_type, body) = get(protected(), uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(served_type, content_type, "{uri}");
        assert!(body == dist(file), "{uri} is not ui/dist/{file}");
    }
    for uri in ["/ui/nope.js", "/ui/..%2fCargo.toml", "/ui/app.js/x"] {
        let (status, _, body) = get(protected(), uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        let error: serde_json::Value = serde_json::from_slice(&body).expect("error body");
        assert_eq!(error["code"], "not_found", "{uri}");
    }
}

#[tokio::test]
async fn the_graph_reports_every_node_with_the_metrics_counts_behind_the_token() {
    let metrics = Arc::new(Metrics::new());
    metrics.source("p", "bids").read(120, 4_000);
    let filter = metrics.operator("p", "steps[0].filter", "filter");
    filter.events_received(120);
    filter.events_sent(80);
    metrics
        .operator("p", "sinks[0]", "sink")
        .events_received(80);
    let counters = Arc::new(Counters::default());
    counters.latency().record(3, 98);
    counters.latency().record(250, 2);
    let node = |name: &str, kind: &str| ShapeNode {
        name: name.into(),
        kind: kind.into(),
    };
    let state = ApiState {
        metrics: Some(metrics),
        counters: Some(counters),
        graph: Some(Arc::new(GraphShape {
            pipeline: "p".into(),
            sources: vec![node("bids", "generator")],
            steps: vec![node("steps[0].filter", "filter")],
            sinks: vec![node("sinks[0]", "parts")],
        })),
        ..protected()
    };

    let (status, _, _) = get(state.clone(), routes::GRAPH, Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, content_type, body) = get(state, routes::GRAPH, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let graph: PipelineGraph = serde_json::from_slice(&body).expect("a graph");
    assert_eq!(graph.pipeline, "p");
    let node = |name: &str, role: &str, kind: &str, events_in, events_out| GraphNode {
        name: name.into(),
        role: role.into(),
        kind: kind.into(),
        events_in,
        events_out,
    };
    assert_eq!(
        graph.nodes,
        vec![
            node("bids", "source", "generator", None, Some(120)),
            node("steps[0].filter", "step", "filter", Some(120), Some(80)),
            node("sinks[0]", "sink", "parts", Some(80), None),
        ]
    );
    assert_eq!(graph.latency.count, 100);
    assert_eq!(graph.latency.p50_ms, Some(3));
    assert_eq!(graph.latency.p99_ms, Some(250));
    assert_eq!(graph.latency.buckets, vec![(3, 98), (250, 2)]);
    assert!(graph.now_ms > 1_600_000_000_000, "{}", graph.now_ms);
}

#[tokio::test]
async fn without_a_pipeline_the_graph_says_so() {
    let (status, _, body) = get(protected(), routes::GRAPH, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let error: serde_json::Value = serde_json::from_slice(&body).expect("error body");
    assert_eq!(error["code"], "no_pipeline");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no graph"),
        "{error}"
    );
}
