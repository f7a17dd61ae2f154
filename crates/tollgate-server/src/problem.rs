//! Errors as values that turn into responses: RFC 9457 problem+json with a
//! stable `code` (and OpenAI's `error` object, so OpenAI SDKs show the
//! message), payment problems with fresh challenges, and upstream answers
//! passed on as they are. Handlers return `Result<Response, ApiError>`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tollgate_payments::{IssuedChallenge, PaymentProblem};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Where our own problem types live (protocol problems use
/// `https://paymentauth.org/problems/`).
const TOLLGATE_PROBLEMS: &str = "https://tollgate.dev/problems/";

/// Anything that ends a request early.
#[derive(Debug)]
pub enum ApiError {
    /// One of ours.
    Problem(Box<Problem>),
    /// An answer built elsewhere (an upstream's error, passed on).
    Response(Box<Response>),
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self::Problem(Box::new(problem))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Problem(problem) => problem.into_response(),
            Self::Response(response) => *response,
        }
    }
}

/// An RFC 9457 problem under construction.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: String,
    detail: String,
    type_uri: Option<String>,
    title: Option<String>,
    /// OpenAI's `error.type` (`None`: no `error` object).
    openai_type: Option<&'static str>,
    param: Option<String>,
    extensions: Map<String, Value>,
    challenges: Vec<IssuedChallenge>,
    headers: HeaderMap,
    /// A refusal of the payment itself (for the metrics).
    payment: bool,
}

impl Problem {
    /// A problem with a stable `code`.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            detail: detail.into(),
            type_uri: None,
            title: None,
            openai_type: Some("tollgate_error"),
            param: None,
            extensions: Map::new(),
            challenges: Vec::new(),
            headers: HeaderMap::new(),
            payment: false,
        }
    }

    /// 400: a request the gateway cannot price or serve.
    pub fn invalid_request(code: &str, detail: impl Into<String>, param: Option<&str>) -> Self {
        let mut problem = Self::new(StatusCode::BAD_REQUEST, code, detail);
        problem.openai_type = Some("invalid_request_error");
        problem.param = param.map(str::to_owned);
        problem
    }

    /// A payment problem (its status, type and title), with `challenges`
    /// when it asks the client to pay or re-sign.
    pub fn payment(problem: &PaymentProblem, challenges: Vec<IssuedChallenge>) -> Self {
        let status =
            StatusCode::from_u16(problem.kind.status()).unwrap_or(StatusCode::PAYMENT_REQUIRED);
        let mut out = Self::new(
            status,
            &problem.kind.slug().replace('/', "-"),
            &problem.detail,
        );
        out.type_uri = Some(problem.kind.type_uri());
        out.title = Some(problem.kind.title().to_owned());
        out.openai_type = None;
        for (name, value) in &problem.extensions {
            out.extensions.insert((*name).to_owned(), value.clone());
        }
        out.challenges = challenges;
        out.payment = true;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            out = out.header(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        out
    }

    /// Our own problem type URI (`https://tollgate.dev/problems/<code>`) and title.
    pub fn typed(mut self, title: &str) -> Self {
        self.type_uri = Some(format!("{TOLLGATE_PROBLEMS}{}", self.code));
        self.title = Some(title.to_owned());
        self
    }

    pub fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    /// No OpenAI `error` object (bodies for MPP clients only).
    pub fn without_openai_error(mut self) -> Self {
        self.openai_type = None;
        self
    }

    pub fn extension(mut self, name: &str, value: Value) -> Self {
        self.extensions.insert(name.to_owned(), value);
        self
    }

    pub fn challenges(mut self, challenges: Vec<IssuedChallenge>) -> Self {
        self.challenges = challenges;
        self
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub fn code(&self) -> &str {
        &self.code
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": self.type_uri.as_deref().unwrap_or("about:blank"),
            "title": self.title.as_deref().unwrap_or(self.status.canonical_reason().unwrap_or("Error")),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        if let Some(first) = self.challenges.first() {
            body["challengeId"] = Value::String(first.id.clone());
        }
        for (name, value) in self.extensions {
            body[name] = value;
        }
        if let Some(kind) = self.openai_type {
            body["error"] = json!({
                "message": self.detail,
                "type": kind,
                "param": self.param,
                "code": self.code,
            });
        }
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = self.status;
        let payment = self.payment
            || !self.challenges.is_empty()
            || self.status == StatusCode::PAYMENT_REQUIRED;
        crate::observe::note_problem(&mut response, &self.code, payment);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for challenge in &self.challenges {
            if let Ok(value) = HeaderValue::from_str(&challenge.header) {
                headers.append(header::WWW_AUTHENTICATE, value);
            }
        }
        if !self.challenges.is_empty() || self.status == StatusCode::PAYMENT_REQUIRED {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        for (name, value) in self.headers {
            if let Some(name) = name {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// 404 for paths no route declares.
pub async fn not_found() -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "route-not-found",
        "no route is configured for this path",
    )
    .into_response()
}

/// The common upstream failures, each with its own status and message.
pub mod upstream {
    use super::Problem;
    use axum::http::StatusCode;

    pub fn timeout() -> Problem {
        Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream-timeout",
            "the upstream did not answer in time",
        )
    }

    pub fn unreachable() -> Problem {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "upstream-unavailable",
            "the upstream could not be reached",
        )
    }

    pub fn cut() -> Problem {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "upstream-response-incomplete",
            "the upstream broke off its answer",
        )
    }

    pub fn stalled() -> Problem {
        Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream-stalled",
            "the upstream stopped sending its answer",
        )
    }

    pub fn too_large(limit: usize) -> Problem {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "upstream-response-too-large",
            format!("the upstream answer exceeds {limit} bytes"),
        )
    }

    pub fn malformed(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "upstream-response-malformed",
            detail,
        )
    }
}
