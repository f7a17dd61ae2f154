//! The `session` policy: requests paid from an escrow channel by
//! cumulative vouchers. Admission applies the credential's action (open,
//! top-up, voucher, close) and reserves the request's worst case on the
//! channel; the answer commits what it actually cost and releases the rest.
//! A stream may start on less than its worst case: it grows its
//! reservation as it delivers and pauses for a voucher
//! (`payment-need-voucher`) when the channel's authorized balance runs out.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;
use tollgate_ledger::{ChannelRecord, ChannelStatus};
use tollgate_payments::session::{Reservation, SessionGate, SignedVoucher};
use tollgate_payments::{Offer, SessionAuthorized};

use super::{Admission, Challenger, Committed, EventSink, Hold};
use crate::idempotency::{self, InFlightKey, Replay};
use crate::metering::{Meter, Metered};
use crate::observe::Intent;
use crate::problem::ApiError;
use crate::receipts::{self, PaidHeaders};
use crate::sse::SseEvent;
use crate::state::{Gateway, Route};

/// Whether the request carries a `Payment` credential.
pub fn has_payment_credential(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("payment "))
        })
}

/// Whether this request only carries a session action and buys nothing: a
/// `HEAD`, or a body-less request with a credential.
pub fn is_action_only(parts: &Parts, body: &[u8]) -> bool {
    parts.method == Method::HEAD || (body.is_empty() && has_payment_credential(&parts.headers))
}

/// A session action on a request that buys nothing (a body-less voucher,
/// top-up, open or close, or any `HEAD`): apply it, answer with a receipt.
/// An unpaid `HEAD` gets a session challenge (without a body).
pub async fn action_only(
    gateway: &Arc<Gateway>,
    route: &Route,
    parts: &Parts,
    sessions: &SessionGate,
) -> Result<Response, ApiError> {
    let offers: Vec<Offer> = sessions
        .offers(gateway.session_floor, None)
        .into_iter()
        .map(Offer::TempoSession)
        .collect();
    let challenger = Challenger::new(gateway, &route.scope, offers, &Bytes::new(), &parts.headers);
    let authorized = async {
        let authorization = super::authorization(&parts.headers)?;
        gateway
            .gate
            .authorize_session_action(authorization, &route.scope)
            .await
    }
    .await;
    let authorized = match authorized {
        Ok(authorized) => authorized,
        Err(refusal) => {
            let mut response =
                axum::response::IntoResponse::into_response(challenger.refuse(&refusal));
            if parts.method == Method::HEAD {
                *response.body_mut() = Body::empty();
            }
            return Ok(response);
        }
    };
    tracing::info!(route = %route.scope, action = authorized.action, "session action applied");
    let applied = &authorized.applied;
    Ok(receipts::only(&paid_headers(
        sessions,
        &authorized.challenge_id,
        &applied.channel,
        None,
        applied.tx_hash.as_deref(),
        authorized.voucher.as_deref(),
    )))
}

/// The receipt for a channel's state and, for a v2 channel that stays
/// open, the draft's `Payment-Session` (its id) and
/// `Payment-Session-Snapshot` (its state, with the highest voucher when
/// `voucher` — the one this request's credential carried — is it).
pub fn paid_headers(
    sessions: &SessionGate,
    challenge_id: &str,
    channel: &ChannelRecord,
    units: Option<u64>,
    tx_hash: Option<&str>,
    voucher: Option<&SignedVoucher>,
) -> PaidHeaders {
    let receipt = sessions.receipt(challenge_id, channel, units, tx_hash);
    let session = (channel.status != ChannelStatus::Finalized)
        .then(|| sessions.snapshot_header_with(channel, 0, voucher))
        .flatten()
        .map(|snapshot| receipts::SessionState {
            channel_id: channel.channel_id.clone(),
            snapshot,
        });
    PaidHeaders { receipt, session }
}

/// How a session hold grows.
#[derive(Debug, Clone, Copy)]
pub enum Growth {
    /// Reserve what is available, grow as the stream delivers, pause for a
    /// voucher when the balance runs out (paid routes).
    OnDemand { voucher_timeout: Duration },
    /// The whole worst case is reserved up front (the plan endpoint: at
    /// most one bucket, so a stream never pauses).
    Upfront,
}

/// What a failed commit answers.
pub type CommitFailure = fn() -> ApiError;

/// Money reserved on a channel for one request.
pub struct SessionHold {
    pub sessions: Arc<SessionGate>,
    pub reservation: Reservation,
    pub challenge_id: String,
    /// The channel as it stood at admission (the opening receipt of a stream).
    pub channel: ChannelRecord,
    /// The request's worst case.
    pub quote: u128,
    pub growth: Growth,
    pub replay: Option<InFlightKey>,
    pub on_commit_failure: CommitFailure,
    /// Checkpoints a stream every this many output tokens.
    pub checkpoint_every: u64,
    /// Output tokens covered by the last checkpoint.
    pub checkpointed_tokens: u64,
    /// The voucher the credential carried (for the session snapshot).
    pub voucher: Option<Box<SignedVoucher>>,
}

/// Admits a session-paid request on a route: a close buys nothing; a
/// replayed `Idempotency-Key` gets its stored answer; otherwise the worst
/// case (a stream: what is available, at least the prompt) is reserved.
pub async fn admit(
    gateway: &Arc<Gateway>,
    parts: &Parts,
    body: &Bytes,
    authorized: SessionAuthorized,
    meter: &Meter,
    challenger: Challenger,
) -> Result<Admission, ApiError> {
    let Some(sessions) = gateway.gate.sessions() else {
        return Err(challenger.refuse(&tollgate_payments::PaymentProblem::new(
            tollgate_payments::ProblemKind::MethodUnsupported,
            "no session here",
        )));
    };
    let SessionAuthorized {
        challenge_id,
        action,
        applied,
        voucher,
    } = authorized;
    let channel = applied.channel.clone();
    if action == "close" {
        // A close buys nothing: the channel is settled and gone.
        return Ok(Admission::Answered(receipts::only(&paid_headers(
            sessions,
            &challenge_id,
            &channel,
            None,
            applied.tx_hash.as_deref(),
            None,
        ))));
    }
    let replay = match idempotency::begin(&gateway.ledger, parts, &channel.channel_id, body).await?
    {
        Replay::Answer(response) => return Ok(Admission::Answered(response)),
        Replay::Record(key) => Some(key),
        Replay::None => None,
    };
    let quote = meter.quote();
    let channel = if meter.call().is_streamed() && applied.seen {
        // What a stream may start on depends on the channel's balance now
        // (a re-sent voucher is applied on what the gate last saw).
        sessions
            .current(&channel.channel_id)
            .await
            .map_err(|problem| challenger.refuse(&problem))?
    } else {
        channel
    };
    let to_hold = if meter.call().is_streamed() {
        // The prompt must be covered up front; the rest may come as it goes.
        let floor = meter.cost(meter.counted(0));
        quote.min(channel.available().max(floor))
    } else {
        quote
    };
    let reservation = match sessions.reserve(&channel.channel_id, to_hold).await {
        Ok(reservation) => reservation,
        Err(problem) => {
            // The payer proved the channel is theirs: the fresh challenge
            // says what it holds and what this request needs authorized,
            // so a client can raise its voucher at once.
            let snapshot = sessions
                .snapshot_for_request(&channel.channel_id, to_hold)
                .await;
            return Err(challenger.refuse_with_snapshot(&problem, snapshot));
        }
    };
    Ok(Admission::Held(Box::new(SessionHold {
        sessions: Arc::clone(sessions),
        reservation,
        challenge_id,
        channel,
        quote,
        growth: Growth::OnDemand {
            voucher_timeout: gateway.stream_voucher_timeout,
        },
        replay,
        on_commit_failure: super::store_failure,
        checkpoint_every: gateway.stream_checkpoint_tokens,
        checkpointed_tokens: 0,
        voucher,
    })))
}

/// A hold made final.
struct Charged {
    channel: ChannelRecord,
    challenge_id: String,
    replay: Option<InFlightKey>,
    voucher: Option<Box<SignedVoucher>>,
}

impl SessionHold {
    async fn charge(self, metered: &Metered) -> Result<Charged, ApiError> {
        let Self {
            sessions,
            reservation,
            challenge_id,
            replay,
            on_commit_failure,
            voucher,
            ..
        } = self;
        let cost = metered.cost.min(reservation.held);
        match sessions.commit(reservation, cost, metered.units()).await {
            Ok(channel) => Ok(Charged {
                channel,
                challenge_id,
                replay,
                voucher,
            }),
            // The store is away: nothing was charged, retry later (503).
            Err(e) if e.is_unavailable() => Err(super::store_unavailable(&e)),
            Err(e) => {
                tracing::error!(error = %e, "could not commit a session charge");
                Err(on_commit_failure())
            }
        }
    }
}

#[async_trait]
impl Hold for SessionHold {
    fn challenge_id(&self) -> &str {
        &self.challenge_id
    }

    fn intent(&self) -> Intent {
        // Reserving the whole worst case up front is the plan endpoint's way.
        match self.growth {
            Growth::Upfront => Intent::Plan,
            Growth::OnDemand { .. } => Intent::Session,
        }
    }

    async fn commit(self: Box<Self>, metered: &Metered) -> Result<Committed, ApiError> {
        let sessions = Arc::clone(&self.sessions);
        let charged = self.charge(metered).await?;
        Ok(Committed {
            paid: paid_headers(
                &sessions,
                &charged.challenge_id,
                &charged.channel,
                Some(metered.units()),
                None,
                charged.voucher.as_deref(),
            ),
            replay: charged.replay,
        })
    }

    async fn start_stream(&mut self) -> Result<Option<PaidHeaders>, ApiError> {
        // A stream is not replayed: its key is given back now.
        self.replay = None;
        if matches!(self.growth, Growth::Upfront) {
            // The plan endpoint's receipt comes once the turn is committed:
            // as the stream's last event.
            return Ok(None);
        }
        Ok(Some(paid_headers(
            &self.sessions,
            &self.challenge_id,
            &self.channel,
            None,
            None,
            self.voucher.as_deref(),
        )))
    }

    async fn cover(&mut self, total: u128, sink: &EventSink) -> bool {
        match self.growth {
            Growth::Upfront => total <= self.reservation.held,
            Growth::OnDemand { voucher_timeout } => {
                cover(
                    &self.sessions,
                    &mut self.reservation,
                    total,
                    self.quote,
                    sink,
                    voucher_timeout,
                )
                .await
            }
        }
    }

    async fn delivered(&mut self, output_tokens: u64, cost: u128) {
        if output_tokens < self.checkpointed_tokens + self.checkpoint_every {
            return;
        }
        let charged = cost.min(self.reservation.held);
        match self.sessions.checkpoint(&self.reservation, charged).await {
            Ok(()) => self.checkpointed_tokens = output_tokens,
            Err(e) => tracing::warn!(error = %e, "could not checkpoint a stream's delivered usage"),
        }
    }

    async fn end_stream(self: Box<Self>, metered: &Metered) -> Option<SseEvent> {
        let sessions = Arc::clone(&self.sessions);
        match self.charge(metered).await {
            Ok(charged) => Some(receipts::stream_event(&sessions.receipt_json(
                &charged.challenge_id,
                &charged.channel,
                Some(metered.units()),
                None,
            ))),
            Err(_) => None,
        }
    }
}

/// Makes the reservation cover `needed`, growing it (to the whole worst
/// case when the balance allows, to save round trips) or pausing for a
/// voucher. `false` when no voucher came in time or the client left.
async fn cover(
    sessions: &SessionGate,
    reservation: &mut Reservation,
    needed: u128,
    quote: u128,
    sink: &EventSink,
    timeout: Duration,
) -> bool {
    while needed > reservation.held {
        // Listen before checking, so a voucher landing in between is not missed.
        let bell = sessions.voucher_bell(&reservation.channel_id);
        let rung = bell.notified();
        tokio::pin!(rung);
        rung.as_mut().enable();

        let rest = quote.max(needed) - reservation.held;
        let channel = match sessions.grow(reservation, rest).await {
            Ok(None) => return true,
            Ok(Some(channel)) => channel,
            Err(problem) => {
                tracing::info!(
                    problem = problem.kind.slug(),
                    "stream stopped: channel unavailable"
                );
                return false;
            }
        };
        let shortfall = needed - reservation.held;
        if shortfall <= channel.available() {
            if matches!(sessions.grow(reservation, shortfall).await, Ok(None)) {
                return true;
            }
            continue;
        }
        let floor = channel.accepted + shortfall - channel.available();
        let hoped = channel.accepted + rest - channel.available();
        let required = hoped.min(channel.deposit).max(floor);
        let event = json!({
            "channelId": channel.channel_id,
            "requiredCumulative": required.to_string(),
            "acceptedCumulative": channel.accepted.to_string(),
            "deposit": channel.deposit.to_string(),
        });
        let notice = SseEvent::new(Some("payment-need-voucher"), &event.to_string());
        if sink.send(Ok(notice.wire)).await.is_err() {
            return false;
        }
        tracing::info!("stream paused for a voucher");
        tokio::select! {
            _ = &mut rung => {}
            _ = tokio::time::sleep(timeout) => {
                tracing::info!("no voucher in time; ending the stream");
                return false;
            }
            _ = sink.closed() => {
                tracing::info!("client left while the stream waited for a voucher");
                return false;
            }
        }
    }
    true
}
