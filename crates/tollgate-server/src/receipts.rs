//! Putting receipts on answers: the `Payment-Receipt` header (with, for a
//! v2 session, the draft's `Payment-Session` and `Payment-Session-Snapshot`),
//! an empty answer that only carries them, and the final event of a paid
//! stream.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::sse::SseEvent;

/// What a paid answer's headers say about its payment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaidHeaders {
    /// The `Payment-Receipt` value.
    pub receipt: String,
    /// A v2 session's channel, for `Payment-Session` and
    /// `Payment-Session-Snapshot`.
    pub session: Option<SessionState>,
}

/// A v2 channel as a paid answer leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    pub channel_id: String,
    /// The snapshot, unpadded base64url JSON.
    pub snapshot: String,
}

impl PaidHeaders {
    pub fn receipt(receipt: String) -> Self {
        Self {
            receipt,
            session: None,
        }
    }
}

/// `Payment-Receipt` (and `Cache-Control: private`) on a paid answer, and
/// a v2 session's `Payment-Session` and `Payment-Session-Snapshot`.
pub fn attach(headers: &mut HeaderMap, paid: &PaidHeaders) {
    if let Ok(value) = HeaderValue::from_str(&paid.receipt) {
        headers.insert("payment-receipt", value);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
    if let Some(session) = &paid.session
        && let (Ok(channel), Ok(snapshot)) = (
            HeaderValue::from_str(&session.channel_id),
            HeaderValue::from_str(&session.snapshot),
        )
    {
        headers.insert("payment-session", channel);
        headers.insert("payment-session-snapshot", snapshot);
    }
}

/// An empty answer carrying a receipt (session actions that buy nothing).
pub fn only(paid: &PaidHeaders) -> Response {
    let mut response = Response::new(Body::empty());
    attach(response.headers_mut(), paid);
    response
}

/// The last event of a paid stream: the committed state, as JSON.
pub fn stream_event(receipt_json: &str) -> SseEvent {
    SseEvent::new(Some("payment-receipt"), receipt_json)
}
