//! The accountless plan endpoint `POST /v1/mpp/chat/completions` on the
//! local chain: every stable error code reached for real, a five-turn
//! conversation on one voucher bucket, bucket refresh, model optimization,
//! exact settlement, and private data kept out of the logs — on v1, and on
//! a v2-only gateway (the TIP-20 channel reserve).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use common::plans::*;
use common::session::{Channel, Payer, credential, receipt, voucher_payload};
use common::*;
use serde_json::{Value, json};
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::ChannelBook;
use tollgate_mock::MockOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_turns_on_one_bucket_refresh_and_exact_settlement() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = plan_options(plans_toml("", 50_000, None));
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);
    let payer = h.payer();
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;

    // The challenge: a session, the bucket as amount, the suggested deposit,
    // and the resolution bound in opaque.
    let mut history = vec![json!({"role": "user", "content": "what is the capital of france?"})];
    let first = turn("Starter", Some("Qwen/Qwen3-8B-AWQ"), json!(history), 32);
    let c = plan_challenge(&h, &url, &first).await;
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
            let c = plan_challenge(&h, &url, &body).await;
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
    let c = plan_challenge(&h, &url, &body).await;
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
    let c = plan_challenge(&h, &url, &body).await;
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
        ..plan_options(String::new())
    };
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);

    let resolved = |c: &mpp::PaymentChallenge| {
        c.opaque.as_ref().unwrap().decode_value().unwrap()["model"].clone()
    };
    // Small prompt: the open model is cheapest.
    let small = turn("Plus", None, ask("hello"), 64);
    assert_eq!(
        resolved(&plan_challenge(&h, &url, &small).await),
        "Qwen/Qwen3-8B-AWQ"
    );
    // A prompt too large for its 4096-token context: the next cheapest that fits.
    let large = turn(
        "Plus",
        None,
        ask(&"lorem ipsum dolor sit amet ".repeat(600)),
        64,
    );
    assert_eq!(
        resolved(&plan_challenge(&h, &url, &large).await),
        "gpt-4o-mini"
    );
    // Premium mixes three runtimes; still the cheapest fit, multiplier applied.
    assert_eq!(
        resolved(&plan_challenge(&h, &url, &small).await),
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
    let c = plan_challenge(&h, &url, &claude).await;
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
    let options = plan_options(plans_toml("", 50_000, Some(&broken)));
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
    let c = plan_challenge(&h, &url, &body).await;
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
    let c = plan_challenge(&h, &url, &body).await;
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
    let bc = plan_challenge(&h, &url, &broken_turn).await;
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
    let c = plan_challenge(&h, &url, &body).await;
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
    let c = plan_challenge(&h, &url, &body).await;
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
    let c = plan_challenge(&h, &url, &body).await;
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
    let c = plan_challenge(&h, &url, &body).await;
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
    let options = plan_options(plans_toml(
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
    let c = plan_challenge(&h, &url, &body).await;
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

/// The plan endpoint on a v2-only gateway: the session challenge names
/// the channel reserve, a channel opened there pays turns from one bucket
/// (a streamed one included), a refresh raises it, each answer carries the
/// draft's session snapshot, and the close captures exactly what was spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn turns_stream_refresh_and_settle_exactly_on_the_channel_reserve() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        session_extra: "protocol = \"v2\"\n".into(),
        ..plan_options(plans_toml("streaming = true", 50_000, None))
    };
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/mpp/chat/completions", gw.url);
    let payer = h.payer_v2();
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;

    let mut history = vec![json!({"role": "user", "content": "what is the capital of italy?"})];
    let body = turn("Starter", Some("Qwen/Qwen3-8B-AWQ"), json!(history), 32);
    let c = plan_challenge(&h, &url, &body).await;
    let request = c.request.decode_value().unwrap();
    assert_eq!(request["amount"], BUCKET.to_string());
    assert_eq!(request["methodDetails"]["sessionProtocol"], "v2");
    assert_eq!(
        request["methodDetails"]["escrowContract"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        tollgate_devnet::CHANNEL_RESERVE
    );

    // Three turns on one bucket: the open, then the same voucher.
    let (channel, open) = payer.open(&c, 100_000, BUCKET).await;
    let id = format!("{channel:#x}");
    let mut auth = open;
    let mut spent = 0;
    let mut body = body;
    let mut receipts = Vec::new();
    for i in 0..3 {
        if i > 0 {
            history.push(json!({"role": "user", "content": format!("and number {i}?")}));
            body = turn("Starter", Some("Qwen/Qwen3-8B-AWQ"), json!(history), 32);
            let c = plan_challenge(&h, &url, &body).await;
            auth = payer.pay_voucher(&c, channel, BUCKET).await;
        }
        let response = post(&h.http, &url, &body, Some(&auth)).await;
        assert_eq!(response.status(), 200, "turn {i}");
        assert_eq!(response.headers()["payment-session"].to_str().unwrap(), id);
        receipts.push(
            response.headers()["payment-receipt"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let r = receipt(&response);
        assert_eq!(number(&r["acceptedCumulative"]), BUCKET);
        assert!(number(&r["spent"]) > spent, "turn {i} was charged");
        spent = number(&r["spent"]);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["object"], "chat.completion");
        history.push(answer["choices"][0]["message"].clone());
    }

    // Until the bucket runs out: a refresh is asked for, with a fresh
    // challenge; a higher cumulative voucher serves the same body.
    let required = loop {
        history.push(json!({"role": "user", "content": "more?"}));
        body = turn("Starter", Some("Qwen/Qwen3-8B-AWQ"), json!(history), 32);
        let c = plan_challenge(&h, &url, &body).await;
        let response = post(
            &h.http,
            &url,
            &body,
            Some(&payer.pay_voucher(&c, channel, BUCKET).await),
        )
        .await;
        if response.status() == 200 {
            let now = number(&receipt(&response)["spent"]);
            assert!(now > spent, "each turn is charged");
            spent = now;
            let answer: Value = response.json().await.unwrap();
            history.push(answer["choices"][0]["message"].clone());
            assert!(history.len() < 40, "the bucket runs out");
            continue;
        }
        let p = plan_problem(response, 402, "mpp_voucher_bucket_refresh_required").await;
        break number(&p["requiredCumulative"]);
    };
    assert_eq!(required % BUCKET, 0, "a whole number of buckets");
    assert!(required > BUCKET && required > spent);
    let c = plan_challenge(&h, &url, &body).await;
    let again = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&c, channel, required).await),
    )
    .await;
    assert_eq!(again.status(), 200);
    assert_eq!(number(&receipt(&again)["acceptedCumulative"]), required);

    // A streamed turn on a new bucket: the receipt is its last event.
    let stream =
        json!({"plan": "Starter", "model_optimization": false, "model": "Qwen/Qwen3-8B-AWQ",
        "messages": ask("stream a short answer"), "max_tokens": 32, "stream": true})
        .to_string();
    let c = plan_challenge(&h, &url, &stream).await;
    let response = post(
        &h.http,
        &url,
        &stream,
        Some(&payer.pay_voucher(&c, channel, required + BUCKET).await),
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("\"content\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let receipt_event = text
        .split("\n\n")
        .find(|e| e.starts_with("event: payment-receipt"))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .expect("a final receipt");
    let r: Value = serde_json::from_str(receipt_event).unwrap();
    assert_eq!(number(&r["acceptedCumulative"]), required + BUCKET);
    spent = number(&r["spent"]);
    let stored = h.ledger(&options).channel(&id).await.unwrap().unwrap();
    assert_eq!(stored.protocol, "v2");
    assert_eq!((stored.spent, stored.reserved), (spent, 0));

    // Close for exactly what was spent: the reserve captures it.
    let c = plan_challenge(&h, &url, &stream).await;
    let close = post(
        &h.http,
        &url,
        &stream,
        Some(&payer.close(&c, channel, spent).await),
    )
    .await;
    assert_eq!(close.status(), 200);
    assert!(receipt(&close)["txHash"].is_string());
    assert!(close.headers().get("payment-session").is_none());
    assert_eq!(h.balance(payee).await - payee_before, spent);
    let stored = h.ledger(&options).channel(&id).await.unwrap().unwrap();
    assert_eq!((stored.settled, stored.spent), (spent, spent));

    logs::assert_absent(&[
        &auth,
        DEV_ACCOUNTS[PAYER].address,
        &receipts[0],
        "capital of italy",
    ]);
    gw.stop().await;
}
