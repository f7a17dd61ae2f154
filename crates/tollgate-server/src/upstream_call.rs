//! Calling a route's upstream: pick it by model, and when an OpenAI-format
//! chat request goes to an upstream that speaks Anthropic's Messages API,
//! translate the request there and the answer (JSON, SSE or error) back.
//! Everything after this point (metering, receipts) sees OpenAI's format.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use tollgate_providers::anthropic::{self, RequestInfo, TranslateError};
use tollgate_providers::{ForwardError, Protocol, Upstream};

use crate::handler::Route;
use crate::problem::problem;

/// Upstream error bodies larger than this are not translated.
const MAX_ERROR_BYTES: usize = 1024 * 1024;
/// Non-streamed answers larger than this are refused (not translatable).
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// The API a route's clients speak, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    OpenAiChat,
    AnthropicMessages,
    Other,
}

impl ClientApi {
    pub fn of_path(path: &str) -> Self {
        if path.ends_with("/chat/completions") {
            Self::OpenAiChat
        } else if path.ends_with("/messages") {
            Self::AnthropicMessages
        } else {
            Self::Other
        }
    }
}

#[derive(Deserialize)]
struct ModelOnly {
    model: Option<String>,
}

/// The upstream serving `body`'s model on this route.
fn choose<'a>(route: &'a Route, body: &[u8]) -> &'a Upstream {
    if route.model_upstreams.is_empty() {
        return &route.upstream;
    }
    let model = serde_json::from_slice::<ModelOnly>(body)
        .ok()
        .and_then(|m| m.model)
        .unwrap_or_default();
    route
        .model_upstreams
        .iter()
        .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or(&route.upstream, |(_, upstream)| upstream)
}

pub async fn call(
    route: &Route,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let upstream = choose(route, &body);
    let defaults = |model: &str| route.default_max_tokens(model);
    call_upstream(
        upstream,
        route.client_api,
        &defaults,
        method,
        path_and_query,
        headers,
        body,
    )
    .await
}

/// Calls `upstream` with a request in `client_api`'s format, translating
/// an OpenAI chat request for an Anthropic upstream (and its answer back).
pub async fn call_upstream(
    upstream: &Upstream,
    client_api: ClientApi,
    defaults: &(dyn Fn(&str) -> Option<u32> + Sync),
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let translate =
        client_api == ClientApi::OpenAiChat && upstream.protocol() == Protocol::Anthropic;
    if !translate {
        return send(upstream, method, path_and_query, headers, body)
            .await
            .unwrap_or_else(|ours| ours);
    }
    let (translated, info) = match anthropic::translate_request_body(&body, defaults) {
        Ok(ok) => ok,
        Err(e) => {
            return openai_error(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                &e,
            );
        }
    };
    let mut upstream_headers = headers.clone();
    upstream_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    upstream_headers.remove(header::CONTENT_LENGTH);
    match send(
        upstream,
        Method::POST,
        "/v1/messages",
        &upstream_headers,
        Bytes::from(translated),
    )
    .await
    {
        Ok(response) => translate_answer(response, info).await,
        Err(ours) => ours,
    }
}

async fn translate_answer(response: Response, info: RequestInfo) -> Response {
    let status = response.status();
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
    let (head, body) = response.into_parts();
    if !status.is_success() && !is_json(&head.headers) {
        // Not an Anthropic error body: pass it on as it is.
        return Response::from_parts(head, body);
    }
    if !status.is_success() {
        let bytes = axum::body::to_bytes(body, MAX_ERROR_BYTES)
            .await
            .unwrap_or_default();
        let (code, json) = anthropic::from_anthropic::error(status.as_u16(), &bytes);
        return json_response(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            &json,
        );
    }
    if is_sse {
        return stream(body, info.stream_translator(created));
    }
    let bytes = match axum::body::to_bytes(body, MAX_ANSWER_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return problem(
                StatusCode::BAD_GATEWAY,
                "upstream-response-too-large",
                "the upstream answer could not be read",
            );
        }
    };
    match anthropic::from_anthropic::response_body(&bytes, &info.response_options(created)) {
        Ok(out) => {
            let mut response = Response::new(Body::from(out));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => openai_error(StatusCode::BAD_GATEWAY, &e),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"))
}

/// Re-frames Anthropic's SSE into OpenAI chunks as events arrive.
fn stream(body: Body, mut translator: anthropic::StreamTranslator) -> Response {
    let (tx, out) = crate::metering::channel_body();
    tokio::spawn(async move {
        let mut upstream = body.into_data_stream();
        let mut pending = BytesMut::new();
        'read: while let Some(chunk) = upstream.next().await {
            let Ok(bytes) = chunk else {
                break;
            };
            pending.extend_from_slice(&bytes);
            while let Some(end) = crate::metering::find_event_end(&pending) {
                let raw = pending.split_to(end);
                let Some((event, data)) = parse_event(&raw) else {
                    continue;
                };
                let out = match translator.on_event(&event, &data) {
                    Ok(chunks) => chunks,
                    Err(e) => {
                        tracing::warn!(
                            code = e.code,
                            "untranslatable upstream event; stream ended"
                        );
                        let frame = format!("data: {}\n\n", e.to_openai_body());
                        let _ = tx.send(Ok(Bytes::from(frame))).await;
                        return;
                    }
                };
                let mut frames = String::new();
                for chunk in out {
                    frames.push_str("data: ");
                    frames.push_str(&chunk);
                    frames.push_str("\n\n");
                }
                if !frames.is_empty() && tx.send(Ok(Bytes::from(frames))).await.is_err() {
                    break 'read; // the client went away
                }
                if translator.errored() {
                    return; // no [DONE]: the answer is incomplete
                }
            }
        }
        if translator.finished() && !translator.errored() {
            let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
        }
    });
    let mut response = Response::new(out);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `event:` and `data:` of one SSE event (`message` when unnamed).
fn parse_event(raw: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut event = String::from("message");
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (!data.is_empty()).then_some((event, data))
}

fn openai_error(status: StatusCode, error: &TranslateError) -> Response {
    json_response(status, &error.to_openai_body())
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Sends upstream; `Err` is our own problem response (timeout, unreachable).
async fn send(
    upstream: &Upstream,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    upstream
        .forward(method, path_and_query, headers, body)
        .await
        .map_err(|e| match e {
            ForwardError::Timeout => problem(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "the upstream did not answer in time",
            ),
            ForwardError::Unreachable(_) => problem(
                StatusCode::BAD_GATEWAY,
                "upstream-unavailable",
                "the upstream could not be reached",
            ),
            ForwardError::InvalidRequest(message) => {
                problem(StatusCode::BAD_GATEWAY, "upstream-request-invalid", message)
            }
        })
}
