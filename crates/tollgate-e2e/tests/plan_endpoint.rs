//! The accountless plan endpoint `POST /v1/mpp/chat/completions` on the
//! local chain: every stable error code reached for real, a five-turn
//! conversation on one voucher bucket, bucket refresh, model optimization,
//! exact settlement, and private data kept out of the logs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use common::session::{Channel, Payer, credential, receipt, voucher_payload};
use common::*;
use serde_json::{Value, json};
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::ChannelBook;
use tollgate_mock::MockOptions;

const BUCKET: u128 = 500;

fn plans_toml(extra: &str, qwen_input_price: u64, broken_runtime: Option<&str>) -> String {
    let broken = broken_runtime
        .map(|url| {
            format!(
                r#"
[upstreams.broken]
kind = "openai_compatible"
base_url = "{url}"

[plans.models."broken/model"]
upstream = "broken"
input_per_mtok = 50000
output_per_mtok = 200000
context_window = 32768
"#
            )
        })
        .unwrap_or_default();
    let broken_in_plan = if broken_runtime.is_some() {
        r#", "broken/model""#
    } else {
        ""
    };
    format!(
        r#"
[plans]
voucher_bucket = {BUCKET}
suggested_deposit = 5000000
{extra}

[plans.models."Qwen/Qwen3-8B-AWQ"]
upstream = "openai"
input_per_mtok = {qwen_input_price}
output_per_mtok = 200000
context_window = 4096

[plans.models."gpt-4o-mini"]
upstream = "openai"

[plans.models."claude-haiku-4-5"]
upstream = "claude"

[plans.plans.Starter]
models = ["Qwen/Qwen3-8B-AWQ"{broken_in_plan}]
max_input_tokens = 2000
max_output_tokens = 256

[plans.plans.Plus]
models = ["Qwen/Qwen3-8B-AWQ", "gpt-4o-mini"]
max_input_tokens = 60000
max_output_tokens = 512

[plans.plans.Premium]
models = ["claude-haiku-4-5", "gpt-4o-mini", "Qwen/Qwen3-8B-AWQ"]
max_input_tokens = 60000
max_output_tokens = 4096
price_multiplier_bps = 15000
{broken}"#
    )
}

fn options(plans: String) -> Options {
    Options {
        quoted: true,
        session: true,
        plans: Some(plans),
        ..Options::default()
    }
}

fn turn(plan: &str, model: Option<&str>, messages: Value, max_tokens: u64) -> String {
    let mut body = json!({
        "plan": plan,
        "model_optimization": model.is_none(),
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
    });
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    body.to_string()
}

fn ask(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Asserts the plan problem shape and returns its body.
async fn plan_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "expected {code}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().get("payment-receipt").is_none());
    let fresh = response.headers().get("www-authenticate").is_some();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    if status == 402 {
        assert!(fresh, "{code}: a 402 carries a fresh challenge");
        assert!(body["challengeId"].is_string());
    } else {
        assert!(!fresh, "{code}: only 402s carry a challenge");
    }
    body
}

async fn challenge(h: &Harness, url: &str, body: &str) -> mpp::PaymentChallenge {
    let response = post(&h.http, url, body, None).await;
    assert_eq!(response.status(), 402);
    let all = challenges(&response);
    assert_eq!(all.len(), 1, "the plan endpoint offers a session only");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payment_required");
    all[0].clone()
}

fn number(v: &Value) -> u128 {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_turns_on_one_bucket_refresh_and_exact_settlement() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = options(plans_toml("", 50_000, None));
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);
    let payer = h.payer();
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;

    // The challenge: a session, the bucket as amount, the suggested deposit,
    // and the resolution bound in opaque.
    let mut history = vec![json!({"role": "user", "content": "what is the capital of france?"})];
    let first = turn("Starter", Some("Qwen/Qwen3-8B-AWQ"), json!(history), 32);
    let c = challenge(&h, &url, &first).await;
    let request = c.request.decode_value().unwrap();
    assert_eq!(c.intent.as_str(), "session");
    assert_eq!(request["amount"], BUCKET.to_string());
    assert_eq!(request["suggestedDeposit"], "5000000");
    let opaque = c.opaque.as_ref().unwrap().decode_value().unwrap();
    assert_eq!(opaque["plan"], "Starter");
    assert_eq!(opaque["model"], "Qwen/Qwen3-8B-AWQ");
    assert_eq!(opaque["runtime"], "openai");
    assert!(opaque["pricing"].as_str().unwrap().len() == 16);
    assert_eq!(opaque["caps"]["output"], 32);

    // Turn 1 opens the channel with one bucket; turns 2..5 reuse the same
    // cumulative voucher.
    let (channel, open) = payer.open(&c, 100_000, BUCKET).await;
    let mut auth = open;
    let mut spent = 0u128;
    let mut costs = Vec::new();
    let mut body = first;
    let mut headers = Vec::new();
    for i in 0..5 {
        if i > 0 {
            history.push(json!({"role": "user", "content": format!("and number {i}?")}));
            body = turn("Starter", Some("Qwen/Qwen3-8B-AWQ"), json!(history), 32);
            let c = challenge(&h, &url, &body).await;
            auth = payer.pay_voucher(&c, channel, BUCKET);
        }
        let response = post(&h.http, &url, &body, Some(&auth)).await;
        assert_eq!(response.status(), 200, "turn {i}");
        headers.push(
            response.headers()["payment-receipt"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let r = receipt(&response);
        assert_eq!(
            number(&r["acceptedCumulative"]),
            BUCKET,
            "one voucher for five turns"
        );
        let now = number(&r["spent"]);
        costs.push(now - spent);
        spent = now;
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["object"], "chat.completion");
        assert_eq!(answer["model"], "Qwen/Qwen3-8B-AWQ");
        history.push(answer["choices"][0]["message"].clone());
    }
    assert_eq!(spent, costs.iter().sum::<u128>());
    assert!(costs.iter().all(|c| *c > 0));

    // Turn 6: the bucket is exhausted → refresh required, with a fresh
    // challenge; a higher cumulative voucher → the same body succeeds.
    history.push(json!({"role": "user", "content": "one more?"}));
    let body = turn("Starter", Some("Qwen/Qwen3-8B-AWQ"), json!(history), 32);
    let c = challenge(&h, &url, &body).await;
    let refused = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&c, channel, BUCKET)),
    )
    .await;
    let p = plan_problem(refused, 402, "mpp_voucher_bucket_refresh_required").await;
    assert_eq!(number(&p["requiredCumulative"]), 2 * BUCKET);
    let again = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&c, channel, 2 * BUCKET)),
    )
    .await;
    assert_eq!(again.status(), 200);
    let r = receipt(&again);
    spent = number(&r["spent"]);

    // Close for exactly what was spent: on-chain settlement = the sum of
    // the committed turn costs.
    let c = challenge(&h, &url, &body).await;
    let close = post(&h.http, &url, &body, Some(&payer.close(&c, channel, spent))).await;
    assert_eq!(close.status(), 200);
    assert!(receipt(&close)["txHash"].is_string());
    assert_eq!(h.balance(payee).await - payee_before, spent);
    let stored = h.stored_channel(&options, channel).await;
    assert_eq!((stored.settled, stored.spent), (spent, spent));

    // Privacy: no credential, signature, payer address, receipt or prompt.
    logs::assert_absent(&[
        &auth,
        DEV_ACCOUNTS[PAYER].address,
        &payer.voucher(channel, BUCKET),
        &headers[0],
        "capital of france",
    ]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_optimization_picks_the_cheapest_model_that_fits() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        plans: Some(plans_toml("", 50_000, None).replace(
            &format!("voucher_bucket = {BUCKET}"),
            "voucher_bucket = 1000000",
        )),
        ..options(String::new())
    };
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);

    let resolved = |c: &mpp::PaymentChallenge| {
        c.opaque.as_ref().unwrap().decode_value().unwrap()["model"].clone()
    };
    // Small prompt: the open model is cheapest.
    let small = turn("Plus", None, ask("hello"), 64);
    assert_eq!(
        resolved(&challenge(&h, &url, &small).await),
        "Qwen/Qwen3-8B-AWQ"
    );
    // A prompt too large for its 4096-token context: the next cheapest that fits.
    let large = turn(
        "Plus",
        None,
        ask(&"lorem ipsum dolor sit amet ".repeat(600)),
        64,
    );
    assert_eq!(resolved(&challenge(&h, &url, &large).await), "gpt-4o-mini");
    // Premium mixes three runtimes; still the cheapest fit, multiplier applied.
    assert_eq!(
        resolved(&challenge(&h, &url, &small).await),
        "Qwen/Qwen3-8B-AWQ"
    );
    // model_optimization false with a model the plan lacks: a clear 400.
    let r = post(
        &h.http,
        &url,
        &turn("Starter", Some("gpt-4o-mini"), ask("hi"), 8),
        None,
    )
    .await;
    assert_eq!(r.status(), 400);
    // A Claude turn on Premium is served through the Anthropic runtime.
    let claude = turn("Premium", Some("claude-haiku-4-5"), ask("hello"), 16);
    let c = challenge(&h, &url, &claude).await;
    let payer = h.payer();
    let (_, open) = payer.open(&c, 2_000_000, 1_000_000).await;
    let r = post(&h.http, &url, &claude, Some(&open)).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "claude-haiku-4-5");
    gw.stop().await;
}

/// A runtime that answers 200 without usage.
async fn broken_runtime() -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            axum::Json(json!({"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_error_code_is_reached_for_real() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let broken = broken_runtime().await;
    let options = options(plans_toml("", 50_000, Some(&broken)));
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);
    let payer = h.payer();
    let body = turn("Starter", Some("Qwen/Qwen3-8B-AWQ"), ask("hello"), 32);
    let calls = || {
        h.upstream
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .count()
    };

    // payment_required
    let c = challenge(&h, &url, &body).await;
    // mpp_streaming_unavailable (400, before any challenge)
    let streamed = json!({"plan": "Starter", "model_optimization": false, "model": "Qwen/Qwen3-8B-AWQ", "messages": ask("hi"), "stream": true}).to_string();
    plan_problem(
        post(&h.http, &url, &streamed, None).await,
        400,
        "mpp_streaming_unavailable",
    )
    .await;
    // mpp_request_exceeds_voucher_bucket (400, before any challenge)
    let huge = turn("Premium", Some("gpt-4o-mini"), ask("hi"), 4096);
    plan_problem(
        post(&h.http, &url, &huge, None).await,
        400,
        "mpp_request_exceeds_voucher_bucket",
    )
    .await;
    // mpp_malformed_credential, also for bytes that are not visible ASCII
    // (as on every other paid route)
    plan_problem(
        post(&h.http, &url, &body, Some("Payment not-base64!")).await,
        402,
        "mpp_malformed_credential",
    )
    .await;
    let raw = reqwest::header::HeaderValue::from_bytes(b"Payment \xff\xfe").unwrap();
    let non_ascii = h
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("authorization", raw)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    plan_problem(non_ascii, 402, "mpp_malformed_credential").await;
    // mpp_method_unsupported: a charge credential
    let mut charge = c.clone();
    charge.intent = "charge".into();
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&credential(
            &charge,
            json!({"type": "hash", "hash": "0x00"}),
        )),
    )
    .await;
    plan_problem(r, 402, "mpp_method_unsupported").await;
    // mpp_invalid_challenge: an id we never issued
    let mut forged = c.clone();
    forged.id = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    let dummy = Channel {
        id: alloy::primitives::B256::repeat_byte(1),
    };
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&forged, dummy, BUCKET)),
    )
    .await;
    plan_problem(r, 402, "mpp_invalid_challenge").await;
    // mpp_body_digest_mismatch: the credential for another body
    let other = turn("Starter", Some("Qwen/Qwen3-8B-AWQ"), ask("goodbye"), 32);
    let r = post(
        &h.http,
        &url,
        &other,
        Some(&payer.pay_voucher(&c, dummy, BUCKET)),
    )
    .await;
    plan_problem(r, 402, "mpp_body_digest_mismatch").await;
    // mpp_session_deposit_below_request_cost: a deposit below the bucket
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&payer.open(&c, BUCKET - 1, 0).await.1),
    )
    .await;
    plan_problem(r, 402, "mpp_session_deposit_below_request_cost").await;
    // Open a real channel (deposit: two buckets).
    let (channel, open) = payer.open(&c, 2 * BUCKET, BUCKET).await;
    assert_eq!(post(&h.http, &url, &body, Some(&open)).await.status(), 200);
    // …and a voucher beyond the deposit: deposit below the authorization.
    let c = challenge(&h, &url, &body).await;
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&c, channel, 3 * BUCKET)),
    )
    .await;
    plan_problem(r, 402, "mpp_session_deposit_below_request_cost").await;
    // mpp_payment_verification_failed: a voucher signed by someone else
    let stranger =
        common::session::voucher_by(&signer(3), payer.escrow, 42431, channel, 2 * BUCKET);
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&credential(
            &c,
            voucher_payload("voucher", channel, 2 * BUCKET, &stranger),
        )),
    )
    .await;
    plan_problem(r, 402, "mpp_payment_verification_failed").await;
    // A runtime that reports no usage is charged by the one rule for a
    // missing usage (docs/payments.md): the prompt as quoted plus the output
    // counted with the tokenizer — never the worst case, never nothing.
    // (`mpp_commit_failed` is left for a store that cannot take the debit.)
    let before = h.stored_channel(&options, channel).await;
    let broken_turn = turn("Starter", Some("broken/model"), ask("hello"), 32);
    let bc = challenge(&h, &url, &broken_turn).await;
    let worst_case = number(&bc.request.decode_value().unwrap()["amount"]);
    let r = post(
        &h.http,
        &url,
        &broken_turn,
        Some(&payer.pay_voucher(&bc, channel, BUCKET)),
    )
    .await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    let after = h.stored_channel(&options, channel).await;
    let charged = after.spent - before.spent;
    assert!(
        charged > 0 && charged < worst_case,
        "charged {charged} of {worst_case}"
    );
    assert_eq!(after.reserved, 0);
    // mpp_reservation_failed: the payer asked the escrow for a forced close
    assert_eq!(
        payer.send(Payer::request_close(channel)).await["status"],
        "0x1"
    );
    h.ledger(&options)
        .refresh_channel(
            &format!("{:#x}", channel.id),
            tollgate_ledger::OnChainFacts {
                deposit: 2 * BUCKET,
                settled: 0,
                close_requested_at: 1,
                finalized: false,
            },
        )
        .await
        .unwrap();
    let c = challenge(&h, &url, &body).await;
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&c, channel, BUCKET)),
    )
    .await;
    plan_problem(r, 409, "mpp_reservation_failed").await;
    // mpp_session_close_failed: the channel was finalized on chain behind
    // the gateway's back (grace period over, payer withdrew).
    h.devnet.rpc().increase_time(901).await.unwrap();
    assert_eq!(payer.send(Payer::withdraw(channel)).await["status"], "0x1");
    h.ledger(&options)
        .refresh_channel(
            &format!("{:#x}", channel.id),
            tollgate_ledger::OnChainFacts {
                deposit: 2 * BUCKET,
                settled: 0,
                close_requested_at: 0,
                finalized: false,
            },
        )
        .await
        .unwrap();
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&payer.close(&c, channel, after.spent)),
    )
    .await;
    plan_problem(r, 502, "mpp_session_close_failed").await;
    assert!(calls() >= 1);
    gw.stop().await;

    // mpp_request_quote_invalid: prices changed since the challenge (a
    // restart with another price for the model; same secret, same store).
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);
    let c = challenge(&h, &url, &body).await;
    let (fresh_channel, open) = payer.open(&c, 100_000, BUCKET).await;
    gw.stop().await;
    let repriced = Options {
        plans: Some(plans_toml("", 60_000, Some(&broken))),
        ..options.clone()
    };
    let gw = h.gateway(&repriced).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);
    plan_problem(
        post(&h.http, &url, &body, Some(&open)).await,
        402,
        "mpp_request_quote_invalid",
    )
    .await;
    let _ = fresh_channel;
    gw.stop().await;

    // mpp_payer_not_allowed: a deny list naming the payer.
    let denied = Options {
        plans: Some(plans_toml(
            &format!("payer_deny = [\"{}\"]", DEV_ACCOUNTS[PAYER].address),
            50_000,
            None,
        )),
        ..options.clone()
    };
    let gw = h.gateway(&denied).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);
    let c = challenge(&h, &url, &body).await;
    let (_, open) = payer.open(&c, 100_000, BUCKET).await;
    plan_problem(
        post(&h.http, &url, &body, Some(&open)).await,
        403,
        "mpp_payer_not_allowed",
    )
    .await;
    gw.stop().await;

    // mpp_session_close_unavailable: no operator key to sign the close.
    let keyless = Options {
        operator: false,
        ..options.clone()
    };
    let gw = h.gateway(&keyless).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);
    let c = challenge(&h, &url, &body).await;
    let (other, open) = payer.open(&c, 100_000, BUCKET).await;
    assert_eq!(post(&h.http, &url, &body, Some(&open)).await.status(), 200);
    let r = post(&h.http, &url, &body, Some(&payer.close(&c, other, BUCKET))).await;
    plan_problem(r, 503, "mpp_session_close_unavailable").await;

    // HEAD is disabled: 405 with Allow, no model run.
    let before = calls();
    let head = h.http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 405);
    assert_eq!(head.headers()["allow"], "POST");
    assert_eq!(calls(), before);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streaming_and_head_metadata_when_enabled() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = options(plans_toml(
        "streaming = true\nhead = \"metadata\"",
        50_000,
        None,
    ));
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);
    let payer = h.payer();

    // HEAD answers metadata and runs nothing.
    let head = h.http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 204);
    assert_eq!(head.headers()["mpp-voucher-bucket"], BUCKET.to_string());
    assert!(
        head.headers()["mpp-plans"]
            .to_str()
            .unwrap()
            .contains("Starter")
    );
    assert_eq!(h.upstream.count(), 0);

    let body = json!({"plan": "Starter", "model_optimization": false, "model": "Qwen/Qwen3-8B-AWQ",
        "messages": ask("hello"), "max_tokens": 32, "stream": true})
    .to_string();
    let c = challenge(&h, &url, &body).await;
    let (channel, open) = payer.open(&c, 100_000, BUCKET).await;
    let response = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(response.status(), 200);
    // The receipt comes only once the turn is committed: in the stream.
    assert!(response.headers().get("payment-receipt").is_none());
    let text = response.text().await.unwrap();
    assert!(text.contains("\"content\""));
    assert!(
        !text.contains("prompt_tokens"),
        "the usage chunk stays hidden"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    let receipt_event = text
        .split("\n\n")
        .find(|e| e.starts_with("event: payment-receipt"))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .expect("a final receipt");
    let r: Value = serde_json::from_str(receipt_event).unwrap();
    let spent = number(&r["spent"]);
    assert!(spent > 0);
    let stored = h.stored_channel(&options, channel).await;
    assert_eq!((stored.spent, stored.reserved), (spent, 0));
    gw.stop().await;
}
