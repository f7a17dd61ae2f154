//! What clients need beyond the answer: errors that keep `retry-after` and
//! the request ids (native and translated), Anthropic's error shape on
//! `/v1/messages` (the gateway's own 400s and 402s included), OpenAI's on
//! the chat route, refusals before any challenge, the free helper routes,
//! upstream headers kept from the client, and the exact cost of a
//! translated request that writes and then reads the prompt cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use common::session::session_challenge;
use common::*;
use serde_json::{Value, json};
use tollgate_ledger::Ledger;
use tollgate_mock::{MockOptions, RATE_LIMIT_PROMPT};
use tollgate_pricing::{Endpoint, PriceTable, Quote, UsageDetail, actual_cost_detail};

async fn send(h: &Harness, url: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = h.http.post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Headers of the upstream's own that never reach the client.
fn assert_no_upstream_internals(response: &reqwest::Response) {
    for name in [
        "server",
        "openai-organization",
        "anthropic-organization-id",
        "x-ratelimit-remaining-requests",
    ] {
        assert!(
            response.headers().get(name).is_none(),
            "{name} reached the client"
        );
    }
}

const ANTHROPIC: (&str, &str) = ("anthropic-version", "2023-06-01");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_keep_retry_after_and_request_ids_native_and_translated() {
    let h = Harness::start().await;
    let gw = h
        .gateway(&Options {
            free: true,
            ..Options::default()
        })
        .await;
    let limited = json!([{"role": "user", "content": RATE_LIMIT_PROMPT}]);

    // Translated: Anthropic's 429 becomes OpenAI's, with its retry hint and
    // its request id (also as OpenAI's x-request-id).
    let url = format!("{}/v1/chat/completions", gw.url);
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 32, "messages": limited});
    let r = send(&h, &url, &body, &[]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let request_id = r.headers()["request-id"].to_str().unwrap().to_owned();
    assert!(request_id.starts_with("req_01"), "{request_id}");
    assert_eq!(r.headers()["x-request-id"], request_id.as_str());
    assert_no_upstream_internals(&r);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");

    // Native Anthropic and native OpenAI 429s pass through with theirs.
    let url = format!("{}/v1/messages", gw.url);
    let r = send(&h, &url, &body, &[ANTHROPIC]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(r.headers().contains_key("request-id"));
    assert_no_upstream_internals(&r);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    let url = format!("{}/v1/chat/completions", gw.url);
    let gpt = json!({"model": "gpt-4o-mini", "messages": limited});
    let r = send(&h, &url, &gpt, &[]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.headers()["x-request-id"], "req_mock_rate_limited");
    assert_no_upstream_internals(&r);

    // Answers keep their request id too, and nothing of the upstream's own.
    let ok = json!({"model": "claude-sonnet-4-5", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Hi"}]});
    let r = send(&h, &url, &ok, &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    assert_no_upstream_internals(&r);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_on_messages_speak_anthropic_and_refusals_come_before_any_challenge() {
    let h = Harness::start().await;
    let gw = h
        .gateway(&Options {
            quoted: true,
            ..Options::default()
        })
        .await;
    let messages = format!("{}/v1/messages", gw.url);
    let chat = format!("{}/v1/chat/completions", gw.url);

    // The gateway's own 400 on /v1/messages, in Anthropic's shape.
    let no_max =
        json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]});
    let r = send(&h, &messages, &no_max, &[ANTHROPIC]).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("www-authenticate").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "missing-parameter");
    assert_eq!(body["error"]["param"], "max_tokens");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
    assert_eq!(body["status"], 400);

    // Its 402: still the challenges and the problem fields, readable by the
    // Anthropic SDK.
    let ok = json!({"model": "claude-haiku-4-5", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hi"}]});
    let r = send(&h, &messages, &ok, &[ANTHROPIC]).await;
    let offered = challenges(&r);
    assert!(!offered.is_empty());
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "billing_error");
    assert_eq!(body["error"]["code"], "payment-required");
    assert_eq!(
        body["problem_type"],
        "https://paymentauth.org/problems/payment-required"
    );
    assert_eq!(body["challengeId"], offered[0].id.as_str());

    // The chat route keeps OpenAI's shape, and a parameter the translation
    // refuses is refused before any challenge.
    let seeded = json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "seed": 7,
        "messages": [{"role": "user", "content": "Hi"}]});
    let r = send(&h, &chat, &seeded, &[]).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("www-authenticate").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "seed");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body.get("type").is_none_or(|t| t != "error"));
    // Parameters that now map are priced and challenged, not refused.
    let mapped = json!({"model": "claude-sonnet-4-5", "max_completion_tokens": 4000,
        "reasoning_effort": "low", "metadata": {"team": "a"}, "user": "alice@example.com",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x",
            "schema": {"type": "object", "properties": {}, "additionalProperties": false}}},
        "messages": [{"role": "user", "content": "Hi"}]});
    let r = send(&h, &chat, &mapped, &[]).await;
    let offered = challenges(&r);
    // Quoted as sent: the 4000-token cap, thinking included, is output.
    let description = offered[0].description.clone().unwrap_or_default();
    assert!(
        description.contains("up to 4000 output tokens"),
        "{description}"
    );
    assert_eq!(h.upstream.count(), 0);

    // Free helpers: models in both shapes, count_tokens with the estimator.
    let list: Value = h
        .http
        .get(format!("{}/v1/models", gw.url))
        .header(ANTHROPIC.0, ANTHROPIC.1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["has_more"], false);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"claude-haiku-4-5-20251001"), "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("claude-")));
    assert_eq!(list["data"][0]["type"], "model");
    assert_eq!(list["first_id"], ids[0]);
    let model: Value = h
        .http
        .get(format!("{}/v1/models/claude-haiku-4-5", gw.url))
        .header(ANTHROPIC.0, ANTHROPIC.1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["type"], "model");
    assert_eq!(model["display_name"], "Claude Haiku 4.5");
    let missing = h
        .http
        .get(format!("{}/v1/models/no-such-model", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    let count_body = json!({"model": "claude-haiku-4-5", "system": "Be brief.",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]});
    let r = send(
        &h,
        &format!("{}/v1/messages/count_tokens", gw.url),
        &count_body,
        &[ANTHROPIC],
    )
    .await;
    assert_eq!(r.status(), 200);
    let counted: Value = r.json().await.unwrap();
    let (_, expected) =
        tollgate_pricing::quote::messages_input_tokens(&PriceTable::builtin(), &count_body)
            .unwrap();
    assert_eq!(counted, json!({"input_tokens": expected}));
    assert_eq!(h.upstream.count(), 0, "helpers never reach the upstream");
    gw.stop().await;
}

/// The usage record of `challenge_id` (written in the background).
async fn recorded(
    h: &Harness,
    options: &Options,
    challenge_id: &str,
) -> tollgate_ledger::UsageRecord {
    let ledger = h.ledger(options);
    for _ in 0..100 {
        if let Some(r) = ledger.usage_for(challenge_id).await.unwrap().pop() {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no usage recorded for {challenge_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_translated_request_that_writes_then_reads_the_cache_costs_exactly_its_usage() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        quoted: true,
        session: true,
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let table = PriceTable::builtin();
    let payer = h.payer();
    let url = format!("{}/v1/chat/completions", gw.url);
    // A long system prompt cached for an hour, through the OpenAI format.
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Policy: be exact. ".repeat(300),
                "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
            {"role": "user", "content": "Explain payment channels in one line."}
        ]
    })
    .to_string();

    let mut channel = None;
    let mut authorized = 0;
    // (quote, OpenAI usage, recorded cost) per turn.
    let mut turns = Vec::new();
    for turn in 0..2 {
        let challenge = session_challenge(&challenges(&post(&h.http, &url, &body, None).await));
        let request = challenge.request.decode_value().unwrap();
        let quote: u128 = request["amount"].as_str().unwrap().parse().unwrap();
        let description = challenge.description.clone().unwrap_or_default();
        assert!(
            description.contains("as cache writes"),
            "the quote prices the cached prefix as a write: {description}"
        );
        authorized += quote;
        let credential = match channel {
            None => {
                let (opened, credential) = payer.open(&challenge, 1_000_000, authorized).await;
                channel = Some(opened);
                credential
            }
            Some(opened) => payer.pay_voucher(&challenge, opened, authorized),
        };
        let response = post(&h.http, &url, &body, Some(&credential)).await;
        assert_eq!(response.status(), 200, "turn {turn}");
        let answer: Value = response.json().await.unwrap();
        let record = recorded(&h, &options, &challenge.id).await;
        turns.push((quote, answer["usage"].clone(), record.actual_cost));
    }
    let tokens = |usage: &Value, pointer: &str| usage.pointer(pointer).unwrap().as_u64().unwrap();
    let (quote1, usage1, cost1) = &turns[0];
    let (quote2, usage2, cost2) = &turns[1];
    // The second turn reads the prefix the first one wrote (for an hour).
    let prefix = tokens(usage2, "/prompt_tokens_details/cached_tokens");
    assert!(prefix > 1000, "{usage2}");
    assert_eq!(tokens(usage1, "/prompt_tokens_details/cached_tokens"), 0);
    assert_eq!(
        tokens(usage1, "/prompt_tokens"),
        tokens(usage2, "/prompt_tokens")
    );
    let priced = |quote: u128, detail: UsageDetail| {
        let quote = Quote {
            model: "claude-sonnet-4-5-20250929".into(),
            amount: quote,
            description: String::new(),
            input_units: 0,
            output_units: 0,
        };
        actual_cost_detail(&table, Endpoint::Chat, &quote, Some(detail))
    };
    let first = priced(
        *quote1,
        UsageDetail {
            input_tokens: tokens(usage1, "/prompt_tokens"),
            cache_write_1h_tokens: prefix,
            output_tokens: tokens(usage1, "/completion_tokens"),
            ..UsageDetail::default()
        },
    );
    let second = priced(
        *quote2,
        UsageDetail {
            input_tokens: tokens(usage2, "/prompt_tokens"),
            cached_tokens: prefix,
            output_tokens: tokens(usage2, "/completion_tokens"),
            ..UsageDetail::default()
        },
    );
    assert_eq!(*cost1, first, "turn 1 costs its 1-hour cache writes");
    assert_eq!(*cost2, second, "turn 2 costs its cache reads");
    assert!(first > second, "writes cost more than reads");
    assert!(first < *quote1 && second < *quote2, "exact, not capped");
    let stored = h.stored_channel(&options, channel.unwrap()).await;
    assert_eq!((stored.spent, stored.reserved), (first + second, 0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_can_be_priced_and_is_then_paid_like_any_charge() {
    let h = Harness::start().await;
    let options = Options {
        quoted: true,
        extra: "[claude]\ncount_tokens_charge = 500\n".into(),
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/messages/count_tokens", gw.url);
    let body = json!({"model": "claude-haiku-4-5",
        "messages": [{"role": "user", "content": "Hello"}]});
    let r = send(&h, &url, &body, &[ANTHROPIC]).await;
    let offered = challenges(&r);
    let amount = offered[0].request.decode_value().unwrap()["amount"].clone();
    assert_eq!(amount, "500");
    let refusal: Value = r.json().await.unwrap();
    assert_eq!(refusal["type"], "error", "Anthropic's shape: {refusal}");
    let auth = pay(&offered[0], signer(PAYER), &h.devnet.rpc_url()).await;
    let paid = h
        .http
        .post(&url)
        .header("authorization", auth)
        .header(ANTHROPIC.0, ANTHROPIC.1)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    assert!(paid.headers().contains_key("payment-receipt"));
    let counted: Value = paid.json().await.unwrap();
    let (_, expected) =
        tollgate_pricing::quote::messages_input_tokens(&PriceTable::builtin(), &body).unwrap();
    assert_eq!(counted, json!({"input_tokens": expected}));
    assert_eq!(h.upstream.count(), 0, "counted in-process");
    gw.stop().await;
}
