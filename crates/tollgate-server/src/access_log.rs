//! One log line per request: method, path, status, latency. Never headers,
//! bodies, credentials or receipts. Each request runs in a `request` span
//! (method and matched route only), the root of its trace when traces are
//! exported (the CLI's `otlp` feature).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let span = tracing::info_span!("request", %method, route);
    let started = Instant::now();
    let response = next.run(request).instrument(span).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}
