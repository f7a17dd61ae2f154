//! Forwarding to an HTTP upstream: key injection, header hygiene, timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use tollgate_mock::{MockOptions, router};
use tollgate_providers::{ForwardError, Upstream, UpstreamKind, UpstreamTimeouts};

async fn serve(options: MockOptions) -> (String, tollgate_mock::MockRecorder) {
    let (app, recorder) = router(options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, recorder)
}

fn client_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_static("Payment secret-credential"),
    );
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("cookie", HeaderValue::from_static("session=1"));
    h
}

#[tokio::test]
async fn anthropic_keys_go_in_x_api_key_and_openai_keys_in_bearer() {
    let (url, recorder) = serve(MockOptions::default()).await;
    let body = Bytes::from_static(br#"{"model":"m","input":"x"}"#);
    for (kind, header, value) in [
        (UpstreamKind::OpenAi, "authorization", "Bearer sk-up"),
        (UpstreamKind::Anthropic, "x-api-key", "sk-up"),
    ] {
        let upstream =
            Upstream::http(kind, &url, Some("sk-up"), UpstreamTimeouts::default()).unwrap();
        let response = upstream
            .forward(
                Method::POST,
                "/v1/embeddings?x=1",
                &client_headers(),
                body.clone(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let seen = recorder.requests().pop().unwrap();
        assert_eq!(seen.headers[header], value);
        assert!(seen.headers.get("cookie").is_none());
        if kind == UpstreamKind::Anthropic {
            assert!(
                seen.headers.get("authorization").is_none(),
                "the payer's credential never travels"
            );
        }
    }
    assert!(
        !format!(
            "{:?}",
            Upstream::http(
                UpstreamKind::OpenAi,
                &url,
                Some("sk-up"),
                UpstreamTimeouts::default()
            )
            .unwrap()
        )
        .contains("sk-up")
    );
}

#[tokio::test]
async fn a_silent_upstream_times_out_and_a_closed_port_is_unreachable() {
    let (url, _) = serve(MockOptions {
        latency: Duration::from_millis(800),
        ..MockOptions::default()
    })
    .await;
    let timeouts = UpstreamTimeouts {
        connect: Duration::from_secs(1),
        idle: Duration::from_millis(200),
    };
    let upstream = Upstream::http(UpstreamKind::OpenAiCompatible, &url, None, timeouts).unwrap();
    let body = Bytes::from_static(br#"{"model":"m","input":"x"}"#);
    let outcome = upstream
        .forward(
            Method::POST,
            "/v1/embeddings",
            &client_headers(),
            body.clone(),
        )
        .await;
    assert!(matches!(outcome, Err(ForwardError::Timeout)), "{outcome:?}");

    let closed = Upstream::http(
        UpstreamKind::OpenAiCompatible,
        "http://127.0.0.1:9",
        None,
        timeouts,
    )
    .unwrap();
    let outcome = closed
        .forward(Method::POST, "/v1/embeddings", &client_headers(), body)
        .await;
    assert!(
        matches!(outcome, Err(ForwardError::Unreachable(_))),
        "{outcome:?}"
    );
}
