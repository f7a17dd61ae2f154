//! `POST /v1/mpp/chat/completions`: accountless chat on a plan, paid by a
//! Tempo session with cumulative voucher buckets (seed 004, docs/plans.md).
//!
//! Flow: validate (400s before any challenge) → resolve the model → price
//! the worst case → challenge binding body digest, plan, model, runtime,
//! pricing snapshot and caps → on a credential: binding checks, payer
//! policy, the session action, reserve the worst case, call the runtime,
//! commit the actual cost, receipt.

mod errors;
mod request;
mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate_ledger::Ledger;
use tollgate_payments::binding::{PlanBindingFault, check_plan, parse_authorization};
use tollgate_payments::session::{Action, SessionGate, SessionOffer};
use tollgate_payments::{Address, Offer, PaymentProblem, ProblemKind};
use tollgate_pricing::PriceTable;
use tollgate_providers::Upstream;

pub use errors::PlanError;
use request::{PlanRequest, Resolution};

use crate::config::PlansConfig;
use crate::handler::Gateway;
use crate::metering::body_usage;
use crate::problem::problem;
use crate::session_serve::{attach_receipt, receipt_response};
use crate::upstream_call::{ClientApi, call_upstream};

pub const PATH: &str = "/v1/mpp/chat/completions";
const SCOPE: &str = "POST /v1/mpp/chat/completions";
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Everything the plan endpoint needs.
pub struct PlanEndpoint {
    pub config: PlansConfig,
    pub gateway: Arc<Gateway>,
    pub sessions: Arc<SessionGate>,
    pub ledger: Arc<dyn Ledger>,
    pub upstreams: BTreeMap<String, Upstream>,
    pub table: Arc<PriceTable>,
    /// Changes whenever the price table or the plans change.
    pub pricing_snapshot: String,
    pub max_body_bytes: usize,
}

/// A short id of the prices in force: the table and the plan section.
pub fn pricing_snapshot(table: &PriceTable, config: &PlansConfig) -> String {
    let digest = Sha256::new()
        .chain_update(format!("{table:?}").as_bytes())
        .chain_update(format!("{:?}{:?}", config.plans, config.models).as_bytes())
        .finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl PlanEndpoint {
    fn offer(&self) -> SessionOffer {
        SessionOffer {
            amount: self.config.voucher_bucket,
            suggested_deposit: self.config.suggested_deposit,
            ..self.sessions.offer(self.config.voucher_bucket, None)
        }
    }

    fn opaque(&self, request: &PlanRequest, resolution: &Resolution) -> Value {
        json!({
            "route": SCOPE,
            "plan": request.plan,
            "model": resolution.model,
            "runtime": resolution.runtime,
            "pricing": self.pricing_snapshot,
            "caps": {"input": resolution.input_tokens, "output": resolution.output_cap},
        })
    }

    fn payer_allowed(&self, payer: Address) -> bool {
        let c = &self.config;
        !c.payer_deny.contains(&payer)
            && (c.payer_allow.is_empty() || c.payer_allow.contains(&payer))
    }
}

pub async fn handle(endpoint: Arc<PlanEndpoint>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method == Method::HEAD {
        return head(&endpoint);
    }
    let body = match axum::body::to_bytes(body, endpoint.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("request body exceeds {} bytes", endpoint.max_body_bytes),
            );
        }
    };
    let plan_request = match PlanRequest::parse(&body, &endpoint.config) {
        Ok(r) => r,
        Err(e) => return bad_request(e.param, &e.message),
    };
    if plan_request.stream && !endpoint.config.streaming {
        return refuse(
            &endpoint,
            PlanError::StreamingUnavailable,
            "streaming is not available on this endpoint",
            None,
        );
    }
    let resolution = match request::resolve(&plan_request, &endpoint.config, &endpoint.table) {
        Ok(r) => r,
        Err(e) => return bad_request(e.param, &e.message),
    };
    if resolution.worst_case > endpoint.config.voucher_bucket {
        return refuse(
            &endpoint,
            PlanError::RequestExceedsVoucherBucket,
            "this request's worst case exceeds one voucher bucket; lower max_tokens or shorten the prompt",
            None,
        );
    }
    let opaque = endpoint.opaque(&plan_request, &resolution);
    let offer = endpoint.offer();
    let challenge =
        |e: PlanError, detail: &str| refuse(&endpoint, e, detail, Some((&offer, &opaque, &body)));

    // The credential and its binding to this exact request.
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let credential = match authorization
        .and_then(|v| parse_authorization(v, endpoint.gateway.gate.max_credential_bytes()))
    {
        None => return challenge(PlanError::PaymentRequired, "this resource requires payment"),
        Some(Err(_)) => {
            return challenge(
                PlanError::MalformedCredential,
                "the credential could not be decoded",
            );
        }
        Some(Ok(c)) => c,
    };
    let issuer = endpoint.gateway.gate.issuer();
    if let Err(fault) = check_plan(
        issuer.keys(),
        &credential,
        issuer.realm(),
        &body,
        &opaque,
        &offer,
    ) {
        let (e, detail) = match fault {
            PlanBindingFault::MethodUnsupported => (
                PlanError::MethodUnsupported,
                "only tempo session credentials are accepted",
            ),
            PlanBindingFault::InvalidChallenge => (
                PlanError::InvalidChallenge,
                "the challenge is unknown, altered, expired or for another route",
            ),
            PlanBindingFault::BodyDigestMismatch => (
                PlanError::BodyDigestMismatch,
                "the credential was issued for another request body",
            ),
            PlanBindingFault::QuoteInvalid => (
                PlanError::RequestQuoteInvalid,
                "plan resolution, prices or caps changed since the challenge",
            ),
        };
        return challenge(e, detail);
    }
    let action = match Action::parse(&credential.payload) {
        Ok(action) => action,
        Err(_) => {
            return challenge(
                PlanError::MalformedCredential,
                "the session payload is not understood",
            );
        }
    };
    if matches!(action, Action::Close(_)) && endpoint.sessions.chain().operator().is_none() {
        return refuse(
            &endpoint,
            PlanError::SessionCloseUnavailable,
            "this gateway cannot sign closes now; retry later or wait for settlement",
            None,
        );
    }
    let allowed = |payer: Address| endpoint.payer_allowed(payer);
    // No lists, no lookup: the payer check costs a ledger read per turn.
    let policy = &endpoint.config;
    let allowed: Option<&(dyn Fn(Address) -> bool + Sync)> =
        (!policy.payer_allow.is_empty() || !policy.payer_deny.is_empty()).then_some(&allowed);
    let applied = match endpoint
        .sessions
        .apply_for(&action, endpoint.config.voucher_bucket, allowed)
        .await
    {
        Ok(applied) => applied,
        Err(problem) => {
            let e = session_error(&action, &problem);
            tracing::info!(
                code = e.code(),
                problem = problem.kind.slug(),
                "plan payment refused"
            );
            return challenge(e, &problem.detail);
        }
    };
    let challenge_id = credential.challenge.id.clone();
    if matches!(action, Action::Close(_)) {
        return receipt_response(
            &endpoint.sessions,
            &challenge_id,
            &applied.channel,
            None,
            applied.tx_hash.as_deref(),
        );
    }

    // Reserve the worst case; run; commit what it actually cost.
    let channel = &applied.channel;
    let reservation = match endpoint
        .sessions
        .reserve(&channel.channel_id, resolution.worst_case)
        .await
    {
        Ok(r) => r,
        Err(problem) if problem.kind == ProblemKind::SessionInsufficientBalance => {
            let required = channel.spent + channel.reserved + resolution.worst_case;
            let bucket = endpoint.config.voucher_bucket;
            let next = required.div_ceil(bucket) * bucket;
            return refuse_with(
                &endpoint,
                PlanError::VoucherBucketRefreshRequired,
                "the accepted voucher bucket is exhausted: sign a higher cumulative voucher and retry the same body",
                Some((&offer, &opaque, &body)),
                &[
                    ("acceptedCumulative", json!(channel.accepted.to_string())),
                    ("requiredCumulative", json!(next.to_string())),
                ],
            );
        }
        Err(problem) => {
            tracing::info!(problem = problem.kind.slug(), "plan reservation failed");
            return refuse(
                &endpoint,
                PlanError::ReservationFailed,
                "the channel cannot take a reservation now",
                None,
            );
        }
    };
    let Some(upstream) = endpoint.upstreams.get(&resolution.runtime) else {
        endpoint.sessions.release(reservation).await;
        return problem(
            StatusCode::BAD_GATEWAY,
            "runtime-unavailable",
            "the plan's runtime is not configured",
        );
    };
    let mut upstream_body = plan_request.upstream_body(&resolution.model, resolution.output_cap);
    if plan_request.stream {
        // Ask for the usage chunk: the turn is charged from it.
        upstream_body["stream_options"] = json!({"include_usage": true});
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let table = Arc::clone(&endpoint.table);
    let defaults = move |model: &str| {
        table
            .chat_model(model)
            .map(|(_, p)| u32::try_from(p.default_output_tokens()).unwrap_or(u32::MAX))
    };
    let response = call_upstream(
        upstream,
        ClientApi::OpenAiChat,
        &defaults,
        Method::POST,
        "/v1/chat/completions",
        &headers,
        Bytes::from(upstream_body.to_string()),
    )
    .await;
    if !response.status().is_success() {
        endpoint.sessions.release(reservation).await;
        tracing::info!(
            status = response.status().as_u16(),
            "runtime failed; plan turn not charged"
        );
        return response;
    }
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_sse {
        return stream::serve(stream::Turn {
            response,
            endpoint: Arc::clone(&endpoint),
            reservation,
            resolution,
            challenge_id,
        });
    }
    let (head, answer) = response.into_parts();
    let bytes = axum::body::to_bytes(answer, MAX_ANSWER_BYTES)
        .await
        .unwrap_or_default();
    let usage = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| body_usage(tollgate_pricing::Endpoint::Chat, &v));
    let Some(usage) = usage else {
        endpoint.sessions.release(reservation).await;
        return refuse(
            &endpoint,
            PlanError::CommitFailed,
            "the runtime's answer reported no usage to charge",
            None,
        );
    };
    let cost = resolution.actual_cost(&endpoint.table, usage);
    let units = usage.input_tokens + usage.output_tokens;
    let committed = match endpoint.sessions.commit(reservation, cost, units).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "plan commit failed");
            return refuse(
                &endpoint,
                PlanError::CommitFailed,
                "the turn's cost could not be committed",
                None,
            );
        }
    };
    let mut response = Response::from_parts(head, Body::from(bytes));
    let receipt = endpoint
        .sessions
        .receipt(&challenge_id, &committed, Some(units), None);
    attach_receipt(response.headers_mut(), &receipt);
    tracing::info!(plan = %plan_request.plan, model = %resolution.model, cost = cost as u64, "plan turn served");
    response
}

/// Maps a session refusal onto the plan endpoint's codes.
fn session_error(action: &Action, problem: &PaymentProblem) -> PlanError {
    match problem.kind {
        ProblemKind::PayerNotAllowed => PlanError::PayerNotAllowed,
        ProblemKind::SessionAmountExceedsDeposit => PlanError::DepositBelowRequestCost,
        ProblemKind::SessionInsufficientBalance if matches!(action, Action::Open(_)) => {
            PlanError::DepositBelowRequestCost
        }
        ProblemKind::MalformedCredential | ProblemKind::InvalidPayload
            if !matches!(action, Action::Open(_) | Action::TopUp(_)) =>
        {
            PlanError::MalformedCredential
        }
        ProblemKind::ChainUnavailable | ProblemKind::VerificationFailed
            if matches!(action, Action::Close(_)) =>
        {
            PlanError::SessionCloseFailed
        }
        // The voucher is fine but the channel is closing (a forced close
        // was requested on chain) or closed: it can take no reservation.
        ProblemKind::SessionChannelFinalized if matches!(action, Action::Voucher(_)) => {
            PlanError::ReservationFailed
        }
        _ => PlanError::PaymentVerificationFailed,
    }
}

fn head(endpoint: &PlanEndpoint) -> Response {
    let mut response = Response::new(Body::empty());
    if !endpoint.config.head_metadata {
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    // Metadata only: never a model run.
    *response.status_mut() = StatusCode::NO_CONTENT;
    let plans: Vec<&str> = endpoint
        .config
        .plans
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let headers = response.headers_mut();
    for (name, value) in [
        ("mpp-plans", plans.join(", ")),
        (
            "mpp-voucher-bucket",
            endpoint.config.voucher_bucket.to_string(),
        ),
        (
            "mpp-suggested-deposit",
            endpoint.config.suggested_deposit.to_string(),
        ),
        ("mpp-pricing-snapshot", endpoint.pricing_snapshot.clone()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    response
}

fn bad_request(param: &str, message: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": "Invalid Request",
        "status": 400,
        "detail": message,
        "code": "invalid_request",
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": "invalid_request"},
    });
    json_problem(StatusCode::BAD_REQUEST, &body)
}

type Challenge<'a> = Option<(&'a SessionOffer, &'a Value, &'a Bytes)>;

fn refuse(
    endpoint: &PlanEndpoint,
    e: PlanError,
    detail: &str,
    challenge: Challenge<'_>,
) -> Response {
    refuse_with(endpoint, e, detail, challenge, &[])
}

/// RFC 9457 body with the stable `code`; 402s carry a fresh challenge.
fn refuse_with(
    endpoint: &PlanEndpoint,
    e: PlanError,
    detail: &str,
    challenge: Challenge<'_>,
    extensions: &[(&str, Value)],
) -> Response {
    let issued = match (e.carries_challenge(), challenge) {
        (true, Some((offer, opaque, body))) => endpoint
            .gateway
            .gate
            .issuer()
            .issue_with_opaque(&Offer::TempoSession(offer.clone()), opaque, body)
            .ok(),
        _ => None,
    };
    let mut body = json!({
        "type": format!("https://tollgate.dev/problems/{}", e.code()),
        "title": e.title(),
        "status": e.status().as_u16(),
        "detail": detail,
        "code": e.code(),
    });
    for (name, value) in extensions {
        body[*name] = value.clone();
    }
    if let Some(issued) = &issued {
        body["challengeId"] = json!(issued.id);
    }
    let mut response = json_problem(e.status(), &body);
    if let Some(issued) = issued
        && let Ok(value) = HeaderValue::from_str(&issued.header)
    {
        response
            .headers_mut()
            .append(header::WWW_AUTHENTICATE, value);
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if e == PlanError::SessionCloseUnavailable {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    response
}

fn json_problem(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}
