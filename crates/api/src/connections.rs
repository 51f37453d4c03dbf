//! The API's accept loop: every connection within the [`ServeLimits`], so that slow or
//! hostile clients cannot hold the API, or the process's file descriptors, for long.
//!
//! - at most `max_connections` connections are served at once; one over the cap is answered
//!   `503 too_many_connections` (at most [`MAX_REFUSALS`] such answers at once; beyond, a
//!   connection is closed at once) and closed;
//! - a request's head must arrive within `header_timeout` and be at most `max_header_bytes`
//!   (else `431`); an idle keep-alive connection is closed after `header_timeout` too;
//! - a connection on which nothing moves for `idle_timeout` while no request is being handled
//!   is closed;
//! - a keep-alive connection serves at most `max_requests_per_connection` requests.
//!
//! Dropping the future returned by [`serve`] stops accepting, and every open connection finishes
//! the request it is serving (within [`SHUTDOWN_GRACE`]) and closes.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::limits::ServeLimits;

/// Refusals (`503` over the cap) written at once; beyond, a connection is closed at once.
pub const MAX_REFUSALS: usize = 32;
/// How long one refusal may take to write its answer and read what the client sent.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// The most a refusal reads of the request it refuses (so that closing does not reset the
/// connection before the client read the answer).
const REFUSAL_DRAIN: usize = 64 << 10;
/// How long open connections have to finish their request once the server is dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The pause after a failed accept (out of file descriptors, for instance): no busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The longest header or idle timeout applied; longer ones are cut to it.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The least time between two warnings that the cap is reached.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` within `limits` until the returned future is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
) -> io::Result<()> {
    // Out-of-range limits are brought within range rather than panicking (in the semaphore, or
    // in deadline arithmetic).
    let limits = ServeLimits {
        max_connections: limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
        header_timeout: limits.header_timeout.min(MAX_TIMEOUT),
        idle_timeout: limits.idle_timeout.min(MAX_TIMEOUT),
        max_header_bytes: limits.max_header_bytes.max(ServeLimits::MIN_HEADER_BYTES),
        max_requests_per_connection: limits.max_requests_per_connection.max(1),
    };
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let busy: Arc<[u8]> = busy_answer(limits.max_connections).into();
    // Dropped with this future: the connections then finish gracefully.
    let (_stop, stopped) = watch::channel(());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let mut last_warning: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "API: cannot accept a connection; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    max_connections = limits.max_connections,
                    %peer,
                    "API: connection limit reached; refusing new connections with 503"
                );
            }
            match refusals.clone().try_acquire_owned() {
                Ok(refusal) => {
                    let busy = busy.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(REFUSAL_TIME, refuse(stream, &busy)).await;
                        drop(refusal);
                    });
                }
                Err(_) => drop(stream),
            }
            continue;
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "API: cannot set TCP_NODELAY");
        }
        let connection = Connection {
            router: router.clone(),
            builder: builder.clone(),
            limits,
            stopped: stopped.clone(),
        };
        tokio::spawn(async move {
            connection.run(stream).await;
            tracing::trace!(%peer, "API: connection closed");
            drop(permit);
        });
    }
}

/// The answer to a connection over the cap: `503` with the error body, then close.
fn busy_answer(max_connections: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "code": "too_many_connections",
        "message": format!(
            "the API serves at most {max_connections} connections at once: retry later"
        ),
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes the `503`, ends the writing side and reads (a bounded amount of) what the client
/// sent, so that the close is an orderly one.
async fn refuse(mut stream: TcpStream, answer: &[u8]) -> io::Result<()> {
    stream.write_all(answer).await?;
    stream.shutdown().await?;
    let mut scratch = [0u8; 4096];
    let mut read = 0;
    while read < REFUSAL_DRAIN {
        match stream.read(&mut scratch).await? {
            0 => break,
            n => read += n,
        }
    }
    Ok(())
}

/// One accepted connection, served on a task of its own.
struct Connection {
    router: Router,
    builder: http1::Builder,
    limits: ServeLimits,
    stopped: watch::Receiver<()>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let served = Arc::new(AtomicU64::new(0));
        let max_requests = self.limits.max_requests_per_connection;
        let router = self.router.clone();
        let busy = activity.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let router = router.clone();
            let handling = Handling::start(busy.clone());
            let nth = served.fetch_add(1, Ordering::Relaxed) + 1;
            async move {
                let Ok(mut response) = router.oneshot(request).await;
                if nth >= max_requests {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                drop(handling);
                Ok::<_, Infallible>(response)
            }
        });
        let connection = self.builder.serve_connection(io, service);
        tokio::pin!(connection);
        let idle_timeout = self.limits.idle_timeout;
        loop {
            let deadline = activity.idle_deadline(idle_timeout);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "API: connection ended with an error");
                    }
                    return;
                }
                _ = self.stopped.changed() => break,
                () = tokio::time::sleep_until(deadline.into()) => {
                    if activity.is_idle(idle_timeout) {
                        tracing::debug!(?idle_timeout, "API: closing an idle connection");
                        return;
                    }
                }
            }
        }
        // The server was dropped: finish the request in hand, then close.
        connection.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
    }
}

/// When a connection last moved a byte, and how many of its requests are being handled.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last: AtomicU64,
    handling: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// When the connection will have been idle for `timeout`, if nothing moves until then.
    fn idle_deadline(&self, timeout: Duration) -> Instant {
        let now = Instant::now();
        if self.handling.load(Ordering::Relaxed) > 0 {
            return now + timeout;
        }
        (self.last() + timeout).max(now)
    }

    fn is_idle(&self, timeout: Duration) -> bool {
        self.handling.load(Ordering::Relaxed) == 0 && self.last().elapsed() >= timeout
    }
}

/// A request being handled: the connection is not idle meanwhile.
struct Handling(Arc<Activity>);

impl Handling {
    fn start(activity: Arc<Activity>) -> Self {
        activity.handling.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Handling(activity)
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.touch();
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that notes in its [`Activity`] every byte it moves.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
