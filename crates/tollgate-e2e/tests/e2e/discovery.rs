//! Discovery (`draft-payment-discovery-00`): `/openapi.json` passes the
//! reference SDK's own parser and validator (`mppx/discovery`, and the
//! `mppx discover validate` CLI), its offers match the 402 challenges of the
//! same routes, and `/llms.txt` lists routes, models, prices and how to pay.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use common::node::{mppx_prefix, run_script};
use common::*;
use serde_json::Value;
use tollgate_devnet::PATH_USD;
use tollgate_mock::MockOptions;

const PLANS: &str = r#"
[plans]
voucher_bucket = 200000
suggested_deposit = 5000000

[plans.models."gpt-4o-mini"]
upstream = "openai"

[plans.plans.Plus]
models = ["gpt-4o-mini"]
max_input_tokens = 60000
max_output_tokens = 512
"#;

/// Checks every paid operation of `gw` against its live 402.
/// `quoted`: paths whose offers must be quoted per request.
async fn check(h: &Harness, gw: &Gateway, quoted: &[&str]) -> Vec<Value> {
    let prefix = mppx_prefix().await;
    let report = run_script(&prefix, "discovery_check.mjs", &[("TOLLGATE_URL", &gw.url)]).await;
    assert_eq!(
        report["issues"],
        serde_json::json!([]),
        "the SDK's validator: {report}"
    );
    assert_eq!(report["contentType"], "application/json");
    assert_eq!(report["cacheControl"], "public, max-age=300");
    assert_eq!(report["serviceInfo"]["docs"]["llms"], "/llms.txt");
    let operations = report["operations"].as_array().unwrap().clone();
    assert!(!operations.is_empty());
    for operation in &operations {
        let path = operation["path"].as_str().unwrap();
        let method = operation["method"].as_str().unwrap();
        assert!(
            operation["multiOffer"].as_bool().unwrap(),
            "{path}: the multi-offer form"
        );
        assert!(operation["has402"].as_bool().unwrap(), "{path}");
        let offers = operation["offers"].as_array().unwrap();
        if path.ends_with("/transcriptions") {
            continue; // multipart: no JSON example to send
        }
        let url = format!("{}{path}", gw.url);
        let example = &operation["example"];
        let response = if method == "GET" {
            h.http.get(&url).send().await.unwrap()
        } else {
            assert_eq!(method, "POST", "{path}");
            assert!(example.is_object(), "{path}: a priceable example");
            post(&h.http, &url, &example.to_string(), None).await
        };
        if response.status() != 402 {
            panic!("{path}: {example} → {}", response.text().await.unwrap());
        }
        let challenges = challenges(&response);
        assert_eq!(
            challenges.len(),
            offers.len(),
            "{path}: one offer per challenge"
        );
        for (offer, challenge) in offers.iter().zip(&challenges) {
            let request = challenge.request.decode_value().unwrap();
            assert_eq!(offer["method"], challenge.method.as_str(), "{path}");
            assert_eq!(offer["intent"], challenge.intent.as_str(), "{path}");
            assert_eq!(
                offer["currency"].as_str().unwrap().to_lowercase(),
                request["currency"].as_str().unwrap().to_lowercase(),
                "{path}"
            );
            assert_eq!(
                offer["currency"].as_str().unwrap().to_lowercase(),
                PATH_USD.to_lowercase()
            );
            let is_plan = path == "/v1/mpp/chat/completions";
            match &offer["amount"] {
                // Quoted per request: the challenge's amount is this body's.
                Value::Null => {
                    assert!(!is_plan, "{path}: {offer}");
                    let amount: u128 = request["amount"].as_str().unwrap().parse().unwrap();
                    assert!(amount > 0);
                }
                Value::String(fixed) => {
                    assert!(!quoted.contains(&path) || is_plan, "{path}: {offer}");
                    assert_eq!(fixed, request["amount"].as_str().unwrap(), "{path}");
                }
                other => panic!("{path}: amount {other}"),
            }
            assert!(offer["description"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }
    operations
}

async fn validate_with_cli(gw: &Gateway) -> String {
    let prefix = mppx_prefix().await;
    let home = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(prefix.join("node_modules/.bin/mppx"))
        .args(["discover", "validate", &format!("{}/openapi.json", gw.url)])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "mppx discover validate: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quoted_routes_sessions_and_plans_are_discoverable_and_match_their_402s() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        quoted: true,
        session: true,
        plans: Some(PLANS.into()),
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let operations = check(&h, &gw, &["/v1/chat/completions", "/v1/embeddings"]).await;
    let paths: Vec<&str> = operations
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    for expected in [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/embeddings",
        "/v1/images/generations",
        "/v1/responses",
        "/v1/audio/speech",
        "/v1/audio/transcriptions",
        "/v1/mpp/chat/completions",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} is discoverable: {paths:?}"
        );
    }
    let chat = &operations[paths
        .iter()
        .position(|p| *p == "/v1/chat/completions")
        .unwrap()];
    let intents: Vec<&str> = chat["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["intent"].as_str().unwrap())
        .collect();
    assert_eq!(intents, ["charge", "session"]);
    let plan = &operations[paths
        .iter()
        .position(|p| *p == "/v1/mpp/chat/completions")
        .unwrap()];
    assert_eq!(plan["offers"][0]["amount"], "200000");
    assert!(validate_with_cli(&gw).await.contains("valid"));

    // llms.txt: text, every route, the models and prices, how to pay.
    let response = h
        .http
        .get(format!("{}/llms.txt", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for needle in [
        "POST /v1/chat/completions",
        "POST /v1/mpp/chat/completions",
        "gpt-4o-mini",
        "claude-haiku-4-5",
        "/openapi.json",
        "402 Payment Required",
        "session",
        "max_tokens",
    ] {
        assert!(text.contains(needle), "llms.txt lacks {needle:?}:\n{text}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixed_price_routes_advertise_their_amount() {
    let h = Harness::start().await;
    let options = Options {
        extra: "[claude]\ncount_tokens_charge = 500\n".into(),
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let operations = check(&h, &gw, &["/v1/images/generations"]).await;
    let count_tokens = operations
        .iter()
        .find(|o| o["path"] == "/v1/messages/count_tokens")
        .expect("a paid count_tokens is discoverable");
    assert_eq!(count_tokens["offers"][0]["amount"], "500");
    let chat = operations
        .iter()
        .find(|o| o["path"] == "/v1/chat/completions")
        .unwrap();
    assert_eq!(chat["offers"].as_array().unwrap().len(), 1);
    assert_eq!(chat["offers"][0]["amount"], CHAT_PRICE.to_string());
    assert_eq!(chat["offers"][0]["intent"], "charge");
    gw.stop().await;
}
