//! Serving a request paid by a session: reserve the worst case on the
//! channel, call the upstream, charge what the usage actually cost, release
//! the rest, and answer with a session receipt.

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tollgate_ledger::{ChannelRecord, IdempotencyBegin, StoredResponse};
use tollgate_payments::session::{Reservation, SessionGate};
use tollgate_payments::{Offer, PaymentProblem, ProblemKind, SessionAuthorized};
use tollgate_pricing::UsageDetail;

use crate::handler::{Gateway, Route, forward, refuse};
use crate::metering::{Metering, body_usage};
use crate::pricing::QuotedCall;
use crate::problem::{payment_problem, problem};
use crate::session_stream;

/// Non-streamed responses larger than this cannot be metered exactly and
/// are charged at the reservation.
const MAX_METERED_JSON_BYTES: usize = 32 * 1024 * 1024;

/// Largest response body kept for `Idempotency-Key` replays.
const MAX_REPLAY_BYTES: usize = 4 * 1024 * 1024;

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

/// A session action on a request that buys nothing (a body-less voucher,
/// top-up, open or close, or any `HEAD`): apply it, answer with a receipt.
/// An unpaid `HEAD` gets a session challenge.
pub async fn action_only(
    gateway: &Gateway,
    route: &Route,
    parts: &Parts,
    sessions: &SessionGate,
    floor: u128,
) -> Response {
    let offers = [Offer::TempoSession(sessions.offer(floor, None))];
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let authorized = match gateway
        .gate
        .authorize_session_action(authorization, &route.scope)
        .await
    {
        Ok(authorized) => authorized,
        Err(refusal) => {
            let mut response = refuse(gateway, route, &offers, &parts.headers, &[], &refusal);
            if parts.method == Method::HEAD {
                *response.body_mut() = Body::empty();
            }
            return response;
        }
    };
    tracing::info!(route = %route.scope, action = authorized.action, "session action applied");
    let applied = &authorized.applied;
    receipt_response(
        sessions,
        &authorized.challenge_id,
        &applied.channel,
        None,
        applied.tx_hash.as_deref(),
    )
}

/// An empty answer carrying a session receipt (actions that buy nothing).
pub(crate) fn receipt_response(
    sessions: &SessionGate,
    challenge_id: &str,
    channel: &ChannelRecord,
    units: Option<u64>,
    tx_hash: Option<&str>,
) -> Response {
    let mut response = Response::new(Body::empty());
    attach_receipt(
        response.headers_mut(),
        &sessions.receipt(challenge_id, channel, units, tx_hash),
    );
    response
}

/// `Payment-Receipt` (and `Cache-Control: private`) on a paid answer.
pub(crate) fn attach_receipt(headers: &mut HeaderMap, receipt: &str) {
    if let Ok(value) = HeaderValue::from_str(receipt) {
        headers.insert("payment-receipt", value);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

/// Everything a session-paid request needs.
pub struct SessionRequest<'a> {
    pub gateway: &'a Arc<Gateway>,
    pub route: &'a Route,
    pub parts: &'a Parts,
    pub path_and_query: &'a str,
    pub body: Bytes,
    pub offers: &'a [Offer],
    pub call: QuotedCall,
    pub authorized: SessionAuthorized,
    pub sessions: &'a Arc<SessionGate>,
}

pub async fn serve(request: SessionRequest<'_>) -> Response {
    let SessionRequest {
        gateway,
        route,
        parts,
        path_and_query,
        body,
        offers,
        call,
        authorized,
        sessions,
    } = request;
    let challenge_id = authorized.challenge_id.clone();
    let channel = authorized.applied.channel;
    let refuse_with =
        |problem: &PaymentProblem| refuse(gateway, route, offers, &parts.headers, &body, problem);
    if authorized.action == "close" {
        // A close buys nothing: the channel is settled and gone.
        return receipt_response(
            sessions,
            &challenge_id,
            &channel,
            None,
            authorized.applied.tx_hash.as_deref(),
        );
    }

    let replay_key = match idempotency(gateway, parts, &channel.channel_id, &body).await {
        Ok(Replay::Answer(response)) => return response,
        Ok(Replay::Record(key)) => key,
        Ok(Replay::None) => None,
        Err(response) => return response,
    };

    let quote = call.quote.amount;
    let streamed = call.request.get("stream").and_then(Value::as_bool) == Some(true);
    let metering = Metering::new(call, &route.scope, &challenge_id);
    // A stream may start on less than its worst case: it is metered as it
    // goes and pauses for a voucher when the balance runs out. The prompt
    // must be covered up front.
    let to_hold = if streamed {
        let floor = metering.cost(Some(UsageDetail {
            input_tokens: metering.call().quote.input_units,
            ..UsageDetail::default()
        }));
        quote.min(channel.available().max(floor))
    } else {
        quote
    };
    let reservation = match sessions.reserve(&channel.channel_id, to_hold).await {
        Ok(reservation) => reservation,
        Err(problem) => {
            abandon(gateway, replay_key.as_deref()).await;
            return refuse_with(&problem);
        }
    };

    let upstream_body = metering.upstream_body(body.clone());
    let response = forward(
        route,
        parts.method.clone(),
        path_and_query,
        &parts.headers,
        upstream_body,
    )
    .await;
    if !response.status().is_success() {
        // The upstream failed: nothing is charged.
        sessions.release(reservation).await;
        abandon(gateway, replay_key.as_deref()).await;
        tracing::info!(route = %route.scope, status = response.status().as_u16(), "upstream failed; session not charged");
        return response;
    }
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
    if is_sse {
        abandon(gateway, replay_key.as_deref()).await;
        return session_stream::meter(session_stream::Stream {
            response,
            metering,
            reservation,
            sessions: Arc::clone(sessions),
            ledger: Arc::clone(&gateway.ledger),
            challenge_id,
            channel,
            voucher_timeout: gateway.stream_voucher_timeout,
        });
    }
    let (mut head, upstream) = response.into_parts();
    let (bytes, usage) = match axum::body::to_bytes(upstream, MAX_METERED_JSON_BYTES).await {
        Ok(bytes) => {
            let usage = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| body_usage(metering.call().endpoint, &v));
            (bytes, usage)
        }
        Err(_) => {
            // Not deliverable either: charge nothing.
            sessions.release(reservation).await;
            abandon(gateway, replay_key.as_deref()).await;
            return problem(
                StatusCode::BAD_GATEWAY,
                "upstream-response-too-large",
                "the upstream response could not be read",
            );
        }
    };
    let cost = metering.cost(usage);
    let units = usage.map(|u| u.input_tokens + u.output_tokens);
    let channel = match commit(sessions, reservation, cost, units).await {
        Ok(channel) => channel,
        Err(response) => {
            abandon(gateway, replay_key.as_deref()).await;
            return response;
        }
    };
    metering.record_cost(usage, cost, Arc::clone(&gateway.ledger));
    let receipt = sessions.receipt(&challenge_id, &channel, units, None);
    attach_receipt(&mut head.headers, &receipt);
    if let Some(key) = replay_key {
        remember(gateway, &key, &head, &bytes).await;
    }
    Response::from_parts(head, Body::from(bytes))
}

/// Charges the request durably before its response goes out.
async fn commit(
    sessions: &SessionGate,
    reservation: Reservation,
    cost: u128,
    units: Option<u64>,
) -> Result<ChannelRecord, Response> {
    sessions
        .commit(reservation, cost, units.unwrap_or(0))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not commit a session charge");
            payment_problem(
                &PaymentProblem::new(ProblemKind::Internal, "payment state could not be stored"),
                &[],
            )
        })
}

enum Replay {
    /// No `Idempotency-Key`.
    None,
    /// First time for this key: record the answer under it.
    Record(Option<String>),
    /// Seen before: this is the answer.
    Answer(Response),
}

/// Looks up `Idempotency-Key` for this channel. The key is stored only as a
/// hash; the request's method, path and body must match the first use.
async fn idempotency(
    gateway: &Gateway,
    parts: &Parts,
    channel_id: &str,
    body: &[u8],
) -> Result<Replay, Response> {
    let Some(key) = parts.headers.get("idempotency-key") else {
        return Ok(Replay::None);
    };
    let Ok(key) = key.to_str() else {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            "Idempotency-Key must be visible ASCII",
        ));
    };
    if key.is_empty() || key.len() > 255 {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    let key_hash = hex(Sha256::new()
        .chain_update(channel_id.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize());
    let fingerprint = hex(Sha256::new()
        .chain_update(parts.method.as_str().as_bytes())
        .chain_update([0])
        .chain_update(parts.uri.path().as_bytes())
        .chain_update([0])
        .chain_update(body)
        .finalize());
    match gateway
        .ledger
        .idempotency_begin(&key_hash, &fingerprint)
        .await
    {
        Ok(IdempotencyBegin::Started) => Ok(Replay::Record(Some(key_hash))),
        Ok(IdempotencyBegin::Done(stored)) => Ok(Replay::Answer(replayed(stored))),
        Ok(IdempotencyBegin::InProgress) => Err(problem(
            StatusCode::CONFLICT,
            "idempotent-request-in-progress",
            "a request with this Idempotency-Key is still being served",
        )),
        Ok(IdempotencyBegin::Mismatch) => Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request",
        )),
        Err(e) => {
            tracing::error!(error = %e, "idempotency lookup failed");
            Err(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "request state could not be read",
            ))
        }
    }
}

fn replayed(stored: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

async fn remember(
    gateway: &Gateway,
    key_hash: &str,
    head: &axum::http::response::Parts,
    body: &Bytes,
) {
    if body.len() > MAX_REPLAY_BYTES {
        abandon(gateway, Some(key_hash)).await;
        return;
    }
    let kept = [
        header::CONTENT_TYPE.as_str(),
        "payment-receipt",
        "cache-control",
    ];
    let headers = head
        .headers
        .iter()
        .filter(|(name, _)| kept.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let stored = StoredResponse {
        status: head.status.as_u16(),
        headers,
        body: body.to_vec(),
    };
    if let Err(e) = gateway.ledger.idempotency_finish(key_hash, &stored).await {
        tracing::error!(error = %e, "could not store an idempotent response");
    }
}

async fn abandon(gateway: &Gateway, key_hash: Option<&str>) {
    if let Some(key) = key_hash
        && let Err(e) = gateway.ledger.idempotency_abandon(key).await
    {
        tracing::error!(error = %e, "could not release an idempotency key");
    }
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
