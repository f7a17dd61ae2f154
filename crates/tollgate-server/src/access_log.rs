//! One log line per request: method, path, status, latency. Never headers,
//! bodies, credentials or receipts. When traces are exported (the CLI's
//! `otlp` feature), each request also runs in a `request` span (method and
//! matched route only), the root of its trace.
//!
//! Without an exporter there is no span: creating, entering and closing one
//! per request (its fields formatted for the log's context) was up to a
//! tenth of the free route's CPU (docs/architecture.md), for a prefix on
//! the few lines logged inside a request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

static REQUEST_SPANS: AtomicBool = AtomicBool::new(false);

/// Runs every request in a `request` span from now on (traces are exported).
pub fn trace_requests() {
    REQUEST_SPANS.store(true, Ordering::Relaxed);
}

pub async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = if REQUEST_SPANS.load(Ordering::Relaxed) {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str())
            .to_owned();
        let span = tracing::info_span!("request", %method, route);
        next.run(request).instrument(span).await
    } else {
        next.run(request).await
    };
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}
