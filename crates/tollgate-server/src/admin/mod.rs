//! The admin listener (`[admin]`, off unless configured): Prometheus
//! metrics and the operator dashboard, behind a bearer token. Separate from
//! the public router so that nothing here is reachable by payers.

mod auth;
mod dashboard;
pub mod ledger_metrics;
pub mod recorder;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tollgate_ledger::Ledger;

pub use auth::AdminToken;
pub use ledger_metrics::SettlementCounters;
pub use recorder::Observer;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub observer: Arc<Observer>,
    pub ledger: Arc<dyn Ledger>,
    pub settlement: Arc<SettlementCounters>,
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
    if let Err(e) =
        ledger_metrics::refresh(&state.observer, state.ledger.as_ref(), &state.settlement).await
    {
        // Serve what the process knows; the ledger figures are stale.
        tracing::warn!(error = %e, "ledger metrics could not be refreshed");
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
