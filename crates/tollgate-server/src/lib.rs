//! The Tollgate HTTP gateway: routes, payment gate, forwarding, receipts.
#![forbid(unsafe_code)]

// The module chain, each link importing only links above it: shared
// state and errors; reading (sse, usage, metering); the upstream call;
// receipts and idempotency; the payment policies; the pipeline and the
// stream delivery; the products (routes, plans, discovery); the operator's
// listener (metrics, dashboard); the app that wires them. `observe` (what a
// response is about, for the metrics) sits with the shared state.
mod access_log;
// Connections and their deadlines, below everything that serves them.
pub mod config;
mod error_shape;
pub mod observe;
mod pricing;
mod problem;
mod state;
mod translation;
pub mod transport;
// Reading a request body (problems for too large, malformed, late).
pub mod body;

mod metering;
mod sse;
mod usage;

mod upstream;

mod idempotency;
mod receipts;

mod policy;

mod pipeline;
mod stream;

mod discovery;
mod model_routes;
pub mod plans;
mod routes;

pub mod admin;
mod app;
mod refund_worker;
pub mod settlement;

pub use access_log::trace_requests;
pub use app::{
    App, BuildError, BuildOptions, MockFactory, MockSettings, build, build_app, build_with,
    build_with_ledger, open_store, session_gate,
};
pub use config::{Config, ConfigError};
pub use transport::{ConnectionLimits, serve_with};

/// Serves `router` on `listener` with the default [`ConnectionLimits`]
/// until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ConnectionLimits::default(), shutdown).await
}
