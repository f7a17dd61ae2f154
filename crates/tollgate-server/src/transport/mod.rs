//! Accepting and serving HTTP/1.1 connections with deadlines and a limit.
//!
//! `axum::serve` keeps a connection open as long as the client likes: a
//! client that never finishes its headers, trickles its body or parks an idle
//! keep-alive connection holds a file descriptor and buffers forever. Here
//! every connection waits under a deadline while the gateway waits for it:
//!
//! - **header read**: a new connection must deliver a complete request head
//!   within `header_read_timeout`, and so must every later request, counted
//!   from its first byte; otherwise the connection is closed;
//! - **idle keep-alive**: between requests a connection may stay silent for
//!   `idle_timeout`, then it is closed;
//! - **body read**: a request body must arrive within `body_read_timeout` of
//!   its head; past that the body read fails, the handler answers 408
//!   (`body-timeout`) and the connection is closed;
//! - **connections**: at most `max_connections` are served at once; further
//!   ones wait in the listen backlog (the kernel bounds it) until one closes.
//!
//! While a response is being produced or sent nothing is timed here: a long
//! stream is the product, and the upstream has its own idle timeout.
//!
//! Accepted connections are dealt to serving threads, one single-threaded
//! runtime each (`lanes`), unless `serving_threads` is 0.

mod body_deadline;
mod connection;
mod lanes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use body_deadline::BodyReadTimeout;

/// Deadlines and the connection limit (`[server]` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Largest request head (request line and headers) accepted; larger
    /// ones get 431.
    pub max_header_bytes: usize,
    /// Threads that serve connections, each with its own single-threaded
    /// runtime (one per core by default); 0 serves them on the caller's
    /// runtime.
    pub serving_threads: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_header_bytes: 64 * 1024,
            serving_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves,
/// then stops accepting, lets in-flight requests finish and closes idle
/// connections.
pub async fn serve_with(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut lanes = match limits.serving_threads {
        0 => None,
        count => Some(lanes::Lanes::start(count)?),
    };
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropping the receiver tells every connection to shut down gracefully.
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(stop_rx);
    });
    // Each connection holds a receiver; all are gone once all have closed.
    let (open_tx, open_rx) = watch::channel(());

    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
            () = stop_tx.closed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop_tx.closed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors or a connection reset before accept:
                // back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = connection::Connection {
            router: router.clone(),
            limits: Arc::clone(&limits),
            stop: stop_tx.clone(),
            open: open_rx.clone(),
        };
        match &mut lanes {
            Some(lanes) => {
                if let Err(error) = lanes.hand(stream, connection, permit) {
                    tracing::warn!(%error, "could not hand a connection over");
                }
            }
            None => {
                tokio::spawn(async move {
                    connection.run(stream).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
    if let Some(lanes) = lanes {
        lanes.finish().await;
    }
    Ok(())
}
