//! The typed client of the API, for `admin`: blocking, one call per route, every failure a
//! [`ClientError`] that says in one line what went wrong (connection refused, 401, 404, a
//! checkpoint that failed verification...).

use std::time::Duration;

use dataflow_checkpoint::Manifest;
use reqwest::blocking::{Client as Http, Response};
use reqwest::StatusCode;

use serde::de::DeserializeOwned;

use crate::state::{CheckpointDiff, KeyPage, StateValue};
use crate::{
    routes, CheckpointProgress, CheckpointSummary, ErrorBody, PipelineStatus, RestoreReport,
    RestoreRequest, TriggerResponse, VerifyResponse, Watermarks,
};

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The processor could not be reached.
    Connection(String),
    /// The token is missing or wrong.
    Unauthorized,
    /// The API answered with an error.
    Api {
        /// The HTTP status.
        status: u16,
        /// The error's stable code.
        code: String,
        /// What went wrong.
        message: String,
    },
    /// The answer could not be read.
    Decode(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connection(message) => write!(f, "cannot reach the processor: {message}"),
            ClientError::Unauthorized => {
                f.write_str("401 unauthorized: the token is missing or wrong")
            }
            ClientError::Api {
                status,
                code,
                message,
            } => write!(f, "{status} {code}: {message}"),
            ClientError::Decode(message) => write!(f, "unreadable answer: {message}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A client of one processor's API.
#[derive(Debug, Clone)]
pub struct Client {
    http: Http,
    base: String,
    token: Option<String>,
}

/// An error with its causes, innermost last: reqwest's own message ("error sending request for
/// url ...") hides the reason (connection refused, timed out) in its source.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    message
}

impl Client {
    /// A client of the API at `base` (`http://127.0.0.1:8080`), with an optional token.
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let http = Http::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|error| ClientError::Connection(error.to_string()))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<Response, ClientError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .map_err(|error| ClientError::Connection(with_causes(&error)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized);
        }
        let text = response.text().unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                code: body.code,
                message: body.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: "unknown".into(),
                message: text,
            },
        })
    }

    fn path(&self, route: &str, id: &str) -> String {
        format!("{}{}", self.base, route.replace("{id}", id))
    }

    /// `GET /api/v1/checkpoints`.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointSummary>, ClientError> {
        let response = self.send(self.http.get(self.path(routes::CHECKPOINTS, "")))?;
        response
            .json()
            .map_err(|error| ClientError::Decode(error.to_string()))
    }

    /// `GET /api/v1/checkpoints/{id}`: the manifest, after the server verified it.
    pub fn checkpoint(&self, id: &str) -> Result<Manifest, ClientError> {
        let response = self.send(self.http.get(self.path(routes::CHECKPOINT, &encode(id))))?;
        response
            .json()
            .map_err(|error| ClientError::Decode(error.to_string()))
    }

    /// `POST /api/v1/checkpoints/{id}/verify`.
    pub fn verify(&self, id: &str) -> Result<VerifyResponse, ClientError> {
        let response = self.send(
            self.http
                .post(self.path(routes::CHECKPOINT_VERIFY, &encode(id))),
        )?;
        response
            .json()
            .map_err(|error| ClientError::Decode(error.to_string()))
    }
}

impl Client {
    fn json<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
        response
            .json()
            .map_err(|error| ClientError::Decode(error.to_string()))
    }

    fn url(&self, route: &str, params: &[(&str, &str)]) -> String {
        let mut path = route.to_string();
        for (name, value) in params {
            path = path.replace(&format!("{{{name}}}"), &encode(value));
        }
        format!("{}{}", self.base, path)
    }

    /// `GET /api/v1/status`.
    pub fn status(&self) -> Result<PipelineStatus, ClientError> {
        Self::json(self.send(self.http.get(self.url(routes::STATUS, &[])))?)
    }

    /// `GET /api/v1/watermarks`.
    pub fn watermarks(&self) -> Result<Watermarks, ClientError> {
        Self::json(self.send(self.http.get(self.url(routes::WATERMARKS, &[])))?)
    }

    /// `GET /api/v1/backpressure`.
    pub fn backpressure(&self) -> Result<crate::BackpressureReport, ClientError> {
        Self::json(self.send(self.http.get(self.url(routes::BACKPRESSURE, &[])))?)
    }

    /// `POST /api/v1/checkpoints`: takes a checkpoint now; answers its id.
    pub fn trigger(&self) -> Result<TriggerResponse, ClientError> {
        Self::json(self.send(self.http.post(self.url(routes::CHECKPOINTS, &[])))?)
    }

    /// `GET /api/v1/checkpoints/{id}/status`.
    pub fn checkpoint_status(&self, id: &str) -> Result<CheckpointProgress, ClientError> {
        Self::json(
            self.send(
                self.http
                    .get(self.url(routes::CHECKPOINT_STATUS, &[("id", id)])),
            )?,
        )
    }

    /// `DELETE /api/v1/checkpoints/{id}`.
    pub fn delete(&self, id: &str) -> Result<(), ClientError> {
        self.send(
            self.http
                .delete(self.url(routes::CHECKPOINT, &[("id", id)])),
        )?;
        Ok(())
    }

    /// `POST /api/v1/checkpoints/{id}/restore`.
    pub fn restore(&self, id: &str, dry_run: bool) -> Result<RestoreReport, ClientError> {
        let body = serde_json::to_vec(&RestoreRequest { dry_run })
            .map_err(|error| ClientError::Decode(error.to_string()))?;
        Self::json(
            self.send(
                self.http
                    .post(self.url(routes::CHECKPOINT_RESTORE, &[("id", id)]))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body),
            )?,
        )
    }

    /// `GET /api/v1/checkpoints/{id}/diff/{other}`.
    pub fn diff(&self, from: &str, to: &str) -> Result<CheckpointDiff, ClientError> {
        Self::json(
            self.send(
                self.http
                    .get(self.url(routes::CHECKPOINT_DIFF, &[("id", from), ("other", to)])),
            )?,
        )
    }

    /// `GET /api/v1/checkpoints/{id}/operators/{operator}/state?key=`: `key` is sent as JSON.
    pub fn state(
        &self,
        id: &str,
        operator: &str,
        key: &serde_json::Value,
    ) -> Result<StateValue, ClientError> {
        let url = format!(
            "{}?key={}",
            self.url(routes::STATE_KEY, &[("id", id), ("operator", operator)]),
            encode(&key.to_string())
        );
        Self::json(self.send(self.http.get(url))?)
    }

    /// `GET /api/v1/checkpoints/{id}/operators/{operator}/keys?offset=&limit=`.
    pub fn keys(
        &self,
        id: &str,
        operator: &str,
        offset: usize,
        limit: usize,
    ) -> Result<KeyPage, ClientError> {
        let url = format!(
            "{}?offset={offset}&limit={limit}",
            self.url(routes::STATE_KEYS, &[("id", id), ("operator", operator)])
        );
        Self::json(self.send(self.http.get(url))?)
    }
}

/// Percent-encodes an id for a path segment, so that whatever a user types stays one segment
/// and the server judges it.
fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
