//! The built-in mock speaks OpenAI's wire format: JSON and SSE with usage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use axum::body::Body;
use http::Request;
use tollgate_mock::{MockOptions, router};
use tower::ServiceExt;

async fn call(body: &str, path: &str) -> (u16, String, String) {
    let (app, recorder) = router(MockOptions::default());
    let response = app
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(recorder.count(), 1);
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn chat_is_deterministic_with_realistic_usage() {
    let body =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there, mock!"}]}"#;
    let (status, content_type, first) = call(body, "/v1/chat/completions").await;
    let (_, _, second) = call(body, "/v1/chat/completions").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"));
    let a: serde_json::Value = serde_json::from_str(&first).unwrap();
    let b: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    assert_eq!(a["object"], "chat.completion");
    // 18 chars → 5 tokens, + 3 per message + 3 for the reply.
    assert_eq!(a["usage"]["prompt_tokens"], 11);
    assert_eq!(a["usage"]["completion_tokens"], 24);
    assert_eq!(a["usage"]["total_tokens"], 35);
    assert_eq!(a["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn streaming_sends_chunks_a_usage_chunk_and_done() {
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":5}"#;
    let (status, content_type, text) = call(body, "/v1/chat/completions").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/event-stream"));
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content.split(' ').count(), 5);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn embeddings_float_and_base64_and_errors() {
    let (status, _, text) = call(
        r#"{"model":"text-embedding-3-small","input":["a","bb"],"dimensions":8}"#,
        "/v1/embeddings",
    )
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let vector: Vec<f64> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(vector.len(), 8);
    let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3);

    let (_, _, text) = call(
        r#"{"model":"m","input":"a","encoding_format":"base64","dimensions":4}"#,
        "/v1/embeddings",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["data"][0]["embedding"].is_string());

    let (status, _, text) = call(r#"{"input":"a"}"#, "/v1/embeddings").await;
    assert_eq!(status, 400);
    assert!(text.contains("invalid_request_error"));
    let (status, _, _) = call("not json", "/v1/chat/completions").await;
    assert_eq!(status, 400);
}
