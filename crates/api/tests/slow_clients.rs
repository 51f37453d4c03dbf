//! Slow and hostile clients on loopback: the header timeout, the connection cap and the
//! per-connection limits of `serve_with_limits`. Every wait is a poll for a condition with a
//! generous deadline; no assertion is on how fast anything happened.

use std::net::SocketAddr;
use std::time::Duration;

use dataflow_api::server::{serve_with_limits, ApiState};
use dataflow_api::ServeLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long any single expected outcome may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// Half a request: the request line and one header, never the blank line that ends them.
const HALF_HEADER: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\n";
const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

struct Server {
    address: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(limits: ServeLimits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(serve_with_limits(listener, ApiState::default(), limits));
    Server { address, task }
}

/// Limits with a header timeout long enough that no slow client of a test is timed out.
fn capped(max_connections: usize) -> ServeLimits {
    ServeLimits {
        max_connections,
        header_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    }
}

/// Reads until the server closes the connection (EOF or a reset), within [`DEADLINE`].
async fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

/// Sends `request` on a fresh connection and returns the whole answer, which the server ends
/// by closing the connection.
async fn request(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let answer = read_until_closed(&mut stream)
        .await
        .expect("the server answers and closes within the deadline");
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// Opens `n` connections that each send half a header and then nothing.
async fn slow_clients(address: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(HALF_HEADER)
            .await
            .expect("write half a header");
        streams.push(stream);
    }
    streams
}

/// Polls `GET /health` until it answers 200, within [`DEADLINE`].
async fn health_comes_back(address: SocketAddr) {
    let polled = timeout(DEADLINE, async {
        loop {
            let answer = request(address, HEALTH).await;
            if status(&answer) == "HTTP/1.1 200 OK" {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let answer = polled.expect("/health answers 200 again within the deadline");
    assert!(answer.ends_with("ok"), "{answer}");
}

#[tokio::test]
async fn a_client_sending_half_a_header_is_disconnected_after_the_header_timeout() {
    let server = start(ServeLimits {
        header_timeout: Duration::from_millis(200),
        ..ServeLimits::default()
    })
    .await;
    let mut slow = slow_clients(server.address, 1).await.remove(0);
    let answer = read_until_closed(&mut slow).await;
    assert!(
        answer.is_some(),
        "the connection was still open {DEADLINE:?} after a 200 ms header timeout"
    );
    // a client that connects and sends nothing at all is closed as well
    let mut silent = TcpStream::connect(server.address).await.expect("connect");
    assert!(read_until_closed(&mut silent).await.is_some());
    // and the server goes on serving
    health_comes_back(server.address).await;
}

#[tokio::test]
async fn at_the_cap_a_fresh_client_is_refused_with_503_and_served_once_the_slow_ones_go() {
    let server = start(capped(4)).await;
    let slow = slow_clients(server.address, 4).await;
    let answer = request(server.address, HEALTH).await;
    assert_eq!(
        status(&answer),
        "HTTP/1.1 503 Service Unavailable",
        "{answer}"
    );
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(
        answer.ends_with(
            r#"{"code":"too_many_connections","message":"the API serves at most 4 connections at once: retry later"}"#
        ),
        "{answer}"
    );
    drop(slow);
    health_comes_back(server.address).await;
}

#[tokio::test]
async fn over_the_cap_every_extra_connection_is_refused_and_the_server_keeps_serving() {
    let server = start(capped(4)).await;
    let slow = slow_clients(server.address, 4).await;
    let mut refused = 0;
    for _ in 0..20 {
        let answer = request(server.address, HEALTH).await;
        assert_eq!(
            status(&answer),
            "HTTP/1.1 503 Service Unavailable",
            "{answer}"
        );
        refused += 1;
    }
    assert_eq!(refused, 20);
    // extra connections that send nothing are refused too, and closed
    let mut silent = TcpStream::connect(server.address).await.expect("connect");
    let answer = read_until_closed(&mut silent).await.expect("closed");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"),
        "{answer:?}"
    );
    drop(slow);
    health_comes_back(server.address).await;
    // the slots are free again: a full set of connections is served
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        stream.write_all(HEALTH).await.expect("write");
        clients.push(stream);
    }
    for mut stream in clients {
        let answer = read_until_closed(&mut stream).await.expect("answered");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert_eq!(status(&answer), "HTTP/1.1 200 OK", "{answer}");
    }
}

#[tokio::test]
async fn a_head_larger_than_the_limit_is_answered_431() {
    let server = start(ServeLimits {
        max_header_bytes: 4096,
        ..ServeLimits::default()
    })
    .await;
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: test\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(8192)
    );
    let answer = request(server.address, big.as_bytes()).await;
    assert_eq!(
        status(&answer),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "{answer}"
    );
    health_comes_back(server.address).await;
}

#[tokio::test]
async fn a_keep_alive_connection_serves_at_most_the_requests_allowed() {
    let server = start(ServeLimits {
        max_requests_per_connection: 2,
        ..ServeLimits::default()
    })
    .await;
    let keep_alive = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    stream.write_all(keep_alive).await.expect("first request");
    stream.write_all(keep_alive).await.expect("second request");
    let answer = read_until_closed(&mut stream)
        .await
        .expect("the connection is closed after the second answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert_eq!(answer.matches("connection: close").count(), 1, "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = start(ServeLimits {
        header_timeout: Duration::from_millis(200),
        ..ServeLimits::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("request");
    let answer = read_until_closed(&mut stream)
        .await
        .expect("the idle connection is closed after its answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status(&answer), "HTTP/1.1 200 OK", "{answer}");
}
