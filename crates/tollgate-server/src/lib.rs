//! The Tollgate HTTP gateway: routes, payment gate, forwarding, receipts.
#![forbid(unsafe_code)]

mod access_log;
mod app;
pub mod config;
mod handler;
mod metering;
pub mod plans;
mod pricing;
mod problem;
mod session_serve;
mod session_stream;
pub mod settlement;
mod upstream_call;

pub use app::{
    BuildError, BuildOptions, MockFactory, MockSettings, build, build_with, build_with_ledger,
    session_gate,
};
pub use config::{Config, ConfigError};

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
