//! Payment policies: what differs between `charge`, `session` and the plan
//! endpoint, plugged into the one pipeline (`crate::pipeline`).
//!
//! A policy admits a priced request — a 402 with fresh challenges without a
//! credential; with one, verification and a [`Hold`] on the payer's money —
//! and the hold then follows the answer: made final for a whole answer,
//! grown (or paused for a voucher) as a stream delivers, committed for what
//! was delivered. Every hold releases itself when dropped, so an upstream
//! failure, a client that goes away or an early return costs the payer
//! nothing.

pub mod charge;
pub mod session;

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use tollgate_payments::session::SessionOffer;
use tollgate_payments::{Offer, PaymentProblem, ProblemKind};

use crate::idempotency::InFlightKey;
use crate::metering::Metered;
use crate::observe::Intent;
use crate::problem::{ApiError, Problem};
use crate::sse::SseEvent;
use crate::state::Gateway;

/// Where a stream's events go (its client).
pub type EventSink = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// What admission decided.
pub enum Admission {
    /// Answered without the upstream: a session close, an idempotent replay.
    Answered(Response),
    /// Paid for: call the upstream under this hold.
    Held(Box<dyn Hold>),
}

/// A whole answer's payment made final.
pub struct Committed {
    /// The receipt (and a v2 session's snapshot) its headers carry.
    pub paid: crate::receipts::PaidHeaders,
    /// The request's `Idempotency-Key`, to store the answer under.
    pub replay: Option<InFlightKey>,
}

/// The payer's money, held while the request is served.
#[async_trait]
pub trait Hold: Send + 'static {
    /// The challenge the credential answered.
    fn challenge_id(&self) -> &str;

    /// How this request is paid (for the metrics).
    fn intent(&self) -> Intent;

    /// A whole answer is ready: charge `metered` durably, before the answer
    /// goes out.
    async fn commit(self: Box<Self>, metered: &Metered) -> Result<Committed, ApiError>;

    /// A stream's first event arrived: the receipt its headers carry.
    async fn start_stream(&mut self) -> Result<Option<crate::receipts::PaidHeaders>, ApiError>;

    /// Before a stream delivers more: make the hold cover `total`. `false`
    /// ends the stream (no voucher came).
    async fn cover(&mut self, total: u128, sink: &EventSink) -> bool;

    /// A stream delivered `output_tokens` so far, costing `cost`: a
    /// session charges it durably now and then (a checkpoint), so a crash
    /// loses at most one interval.
    async fn delivered(&mut self, _output_tokens: u64, _cost: u128) {}

    /// The stream ended: charge `metered` (what was delivered); the final
    /// receipt event, if this policy sends one.
    async fn end_stream(self: Box<Self>, metered: &Metered) -> Option<SseEvent>;
}

/// Issues the fresh challenges a refusal carries.
pub struct Challenger {
    pub gateway: Arc<Gateway>,
    pub scope: String,
    pub offers: Vec<Offer>,
    pub body: Bytes,
    pub accept_payment: Option<String>,
}

impl Challenger {
    pub fn new(
        gateway: &Arc<Gateway>,
        scope: &str,
        offers: Vec<Offer>,
        body: &Bytes,
        headers: &HeaderMap,
    ) -> Self {
        Self {
            gateway: Arc::clone(gateway),
            scope: scope.to_owned(),
            offers,
            body: body.clone(),
            accept_payment: headers
                .get("accept-payment")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    /// A failed or missing payment, with fresh challenges when it is a 402.
    pub fn refuse(&self, refusal: &PaymentProblem) -> ApiError {
        self.refuse_with_snapshot(refusal, None)
    }

    /// [`refuse`](Self::refuse), the fresh v2 session challenges carrying
    /// `snapshot` (the payer's channel, `methodDetails.sessionSnapshot`).
    pub fn refuse_with_snapshot(
        &self,
        refusal: &PaymentProblem,
        snapshot: Option<serde_json::Value>,
    ) -> ApiError {
        if refusal.kind != ProblemKind::PaymentRequired {
            tracing::info!(route = %self.scope, problem = refusal.kind.slug(), detail = %refusal.detail, "payment refused");
        }
        if !refusal.kind.carries_challenge() {
            return Problem::payment(refusal, Vec::new()).into();
        }
        let with_snapshot;
        let offers = match snapshot {
            None => &self.offers,
            Some(snapshot) => {
                with_snapshot = self
                    .offers
                    .iter()
                    .cloned()
                    .map(|offer| match offer {
                        Offer::TempoSession(session) => Offer::TempoSession(SessionOffer {
                            snapshot: Some(snapshot.clone()),
                            ..session
                        }),
                        other => other,
                    })
                    .collect::<Vec<_>>();
                &with_snapshot
            }
        };
        match self.gateway.gate.challenges(
            offers,
            &self.scope,
            &self.body,
            self.accept_payment.as_deref(),
        ) {
            Ok(challenges) => Problem::payment(refusal, challenges).into(),
            Err(internal) => Problem::payment(&internal, Vec::new()).into(),
        }
    }
}

/// The `Authorization` value, when it is visible ASCII.
pub fn authorization(headers: &HeaderMap) -> Result<Option<&str>, PaymentProblem> {
    match headers.get(axum::http::header::AUTHORIZATION) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| {
            PaymentProblem::new(
                ProblemKind::MalformedCredential,
                "Authorization header is not visible ASCII",
            )
        }),
    }
}

/// The store cannot be reached while making a payment final: 503
/// `store-unavailable`, nothing is served or charged.
pub fn store_unavailable(error: &tollgate_ledger::LedgerError) -> ApiError {
    Problem::payment(&tollgate_payments::store_problem(error), Vec::new()).into()
}

/// Our own store failed while making a payment final: nothing is served.
pub fn store_failure() -> ApiError {
    Problem::payment(
        &PaymentProblem::new(ProblemKind::Internal, "payment state could not be stored"),
        Vec::new(),
    )
    .into()
}
