//! Putting receipts on answers: the `Payment-Receipt` header, an empty
//! answer that only carries one, and the final event of a paid stream.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::sse::SseEvent;

/// `Payment-Receipt` (and `Cache-Control: private`) on a paid answer.
pub fn attach(headers: &mut HeaderMap, receipt: &str) {
    if let Ok(value) = HeaderValue::from_str(receipt) {
        headers.insert("payment-receipt", value);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

/// An empty answer carrying a receipt (session actions that buy nothing).
pub fn only(receipt: &str) -> Response {
    let mut response = Response::new(Body::empty());
    attach(response.headers_mut(), receipt);
    response
}

/// The last event of a paid stream: the committed state, as JSON.
pub fn stream_event(receipt_json: &str) -> SseEvent {
    SseEvent::new(Some("payment-receipt"), receipt_json)
}
