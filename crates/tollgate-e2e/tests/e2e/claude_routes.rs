//! Claude through Tollgate: the OpenAI format translated to Anthropic's
//! Messages API and back, and the native `/v1/messages` route, with the
//! official SDKs (free routes) and paid on the local chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use common::session::session_challenge;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::Ledger;
use tollgate_mock::MockOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_talk_to_claude_through_tollgate() {
    let site = python_packages(CLAUDE_SDKS_PY).await;
    let h = Harness::start().await;
    let gw = h
        .gateway(&Options {
            free: true,
            ..Options::default()
        })
        .await;
    let out = run_python("claude_clients.py", &gw.url, &site).await;

    // Translated, plain: the mock answers min(24, max_tokens) words.
    assert_eq!(out["chat"]["object"], "chat.completion");
    assert_eq!(out["chat"]["model"], "claude-sonnet-4-5");
    assert_eq!(out["chat"]["finish_reason"], "length");
    assert_eq!(out["chat"]["completion_tokens"], 16);
    assert!(out["chat"]["prompt_tokens"].as_u64().unwrap() > 0);
    // Streamed: role first, 8 words, usage chunk on request.
    assert_eq!(out["stream"]["roles"], json!(["assistant"]));
    assert_eq!(
        out["stream"]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        8
    );
    assert_eq!(out["stream"]["finish_reason"], "length");
    assert_eq!(out["stream"]["usage"], 8);
    // Tools, plain and streamed, and the tool result round trip.
    assert_eq!(out["tools"]["finish_reason"], "tool_calls");
    assert_eq!(out["tools"]["name"], "get_weather");
    assert_eq!(out["tools"]["arguments"], json!({"location": "Paris"}));
    assert_eq!(out["tools"]["id_prefix"], "toolu_");
    assert!(out["tool_followup"]["text"].as_str().unwrap().len() > 1);
    assert_eq!(out["stream_tools"]["count"], 1);
    assert_eq!(out["stream_tools"]["name"], "get_weather");
    assert_eq!(
        out["stream_tools"]["arguments"],
        json!({"location": "Paris"})
    );
    assert_eq!(out["stream_tools"]["finish_reason"], "tool_calls");
    // What Anthropic cannot do is refused, naming the parameter.
    assert_eq!(out["refused"]["status"], 400);
    assert_eq!(out["refused"]["param"], "n");
    // Native route with the anthropic package.
    assert_eq!(out["messages"]["stop_reason"], "max_tokens");
    assert_eq!(out["messages"]["output_tokens"], 16);
    assert_eq!(
        out["messages_stream"]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        8
    );
    assert_eq!(out["messages_stream"]["stop_reason"], "max_tokens");

    // The mock (which validates every Messages request) saw the upstream key,
    // a default anthropic-version, and never the client's key.
    let seen = h.upstream.requests();
    let messages: Vec<_> = seen.iter().filter(|r| r.path == "/v1/messages").collect();
    assert_eq!(
        messages.len(),
        7,
        "n=2 was refused before reaching the upstream"
    );
    for request in &messages {
        assert_eq!(request.headers["x-api-key"], UPSTREAM_KEY);
        assert!(request.headers.contains_key("anthropic-version"));
        assert!(!format!("{:?}", request.headers).contains("not-used"));
    }
    gw.stop().await;
}

fn claude_chat(stream: bool) -> String {
    json!({
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": 400,
        "stream": stream,
    })
    .to_string()
}

fn native_messages() -> String {
    json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_claude_routes_are_paid_with_a_charge() {
    let h = Harness::start().await;
    let options = Options {
        quoted: true,
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    for (path, body) in [
        ("/v1/chat/completions", claude_chat(false)),
        ("/v1/messages", native_messages()),
    ] {
        let url = format!("{}{path}", gw.url);
        let unpaid = post(&h.http, &url, &body, None).await;
        let challenge = challenges(&unpaid)
            .into_iter()
            .find(|c| c.intent.as_str() == "charge")
            .unwrap();
        let price: u128 = challenge.request.decode_value().unwrap()["amount"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let before = h.balance(recipient).await;
        let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
        let paid = post(&h.http, &url, &body, Some(&auth)).await;
        assert_eq!(paid.status(), 200, "{path}");
        assert!(paid.headers().get("payment-receipt").is_some());
        let answer: Value = paid.json().await.unwrap();
        if path == "/v1/messages" {
            assert_eq!(answer["type"], "message");
        } else {
            assert_eq!(answer["object"], "chat.completion");
        }
        assert_eq!(h.balance(recipient).await - before, price, "{path}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_paid_streamed_claude_call_debits_exactly_its_usage() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        quoted: true,
        session: true,
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let table = tollgate_pricing::PriceTable::builtin();
    let payer = h.payer();

    for (path, body) in [
        ("/v1/chat/completions", claude_chat(true)),
        (
            "/v1/messages",
            json!({
                "model": "claude-haiku-4-5",
                "max_tokens": 300,
                "stream": true,
                "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
            })
            .to_string(),
        ),
    ] {
        let url = format!("{}{path}", gw.url);
        let challenge = session_challenge(&challenges(&post(&h.http, &url, &body, None).await));
        let quote: u128 = challenge.request.decode_value().unwrap()["amount"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let (channel, open) = payer.open(&challenge, 1_000_000, quote).await;
        let response = post(&h.http, &url, &body, Some(&open)).await;
        assert_eq!(response.status(), 200, "{path}");
        let mut text = String::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        // The usage the upstream reported, priced by the table.
        let usage = if path == "/v1/messages" {
            let start = text
                .split("\n\n")
                .find(|e| e.contains("message_start"))
                .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                .unwrap();
            let start: Value = serde_json::from_str(start).unwrap();
            let delta = text
                .split("\n\n")
                .find(|e| e.contains("\"message_delta\""))
                .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                .unwrap();
            let delta: Value = serde_json::from_str(delta).unwrap();
            let mut usage =
                tollgate_pricing::UsageDetail::from_anthropic(&start["message"]["usage"]).unwrap();
            usage.output_tokens = delta["usage"]["output_tokens"].as_u64().unwrap();
            (usage, "claude-haiku-4-5")
        } else {
            // The client did not ask for usage: the gateway's usage chunk is
            // hidden, so read what the ledger recorded instead.
            assert!(!text.contains("prompt_tokens"));
            // Usage records are written in the background: wait for it.
            let ledger = h.ledger(&options);
            let mut records = Vec::new();
            for _ in 0..100 {
                records = ledger.usage_for(&challenge.id).await.unwrap();
                if !records.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let r = records.last().expect("the usage was recorded");
            (
                tollgate_pricing::UsageDetail {
                    input_tokens: r.input_tokens,
                    cached_tokens: r.cached_tokens,
                    output_tokens: r.output_tokens,
                    ..Default::default()
                },
                "claude-sonnet-4-5",
            )
        };
        let quote_obj = tollgate_pricing::Quote {
            model: usage.1.into(),
            amount: quote,
            description: String::new(),
            input_units: 0,
            output_units: 0,
        };
        let endpoint = if path == "/v1/messages" {
            tollgate_pricing::Endpoint::Messages
        } else {
            tollgate_pricing::Endpoint::Chat
        };
        let expected =
            tollgate_pricing::actual_cost_detail(&table, endpoint, &quote_obj, Some(usage.0));
        assert!(usage.0.output_tokens > 0 && expected < quote, "{path}");
        let final_receipt: Value = text
            .split("\n\n")
            .find(|e| e.starts_with("event: payment-receipt"))
            .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .expect("a final receipt event");
        assert_eq!(final_receipt["spent"], expected.to_string(), "{path}");
        let stored = h.stored_channel(&options, channel).await;
        assert_eq!((stored.spent, stored.reserved), (expected, 0), "{path}");
    }
    gw.stop().await;
}
