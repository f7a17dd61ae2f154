//! A local HTTP proxy that pays on behalf of any client.
//!
//! Every request received on the listener is forwarded to the target (its
//! base URL + the same path and query) with its method, headers and body,
//! through [`Client::send`]: a `402 Payment Required` is paid under the
//! client's [`Policy`](crate::Policy) (spend caps and allow lists, checked
//! before anything is signed) and the request retried once. The response
//! (status, headers including `Payment-Receipt`, body) goes back to the
//! caller, streamed chunk by chunk as it arrives, so server-sent events
//! flow live.
//!
//! What is changed on the way:
//!
//! - Request: hop-by-hop headers, `Host`, `Content-Length`, the caller's
//!   `Authorization` and `x-api-key` (SDKs insist on sending an API key; the
//!   target is paid instead, and the payment credential takes the
//!   `Authorization` field) and `Accept-Encoding` (so event streams arrive
//!   uncompressed and can be filtered) are dropped.
//! - Response: hop-by-hop headers are dropped. In `text/event-stream`
//!   bodies the payment protocol's own events, `event: payment-need-voucher`
//!   (answered here, in the background, by the session client) and
//!   `event: payment-receipt` (the stream's final receipt), are removed:
//!   SDKs do not know them and would choke on them. The response's
//!   `Payment-Receipt` header stays; the stream's final receipt is logged at
//!   debug level (`tollgate_client::proxy`) and reported to the client's
//!   [`Observer`](crate::Observer).
//! - Nothing can be paid: a challenge refused by the policy, a malformed or
//!   unsupported challenge, a payment the target refused — the caller gets
//!   a JSON error from the proxy instead, shaped like the OpenAI and
//!   Anthropic APIs' errors, e.g. `402 {"type":"error","error":{"type":
//!   "payment_refused","code":"spend_policy","message":"…"}}`. Nothing is
//!   ever paid twice for one request.
//!
//! Requests are forwarded concurrently. With sessions, concurrent first
//! requests may each open a channel; send one request first to open it.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tollgate_client::{Client, Config, proxy};
//! let key = std::env::var("TOLLGATE_PRIVATE_KEY").unwrap();
//! let mut config = Config::new(key.parse().unwrap());
//! config.rpc_url = Some("http://127.0.0.1:8545".into());
//! config.policy.max_amount = Some(50_000);
//! let client = Client::new(config).unwrap();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8403").await?;
//! let target = "http://127.0.0.1:8080".parse().unwrap();
//! proxy::serve(listener, target, client).await
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;

use axum::body::Body as AxumBody;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use bytes::Bytes;
use reqwest::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST,
    HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use crate::error::Error;
use crate::http::{Body, Client, PaidResponse, Payment, Request};

/// The largest request body the proxy accepts (it is kept to be resent
/// after paying).
pub const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// The event types removed from `text/event-stream` bodies.
pub const STRIPPED_EVENTS: [&str; 2] = ["payment-need-voucher", "payment-receipt"];

/// An event larger than this without its end is passed on as it is.
const MAX_PENDING_EVENT: usize = 1024 * 1024;

struct Shared {
    target: Url,
    client: Client,
}

/// The proxy as a router, to serve or embed: every method and path is
/// forwarded to `target`.
pub fn router(target: Url, client: Client) -> axum::Router {
    axum::Router::new()
        .fallback(forward)
        .with_state(Arc::new(Shared { target, client }))
}

/// Serves the proxy on `listener` until the process ends (or the future is
/// dropped).
pub fn serve(
    listener: tokio::net::TcpListener,
    target: Url,
    client: Client,
) -> impl Future<Output = std::io::Result<()>> + Send {
    serve_with_shutdown(listener, target, client, std::future::pending())
}

/// Serves the proxy on `listener` until `shutdown` completes, then lets
/// the requests under way finish.
pub fn serve_with_shutdown(
    listener: tokio::net::TcpListener,
    target: Url,
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = std::io::Result<()>> + Send {
    let app = router(target, client);
    async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                &format!(
                    "the request body could not be read (at most {MAX_REQUEST_BODY} bytes): {e}"
                ),
                None,
            );
        }
    };
    let url = target_url(&shared.target, &parts.uri);
    let mut request = Request::new(parts.method.clone(), url);
    request.headers = request_headers(&parts.headers);
    if !body.is_empty() || parts.headers.contains_key(CONTENT_LENGTH) {
        request.body = Some(body);
    }
    tracing::debug!(method = %request.method, url = %request.url, "forwarding");
    match shared.client.send(request).await {
        Ok(paid) => relay(paid),
        Err(e) => refusal(e),
    }
}

/// `target` + the request's path and query (a path in `target` is a prefix).
fn target_url(target: &Url, uri: &Uri) -> Url {
    let mut url = target.clone();
    let base = target.path().trim_end_matches('/');
    url.set_path(&format!("{base}{}", uri.path()));
    url.set_query(uri.query());
    url
}

/// Headers that describe one connection, not the message.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == PROXY_AUTHENTICATE
        || name == PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// The names a `Connection` header lists (also hop-by-hop).
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

fn request_headers(incoming: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(incoming);
    let mut out = HeaderMap::new();
    for (name, value) in incoming {
        let dropped = is_hop_by_hop(name)
            || listed.iter().any(|l| l == name.as_str())
            || name == HOST
            || name == CONTENT_LENGTH
            || name == AUTHORIZATION
            || name.as_str() == "x-api-key"
            || name == ACCEPT_ENCODING;
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"))
}

/// The target's response, its body streamed through (event streams
/// filtered).
fn relay(paid: PaidResponse) -> Response {
    if let Some(payment) = &paid.paid {
        tracing::debug!(payment = ?payment, "paid");
    }
    if let Some(receipt) = &paid.receipt {
        tracing::debug!(%receipt, "payment receipt");
    }
    let filtered = is_event_stream(&paid.headers);
    let listed = connection_listed(&paid.headers);
    let mut response = Response::new(AxumBody::from_stream(body_stream(paid.body, filtered)));
    *response.status_mut() = paid.status;
    let headers = response.headers_mut();
    for (name, value) in &paid.headers {
        let dropped = is_hop_by_hop(name)
            || listed.iter().any(|l| l == name.as_str())
            // A filtered body has another length.
            || (filtered && name == CONTENT_LENGTH);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    response
}

/// The body's chunks as they come, the payment events taken out of event
/// streams; the final receipt logged at the end.
fn body_stream(
    body: Body,
    filtered: bool,
) -> impl futures::Stream<Item = crate::Result<Bytes>> + Send {
    let filter = filtered.then(EventFilter::default);
    futures::stream::unfold(
        (body, filter, false),
        |(mut body, mut filter, done)| async move {
            if done {
                return None;
            }
            loop {
                match body.chunk().await {
                    Ok(Some(chunk)) => {
                        let out = match filter.as_mut() {
                            Some(f) => f.feed(&chunk),
                            None => chunk,
                        };
                        if out.is_empty() {
                            continue; // all of it held back or stripped
                        }
                        return Some((Ok(out), (body, filter, false)));
                    }
                    Ok(None) => {
                        if let Some(receipt) = body.final_receipt() {
                            tracing::debug!(%receipt, "stream payment receipt");
                        }
                        let rest = filter.as_mut().map(EventFilter::finish).unwrap_or_default();
                        if rest.is_empty() {
                            return None;
                        }
                        return Some((Ok(rest), (body, filter, true)));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the target's body broke off");
                        return Some((Err(e), (body, filter, true)));
                    }
                }
            }
        },
    )
}

/// Removes [`STRIPPED_EVENTS`] from a `text/event-stream`, passing every
/// other event on as soon as it is complete, byte for byte.
#[derive(Default)]
pub struct EventFilter {
    pending: Vec<u8>,
}

impl EventFilter {
    /// Takes the next chunk; returns what can be passed on now.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut start = 0;
        while let Some(len) = event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + len];
            if !is_stripped(event) {
                out.extend_from_slice(event);
            }
            start += len;
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_PENDING_EVENT && !is_stripped(&self.pending) {
            // Not one of ours (those are small): do not hold it back.
            out.append(&mut self.pending);
        }
        out.into()
    }

    /// At the end of the stream: what is left (an unfinished event).
    pub fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.pending);
        if is_stripped(&rest) {
            Bytes::new()
        } else {
            rest.into()
        }
    }
}

/// The length of the first complete event in `buffer`, its closing blank
/// line included. Lines end with `\r\n`, `\n` or `\r`.
fn event_end(buffer: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    let mut i = 0;
    while i < buffer.len() {
        let byte = buffer[i];
        if byte != b'\n' && byte != b'\r' {
            i += 1;
            continue;
        }
        let mut next = i + 1;
        if byte == b'\r' {
            if next == buffer.len() {
                return None; // a `\r\n` may be split across chunks
            }
            if buffer[next] == b'\n' {
                next += 1;
            }
        }
        if i == line_start {
            return Some(next); // a blank line ends the event
        }
        line_start = next;
        i = next;
    }
    None
}

/// Whether `event` (raw lines) is named one of [`STRIPPED_EVENTS`].
fn is_stripped(event: &[u8]) -> bool {
    let text = String::from_utf8_lossy(event);
    text.split(['\r', '\n'])
        .filter_map(|line| line.strip_prefix("event:"))
        .next_back()
        .is_some_and(|name| STRIPPED_EVENTS.contains(&name.trim()))
}

/// Nothing was bought: a JSON error instead of the target's answer.
fn refusal(error: Error) -> Response {
    let (status, kind, code) = match &error {
        Error::Policy(_) => (
            StatusCode::PAYMENT_REQUIRED,
            "payment_refused",
            "spend_policy",
        ),
        Error::Expired(_) => (
            StatusCode::PAYMENT_REQUIRED,
            "payment_refused",
            "challenge_expired",
        ),
        Error::MalformedChallenge(_) => (
            StatusCode::PAYMENT_REQUIRED,
            "payment_refused",
            "malformed_challenge",
        ),
        Error::Unsupported(_) => (
            StatusCode::PAYMENT_REQUIRED,
            "payment_refused",
            "unsupported_challenge",
        ),
        Error::Config(_) => (
            StatusCode::PAYMENT_REQUIRED,
            "payment_refused",
            "not_configured",
        ),
        Error::NoChannel(_) => (
            StatusCode::PAYMENT_REQUIRED,
            "payment_refused",
            "no_channel",
        ),
        Error::Signing(_) => (StatusCode::PAYMENT_REQUIRED, "payment_failed", "signing"),
        Error::Chain(_) => (StatusCode::BAD_GATEWAY, "payment_failed", "chain"),
        Error::State(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "payment_failed",
            "channel_state",
        ),
        Error::Refused { status, .. } => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::PAYMENT_REQUIRED),
            "payment_rejected",
            "refused_by_server",
        ),
        Error::Http(_) => (StatusCode::BAD_GATEWAY, "proxy_error", "target_unreachable"),
    };
    let mut message = format!("tollgate pay proxy: {error}");
    let mut problem = None;
    if let Error::Refused {
        paid, problem: p, ..
    } = &error
    {
        if let Some(paid) = paid {
            message.push_str(&format!("; {}, not retried", sent(paid)));
        }
        problem = p.clone();
    }
    tracing::warn!(%message, "nothing bought");
    error_response(status, kind, code, &message, problem)
}

/// What had been sent when the target refused.
fn sent(paid: &Payment) -> String {
    match paid {
        Payment::Charge {
            tx_hash: Some(tx),
            amount,
            ..
        } => format!("the transfer of {amount} was broadcast (tx {tx})"),
        Payment::Charge { amount, .. } => format!(
            "a signed transfer of {amount} was handed to the server, which may have broadcast it"
        ),
        Payment::Session {
            channel_id,
            cumulative,
            ..
        } => format!("a voucher for cumulative {cumulative} on channel {channel_id:#x} was sent"),
    }
}

fn error_response(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: &str,
    problem: Option<Value>,
) -> Response {
    let mut error = json!({ "type": kind, "code": code, "message": message });
    if let Some(problem) = problem {
        error["problem"] = problem;
    }
    // `type: error` + `error{type,message}`: what both the OpenAI and the
    // Anthropic SDKs read.
    let body = json!({ "type": "error", "error": error });
    let mut response = Response::new(AxumBody::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_all(chunks: &[&[u8]]) -> String {
        let mut f = EventFilter::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&f.feed(c));
        }
        out.extend_from_slice(&f.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn payment_events_are_removed_and_the_rest_kept_byte_for_byte() {
        let stream = "data: {\"a\":1}\n\n\
event: payment-need-voucher\ndata: {\"requiredCumulative\":\"5\"}\n\n\
event: message_delta\r\ndata: {\"b\":2}\r\n\r\n\
: a comment\n\n\
event: payment-receipt\ndata: {\"spent\":\"9\"}\n\n\
data: [DONE]\n\n";
        let expected = "data: {\"a\":1}\n\n\
event: message_delta\r\ndata: {\"b\":2}\r\n\r\n\
: a comment\n\n\
data: [DONE]\n\n";
        assert_eq!(filter_all(&[stream.as_bytes()]), expected);
        // Any split into chunks gives the same result.
        let bytes = stream.as_bytes();
        for cut in 1..bytes.len() {
            assert_eq!(
                filter_all(&[&bytes[..cut], &bytes[cut..]]),
                expected,
                "{cut}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(filter_all(&singles), expected);
    }

    #[test]
    fn complete_events_pass_at_once() {
        let mut f = EventFilter::default();
        assert_eq!(&f.feed(b"data: 1\n\ndata: 2")[..], b"data: 1\n\n");
        assert_eq!(&f.feed(b"\n")[..], b"");
        assert_eq!(&f.feed(b"\n")[..], b"data: 2\n\n");
        // An unfinished event at the end is passed on, unless it is ours.
        assert_eq!(&f.feed(b"data: 3")[..], b"");
        assert_eq!(&f.finish()[..], b"data: 3");
        let mut f = EventFilter::default();
        assert_eq!(&f.feed(b"event: payment-receipt\ndata: {}")[..], b"");
        assert_eq!(&f.finish()[..], b"");
    }

    #[test]
    fn target_urls_keep_path_and_query() {
        let target: Url = "http://127.0.0.1:9/base/".parse().unwrap();
        let uri: Uri = "/v1/chat/completions?x=1&y=%20".parse().unwrap();
        assert_eq!(
            target_url(&target, &uri).as_str(),
            "http://127.0.0.1:9/base/v1/chat/completions?x=1&y=%20"
        );
        let target: Url = "http://127.0.0.1:9".parse().unwrap();
        let uri: Uri = "/v1/messages".parse().unwrap();
        assert_eq!(
            target_url(&target, &uri).as_str(),
            "http://127.0.0.1:9/v1/messages"
        );
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer sk-client"),
            ("x-api-key", "sk-ant-client"),
            ("host", "127.0.0.1:1"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("content-length", "12"),
            ("accept-encoding", "gzip"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let out = request_headers(&h);
        let names: Vec<&str> = out.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type", "anthropic-version"]);
    }
}
