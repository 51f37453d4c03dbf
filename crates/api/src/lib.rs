//! The HTTP contract between the processor (server) and the `admin` CLI (client): routes,
//! request and response bodies, the error body with its stable codes, and the server's
//! [`server::router`]. The processor serves it; the typed client for `admin` follows.
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

#[cfg(feature = "client")]
pub mod client;
pub mod server;

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
    /// The checkpoints: `GET` lists them.
    pub const CHECKPOINTS: &str = "/api/v1/checkpoints";
    /// One checkpoint: `GET` gives its manifest, after verifying it.
    pub const CHECKPOINT: &str = "/api/v1/checkpoints/{id}";
    /// `POST` recomputes a checkpoint's checksum and decodes it.
    pub const CHECKPOINT_VERIFY: &str = "/api/v1/checkpoints/{id}/verify";
}

/// One row of the checkpoint list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSummary {
    /// The checkpoint's id.
    pub id: u64,
    /// When it was taken (RFC 3339), if it verifies.
    pub created_at: Option<String>,
    /// Its data file's size, if it verifies.
    pub bytes: Option<u64>,
    /// `valid`, or `invalid: <reason>`.
    pub status: String,
    /// Whether it passed its checks.
    pub verified: bool,
}

impl CheckpointSummary {
    /// Every complete checkpoint of `storage`, oldest first, each verified.
    pub fn list(
        storage: &dyn dataflow_checkpoint::CheckpointStorage,
    ) -> dataflow_checkpoint::Result<Vec<CheckpointSummary>> {
        let mut rows = Vec::new();
        for entry in storage.list()? {
            rows.push(match storage.verify(entry.id) {
                Ok(manifest) => CheckpointSummary {
                    id: entry.id.0,
                    created_at: Some(manifest.created_at),
                    bytes: Some(manifest.data_file_size),
                    status: "valid".into(),
                    verified: true,
                },
                Err(error) => CheckpointSummary {
                    id: entry.id.0,
                    created_at: None,
                    bytes: None,
                    status: format!("invalid: {error}"),
                    verified: false,
                },
            });
        }
        Ok(rows)
    }
}

/// The answer to a verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResponse {
    /// The checkpoint's id.
    pub id: u64,
    /// Always true: a failed verification is an error answer.
    pub verified: bool,
    /// The sha256 of its payload.
    pub sha256: String,
}

/// The body of every error answer: a stable machine-readable code and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code: `unauthorized`, `not_found`, `bad_request`, ...
    pub code: String,
    /// What went wrong.
    pub message: String,
}
