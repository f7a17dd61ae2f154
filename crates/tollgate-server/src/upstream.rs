//! Calling an upstream. A call is prepared — and, when an OpenAI-format
//! chat goes to an upstream that speaks Anthropic's Messages API, translated
//! and so validated — before any challenge is issued; it is sent only once
//! the request is paid. The answer comes back untranslated: the delivery
//! step reads usage from the upstream's own format and translates as it
//! delivers, so nothing is parsed twice.

use std::error::Error as _;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use tollgate_providers::anthropic::{self, RequestInfo, TranslateOptions};
use tollgate_providers::{ForwardError, Protocol, Upstream};

use crate::problem::{ApiError, Problem, upstream as fault};
use crate::state::ClientApi;

/// Upstream error bodies larger than this are not translated.
const MAX_ERROR_BYTES: usize = 1024 * 1024;
/// Non-streamed answers are read whole, up to this, before payment is final.
pub const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Upstream headers a translated error keeps: when to retry (a client that
/// retries too early pays again on a paid route), and the upstream's
/// request id for support.
const KEPT_ON_TRANSLATED_ERRORS: [&str; 5] = [
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "request-id",
    "x-request-id",
];

/// Anthropic's `request-id`, also as OpenAI's `x-request-id`, for clients
/// of a translated route.
fn add_openai_request_id(headers: &mut HeaderMap) {
    if let Some(id) = headers.get("request-id").cloned()
        && !headers.contains_key("x-request-id")
    {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
}

/// A request ready to go upstream.
pub struct UpstreamCall<'a> {
    upstream: &'a Upstream,
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
    translation: Option<RequestInfo>,
}

impl<'a> UpstreamCall<'a> {
    /// Prepares `body` (in `client_api`'s format) for `upstream`. A request
    /// the translation refuses is a 400 here, before any payment.
    pub fn prepare(
        upstream: &'a Upstream,
        client_api: ClientApi,
        opts: &TranslateOptions<'_>,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Self, ApiError> {
        let translate =
            client_api == ClientApi::OpenAiChat && upstream.protocol() == Protocol::Anthropic;
        if !translate {
            return Ok(Self {
                upstream,
                method,
                path_and_query: path_and_query.to_owned(),
                headers: headers.clone(),
                body,
                translation: None,
            });
        }
        let (translated, info) = anthropic::translate_request_body(&body, opts).map_err(|e| {
            let code = e.code.replace('_', "-");
            let mut problem = Problem::invalid_request(&code, e.message.clone(), None);
            if let Some(param) = &e.param {
                problem = problem.param(param);
            }
            ApiError::from(problem)
        })?;
        let mut headers = headers.clone();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.remove(header::CONTENT_LENGTH);
        Ok(Self {
            upstream,
            method: Method::POST,
            path_and_query: "/v1/messages".to_owned(),
            headers,
            body: Bytes::from(translated),
            translation: Some(info),
        })
    }

    /// The Messages body a translated call sends (what its quote prices);
    /// `None` when the call is not translated.
    pub fn translated_body(&self) -> Option<&Bytes> {
        self.translation.as_ref().map(|_| &self.body)
    }

    /// Sends the call. A failed call (no answer, or an error status) is an
    /// `Err` carrying what the client sees; nobody pays for it.
    pub async fn send(self) -> Result<Answer, ApiError> {
        let response = self
            .upstream
            .forward(self.method, &self.path_and_query, &self.headers, self.body)
            .await
            .map_err(|e| match e {
                ForwardError::Timeout => fault::timeout(),
                ForwardError::Unreachable(_) => fault::unreachable(),
                ForwardError::InvalidRequest(message) => {
                    Problem::new(StatusCode::BAD_GATEWAY, "upstream-request-invalid", message)
                }
            })?;
        let (mut head, body) = response.into_parts();
        if self.translation.is_some() {
            add_openai_request_id(&mut head.headers);
        }
        if !head.status.is_success() {
            return Err(match &self.translation {
                Some(_) => ApiError::Response(Box::new(translate_error(head, body).await)),
                None => ApiError::Response(Box::new(Response::from_parts(head, body))),
            });
        }
        Ok(Answer {
            head,
            body,
            translation: self.translation,
        })
    }
}

/// A successful answer, still in the upstream's format.
pub struct Answer {
    pub head: axum::http::response::Parts,
    pub body: Body,
    /// Set when the answer is Anthropic's and the client speaks OpenAI.
    pub translation: Option<RequestInfo>,
}

impl Answer {
    pub fn is_stream(&self) -> bool {
        crate::sse::is_event_stream(&self.head.headers)
    }
}

/// Reads a whole body (bounded), telling a cut, a stall and an oversized
/// answer apart.
pub async fn read_whole(body: Body, limit: usize) -> Result<Bytes, Problem> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| body_failure(&e, Some(limit)))
}

/// Why an upstream body could not be read: too large (past `limit`), a
/// stall (the idle timeout), or a cut.
pub fn body_failure(error: &axum::Error, limit: Option<usize>) -> Problem {
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(limit) = limit
            && e.is::<http_body_util::LengthLimitError>()
        {
            return fault::too_large(limit);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return fault::stalled();
        }
        source = e.source();
    }
    fault::cut()
}

/// An Anthropic error → OpenAI's status and error body, keeping the
/// headers clients need to retry well.
async fn translate_error(head: axum::http::response::Parts, body: Body) -> Response {
    if !is_json(&head.headers) {
        // Not an Anthropic error body: pass it on as it is.
        return Response::from_parts(head, body);
    }
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let (code, json) = anthropic::from_anthropic::error(head.status.as_u16(), &bytes);
    let mut response = json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
        &json,
    );
    for name in KEPT_ON_TRANSLATED_ERRORS {
        if let Some(value) = head.headers.get(name) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value.clone());
        }
    }
    add_openai_request_id(response.headers_mut());
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"))
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
