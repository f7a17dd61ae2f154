//! Forwarding a paid request to its upstream and streaming the answer back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;
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
    api_key: Option<HeaderValue>,
    transport: Transport,
}

/// How a request reaches the upstream.
#[derive(Clone)]
enum Transport {
    /// hyper's pooled client, used directly: reqwest's layers (its URL
    /// type, parsed again per request by its redirect policy, its proxy
    /// matcher and per-read timers) cost an eighth of a free request's CPU.
    Http(Arc<HttpTransport>),
    /// Answered in-process by a router, without a socket.
    InProcess(axum::Router),
}

struct HttpTransport {
    /// One pool per serving thread (see [`crate::pool_affinity`]): a pooled
    /// connection is driven by the thread that opened it, so sharing one
    /// pool across threads wakes another thread twice per request.
    clients: Box<[HttpClient]>,
    base: BaseUrl,
    idle: Duration,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The scheme, authority and path prefix of an upstream's base URL, split
/// once so a request only joins its own path to them.
#[derive(Clone)]
struct BaseUrl {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The base's path without its trailing slash (often empty).
    prefix: String,
}

impl BaseUrl {
    fn parse(base_url: &str) -> Result<Self, ForwardError> {
        let invalid = || {
            ForwardError::InvalidRequest(
                "upstream URL must be an http(s) base without query or fragment".into(),
            )
        };
        let uri: http::Uri = base_url
            .parse()
            .map_err(|e| ForwardError::InvalidRequest(format!("upstream URL: {e}")))?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(invalid());
        };
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(invalid());
        }
        let path_and_query = parts.path_and_query;
        if path_and_query.as_ref().and_then(|p| p.query()).is_some() || base_url.contains('#') {
            return Err(invalid());
        }
        let prefix = path_and_query
            .as_ref()
            .map_or("", |p| p.path())
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            scheme,
            authority,
            prefix,
        })
    }

    /// The base URL with `path_and_query` appended to its path.
    fn join(&self, path_and_query: &str) -> Result<http::Uri, ForwardError> {
        let builder = http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone());
        let builder = if self.prefix.is_empty() {
            builder.path_and_query(path_and_query)
        } else {
            builder.path_and_query([self.prefix.as_str(), path_and_query].concat())
        };
        builder
            .build()
            .map_err(|e| ForwardError::InvalidRequest(format!("upstream path: {e}")))
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The API key is deliberately absent.
        let base_url = match &self.transport {
            Transport::Http(http) => Some(format!(
                "{}://{}{}",
                http.base.scheme, http.base.authority, http.base.prefix
            )),
            Transport::InProcess(_) => None,
        };
        f.debug_struct("Upstream")
            .field("kind", &self.kind)
            .field("base_url", &base_url)
            .finish_non_exhaustive()
    }
}

/// Certificates are checked against the platform's roots, as a browser
/// would; upstreams are reached over HTTP/1.1, plain or TLS.
fn http_clients(
    timeouts: UpstreamTimeouts,
    pools: usize,
) -> Result<Box<[HttpClient]>, ForwardError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|e| ForwardError::InvalidRequest(format!("TLS set-up: {e}")))?
        .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(timeouts.connect));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok((0..pools.max(1))
        .map(|_| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(connector.clone())
        })
        .collect())
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
        // One pool per core, as a server runs one serving thread per core.
        let pools = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::http_with_pools(kind, base_url, api_key, timeouts, pools)
    }

    /// [`http`](Self::http) with `pools` connection pools, one per serving
    /// thread (see [`crate::pool_affinity`]).
    pub fn http_with_pools(
        kind: UpstreamKind,
        base_url: &str,
        api_key: Option<&str>,
        timeouts: UpstreamTimeouts,
        pools: usize,
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
        let base = BaseUrl::parse(base_url)?;
        Ok(Self {
            kind,
            protocol: match kind {
                UpstreamKind::Anthropic => Protocol::Anthropic,
                _ => Protocol::OpenAi,
            },
            api_key,
            transport: Transport::Http(Arc::new(HttpTransport {
                clients: http_clients(timeouts, pools)?,
                base,
                idle: timeouts.idle,
            })),
        })
    }

    /// An upstream answered in-process by `router`, without a socket (the
    /// mock of the `tollgate-mock` crate, which production builds need not
    /// carry).
    pub fn in_process(router: axum::Router) -> Self {
        Self {
            kind: UpstreamKind::Mock,
            protocol: Protocol::OpenAi,
            api_key: None,
            transport: Transport::InProcess(router),
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
        match &self.transport {
            Transport::InProcess(router) => {
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
                Ok(response)
            }
            Transport::Http(http) => {
                let HttpTransport {
                    clients,
                    base,
                    idle,
                } = &**http;
                let client = &clients[crate::pool_affinity::current() % clients.len()];
                let mut request = http::Request::builder()
                    .method(method)
                    .uri(base.join(path_and_query)?)
                    .body(Full::new(body))
                    .map_err(|e| ForwardError::InvalidRequest(e.to_string()))?;
                *request.headers_mut() = headers;
                // The wait for the response's head is the first read.
                let response = tokio::time::timeout(*idle, client.request(request))
                    .await
                    .map_err(|_| ForwardError::Timeout)?
                    .map_err(classify)?;
                let (mut parts, incoming) = response.into_parts();
                parts.headers = returnable(&parts.headers);
                Ok(Response::from_parts(
                    parts,
                    Body::new(IdleTimeout::new(incoming, *idle)),
                ))
            }
        }
    }
}

fn classify(error: hyper_util::client::legacy::Error) -> ForwardError {
    // The connector's own timeout surfaces as an I/O error in its chain.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return ForwardError::Timeout;
        }
        source = cause.source();
    }
    let what = if error.is_connect() {
        "could not connect"
    } else {
        "the connection failed"
    };
    ForwardError::Unreachable(what.into())
}

/// A response body that fails when the upstream stays silent longer than
/// `idle` between two frames: a stalled stream ends as a broken one
/// instead of holding its client (and its hold) forever.
struct IdleTimeout {
    inner: Incoming,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeout {
    fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    /// A stall is `TimedOut`, the kind the server tells a stall from a cut by.
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.deadline.as_mut().reset(deadline);
                Poll::Ready(frame.map(|frame| frame.map_err(std::io::Error::other)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "upstream went silent mid-answer",
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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
            BaseUrl::parse(base)
                .unwrap()
                .join(path)
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
    async fn an_answer_that_stalls_midway_fails_as_timed_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let timeouts = UpstreamTimeouts {
            connect: Duration::from_secs(5),
            idle: Duration::from_millis(200),
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
        assert_eq!(response.status(), 200);
        let error = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_err();
        let mut source = std::error::Error::source(&error);
        let mut kind = None;
        while let Some(cause) = source {
            kind = kind.or(cause
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind));
            source = cause.source();
        }
        assert_eq!(kind, Some(std::io::ErrorKind::TimedOut), "{error:?}");
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

    #[tokio::test]
    async fn each_pool_keeps_its_own_upstream_connections() {
        use std::net::SocketAddr;
        // The upstream answers with the client port of the connection a
        // request came on.
        let router = axum::Router::new().route(
            "/v1/embeddings",
            axum::routing::post(
                |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| async move {
                    peer.port().to_string()
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        let upstream = Upstream::http_with_pools(
            UpstreamKind::OpenAiCompatible,
            &url,
            None,
            UpstreamTimeouts::default(),
            2,
        )
        .unwrap();
        let port_of = |pool: usize| {
            let upstream = upstream.clone();
            async move {
                crate::pool_affinity::use_pool(pool);
                let response = upstream
                    .forward(
                        Method::POST,
                        "/v1/embeddings",
                        &HeaderMap::new(),
                        Bytes::from_static(b"{}"),
                    )
                    .await
                    .unwrap();
                let body = axum::body::to_bytes(response.into_body(), 64)
                    .await
                    .unwrap();
                String::from_utf8(body.to_vec()).unwrap()
            }
        };
        let first = port_of(0).await;
        assert_eq!(
            port_of(0).await,
            first,
            "pool 0 did not keep its connection"
        );
        let other = port_of(1).await;
        assert_ne!(other, first, "pool 1 used pool 0's connection");
        assert_eq!(
            port_of(1).await,
            other,
            "pool 1 did not keep its connection"
        );
        assert_eq!(port_of(0).await, first);
        // Beyond the pool count, indexes wrap around.
        assert_eq!(port_of(2).await, first);
        crate::pool_affinity::use_pool(0);
    }
}
