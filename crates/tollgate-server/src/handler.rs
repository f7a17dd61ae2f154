//! The paid-route handler: read the body, settle the payment, forward.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use tollgate_ledger::Ledger;
use tollgate_payments::{
    Authorized, Offer, Paid, PaymentGate, PaymentProblem, Pending, ProblemKind,
};
use tollgate_providers::Upstream;

use crate::metering::Metering;
use crate::pricing::Pricing;
use crate::problem::{invalid_request, payment_problem, problem};

/// Shared by every route.
pub struct Gateway {
    pub gate: PaymentGate,
    pub ledger: Arc<dyn Ledger>,
    pub max_body_bytes: usize,
    pub settle_after_upstream: bool,
    /// How long a session stream waits for a voucher once it asked.
    pub stream_voucher_timeout: Duration,
    /// The session amount asked by a challenge that buys nothing itself
    /// (`HEAD`, voucher top-ups).
    pub session_floor: u128,
}

/// Where a request's payment stands while the upstream is called.
enum Payment {
    Settled(Paid),
    /// Authorized, to be broadcast once the upstream answered successfully.
    Deferred(Box<Pending>),
}

/// One configured method + path.
pub struct Route {
    pub scope: String,
    /// The default upstream.
    pub upstream: Upstream,
    /// Model-id prefix → upstream, for models another upstream serves.
    pub model_upstreams: Vec<(String, Upstream)>,
    /// What clients of this route speak (decides translation).
    pub client_api: crate::upstream_call::ClientApi,
    pub pricing: Pricing,
    /// The price table, for per-model defaults (`max_tokens` for Claude).
    pub table: Arc<tollgate_pricing::PriceTable>,
}

impl Route {
    /// `max_tokens` for a translated request that sets none.
    pub fn default_max_tokens(&self, model: &str) -> Option<u32> {
        self.table
            .chat_model(model)
            .map(|(_, price)| u32::try_from(price.default_output_tokens()).unwrap_or(u32::MAX))
    }
}

pub async fn handle(gateway: Arc<Gateway>, route: Arc<Route>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(body, &parts.headers, gateway.max_body_bytes).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str())
        .to_owned();

    // Session actions that buy nothing: body-less vouchers, top-ups, opens
    // and closes on the resource itself, and `HEAD`.
    if let (Some(sessions), Some(_)) = (gateway.gate.sessions(), route.pricing.session_terms())
        && (parts.method == axum::http::Method::HEAD
            || (body.is_empty() && crate::session_serve::has_payment_credential(&parts.headers)))
    {
        return crate::session_serve::action_only(
            &gateway,
            &route,
            &parts,
            sessions,
            gateway.session_floor,
        )
        .await;
    }

    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let priced = match route.pricing.price(content_type, &body).await {
        Ok(Some(priced)) => priced,
        Ok(None) => {
            return forward(&route, parts.method, &path_and_query, &parts.headers, body).await;
        }
        Err(e) => return invalid_request(e.code, &e.message, e.param),
    };
    let offers = priced.offers.clone();
    let offers = offers.as_ref();

    let authorization = match parts
        .headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::to_str)
    {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            let bad = PaymentProblem::new(
                ProblemKind::MalformedCredential,
                "Authorization header is not visible ASCII",
            );
            return refuse(&gateway, &route, offers, &parts.headers, &body, &bad);
        }
    };
    let payment_started = Instant::now();
    let pending = match gateway
        .gate
        .authorize(authorization, offers, &route.scope, &body)
        .await
    {
        Ok(Authorized::Charge(pending)) => pending,
        Ok(Authorized::Session(authorized)) => {
            let (Some(sessions), Some(call)) = (gateway.gate.sessions(), priced.quoted) else {
                let problem =
                    PaymentProblem::new(ProblemKind::MethodUnsupported, "no session here");
                return refuse(&gateway, &route, offers, &parts.headers, &body, &problem);
            };
            return crate::session_serve::serve(crate::session_serve::SessionRequest {
                gateway: &gateway,
                route: &route,
                parts: &parts,
                path_and_query: &path_and_query,
                body,
                offers,
                call,
                authorized,
                sessions,
            })
            .await;
        }
        Err(problem) => return refuse(&gateway, &route, offers, &parts.headers, &body, &problem),
    };
    let challenge_id = pending.challenge_id().to_owned();
    let payment = if gateway.settle_after_upstream && pending.is_unbroadcast() {
        Payment::Deferred(Box::new(pending))
    } else {
        match gateway.gate.settle(pending).await {
            Ok(paid) => Payment::Settled(paid),
            Err(problem) => {
                return refuse(&gateway, &route, offers, &parts.headers, &body, &problem);
            }
        }
    };
    let mut payment_time = payment_started.elapsed();

    let metering = priced
        .quoted
        .map(|call| Metering::new(call, &route.scope, &challenge_id));
    let upstream_body = match &metering {
        Some(m) => m.upstream_body(body.clone()),
        None => body.clone(),
    };
    let upstream_started = Instant::now();
    let mut response = forward(
        &route,
        parts.method,
        &path_and_query,
        &parts.headers,
        upstream_body,
    )
    .await;
    let upstream_time = upstream_started.elapsed();

    let paid = match payment {
        Payment::Settled(paid) => paid,
        Payment::Deferred(pending) if !response.status().is_success() => {
            // The upstream failed: nothing is broadcast, the payer keeps their money.
            gateway.gate.release(*pending).await;
            tracing::info!(route = %route.scope, status = response.status().as_u16(), "upstream failed; payment not taken");
            return response;
        }
        Payment::Deferred(pending) => {
            let settle_started = Instant::now();
            let settled = gateway.gate.settle(*pending).await;
            payment_time += settle_started.elapsed();
            match settled {
                Ok(paid) => paid,
                Err(problem) => {
                    // Dropping the upstream response cancels it.
                    tracing::warn!(route = %route.scope, problem = problem.kind.slug(), "payment failed after the upstream answered");
                    return refuse(&gateway, &route, offers, &parts.headers, &body, &problem);
                }
            }
        }
    };
    tracing::info!(
        route = %route.scope,
        chain_us = paid.chain_time.as_micros() as u64,
        payment_us = payment_time.as_micros() as u64,
        "payment settled"
    );
    let timing = format!(
        "payment;dur={:.3}, chain;dur={:.3}, upstream;dur={:.3}",
        millis(payment_time),
        millis(paid.chain_time),
        millis(upstream_time)
    );
    if let Ok(value) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert("server-timing", value);
    }
    if response.status().is_success() {
        if let Ok(receipt) = HeaderValue::from_str(&paid.receipt_header) {
            let headers = response.headers_mut();
            headers.insert("payment-receipt", receipt);
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        }
        if let Some(metering) = metering {
            response = metering
                .observe(response, Arc::clone(&gateway.ledger))
                .await;
        }
    } else {
        tracing::warn!(
            route = %route.scope,
            status = response.status().as_u16(),
            "upstream failed after the payment settled"
        );
    }
    response
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Answers a failed or missing payment, with fresh challenges when it is a 402.
pub(crate) fn refuse(
    gateway: &Gateway,
    route: &Route,
    offers: &[Offer],
    headers: &HeaderMap,
    body: &[u8],
    refusal: &PaymentProblem,
) -> Response {
    if refusal.kind != ProblemKind::PaymentRequired {
        tracing::info!(route = %route.scope, problem = refusal.kind.slug(), detail = %refusal.detail, "payment refused");
    }
    if !refusal.kind.carries_challenge() {
        return payment_problem(refusal, &[]);
    }
    let accept = headers.get("accept-payment").and_then(|v| v.to_str().ok());
    match gateway.gate.challenges(offers, &route.scope, body, accept) {
        Ok(challenges) => payment_problem(refusal, &challenges),
        Err(internal) => payment_problem(&internal, &[]),
    }
}

pub(crate) async fn forward(
    route: &Route,
    method: axum::http::Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    crate::upstream_call::call(route, method, path_and_query, headers, body).await
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Response> {
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("request body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}
