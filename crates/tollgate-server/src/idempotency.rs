//! `Idempotency-Key` on session-paid requests: the first request with a key
//! is served and its answer stored; a retry gets the stored answer without
//! being charged again. The key is stored only as a hash, bound to the
//! channel and to the request's method, path and body.
//!
//! An in-flight key is a value ([`InFlightKey`]) that is given back when
//! dropped unless its answer was stored, so a client that goes away, a
//! failed upstream or an early return never leaves a key stuck.

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tollgate_ledger::{IdempotencyBegin, Ledger, StoredResponse};

use crate::problem::{ApiError, Problem};

/// Largest response body kept for replays.
const MAX_REPLAY_BYTES: usize = 4 * 1024 * 1024;

/// What a request with (or without) a key should do.
pub enum Replay {
    /// No key: serve normally.
    None,
    /// First use: serve, then [`InFlightKey::finish`].
    Record(InFlightKey),
    /// Seen before: this is the answer.
    Answer(Response),
}

/// A key being served; released when dropped unless finished.
pub struct InFlightKey {
    key_hash: String,
    ledger: Option<Arc<dyn Ledger>>,
}

impl InFlightKey {
    /// Stores the answer for retries (or releases the key when it is too
    /// large to keep).
    pub async fn finish(mut self, head: &axum::http::response::Parts, body: &Bytes) {
        let Some(ledger) = self.ledger.take() else {
            return;
        };
        if body.len() > MAX_REPLAY_BYTES {
            release(ledger, self.key_hash.clone()).await;
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
        if let Err(e) = ledger.idempotency_finish(&self.key_hash, &stored).await {
            tracing::error!(error = %e, "could not store an idempotent response");
        }
    }
}

impl Drop for InFlightKey {
    fn drop(&mut self) {
        let Some(ledger) = self.ledger.take() else {
            return;
        };
        let key_hash = std::mem::take(&mut self.key_hash);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(release(ledger, key_hash));
        }
    }
}

async fn release(ledger: Arc<dyn Ledger>, key_hash: String) {
    if let Err(e) = ledger.idempotency_abandon(&key_hash).await {
        tracing::error!(error = %e, "could not release an idempotency key");
    }
}

/// Looks up the request's `Idempotency-Key` for this channel.
pub async fn begin(
    ledger: &Arc<dyn Ledger>,
    parts: &Parts,
    channel_id: &str,
    body: &[u8],
) -> Result<Replay, ApiError> {
    let Some(key) = parts.headers.get("idempotency-key") else {
        return Ok(Replay::None);
    };
    let invalid = |detail: &str| {
        ApiError::from(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-idempotency-key",
            detail,
        ))
    };
    let Ok(key) = key.to_str() else {
        return Err(invalid("Idempotency-Key must be visible ASCII"));
    };
    if key.is_empty() || key.len() > 255 {
        return Err(invalid("Idempotency-Key must be 1 to 255 characters"));
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
    match ledger.idempotency_begin(&key_hash, &fingerprint).await {
        Ok(IdempotencyBegin::Started) => Ok(Replay::Record(InFlightKey {
            key_hash,
            ledger: Some(Arc::clone(ledger)),
        })),
        Ok(IdempotencyBegin::Done(stored)) => Ok(Replay::Answer(replayed(stored))),
        Ok(IdempotencyBegin::InProgress) => Err(Problem::new(
            StatusCode::CONFLICT,
            "idempotent-request-in-progress",
            "a request with this Idempotency-Key is still being served",
        )
        .into()),
        Ok(IdempotencyBegin::Mismatch) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request",
        )
        .into()),
        Err(e) => {
            tracing::error!(error = %e, "idempotency lookup failed");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "request state could not be read",
            )
            .into())
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

fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
