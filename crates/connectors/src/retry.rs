//! Waiting out a store that is down: retries with exponential backoff, counted, until a
//! deadline after which the sink fails the run with the last reason.
//!
//! A sink that retries holds its task, so its input channel fills and backpressure reaches the
//! sources: nothing is dropped while the store is away.

use std::time::{Duration, Instant};

use dataflow_metrics::StoreRetries;

use crate::{ConnectorError, Result};

/// The first wait after a failure; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The default `retry_timeout`: how long a store may stay unreachable before the run fails.
pub(crate) const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed attempt: worth another (the store is down or briefly refusing), or not.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The store is unreachable or refused for a reason that passes (connection lost,
    /// shutting down, a serialization failure): try again after a wait.
    Transient(String),
    /// The store refused for good (a constraint, a type, a missing table): fail now.
    Fatal(ConnectorError),
}

/// The retries of one operation of a sink: counts them, waits between them, and gives up
/// once the store has been failing for `timeout`.
#[derive(Debug)]
pub(crate) struct Retry {
    what: String,
    timeout: Duration,
    counter: StoreRetries,
    first_failure: Option<Instant>,
    backoff: Duration,
    attempts: u64,
}

impl Retry {
    /// The retries of `what` (`postgres table results`), for up to `timeout`.
    pub(crate) fn new(what: String, timeout: Duration, counter: StoreRetries) -> Retry {
        Retry {
            what,
            timeout,
            counter,
            first_failure: None,
            backoff: FIRST_BACKOFF,
            attempts: 0,
        }
    }

    /// An attempt failed: waits before the next one, or returns the error that ends the run
    /// (a fatal failure, or a store still failing after the timeout).
    pub(crate) async fn failed(&mut self, attempt: Attempt) -> Result<()> {
        let reason = match attempt {
            Attempt::Fatal(error) => return Err(error),
            Attempt::Transient(reason) => reason,
        };
        let first = *self.first_failure.get_or_insert_with(Instant::now);
        if first.elapsed() >= self.timeout {
            return Err(ConnectorError::Runtime(format!(
                "{}: the store failed for {} ({} attempts), giving up: {reason}",
                self.what,
                humantime::format_duration(Duration::from_millis(
                    first.elapsed().as_millis() as u64
                )),
                self.attempts + 1
            )));
        }
        if self.attempts == 0 || self.attempts.is_power_of_two() {
            tracing::warn!(what = %self.what, attempts = self.attempts + 1, %reason, "store unavailable, retrying");
        }
        self.attempts += 1;
        self.counter.retried();
        let left = self.timeout.saturating_sub(first.elapsed());
        tokio::time::sleep(self.backoff.min(left)).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    /// Says the store is back, if it had failed.
    pub(crate) fn succeeded(&self) {
        if self.attempts > 0 {
            tracing::info!(
                what = %self.what,
                attempts = self.attempts,
                "store available again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transient_failures_are_retried_until_the_timeout() {
        let counter = StoreRetries::default();
        let mut retry = Retry::new(
            "postgres sink".into(),
            Duration::from_millis(300),
            counter.clone(),
        );
        let mut waits = 0;
        let error = loop {
            match retry
                .failed(Attempt::Transient("connection refused".into()))
                .await
            {
                Ok(()) => waits += 1,
                Err(error) => break error,
            }
        };
        assert!(waits >= 2, "{waits}");
        assert_eq!(counter.get(), waits);
        let message = error.to_string();
        assert!(
            message.starts_with("postgres sink: the store failed for"),
            "{message}"
        );
        assert!(
            message.ends_with("giving up: connection refused"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_fatal_failure_ends_at_once() {
        let counter = StoreRetries::default();
        let mut retry = Retry::new("sink".into(), Duration::from_secs(60), counter.clone());
        let error = retry
            .failed(Attempt::Fatal(ConnectorError::Runtime("refused".into())))
            .await
            .expect_err("fatal");
        assert_eq!(error.to_string(), "refused");
        assert_eq!(counter.get(), 0);
    }
}
