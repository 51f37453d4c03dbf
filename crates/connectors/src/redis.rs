//! `type: redis`: each result is one Redis key, named by a CEL expression over the result:
//! `SET key <result JSON>` or `HSET key field value...` (one hash field per result field),
//! with an optional TTL, sent in pipelined batches.
//!
//! **Idempotent by construction:** a result always goes to the key its expression names, and
//! a later write of a key replaces the earlier one (last write wins). A replay after a restore
//! writes the same results to the same keys in the same order, so the keys end as they would
//! without the crash; readers may see an older value of a key again while a replay catches up.
//! (`hset` writes every field of the result each time, so a hash is always one whole result.)
//!
//! A store that is down is retried with backoff for up to `retry_timeout` (see
//! [`crate::retry`]), the batch being sent again whole (which the idempotence makes safe).

use std::time::Duration;

use async_trait::async_trait;
use dataflow_event::json::Encoder;
use dataflow_event::{Event, Layout, Payload, Value};
use dataflow_expr::Expr;
use dataflow_metrics::StoreRetries;

use crate::config::{Place, Problem, Settings};
use crate::jsonl::result_encoder;
use crate::registry::{SinkKind, SinkSpec};
use crate::retry::{Attempt, Retry, DEFAULT_RETRY_TIMEOUT};
use crate::sink::{ResultFormat, Sink};
use crate::{ConnectorError, Result};

/// What a result becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `SET key <the result as a JSON object>`.
    Set,
    /// `HSET key field value ...`: strings as they are, other values as JSON.
    Hset,
}

/// `type: redis` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// SET or HSET.
    pub command: Command,
    /// The CEL expression of the key, over a result.
    pub key: String,
    /// Where `key` was written.
    pub key_place: Place,
    /// Keys expire this long after their last write; `None`: never.
    pub ttl: Option<Duration>,
    /// Commands per pipeline.
    pub batch_size: usize,
    /// How long the store may fail before the run does.
    pub retry_timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    // The URL may hold a password: not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("command", &self.command)
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

/// The settings `configure` takes.
pub(crate) const KEYS: &[&str] = &[
    "url",
    "command",
    "key",
    "ttl",
    "batch_size",
    "retry_timeout",
];

/// `type: redis` settings: `url`, `command`, `key`, `ttl`, `batch_size`, `retry_timeout`.
pub(crate) fn configure(settings: &mut Settings<'_>) -> Option<SinkKind> {
    let sink_place = settings.place();
    let mut ok = true;
    let url = match settings.string("url") {
        Some((url, place)) => {
            if let Err(error) = ::redis::Client::open(url.as_str()) {
                settings.problem(place, format!("invalid redis url: {error}"));
                ok = false;
            }
            url
        }
        None => "redis://127.0.0.1:6379/".to_string(),
    };
    let command = match settings.string("command") {
        None => Command::Set,
        Some((text, place)) => match text.as_str() {
            "set" => Command::Set,
            "hset" => Command::Hset,
            other => {
                settings.problem(
                    place,
                    format!("unknown command `{other}`: expected set or hset"),
                );
                ok = false;
                Command::Set
            }
        },
    };
    let key = settings.string("key");
    if key.is_none() {
        settings.problem(
            sink_place,
            "a redis sink needs `key`: a CEL expression naming each result's key",
        );
    }
    let ttl = match settings.duration("ttl") {
        Some(0) => {
            let place = settings.place();
            settings.problem(
                place,
                "`ttl` must be more than 0 (leave it out: keys never expire)",
            );
            ok = false;
            None
        }
        Some(millis) => Some(Duration::from_millis(millis as u64)),
        None => None,
    };
    let batch_size = match settings.u64("batch_size") {
        None => 1000,
        Some((0, place)) => {
            settings.problem(place, "`batch_size` must be at least 1");
            ok = false;
            1
        }
        Some((n, _)) => n.min(1 << 20) as usize,
    };
    let retry_timeout = settings
        .duration("retry_timeout")
        .map(|millis| Duration::from_millis(millis as u64))
        .unwrap_or(DEFAULT_RETRY_TIMEOUT);
    let (key, key_place) = key?;
    if !ok {
        return None;
    }
    Some(SinkKind::Redis(Box::new(RedisSettings {
        url,
        command,
        key,
        key_place,
        ttl,
        batch_size,
        retry_timeout,
    })))
}

/// The static checks of a redis sink: its key expression compiles against the results.
pub(crate) fn check_layout(settings: &RedisSettings, layout: &Layout) -> Vec<Problem> {
    match Expr::compile(&settings.key, layout) {
        Ok(_) => Vec::new(),
        Err(error) => vec![Problem {
            place: settings.key_place.clone(),
            message: error.to_string(),
        }],
    }
}

/// Whether a failed command is worth another attempt.
fn attempt(error: ::redis::RedisError, doing: &str) -> Attempt {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || !matches!(error.retry_method(), ::redis::RetryMethod::NoRetry);
    if transient {
        Attempt::Transient(format!("{doing}: {error}"))
    } else {
        Attempt::Fatal(ConnectorError::Runtime(format!("{doing}: {error}")))
    }
}

/// Text of a value in a hash field: strings as they are, anything else as JSON.
fn field_text(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Str(text) => out.extend_from_slice(text.as_bytes()),
        other => dataflow_event::json::write_value(out, other),
    }
}

/// Writes results to Redis keys (see the module's documentation).
pub struct RedisSink {
    settings: RedisSettings,
    what: String,
    client: ::redis::Client,
    connection: Option<::redis::aio::MultiplexedConnection>,
    key: Expr,
    encoder: Encoder,
    /// Hash field names, for `hset` on row results.
    fields: Vec<String>,
    pipeline: ::redis::Pipeline,
    queued: usize,
    retries: StoreRetries,
}

impl std::fmt::Debug for RedisSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSink")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisSink {
    /// Compiles the key against the results' layout and connects, waiting for the store up to
    /// `retry_timeout`.
    pub async fn open(
        spec: &SinkSpec,
        settings: &RedisSettings,
        format: ResultFormat,
    ) -> Result<RedisSink> {
        let key = Expr::compile(&settings.key, &format.layout)
            .map_err(|error| ConnectorError::Runtime(format!("key `{}`: {error}", settings.key)))?;
        let client = ::redis::Client::open(settings.url.as_str())
            .map_err(|error| ConnectorError::Runtime(format!("invalid redis url: {error}")))?;
        let fields = format
            .layout
            .schema()
            .map(|schema| schema.fields().iter().map(|f| f.name.clone()).collect())
            .unwrap_or_default();
        let mut sink = RedisSink {
            what: format!("redis at {}", redact(&settings.url)),
            settings: settings.clone(),
            client,
            connection: None,
            key,
            encoder: result_encoder(spec, format),
            fields,
            pipeline: {
                let mut pipeline = ::redis::pipe();
                if settings.command == Command::Hset {
                    // DEL then HSET: no reader sees the key missing or half written.
                    pipeline.atomic();
                }
                pipeline
            },
            queued: 0,
            retries: StoreRetries::default(),
        };
        let mut retry = sink.retry();
        loop {
            match sink.connect().await {
                Ok(()) => break,
                Err(failure) => retry.failed(failure).await?,
            }
        }
        retry.succeeded();
        Ok(sink)
    }

    fn retry(&self) -> Retry {
        Retry::new(
            self.what.clone(),
            self.settings.retry_timeout,
            self.retries.clone(),
        )
    }

    async fn connect(&mut self) -> std::result::Result<(), Attempt> {
        let config = ::redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| attempt(e, "cannot connect"))?;
        ::redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| attempt(e, "cannot connect"))?;
        self.connection = Some(connection);
        Ok(())
    }

    /// Queues the command of one result.
    fn queue(&mut self, event: &Event) -> Result<()> {
        let key = match self.key.eval(event) {
            Ok(Value::Str(text)) => text.to_string(),
            Ok(Value::Null) => {
                return Err(ConnectorError::Runtime(format!(
                    "key `{}` is null for a result",
                    self.settings.key
                )))
            }
            Ok(other) => {
                let mut out = Vec::new();
                field_text(&other, &mut out);
                String::from_utf8_lossy(&out).into_owned()
            }
            Err(error) => {
                return Err(ConnectorError::Runtime(format!(
                    "key `{}`: {error}",
                    self.settings.key
                )))
            }
        };
        let ttl = self.settings.ttl.map(|ttl| ttl.as_millis() as u64);
        match self.settings.command {
            Command::Set => {
                let mut value = Vec::new();
                self.encoder.encode(event, &mut value);
                if value.last() == Some(&b'\n') {
                    value.pop();
                }
                let command = self.pipeline.cmd("SET").arg(&key).arg(value);
                if let Some(ttl) = ttl {
                    command.arg("PX").arg(ttl);
                }
                command.ignore();
            }
            Command::Hset => {
                let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
                match &event.payload {
                    Payload::Row(values) => {
                        for (name, value) in self.fields.iter().zip(values) {
                            let mut out = Vec::new();
                            field_text(value, &mut out);
                            pairs.push((name.clone(), out));
                        }
                    }
                    Payload::Object(fields) => {
                        for (name, value) in fields {
                            let mut out = Vec::new();
                            field_text(value, &mut out);
                            pairs.push((name.clone(), out));
                        }
                    }
                }
                // The hash is the result: fields of an earlier result are not kept.
                self.pipeline.cmd("DEL").arg(&key).ignore();
                if !pairs.is_empty() {
                    let command = self.pipeline.cmd("HSET").arg(&key);
                    for (name, value) in pairs {
                        command.arg(name).arg(value);
                    }
                    command.ignore();
                }
                if let Some(ttl) = ttl {
                    self.pipeline.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
                }
            }
        }
        self.queued += 1;
        Ok(())
    }

    /// Sends the queued commands as one pipeline (in `MULTI`/`EXEC` for `hset`, so that a hash
    /// is never seen half written), again until the store takes them.
    async fn send(&mut self) -> Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        let mut retry = self.retry();
        loop {
            match self.try_send().await {
                Ok(()) => break,
                Err(failure) => {
                    if matches!(failure, Attempt::Transient(_)) {
                        self.connection = None;
                    }
                    retry.failed(failure).await?
                }
            }
        }
        retry.succeeded();
        self.pipeline.clear();
        self.queued = 0;
        Ok(())
    }

    async fn try_send(&mut self) -> std::result::Result<(), Attempt> {
        if self.connection.is_none() {
            self.connect().await?;
        }
        let Some(connection) = &mut self.connection else {
            return Err(Attempt::Transient("no connection".into()));
        };
        self.pipeline
            .query_async::<()>(connection)
            .await
            .map_err(|e| attempt(e, "cannot write keys"))
    }
}

/// `url` without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[async_trait]
impl Sink for RedisSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        for event in events {
            self.queue(event)?;
            if self.queued >= self.settings.batch_size {
                self.send().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.send().await
    }

    fn count_retries(&mut self, retries: StoreRetries) {
        self.retries = retries;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_not_shown() {
        assert_eq!(
            redact("redis://user:secret@127.0.0.1:6379/0"),
            "redis://…@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
    }
}
