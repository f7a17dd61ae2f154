//! The admin listener (`[admin]`, off unless configured): Prometheus
//! metrics and the operator dashboard, behind a bearer token. Separate from
//! the public router so that nothing here is reachable by payers.

mod auth;
mod dashboard;
pub mod ledger_metrics;
pub mod recorder;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tollgate_ledger::Ledger;

pub use auth::AdminToken;
pub use ledger_metrics::SettlementCounters;
pub use recorder::Observer;

/// Ledger figures are read at most this often, however often scrapes come
/// (one read is ~0.2 s over 100 000 records, on its own connection).
const LEDGER_REFRESH: Duration = Duration::from_secs(1);

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub observer: Arc<Observer>,
    pub ledger: Arc<dyn Ledger>,
    pub settlement: Arc<SettlementCounters>,
    /// When the ledger-derived metrics were last read.
    pub refreshed: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

/// The admin router; every route requires `token`.
pub fn router(state: AdminState, token: AdminToken) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .route("/api/dashboard", get(dashboard::data))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    {
        // One refresh at a time; concurrent scrapes wait and reuse it.
        let mut refreshed = state.refreshed.lock().await;
        if refreshed.is_none_or(|at| at.elapsed() >= LEDGER_REFRESH) {
            match ledger_metrics::refresh(&state.observer, state.ledger.as_ref(), &state.settlement)
                .await
            {
                Ok(()) => *refreshed = Some(Instant::now()),
                // Serve what the process knows; the ledger figures are stale.
                Err(e) => tracing::warn!(error = %e, "ledger metrics could not be refreshed"),
            }
        }
    }
    let mut response = state.observer.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::OK, response).into_response()
}
