//! The HTTP contract between the processor (server) and the `admin` CLI (client): routes,
//! request and response bodies, and the error body with its stable codes. The server and the
//! typed client arrive with the admin issue; both will depend on this crate and on nothing of
//! each other.
//!
//! ```
//! use dataflow_api::{routes, ErrorBody};
//!
//! assert_eq!(routes::HEALTH, "/health");
//! let body = ErrorBody { code: "not_found".into(), message: "no checkpoint 7".into() };
//! assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"code":"not_found","message":"no checkpoint 7"}"#);
//! ```
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// Route paths.
pub mod routes {
    /// Liveness: answers while the process runs. Not protected.
    pub const HEALTH: &str = "/health";
    /// Readiness: answers once the pipeline runs. Not protected.
    pub const READY: &str = "/ready";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// The versioned API's prefix.
    pub const API_V1: &str = "/api/v1";
}

/// The body of every error answer: a stable machine-readable code and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code: `unauthorized`, `not_found`, `bad_request`, ...
    pub code: String,
    /// What went wrong.
    pub message: String,
}
