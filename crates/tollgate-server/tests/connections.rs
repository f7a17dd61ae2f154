//! Connection deadlines and the connection limit, against real sockets.
//!
//! Bounds here are behaviour bounds (everything slow is closed, memory and
//! descriptors do not grow with it), far from any timing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::IntoResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_server::ConnectionLimits;

/// Far beyond every deadline used here: a connection still open then was
/// never going to be closed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Reads a request body like the paid handler does.
async fn echo_length(request: Request) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    match tollgate_server::body::read_body(body, &parts.headers, 1024 * 1024).await {
        Ok(body) => format!("{}", body.len()).into_response(),
        Err(error) => error.into_response(),
    }
}

fn router() -> Router {
    Router::new()
        .route("/echo", axum::routing::post(echo_length))
        .route(
            "/thread",
            axum::routing::get(|| async {
                std::thread::current()
                    .name()
                    .unwrap_or("unnamed")
                    .to_owned()
            }),
        )
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "done"
            }),
        )
}

fn short(limits: ConnectionLimits) -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        ..limits
    }
}

struct Server {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ConnectionLimits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tollgate_server::serve_with(
        listener,
        router(),
        limits,
        async {
            let _ = stopped.await;
        },
    ));
    Server { addr, stop, task }
}

async fn start_with_threads(serving_threads: usize) -> Server {
    start(ConnectionLimits {
        serving_threads,
        ..ConnectionLimits::default()
    })
    .await
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 1 000, or fewer when the open-file limit cannot hold both ends of that
/// many connections in this one process.
fn slow_clients() -> usize {
    let soft: usize = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1_024);
    let n = 1_000.min(soft.saturating_sub(128) / 2);
    if n < 1_000 {
        eprintln!("open-file limit {soft}: {n} slow clients instead of 1 000");
    }
    n
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Reads until the server closes; `None` if it never does.
async fn read_to_close(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn request(addr: std::net::SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    String::from_utf8(
        read_to_close(&mut stream)
            .await
            .expect("answered and closed"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_headers_are_closed_and_resources_stay_bounded() {
    let server = start(short(ConnectionLimits::default())).await;
    let fds_before = open_fds();
    let rss_before = rss_kib();
    let padding = "a".repeat(16 * 1024);
    let clients = slow_clients();
    let mut streams = Vec::new();
    for _ in 0..clients {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!("POST /echo HTTP/1.1\r\nhost: x\r\nx-pad: {padding}");
        stream.write_all(head.as_bytes()).await.unwrap();
        streams.push(stream);
    }
    // Our sockets plus at most as many accepted ones.
    let fds_held = open_fds();
    assert!(
        fds_held <= fds_before + 2 * clients + 64,
        "{fds_held} fds open, {fds_before} before"
    );
    let rss_held = rss_kib();
    assert!(
        rss_held < rss_before + 256 * 1024,
        "RSS grew from {rss_before} KiB to {rss_held} KiB for {clients} slow connections"
    );

    let closes = futures::future::join_all(streams.iter_mut().map(read_to_close)).await;
    let never_closed = closes.iter().filter(|c| c.is_none()).count();
    assert_eq!(never_closed, 0, "connections left open past every deadline");
    assert!(
        closes
            .iter()
            .all(|c| c.as_ref().is_some_and(|bytes| bytes.is_empty())),
        "a head that never ends gets no response, only a close"
    );
    drop(streams);

    // The server let go of every one and still serves.
    let answer = request(
        server.addr,
        "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n3"), "{answer}");
    let fds_after = open_fds();
    assert!(
        fds_after <= fds_before + 64,
        "{fds_after} fds open after the closes, {fds_before} before"
    );
    let _ = server.stop.send(());
    server.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_body_is_cut_with_a_408_problem() {
    let server = start(short(ConnectionLimits::default())).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut stream).await.expect("cut")).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains(r#""code":"body-timeout""#), "{answer}");

    // A body that trickles in chunks, never finishing, is cut the same way.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n",
        )
        .await
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut stream).await.expect("cut")).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let _ = server.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chunked_framing_is_a_400_not_a_413() {
    let server = start(ConnectionLimits::default()).await;
    let answer = request(
        server.addr,
        "POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""code":"malformed-body""#), "{answer}");
    let _ = server.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_is_closed_but_a_slow_answer_is_not_cut() {
    let server = start(short(ConnectionLimits::default())).await;
    // The answer takes longer than every deadline: serving is not timed.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
    // Then the kept-alive connection sits idle and is closed.
    let rest = read_to_close(&mut stream)
        .await
        .expect("idle connection closed");
    assert!(rest.is_empty());
    let _ = server.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let limits = ConnectionLimits {
        max_connections: 10,
        header_read_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(120),
        ..ConnectionLimits::default()
    };
    let server = start(limits).await;
    let fds_before = open_fds();
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds = open_fds();
    assert!(
        fds <= fds_before + 30 + 10 + 8,
        "{fds} fds open for 30 clients under a limit of 10 ({fds_before} before)"
    );

    let mut waiting = TcpStream::connect(server.addr).await.unwrap();
    waiting
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the connection limit");

    drop(held);
    let answer = String::from_utf8(read_to_close(&mut waiting).await.expect("served")).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = server.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let server = start(ConnectionLimits::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = server.stop.send(());
    let answer = String::from_utf8(read_to_close(&mut stream).await.expect("finished")).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
    server.task.await.unwrap().unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting"
    );
}

/// The thread that served each of `count` requests sent one after another on
/// one kept-alive connection.
async fn threads_of(addr: std::net::SocketAddr, count: usize) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut names = Vec::new();
    for _ in 0..count {
        stream
            .write_all(b"GET /thread HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        // The answer is small: read until its body (after the blank line)
        // is as long as its content-length says.
        let name = loop {
            let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed mid-answer");
            head.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&head).into_owned();
            if let Some((headers, body)) = text.split_once("\r\n\r\n") {
                let length: usize = headers
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    break body.to_owned();
                }
            }
        };
        names.push(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_dealt_to_serving_threads_and_stay_on_theirs() {
    let server = start_with_threads(2).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let names = threads_of(server.addr, 3).await;
        assert!(
            names.iter().all(|n| n == &names[0]),
            "one connection moved threads: {names:?}"
        );
        seen.insert(names[0].clone());
    }
    let expected: std::collections::BTreeSet<String> =
        ["tollgate-serve-0".to_owned(), "tollgate-serve-1".to_owned()].into();
    assert_eq!(seen, expected, "connections were not dealt round-robin");

    // In-flight requests on both threads finish through a shutdown.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = server.stop.send(());
    for mut stream in slow {
        let answer =
            String::from_utf8(read_to_close(&mut stream).await.expect("finished")).unwrap();
        assert!(answer.ends_with("done"), "{answer}");
    }
    server.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_serving_threads_serves_on_the_callers_runtime() {
    let server = start_with_threads(0).await;
    for name in threads_of(server.addr, 2).await {
        assert!(!name.starts_with("tollgate-serve"), "{name}");
    }
    let _ = server.stop.send(());
    server.task.await.unwrap().unwrap();
}
