//! Forwarding a paid request to its upstream and streaming the answer back.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, Response, header};
use tower::ServiceExt;

use crate::headers::{forwardable, returnable};

/// The wire protocol an upstream speaks and how it authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// api.openai.com: `Authorization: Bearer`.
    OpenAi,
    /// api.anthropic.com: `x-api-key`.
    Anthropic,
    /// Any server speaking the OpenAI format (vLLM, llama.cpp, Ollama …).
    OpenAiCompatible,
    /// The built-in deterministic mock, served in-process.
    Mock,
}

/// The API format an upstream speaks (a mock can speak either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI's REST API (chat completions, responses, embeddings …).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

/// `anthropic-version` sent when the client names none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Longest silence between two reads of the response, first byte included.
    pub idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("invalid upstream request: {0}")]
    InvalidRequest(String),
}

/// One configured upstream.
#[derive(Clone)]
pub struct Upstream {
    kind: UpstreamKind,
    protocol: Protocol,
    /// The base URL, parsed once: a request only sets its path and query
    /// (parsing the whole URL, host and IDNA included, cost more per
    /// request than the rest of the call's set-up). `None` in-process.
    base: Option<reqwest::Url>,
    api_key: Option<HeaderValue>,
    client: reqwest::Client,
    in_process: Option<axum::Router>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key is deliberately absent.
        f.debug_struct("Upstream")
            .field("kind", &self.kind)
            .field("base_url", &self.base.as_ref().map(reqwest::Url::as_str))
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// An HTTP upstream. `base_url` has no trailing slash; the request path
    /// is appended to it (`https://api.openai.com` + `/v1/chat/completions`).
    pub fn http(
        kind: UpstreamKind,
        base_url: &str,
        api_key: Option<&str>,
        timeouts: UpstreamTimeouts,
    ) -> Result<Self, ForwardError> {
        let api_key = api_key
            .map(|key| {
                let value = match kind {
                    UpstreamKind::Anthropic => key.to_owned(),
                    _ => format!("Bearer {key}"),
                };
                let mut value = HeaderValue::from_str(&value).map_err(|_| {
                    ForwardError::InvalidRequest("API key is not a valid header value".into())
                })?;
                value.set_sensitive(true);
                Ok::<_, ForwardError>(value)
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.idle)
            .tcp_nodelay(true)
            // An upstream's redirect goes back to the client as it came: a
            // paid call is not re-sent somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ForwardError::InvalidRequest(e.to_string()))?;
        let base = reqwest::Url::parse(base_url)
            .map_err(|e| ForwardError::InvalidRequest(format!("upstream URL: {e}")))?;
        if base.cannot_be_a_base() || base.query().is_some() || base.fragment().is_some() {
            return Err(ForwardError::InvalidRequest(
                "upstream URL must be an http(s) base without query or fragment".into(),
            ));
        }
        Ok(Self {
            kind,
            protocol: match kind {
                UpstreamKind::Anthropic => Protocol::Anthropic,
                _ => Protocol::OpenAi,
            },
            base: Some(base),
            api_key,
            client,
            in_process: None,
        })
    }

    /// An upstream answered in-process by `router`, without a socket (the
    /// mock of the `tollgate-mock` crate, which production builds need not
    /// carry).
    pub fn in_process(router: axum::Router) -> Self {
        Self {
            kind: UpstreamKind::Mock,
            protocol: Protocol::OpenAi,
            base: None,
            api_key: None,
            client: reqwest::Client::new(),
            in_process: Some(router),
        }
    }

    pub fn kind(&self) -> UpstreamKind {
        self.kind
    }

    /// The API format requests must be in (and answers come in).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Declares the format explicitly (a mock or a compatible server
    /// speaking Anthropic's Messages API).
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sends the request upstream and returns its response with the body
    /// streamed through untouched.
    pub async fn forward(
        &self,
        method: Method,
        path_and_query: &str,
        client_headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Body>, ForwardError> {
        let mut headers = forwardable(client_headers, self.protocol);
        if let Some(key) = &self.api_key {
            let name = match self.kind {
                UpstreamKind::Anthropic => header::HeaderName::from_static("x-api-key"),
                _ => header::AUTHORIZATION,
            };
            headers.insert(name, key.clone());
        }
        if self.protocol == Protocol::Anthropic && !headers.contains_key("anthropic-version") {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
            );
        }
        if let Some(router) = &self.in_process {
            // An in-process stand-in checks for a key like Anthropic does; it has none.
            if self.protocol == Protocol::Anthropic && !headers.contains_key("x-api-key") {
                headers.insert("x-api-key", HeaderValue::from_static("tollgate-mock"));
            }
            let mut request = http::Request::builder()
                .method(method)
                .uri(path_and_query)
                .body(Body::from(body))
                .map_err(|e| ForwardError::InvalidRequest(e.to_string()))?;
            *request.headers_mut() = headers;
            let mut response = router
                .clone()
                .oneshot(request)
                .await
                .map_err(|e| match e {})?;
            *response.headers_mut() = returnable(response.headers());
            return Ok(response);
        }
        let url = self.url(path_and_query)?;
        let response = self
            .client
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(classify)?;
        Ok(into_streaming_response(response))
    }

    /// The base URL with `path_and_query` appended to its path.
    fn url(&self, path_and_query: &str) -> Result<reqwest::Url, ForwardError> {
        let Some(base) = &self.base else {
            return Err(ForwardError::InvalidRequest("upstream has no URL".into()));
        };
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = base.clone();
        // The base's own path (without its trailing slash) prefixes the
        // request's.
        let prefix = base.path().trim_end_matches('/');
        if prefix.is_empty() {
            url.set_path(path);
        } else {
            url.set_path(&[prefix, path].concat());
        }
        url.set_query(query);
        Ok(url)
    }
}

fn classify(error: reqwest::Error) -> ForwardError {
    if error.is_timeout() {
        ForwardError::Timeout
    } else {
        ForwardError::Unreachable(error.without_url().to_string())
    }
}

fn into_streaming_response(response: reqwest::Response) -> Response<Body> {
    let status = response.status();
    let headers = returnable(response.headers());
    let stream = response
        .bytes_stream()
        .map_err(|e| std::io::Error::other(e.without_url()));
    let mut out = Response::new(Body::from_stream(stream));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_in_process_anthropic_upstream_gets_a_key_and_version() {
        let router = axum::Router::new().route(
            "/v1/messages",
            axum::routing::post(|headers: HeaderMap| async move {
                let get = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                format!("{} {}", get("x-api-key"), get("anthropic-version"))
            }),
        );
        let upstream = Upstream::in_process(router).with_protocol(Protocol::Anthropic);
        let response = upstream
            .forward(
                Method::POST,
                "/v1/messages",
                &HeaderMap::new(),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            format!("tollgate-mock {DEFAULT_ANTHROPIC_VERSION}")
        );
    }

    #[test]
    fn request_paths_are_appended_to_the_base_urls_path() {
        let timeouts = UpstreamTimeouts::default();
        let url = |base: &str, path: &str| {
            Upstream::http(UpstreamKind::OpenAiCompatible, base, None, timeouts)
                .unwrap()
                .url(path)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            url("https://api.openai.com", "/v1/chat/completions"),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            url(
                "http://127.0.0.1:8080/openai/",
                "/v1/models?limit=2&after=m"
            ),
            "http://127.0.0.1:8080/openai/v1/models?limit=2&after=m"
        );
        assert_eq!(
            url("http://[::1]:9/a/b", "/v1/files/f%2F1"),
            "http://[::1]:9/a/b/v1/files/f%2F1"
        );
        for bad in ["not a url", "http://h/x?q=1", "mailto:a@b"] {
            assert!(
                Upstream::http(UpstreamKind::OpenAiCompatible, bad, None, timeouts).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[tokio::test]
    async fn upstream_identifying_response_headers_do_not_reach_the_client() {
        let router = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|| async {
                (
                    [
                        ("server", "nginx/1.22.1"),
                        ("x-powered-by", "uvicorn"),
                        ("set-cookie", "__cf_bm=abc"),
                        ("openai-organization", "org-operator"),
                        ("x-request-id", "req-1"),
                        ("content-type", "application/json"),
                    ],
                    "{}",
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let timeouts = UpstreamTimeouts {
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(5),
        };
        let upstream =
            Upstream::http(UpstreamKind::OpenAiCompatible, &url, None, timeouts).unwrap();
        let response = upstream
            .forward(
                Method::POST,
                "/v1/chat/completions",
                &HeaderMap::new(),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        let headers = response.headers();
        for gone in [
            "server",
            "x-powered-by",
            "set-cookie",
            "openai-organization",
        ] {
            assert!(!headers.contains_key(gone), "{gone} leaked");
        }
        assert_eq!(headers["x-request-id"], "req-1");
        assert_eq!(headers["content-type"], "application/json");
    }
}
