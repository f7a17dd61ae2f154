//! The gateway's own errors in Anthropic's shape, on routes Anthropic SDKs
//! call (`/v1/messages`, `/v1/messages/count_tokens`).
//!
//! A response layer, independent of how a route produced its problem: any
//! `application/problem+json` answer is rewritten to
//! `{"type":"error","error":{"type","message","code"[, "param"]}}`, which
//! the Anthropic SDKs read, keeping every other problem member (`title`,
//! `status`, `detail`, `code`, `challengeId`, …) beside it and the problem's
//! own `type` URI as `problem_type`. Headers are untouched, so a 402 keeps
//! its `WWW-Authenticate` challenges and a 503 its `retry-after`. Errors the
//! upstream answered itself are already in Anthropic's shape and pass
//! through; OpenAI routes never get this layer and keep OpenAI's shape.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::problem::PROBLEM_JSON;

/// Problem bodies are small; anything larger is passed on untouched.
const MAX_PROBLEM_BYTES: usize = 64 * 1024;

/// The middleware: `axum::middleware::from_fn(error_shape::anthropic)`.
pub async fn anthropic(request: Request, next: Next) -> Response {
    reshape(next.run(request).await).await
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

async fn reshape(response: Response) -> Response {
    if !is_problem(&response) {
        return response;
    }
    let (mut head, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await else {
        return Response::from_parts(head, Body::empty());
    };
    let Ok(Value::Object(problem)) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(head, Body::from(bytes));
    };
    let shaped = anthropic_body(head.status, problem);
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(head, Body::from(shaped.to_string()))
}

/// Anthropic's `error.type` for a status, as its API documents them.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 | 410 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// A problem object in Anthropic's envelope (see the module docs).
pub fn anthropic_body(status: StatusCode, mut problem: Map<String, Value>) -> Value {
    let openai = problem.remove("error");
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let message = text(problem.get("detail"))
        .or_else(|| text(problem.get("title")))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let mut error = json!({
        "type": error_type(status),
        "message": message,
        "code": problem.get("code").cloned().unwrap_or(Value::Null),
    });
    if let Some(param) = openai
        .as_ref()
        .and_then(|e| e.get("param"))
        .filter(|p| !p.is_null())
    {
        error["param"] = param.clone();
    }
    if let Some(kind) = problem.remove("type") {
        problem.insert("problem_type".into(), kind);
    }
    problem.insert("type".into(), json!("error"));
    problem.insert("error".into(), error);
    Value::Object(problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[tokio::test]
    async fn problems_become_anthropic_errors_keeping_their_fields_and_headers() {
        let mut response = crate::problem::Problem::invalid_request(
            "unsupported_parameter",
            "`seed` is not supported",
            Some("seed"),
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Payment id=\"x\""),
        );
        let shaped = reshape(response).await;
        assert_eq!(shaped.status(), 400);
        assert_eq!(
            shaped.headers()[header::WWW_AUTHENTICATE],
            "Payment id=\"x\""
        );
        let body = axum::body::to_bytes(shaped.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["message"], "`seed` is not supported");
        assert_eq!(body["error"]["code"], "unsupported_parameter");
        assert_eq!(body["error"]["param"], "seed");
        assert_eq!(body["code"], "unsupported_parameter");
        assert_eq!(body["status"], 400);
        assert_eq!(body["problem_type"], "about:blank");
    }

    #[tokio::test]
    async fn other_answers_pass_untouched() {
        let upstream = Response::builder()
            .status(429)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
            ))
            .unwrap();
        let out = reshape(upstream).await;
        let body = axum::body::to_bytes(out.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            &body[..],
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#
        );
    }

    #[test]
    fn statuses_map_to_anthropic_types() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (402, "billing_error"),
            (404, "not_found_error"),
            (410, "not_found_error"),
            (413, "request_too_large"),
            (502, "api_error"),
            (503, "api_error"),
            (504, "timeout_error"),
        ] {
            assert_eq!(error_type(StatusCode::from_u16(status).unwrap()), kind);
        }
    }
}
