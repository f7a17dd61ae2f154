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

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate_payments::binding::{PlanBindingFault, check_plan, parse_authorization};
use tollgate_payments::session::{Action, SessionGate, SessionOffer};
use tollgate_payments::{Address, Offer, PaymentProblem, ProblemKind};
use tollgate_pricing::{PriceTable, Quote};
use tollgate_providers::Upstream;

pub use errors::PlanError;
use request::{PlanRequest, Resolution};

use crate::config::PlansConfig;
use crate::metering::Meter;
use crate::observe::{self, Intent, RequestOutcome};
use crate::pipeline::{self, Prepared, Product, Step};
use crate::policy::Admission;
use crate::policy::session::{Growth, SessionHold, paid_headers};
use crate::pricing::QuotedCall;
use crate::problem::{ApiError, Problem};
use crate::receipts;
use crate::state::{ClientApi, Gateway};
use crate::upstream::UpstreamCall;

pub const PATH: &str = "/v1/mpp/chat/completions";
const SCOPE: &str = "POST /v1/mpp/chat/completions";

/// Everything the plan endpoint needs.
pub struct PlanEndpoint {
    pub config: PlansConfig,
    pub gateway: Arc<Gateway>,
    pub sessions: Arc<SessionGate>,
    pub upstreams: BTreeMap<String, Upstream>,
    pub table: Arc<PriceTable>,
    /// What the Anthropic translation needs (model facts, user-id key).
    pub translation: Arc<crate::translation::Translation>,
    /// Changes whenever the price table or the plans change.
    pub pricing_snapshot: String,
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

/// The axum handler of the plan endpoint.
pub async fn handle(endpoint: Arc<PlanEndpoint>, request: Request) -> Response {
    let gateway = Arc::clone(&endpoint.gateway);
    let mut response = pipeline::serve(&gateway, endpoint.as_ref(), request)
        .await
        .into_response();
    observe::attach(&mut response, RequestOutcome::intent(Intent::Plan));
    response
}

/// What a turn's payment must answer: the plan's session offer and the
/// binding (`opaque`) of plan, model, runtime, pricing snapshot and caps.
pub struct PlanTerms {
    offer: SessionOffer,
    opaque: Value,
    resolution: Resolution,
}

#[async_trait]
impl Product for PlanEndpoint {
    type Terms = PlanTerms;

    async fn prepare<'a>(
        &'a self,
        parts: &Parts,
        body: &Bytes,
    ) -> Result<Step<'a, PlanTerms>, ApiError> {
        if parts.method == Method::HEAD {
            return Ok(Step::Answered(head(self)));
        }
        let plan_request =
            PlanRequest::parse(body, &self.config).map_err(|e| bad_request(e.param, &e.message))?;
        if plan_request.stream && !self.config.streaming {
            return Err(refuse(
                PlanError::StreamingUnavailable,
                "streaming is not available on this endpoint",
            ));
        }
        let resolution = request::resolve(&plan_request, &self.config, &self.table)
            .map_err(|e| bad_request(e.param, &e.message))?;
        if resolution.worst_case > self.config.voucher_bucket {
            return Err(refuse(
                PlanError::RequestExceedsVoucherBucket,
                "this request's worst case exceeds one voucher bucket; lower max_tokens or shorten the prompt",
            ));
        }
        let Some(upstream) = self.upstreams.get(&resolution.runtime) else {
            return Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "runtime-unavailable",
                "the plan's runtime is not configured",
            )
            .into());
        };
        let request = plan_request.upstream_body(&resolution.model, resolution.output_cap);
        let meter = Meter::new(
            QuotedCall {
                endpoint: tollgate_pricing::Endpoint::Chat,
                table: Arc::clone(&self.table),
                quote: Quote {
                    model: resolution.model.clone(),
                    amount: resolution.worst_case,
                    description: format!("{} on plan {}", resolution.model, plan_request.plan),
                    input_units: resolution.input_tokens,
                    output_units: resolution.output_cap,
                },
                request: request.clone(),
            },
            SCOPE,
        )
        .with_cost({
            let table = Arc::clone(&self.table);
            let resolution = resolution.clone();
            Arc::new(move |usage| resolution.actual_cost(&table, usage))
        });
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // The runtime is asked for the usage chunk of a stream (the turn is
        // charged from it); the translation to a Claude runtime is checked
        // here, before any challenge.
        let call = UpstreamCall::prepare(
            upstream,
            ClientApi::OpenAiChat,
            &self.translation.options(),
            Method::POST,
            "/v1/chat/completions",
            &headers,
            meter.upstream_body(Bytes::from(request.to_string())),
        )?;
        let opaque = self.opaque(&plan_request, &resolution);
        Ok(Step::Paid(Box::new(Prepared {
            call,
            meter: Some(meter),
            terms: PlanTerms {
                offer: self.offer(),
                opaque,
                resolution,
            },
        })))
    }

    async fn admit(
        &self,
        parts: &Parts,
        body: &Bytes,
        prepared: &Prepared<'_, PlanTerms>,
    ) -> Result<Admission, ApiError> {
        let PlanTerms {
            offer,
            opaque,
            resolution,
        } = &prepared.terms;
        let challenge = |e: PlanError, detail: &str| self.challenge(e, detail, offer, opaque, body);

        // The credential and its binding to this exact request.
        let credential = match parts.headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
            None => {
                return Err(challenge(
                    PlanError::PaymentRequired,
                    "this resource requires payment",
                ));
            }
            Some(Err(_)) => {
                return Err(challenge(
                    PlanError::MalformedCredential,
                    "Authorization header is not visible ASCII",
                ));
            }
            Some(Ok(value)) => {
                match parse_authorization(value, self.gateway.gate.max_credential_bytes()) {
                    None => {
                        return Err(challenge(
                            PlanError::PaymentRequired,
                            "this resource requires payment",
                        ));
                    }
                    Some(Err(_)) => {
                        return Err(challenge(
                            PlanError::MalformedCredential,
                            "the credential could not be decoded",
                        ));
                    }
                    Some(Ok(c)) => c,
                }
            }
        };
        let issuer = self.gateway.gate.issuer();
        if let Err(fault) = check_plan(
            issuer.keys(),
            &credential,
            issuer.realm(),
            body,
            opaque,
            offer,
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
            return Err(challenge(e, detail));
        }
        let action = Action::parse(&credential.payload).map_err(|_| {
            challenge(
                PlanError::MalformedCredential,
                "the session payload is not understood",
            )
        })?;
        if matches!(action, Action::Close(_)) && self.sessions.chain().operator().is_none() {
            return Err(refuse(
                PlanError::SessionCloseUnavailable,
                "this gateway cannot sign closes now; retry later or wait for settlement",
            ));
        }
        let allowed = |payer: Address| self.payer_allowed(payer);
        // No lists, no lookup: the payer check costs a ledger read per turn.
        let policy = &self.config;
        let allowed: Option<&(dyn Fn(Address) -> bool + Sync)> =
            (!policy.payer_allow.is_empty() || !policy.payer_deny.is_empty()).then_some(&allowed);
        let applied = self
            .sessions
            .apply_for(&action, self.config.voucher_bucket, allowed)
            .await
            .map_err(|problem| {
                let e = session_error(&action, &problem);
                tracing::info!(
                    code = e.code(),
                    problem = problem.kind.slug(),
                    "plan payment refused"
                );
                challenge(e, &problem.detail)
            })?;
        let challenge_id = credential.challenge.id.clone();
        if matches!(action, Action::Close(_)) {
            return Ok(Admission::Answered(receipts::only(&paid_headers(
                &self.sessions,
                &challenge_id,
                &applied.channel,
                None,
                applied.tx_hash.as_deref(),
                None,
            ))));
        }

        // The whole worst case is reserved: at most one bucket, so a
        // stream never pauses for a voucher.
        let channel = applied.channel;
        let reservation = match self
            .sessions
            .reserve(&channel.channel_id, resolution.worst_case)
            .await
        {
            Ok(r) => r,
            Err(problem) if problem.kind == ProblemKind::SessionInsufficientBalance => {
                let required = channel.spent + channel.reserved + resolution.worst_case;
                let bucket = self.config.voucher_bucket;
                let next = required.div_ceil(bucket) * bucket;
                return Err(self
                    .challenge_problem(
                        PlanError::VoucherBucketRefreshRequired,
                        "the accepted voucher bucket is exhausted: sign a higher cumulative voucher and retry the same body",
                        offer,
                        opaque,
                        body,
                    )
                    .extension("acceptedCumulative", json!(channel.accepted.to_string()))
                    .extension("requiredCumulative", json!(next.to_string()))
                    .into());
            }
            Err(problem) => {
                tracing::info!(problem = problem.kind.slug(), "plan reservation failed");
                return Err(refuse(
                    PlanError::ReservationFailed,
                    "the channel cannot take a reservation now",
                ));
            }
        };
        Ok(Admission::Held(Box::new(SessionHold {
            sessions: Arc::clone(&self.sessions),
            reservation,
            challenge_id,
            channel,
            quote: resolution.worst_case,
            growth: Growth::Upfront,
            replay: None,
            on_commit_failure: || {
                refuse(
                    PlanError::CommitFailed,
                    "the turn's cost could not be committed",
                )
            },
            checkpoint_every: self.gateway.stream_checkpoint_tokens,
            checkpointed_tokens: 0,
            voucher: action.voucher().cloned().map(Box::new),
        })))
    }
}

impl PlanEndpoint {
    /// A refusal with a fresh challenge bound to this turn.
    fn challenge(
        &self,
        e: PlanError,
        detail: &str,
        offer: &SessionOffer,
        opaque: &Value,
        body: &Bytes,
    ) -> ApiError {
        self.challenge_problem(e, detail, offer, opaque, body)
            .into()
    }

    fn challenge_problem(
        &self,
        e: PlanError,
        detail: &str,
        offer: &SessionOffer,
        opaque: &Value,
        body: &Bytes,
    ) -> Problem {
        let problem = plan_problem(e, detail);
        if !e.carries_challenge() {
            return problem;
        }
        match self.gateway.gate.issuer().issue_with_opaque(
            &Offer::TempoSession(offer.clone()),
            opaque,
            body,
        ) {
            Ok(issued) => problem.challenges(vec![issued]),
            Err(_) => problem,
        }
    }
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

fn bad_request(param: &str, message: &str) -> ApiError {
    Problem::invalid_request("invalid_request", message, Some(param))
        .typed("Invalid Request")
        .into()
}

/// The plan endpoint's RFC 9457 body with its stable `code`.
fn plan_problem(e: PlanError, detail: &str) -> Problem {
    let problem = Problem::new(e.status(), e.code(), detail)
        .typed(e.title())
        .without_openai_error();
    if e == PlanError::SessionCloseUnavailable {
        return problem.header(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    problem
}

/// A refusal without a challenge.
fn refuse(e: PlanError, detail: &str) -> ApiError {
    plan_problem(e, detail).into()
}
