//! RFC 9457 responses: payment problems (with fresh challenges) and our own.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tollgate_payments::{IssuedChallenge, PaymentProblem};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A non-payment problem with a stable `code` (and OpenAI's `error` object,
/// so OpenAI SDKs report it).
pub fn problem(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    let detail = detail.into();
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
        "error": {"message": detail, "type": "tollgate_error", "param": null, "code": code},
    });
    json_response(status, PROBLEM_JSON, &body)
}

/// A request the gateway cannot price or serve (400): problem+json that
/// also carries OpenAI's `error` object, so OpenAI SDKs show the message.
pub fn invalid_request(code: &str, message: &str, param: Option<&str>) -> Response {
    let status = StatusCode::BAD_REQUEST;
    let body = json!({
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "code": code,
        "detail": message,
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        },
    });
    json_response(status, PROBLEM_JSON, &body)
}

/// A payment problem; when it is a 402 it carries `challenges`, one
/// `WWW-Authenticate` header each, and names the first in `challengeId`.
pub fn payment_problem(problem: &PaymentProblem, challenges: &[IssuedChallenge]) -> Response {
    let status =
        StatusCode::from_u16(problem.kind.status()).unwrap_or(StatusCode::PAYMENT_REQUIRED);
    let mut body = problem.to_json(challenges.first().map(|c| c.id.as_str()));
    body["code"] = Value::String(problem.kind.slug().replace('/', "-"));
    let mut response = json_response(status, PROBLEM_JSON, &body);
    let headers = response.headers_mut();
    for challenge in challenges {
        if let Ok(value) = HeaderValue::from_str(&challenge.header) {
            headers.append(header::WWW_AUTHENTICATE, value);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

fn json_response(status: StatusCode, content_type: &'static str, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// 404 for paths no route declares.
pub async fn not_found() -> impl IntoResponse {
    problem(
        StatusCode::NOT_FOUND,
        "route-not-found",
        "no route is configured for this path",
    )
}
