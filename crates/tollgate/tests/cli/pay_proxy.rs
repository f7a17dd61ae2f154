//! `tollgate pay proxy`: the official `openai` and `anthropic` Python SDKs,
//! pointed at the paying proxy, complete paid calls (plain and streamed)
//! against a Tollgate gateway on a local chain whose routes offer both
//! charge and session. Once through the CLI (charge), once through the
//! library's `proxy::serve` in-process (session, with a stream that pauses
//! for a voucher the proxy answers while the client sees a clean, live
//! stream), and once more through the CLI on a v2-only gateway (a channel
//! on the TIP-20 channel reserve, closed for exactly what was spent).
//! Refusals come back as JSON errors the SDKs understand, with nothing
//! paid.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::{common, support};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use support::sdk::{CliProxy, charged, run_script};
use tollgate_client::{Client, Config, IntentChoice, State};
use tollgate_devnet::{ALPHA_USD, DEV_ACCOUNTS};
use tollgate_ledger::ChannelBook;
use tollgate_mock::MockOptions;

const DEPOSIT: u128 = 100_000;
const SCRIPT: &str = "sdk_proxy_clients.py";

fn paid_options() -> Options {
    Options {
        quoted: true,
        session: true,
        session_extra: "stream_voucher_timeout_secs = 5\n".into(),
        ..Options::default()
    }
}

fn assert_sdk_answers(out: &Value) {
    assert_eq!(out["chat"]["object"], "chat.completion", "{out:#}");
    assert_eq!(out["chat"]["finish_reason"], "length");
    assert_eq!(out["chat"]["completion_tokens"], 16);
    assert_eq!(
        out["chat"]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        16
    );
    // Every streamed chunk is a chat chunk: no payment event leaked in.
    assert_eq!(
        out["chat_stream"]["objects"],
        json!(["chat.completion.chunk"]),
        "{out:#}"
    );
    assert_eq!(
        out["chat_stream"]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        12
    );
    assert_eq!(out["chat_stream"]["finish_reason"], "length");
    assert_eq!(out["messages"]["type"], "message");
    assert_eq!(out["messages"]["stop_reason"], "max_tokens");
    assert_eq!(out["messages"]["output_tokens"], 16);
    assert_eq!(
        out["messages_stream"]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        10
    );
    assert_eq!(out["messages_stream"]["stop_reason"], "max_tokens");
    assert_eq!(out["messages_stream"]["output_tokens"], 10);
}

/// The mock saw the SDKs' four calls (from the `from`th request on), each
/// without the SDKs' keys.
fn assert_upstream_saw_the_calls(h: &Harness, from: usize) {
    let seen = h.upstream.requests();
    let calls = &seen[from..(from + 4).min(seen.len())];
    let paths: Vec<&str> = calls.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/messages",
            "/v1/messages"
        ]
    );
    for call in calls {
        for (name, value) in &call.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !value.contains("client-key-not-for-upstream"),
                "{name}: {value}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_sdks_pay_charges_through_the_cli_proxy() {
    let site = python_packages(CLAUDE_SDKS_PY).await;
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = paid_options();
    let gw = h.gateway(&options).await;
    let payer = DEV_ACCOUNTS[PAYER].address;
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let (payer_before, recipient_before) = (h.balance(payer).await, h.balance(recipient).await);

    // A cap below any price: both SDKs get a clear JSON refusal; nothing is
    // signed, nothing reaches the upstream.
    let refusing = CliProxy::start(&h, &gw.url, &["--intent", "charge", "--max-amount", "1"]).await;
    let out = run_script(SCRIPT, &[&refusing.url, "refused"], &site).await;
    for call in ["chat", "messages"] {
        let refusal = &out[call];
        assert_eq!(refusal["refused"], true, "{out:#}");
        assert_eq!(refusal["status"], 402);
        assert_eq!(refusal["type"], "payment_refused");
        assert_eq!(refusal["code"], "spend_policy");
        let message = refusal["message"].as_str().unwrap();
        assert!(message.contains("above --max-amount 1"), "{message}");
        assert!(message.contains("nothing was signed or paid"), "{message}");
    }
    refusing.stop().await;
    assert_eq!(h.upstream.count(), 0);
    assert_eq!(
        (h.balance(payer).await, h.balance(recipient).await),
        (payer_before, recipient_before)
    );

    // Paying: charge for every call (`-v` shows each payment).
    let recipient_arg = recipient.to_string();
    let proxy = CliProxy::start(
        &h,
        &gw.url,
        &[
            "--intent",
            "charge",
            "--allow-recipient",
            &recipient_arg,
            "--max-amount",
            "1000000",
            "-v",
        ],
    )
    .await;
    let out = run_script(SCRIPT, &[&proxy.url], &site).await;
    assert_sdk_answers(&out);

    // A raw request: the receipt header comes through; the client's own
    // Authorization is not forwarded (the payment credential is).
    let response = h
        .http
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("authorization", "Bearer sk-client-key-not-for-upstream")
        .header("content-type", "application/json")
        .body(chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let receipt = response.headers()["payment-receipt"].to_str().unwrap();
    assert!(mpp::parse_receipt(receipt).unwrap().is_success());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");

    let stderr = proxy.stop().await;
    let amounts = charged(&stderr);
    assert_eq!(amounts.len(), 5, "one charge per call: {stderr}");
    assert!(amounts.iter().all(|&a| a > 0));
    let total: u128 = amounts.iter().sum();
    assert_eq!(h.balance(recipient).await - recipient_before, total);
    assert_upstream_saw_the_calls(&h, 0);
    assert_eq!(h.upstream.count(), 5);
    // Charges only: no channel on the gateway.
    assert!(h.ledger(&options).channels().await.unwrap().is_empty());
    gw.stop().await;
}

/// The library's proxy, in-process: returns its URL.
async fn library_proxy(h: &Harness, target: &str, authorize: Option<u128>) -> String {
    let mut config = Config::new(signer(PAYER));
    config.rpc_url = Some(h.devnet.rpc_url());
    config.state_path = h.dir.path().join("proxy-pay.db");
    config.intent = IntentChoice::Session;
    config.policy.max_deposit = Some(DEPOSIT);
    config.policy.authorize = authorize;
    config.policy.allow_recipients = vec![DEV_ACCOUNTS[RECIPIENT].address.parse().unwrap()];
    config.policy.allow_escrows = vec![h.devnet.escrow().unwrap().parse().unwrap()];
    // Fees in another token keep the pathUSD accounting exact.
    config.fee_token = Some(ALPHA_USD.parse().unwrap());
    let client = Client::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let target = target.parse().unwrap();
    tokio::spawn(tollgate_client::proxy::serve(listener, target, client));
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_sdks_pay_a_session_through_the_library_proxy() {
    let site = python_packages(CLAUDE_SDKS_PY).await;
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 150,
        chunk_interval: Duration::from_millis(10),
        ..MockOptions::default()
    })
    .await;
    let options = paid_options();
    let gw = h.gateway(&options).await;
    let payer = DEV_ACCOUNTS[PAYER].address;
    let payer_before = h.balance(payer).await;
    let proxy = library_proxy(&h, &gw.url, None).await;

    let out = run_script(SCRIPT, &[&proxy], &site).await;
    assert_sdk_answers(&out);
    assert_upstream_saw_the_calls(&h, 0);

    // One channel, opened by the first call and paid with vouchers since.
    let ledger = h.ledger(&options);
    let channels = ledger.channels().await.unwrap();
    assert_eq!(channels.len(), 1);
    let channel = &channels[0];
    assert_eq!(channel.deposit, DEPOSIT);
    assert!(channel.spent > 0, "{channel:?}");
    assert_eq!(payer_before - h.balance(payer).await, DEPOSIT);
    // The local state learned what was spent, streams included (their
    // final receipts were read, though not passed on to the SDKs).
    let state = State::open(&h.dir.path().join("proxy-pay.db")).unwrap();
    let local = eventually(|| {
        let local = state.list().unwrap().remove(0);
        (local.spent == channel.spent).then_some(local)
    })
    .await
    .unwrap_or_else(|| panic!("the local state caught up with {channel:?}"));
    assert_eq!(format!("{:#x}", local.channel_id), channel.channel_id);

    // A stream authorized for only 300 beyond what was spent: it pauses for
    // a voucher, the proxy answers it, and the client sees a clean stream
    // (no payment events) that flows live, chunk by chunk.
    let spent_before = channel.spent;
    let stingy = library_proxy(&h, &gw.url, Some(300)).await;
    let body = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Explain payment channels."}],
        "max_tokens": 4000,
        "stream": true,
    });
    let response = h
        .http
        .post(format!("{stingy}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("payment-receipt"));
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(!response.headers().contains_key("content-length"));
    let started = Instant::now();
    let mut stream = response.bytes_stream();
    let mut text = Vec::new();
    let mut first_content = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if first_content.is_none() && chunk.windows(9).any(|w| w == b"\"content\"") {
            first_content = Some(started.elapsed());
        }
        text.extend_from_slice(&chunk);
    }
    let total = started.elapsed();
    let text = String::from_utf8(text).unwrap();
    assert!(!text.contains("payment-need-voucher"), "{text}");
    assert!(!text.contains("payment-receipt"), "{text}");
    assert!(!text.contains("event: payment"), "{text}");
    let content = text.matches("\"content\"").count();
    assert!(content >= 150, "the whole answer streamed: {content}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // 150 chunks 10 ms apart: the first arrived long before the last.
    let first = first_content.expect("content arrived");
    assert!(
        total.saturating_sub(first) >= Duration::from_millis(700),
        "streamed live: first content after {first:?}, end after {total:?}"
    );
    let after = ledger.channel(&channel.channel_id).await.unwrap().unwrap();
    assert!(
        after.spent - spent_before > 300,
        "a mid-stream voucher paid beyond the first authorization: {after:?}"
    );
    assert_eq!(
        ledger.channels().await.unwrap().len(),
        1,
        "the same channel"
    );
    gw.stop().await;
}

/// `tollgate pay proxy --intent session` on a v2-only gateway: the
/// official SDKs pay through a channel on the TIP-20 channel reserve; a
/// second proxy on the same state file authorizes only 300 ahead, so a
/// long stream pauses for vouchers the proxy answers while the client sees
/// a clean stream; the library then closes for exactly what was spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_sdks_pay_a_v2_session_through_the_cli_proxy() {
    let site = python_packages(CLAUDE_SDKS_PY).await;
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 150,
        ..MockOptions::default()
    })
    .await;
    let mut options = paid_options();
    options.session_extra += "protocol = \"v2\"\n";
    let gw = h.gateway(&options).await;
    let reserve = h.devnet.channel_reserve().unwrap().to_owned();
    let payer = DEV_ACCOUNTS[PAYER].address;
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let (payer_before, payee_before) = (h.balance(payer).await, h.balance(payee).await);
    let deposit = DEPOSIT.to_string();
    let wallet = [
        "--intent",
        "session",
        "--allow-recipient",
        payee,
        "--allow-escrow",
        reserve.as_str(),
        "--max-deposit",
        deposit.as_str(),
        // Fees in another token keep the pathUSD accounting exact.
        "--fee-token",
        ALPHA_USD,
    ];
    let proxy = CliProxy::start(&h, &gw.url, &wallet).await;
    let out = run_script(SCRIPT, &[&proxy.url], &site).await;
    assert_sdk_answers(&out);
    assert_upstream_saw_the_calls(&h, 0);

    let ledger = h.ledger(&options);
    let channels = ledger.channels().await.unwrap();
    assert_eq!(channels.len(), 1, "one channel for the four calls");
    let channel = channels[0].clone();
    assert_eq!(channel.protocol, "v2");
    assert_eq!(channel.deposit, DEPOSIT);
    assert!(channel.spent > 0, "{channel:?}");
    assert_eq!(payer_before - h.balance(payer).await, DEPOSIT);

    // A stingy second proxy on the same state file: the stream outruns
    // what it authorized up front and is paid as it goes.
    let mut stingy_args = wallet.to_vec();
    stingy_args.extend(["--authorize", "300", "-v"]);
    let stingy = CliProxy::start(&h, &gw.url, &stingy_args).await;
    let body = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Explain payment channels."}],
        "max_tokens": 4000,
        "stream": true,
    });
    let response = h
        .http
        .post(format!("{}/v1/chat/completions", stingy.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("payment-receipt"));
    let text = response.text().await.unwrap();
    assert!(!text.contains("event: payment"), "{text}");
    let content = text.matches("\"content\"").count();
    assert!(content >= 150, "the whole answer streamed: {content}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let after = ledger.channel(&channel.channel_id).await.unwrap().unwrap();
    assert!(
        after.spent - channel.spent > 300,
        "mid-stream vouchers paid beyond the first authorization: {after:?}"
    );
    assert!(after.accepted > channel.accepted + 300, "{after:?}");
    let stderr = stingy.stop().await;
    assert!(stderr.contains("stream needs a voucher"), "{stderr}");
    assert!(stderr.contains("voucher sent for cumulative"), "{stderr}");
    proxy.stop().await;

    // The state file caught up with the ledger; closing through the
    // library captures exactly `spent` on the reserve.
    let state_path = h.dir.path().join("proxy-pay.db");
    let state = State::open(&state_path).unwrap();
    eventually(|| {
        let local = state.list().unwrap().remove(0);
        (local.spent == after.spent).then_some(local)
    })
    .await
    .unwrap_or_else(|| panic!("the local state caught up with {after:?}"));
    let mut config = Config::new(signer(PAYER));
    config.rpc_url = Some(h.devnet.rpc_url());
    config.state_path = state_path;
    config.policy.allow_recipients = vec![payee.parse().unwrap()];
    config.policy.allow_escrows = vec![reserve.parse().unwrap()];
    let client = Client::new(config).unwrap();
    let url = format!("{}/v1/chat/completions", gw.url).parse().unwrap();
    let closed = client.close_session(url).await.unwrap();
    assert_eq!(closed.cumulative, after.spent);
    assert!(closed.tx_hash.is_some());
    let stored = ledger.channel(&channel.channel_id).await.unwrap().unwrap();
    assert_eq!((stored.settled, stored.spent), (after.spent, after.spent));
    assert_eq!(h.balance(payee).await - payee_before, after.spent);
    assert_eq!(payer_before - h.balance(payer).await, after.spent);
    gw.stop().await;
}

async fn eventually<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..100 {
        if let Some(v) = check() {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A server that answers `/free` without payment and everything else with
/// a 402 whose challenge cannot be read; counts its requests.
async fn odd_server() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            if uri.path() == "/free" {
                let echoed = json!({
                    "query": uri.query(),
                    "authorization": headers.get("authorization").is_some(),
                    "x_api_key": headers.get("x-api-key").is_some(),
                    "custom": headers.get("x-custom").and_then(|v| v.to_str().ok()),
                });
                return (StatusCode::OK, [("x-answer", "free")], echoed.to_string())
                    .into_response();
            }
            (
                StatusCode::PAYMENT_REQUIRED,
                [("www-authenticate", "Payment this is not a challenge")],
                "pay up",
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, count)
}

#[tokio::test]
async fn free_answers_pass_through_and_bad_challenges_are_refused_as_json() {
    let (target, count) = odd_server().await;
    // No RPC: nothing here may get as far as signing.
    let client = Client::new(Config::new(signer(PAYER))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tollgate_client::proxy::serve(
        listener,
        target.parse().unwrap(),
        client,
    ));
    let http = reqwest::Client::new();

    let response = http
        .get(format!("{proxy}/free?a=1&b=two"))
        .header("authorization", "Bearer sk-client")
        .header("x-api-key", "sk-ant-client")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-answer"], "free");
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(
        echoed,
        json!({"query": "a=1&b=two", "authorization": false, "x_api_key": false, "custom": "kept"})
    );

    let response = http
        .post(format!("{proxy}/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    assert!(response.headers().get("www-authenticate").is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "payment_refused");
    assert_eq!(body["error"]["code"], "malformed_challenge");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed payment challenge"),
        "{body}"
    );
    // One request each: the bad challenge was never answered.
    assert_eq!(count.load(Ordering::SeqCst), 2);
}
