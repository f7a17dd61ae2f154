//! Tollgate's mock upstream: a deterministic stand-in for the OpenAI API, for the demo, tests and
//! benchmarks. It speaks the real wire format (JSON and SSE), reports
//! realistic `usage`, and records what it receives so tests can assert on it.
#![forbid(unsafe_code)]

mod anthropic;
mod chat;
mod embeddings;
mod media;
mod responses;
mod schema;
mod text;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct MockOptions {
    /// Delay before the response starts.
    pub latency: Duration,
    /// Delay between two SSE chunks.
    pub chunk_interval: Duration,
    /// Tokens in a chat answer when the request allows that many.
    pub answer_tokens: u64,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            chunk_interval: Duration::ZERO,
            answer_tokens: 24,
        }
    }
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Shared log of received requests.
#[derive(Debug, Clone, Default)]
pub struct MockRecorder {
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl MockRecorder {
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().map(|r| r.len()).unwrap_or_default()
    }

    fn record(&self, request: RecordedRequest) {
        if let Ok(mut log) = self.requests.lock() {
            log.push(request);
        }
    }
}

#[derive(Clone)]
struct MockState {
    options: MockOptions,
    recorder: MockRecorder,
}

/// Builds the mock's router and the recorder that watches it.
pub fn router(options: MockOptions) -> (Router, MockRecorder) {
    let recorder = MockRecorder::default();
    let state = MockState {
        options,
        recorder: recorder.clone(),
    };
    let router = Router::new()
        .route("/v1/chat/completions", json_endpoint(chat::respond))
        .route("/v1/messages", anthropic::endpoint())
        .route(
            "/v1/embeddings",
            json_endpoint(|r, _| embeddings::respond(r)),
        )
        .route("/v1/models", axum::routing::get(models))
        .route(
            "/v1/images/generations",
            json_endpoint(|r, _| media::images(r)),
        )
        .route(
            "/v1/responses",
            json_endpoint(|r, o| responses::respond(r, o.chunk_interval)),
        )
        .route("/v1/audio/speech", json_endpoint(|r, _| media::speech(r)))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(vendor_headers))
        .with_state(state);
    (router, recorder)
}

/// What the real APIs put beside every answer and a gateway must not pass
/// on (its server, the operator's organization and rate limits), and the
/// request id it must: `x-request-id` (OpenAI) or `request-id` (Anthropic,
/// set by that endpoint itself).
async fn vendor_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let anthropic = request.uri().path() == "/v1/messages";
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = |v: &'static str| axum::http::HeaderValue::from_static(v);
    headers.insert("server", fixed("tollgate-mock-upstream"));
    headers.insert("x-ratelimit-remaining-requests", fixed("9999"));
    if anthropic {
        headers.insert("anthropic-organization-id", fixed("org-mock-operator"));
    } else {
        headers.insert("openai-organization", fixed("org-mock-operator"));
        if !headers.contains_key("x-request-id") {
            headers.insert("x-request-id", fixed("req_mock_openai"));
        }
    }
    response
}

/// The last user turn that makes a mock answer 429 (with `retry-after: 7`),
/// as a provider does when the gateway's key is rate limited.
pub const RATE_LIMIT_PROMPT: &str = "mock: rate limit";

/// Whether the last message is a user turn saying [`RATE_LIMIT_PROMPT`].
pub(crate) fn asks_for_a_rate_limit(messages: &[serde_json::Value]) -> bool {
    messages.last().is_some_and(|m| {
        m.get("role").and_then(serde_json::Value::as_str) == Some("user")
            && match m.get("content") {
                Some(serde_json::Value::String(s)) => s == RATE_LIMIT_PROMPT,
                Some(serde_json::Value::Array(parts)) => parts.iter().any(|p| {
                    p.get("text").and_then(serde_json::Value::as_str) == Some(RATE_LIMIT_PROMPT)
                }),
                _ => false,
            }
    })
}

/// A JSON endpoint of the mock: what it answers for a parsed request.
type JsonAnswer = fn(&serde_json::Value, &MockOptions) -> Response;

/// Records the request, waits the configured latency, parses the JSON body
/// and answers with `answer` (or OpenAI's 400 for a body that is not JSON).
fn json_endpoint(answer: JsonAnswer) -> axum::routing::MethodRouter<MockState> {
    post(
        move |State(state): State<MockState>,
              method: Method,
              uri: Uri,
              headers: HeaderMap,
              body: Bytes| async move {
            record(&state, method, &uri, headers, &body);
            tokio::time::sleep(state.options.latency).await;
            match serde_json::from_slice(&body) {
                Ok(request) => answer(&request, &state.options),
                Err(e) => openai_error(
                    StatusCode::BAD_REQUEST,
                    &format!("invalid JSON body: {e}"),
                    None,
                ),
            }
        },
    )
}

async fn transcriptions(
    State(state): State<MockState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    record(&state, method, &uri, headers, &body);
    tokio::time::sleep(state.options.latency).await;
    match tollgate_providers::multipart::fields(&content_type, body).await {
        Ok(fields) => media::transcription(&fields),
        Err(e) => openai_error(StatusCode::BAD_REQUEST, &e, None),
    }
}

async fn models(
    State(state): State<MockState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    record(&state, method, &uri, headers, &Bytes::new());
    let data: Vec<_> = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_715_367_049, "owned_by": "tollgate-mock"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn not_found(uri: Uri) -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({})", uri.path()),
        None,
    )
}

fn record(state: &MockState, method: Method, uri: &Uri, headers: HeaderMap, body: &Bytes) {
    state.recorder.record(RecordedRequest {
        method,
        path: uri.path().to_owned(),
        headers,
        body: body.clone(),
    });
}

/// An error in OpenAI's envelope.
pub(crate) fn openai_error(status: StatusCode, message: &str, param: Option<&str>) -> Response {
    let body = json!({
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": null,
        }
    });
    (status, axum::Json(body)).into_response()
}
