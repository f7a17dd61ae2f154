//! Wire compatibility: the official `openai` Python package talks to
//! Tollgate exactly as it talks to OpenAI (routes configured free).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_package_uses_every_route() {
    let site = python_packages(OPENAI_PY).await;
    let h = Harness::start().await;
    let gw = h
        .gateway(&Options {
            free: true,
            ..Options::default()
        })
        .await;
    let out = run_python("openai_client.py", &gw.url, &site).await;

    // The mock answers 24 tokens; 16 were allowed.
    assert_eq!(out["chat"]["finish_reason"], "length");
    assert!(out["chat"]["total_tokens"].as_u64().unwrap() > 16);
    assert_eq!(
        out["stream"]["text"].as_str().unwrap().split(' ').count(),
        8
    );
    assert_eq!(out["stream"]["finish_reason"], "length");
    assert_eq!(out["stream"]["usage_chunks"], 0);
    assert_eq!(out["stream_with_usage"], serde_json::json!([8]));
    assert_eq!(out["embeddings"]["count"], 2);
    assert_eq!(out["images"], serde_json::json!(["89504e47", "89504e47"]));
    assert_eq!(out["error"]["status"], 400);
    assert_eq!(out["responses"]["output_tokens"], 10);
    assert_eq!(
        out["responses"]["text"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        10
    );
    assert_eq!(
        out["responses_stream"]["types"],
        serde_json::json!([
            "response.completed",
            "response.created",
            "response.output_text.delta"
        ])
    );
    assert_eq!(out["speech"]["riff"], "RIFF");
    assert_eq!(out["transcription"], "Pay per request, settle on chain.");

    // Every request reached the upstream with our key, never the client's.
    let seen = h.upstream.requests();
    let paths: Vec<_> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(seen.len(), 10, "{paths:?} {out}");
    for request in &seen {
        assert_eq!(
            request.headers["authorization"],
            format!("Bearer {UPSTREAM_KEY}")
        );
        assert!(!format!("{:?}", request.headers).contains("sk-client-key"));
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_package_lists_models_with_prices() {
    let site = python_packages(OPENAI_PY).await;
    let h = Harness::start().await;
    let gw = h
        .gateway(&Options {
            quoted: true,
            ..Options::default()
        })
        .await;
    let ids = run_python("models.py", &gw.url, &site).await;
    let ids: Vec<&str> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for expected in ["gpt-4o", "o3", "text-embedding-3-small", "dall-e-3"] {
        assert!(ids.contains(&expected), "{expected} missing from {ids:?}");
    }
    let listing: serde_json::Value = h
        .http
        .get(format!("{}/v1/models", gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gpt4o = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "gpt-4o")
        .unwrap();
    assert_eq!(gpt4o["tollgate"]["prices"]["input_per_mtok"], "2500000");
    assert_eq!(
        h.upstream.count(),
        0,
        "the listing is served by the gateway"
    );
    gw.stop().await;
}
