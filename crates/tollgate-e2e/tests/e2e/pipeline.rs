//! The one request pipeline (issue 11): every check runs before the
//! challenge, holds release themselves when a client goes away, and one
//! event-stream framer meters any framing exactly — on charge routes,
//! session streams and translated Claude streams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use std::time::{Duration, Instant};

use common::faults::{FaultUpstream, LineEnd, Mode, PROMPT_TOKENS, StreamSpec, Writes};
use common::session::{Channel, session_challenge};
use common::*;
use serde_json::{Value, json};
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::{ChannelBook, Ledger};
use tollgate_mock::MockOptions;
use tollgate_pricing::{Endpoint, PriceTable, UsageDetail, actual_cost_detail};

const DEPOSIT: u128 = 5_000_000;

fn options(upstream: &FaultUpstream) -> Options {
    Options {
        quoted: true,
        session: true,
        session_extra: "stream_voucher_timeout_secs = 5\n".into(),
        upstream_url: Some(upstream.url.clone()),
        upstream_idle_secs: Some(2),
        ..Options::default()
    }
}

fn chat(model: &str, stream: bool, extra: Value) -> String {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": 200,
        "stream": stream,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

fn amount(challenge: &mpp::PaymentChallenge) -> u128 {
    challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// What the upstream's reported usage costs for `body`, by the shipped table.
fn reported_cost(body: &str, output_tokens: u64) -> u128 {
    let table = PriceTable::builtin();
    let json: Value = serde_json::from_str(body).unwrap();
    let endpoint = Endpoint::Chat;
    let quote = endpoint.quote(&table, &json).unwrap();
    actual_cost_detail(
        &table,
        endpoint,
        &quote,
        Some(UsageDetail {
            input_tokens: PROMPT_TOKENS,
            output_tokens,
            ..UsageDetail::default()
        }),
    )
}

async fn challenges_for(h: &Harness, url: &str, body: &str) -> Vec<mpp::PaymentChallenge> {
    let response = post(&h.http, url, body, None).await;
    challenges(&response)
}

/// Opens a channel with a first, plain request (served by `Mode::Json`).
async fn open_channel(h: &Harness, upstream: &FaultUpstream, url: &str) -> (Channel, u128) {
    upstream.set(Mode::Json);
    let body = chat("gpt-4o-mini", false, json!({}));
    let challenge = session_challenge(&challenges_for(h, url, &body).await);
    let quote = amount(&challenge);
    let (channel, auth) = h.payer().open(&challenge, DEPOSIT, quote).await;
    let response = post(&h.http, url, &body, Some(&auth)).await;
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await.unwrap();
    (channel, quote)
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within one second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_translation_parameters_are_400_before_any_challenge_or_payment() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let upstream = FaultUpstream::start(Mode::Json).await;
    let opts = options(&upstream);
    let gw = h.gateway(&opts).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let refused = [
        ("seed", json!({"seed": 7})),
        ("temperature", json!({"temperature": 1.5})),
        ("logit_bias", json!({"logit_bias": {"50256": -100}})),
        ("presence_penalty", json!({"presence_penalty": 0.5})),
        (
            "audio",
            json!({"audio": {"voice": "alloy", "format": "wav"}}),
        ),
        ("foo", json!({"foo": 1})),
    ];
    for (param, extra) in &refused {
        let response = post(
            &h.http,
            &url,
            &chat("claude-haiku-4-5", false, extra.clone()),
            None,
        )
        .await;
        assert_eq!(response.status(), 400, "{param}");
        assert!(
            response.headers().get("www-authenticate").is_none(),
            "{param}: no challenge for a request that would be refused"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["param"], *param, "{body}");
    }
    assert!(
        upstream.requests().is_empty(),
        "nothing reached the upstream"
    );

    // With a valid charge credential: still 400, nothing broadcast, and the
    // credential stays good for the request it was made for.
    let valid = chat("claude-haiku-4-5", false, json!({}));
    let charge = challenges_for(&h, &url, &valid)
        .await
        .into_iter()
        .find(|c| c.intent.as_str() == "charge")
        .unwrap();
    let auth = pay(&charge, signer(PAYER), &h.devnet.rpc_url()).await;
    let payer_before = h.balance(DEV_ACCOUNTS[PAYER].address).await;
    for (param, extra) in &refused {
        let response = post(
            &h.http,
            &url,
            &chat("claude-haiku-4-5", false, extra.clone()),
            Some(&auth),
        )
        .await;
        assert_eq!(response.status(), 400, "{param} with a credential");
        assert!(response.headers().get("payment-receipt").is_none());
    }
    assert_eq!(h.balance(DEV_ACCOUNTS[PAYER].address).await, payer_before);
    let payee_before = h.balance(DEV_ACCOUNTS[RECIPIENT].address).await;
    let served = post(&h.http, &url, &valid, Some(&auth)).await;
    assert_eq!(served.status(), 200, "the credential was not consumed");
    assert_eq!(
        h.balance(DEV_ACCOUNTS[RECIPIENT].address).await - payee_before,
        amount(&charge)
    );

    // With a session voucher: 400, and the channel is untouched.
    let (channel, _) = open_channel(&h, &upstream, &url).await;
    let before = h.stored_channel(&opts, channel).await;
    let session = session_challenge(&challenges_for(&h, &url, &valid).await);
    for (param, extra) in &refused {
        let voucher = h
            .payer()
            .pay_voucher(&session, channel, before.accepted + 1_000_000);
        let response = post(
            &h.http,
            &url,
            &chat("claude-haiku-4-5", false, extra.clone()),
            Some(&voucher),
        )
        .await;
        assert_eq!(response.status(), 400, "{param} with a voucher");
    }
    let after = h.stored_channel(&opts, channel).await;
    assert_eq!(
        (after.accepted, after.spent, after.reserved),
        (before.accepted, before.spent, 0),
        "no voucher accepted, nothing debited"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_goes_away_releases_its_holds_at_once() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let upstream = FaultUpstream::start(Mode::Json).await;
    let opts = options(&upstream);
    let gw = h.gateway(&opts).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let (channel, _) = open_channel(&h, &upstream, &url).await;
    let ledger = h.ledger(&opts);
    let channel_id = format!("{:#x}", channel.id);

    // A session-paid request with an Idempotency-Key whose client leaves
    // while the upstream works.
    let body = chat("gpt-4o-mini", false, json!({}));
    let before = h.stored_channel(&opts, channel).await;
    upstream.set(Mode::Slow(Duration::from_secs(3)));
    let challenge = session_challenge(&challenges_for(&h, &url, &body).await);
    let cumulative = before.accepted + amount(&challenge);
    let voucher = h.payer().pay_voucher(&challenge, channel, cumulative);
    let send = h
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("authorization", &voucher)
        .header("idempotency-key", "retry-me")
        .body(body.clone())
        .send();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), send)
            .await
            .is_err()
    );
    wait_until("the reservation is released", || async {
        ledger.channel(&channel_id).await.unwrap().unwrap().reserved == 0
    })
    .await;
    let now = h.stored_channel(&opts, channel).await;
    assert_eq!(
        now.spent, before.spent,
        "nothing charged for an answer never delivered"
    );
    // The key is free again: the retry is served (not 409 in progress).
    upstream.set(Mode::Json);
    let retry = h
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("authorization", &voucher)
        .header("idempotency-key", "retry-me")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);

    // A session stream whose client leaves after the first events.
    let stream_body = chat("gpt-4o-mini", true, json!({}));
    upstream.set(Mode::Stream(StreamSpec {
        interval: Duration::from_millis(100),
        ..StreamSpec::words(60)
    }));
    let before = h.stored_channel(&opts, channel).await;
    let challenge = session_challenge(&challenges_for(&h, &url, &stream_body).await);
    let voucher = h
        .payer()
        .pay_voucher(&challenge, channel, before.accepted + amount(&challenge));
    let mut response = post(&h.http, &url, &stream_body, Some(&voucher)).await;
    assert_eq!(response.status(), 200);
    let _ = response.chunk().await.unwrap();
    drop(response);
    wait_until("the stream's reservation is released", || async {
        ledger.channel(&channel_id).await.unwrap().unwrap().reserved == 0
    })
    .await;
    let after = h.stored_channel(&opts, channel).await;
    let charged = after.spent - before.spent;
    assert!(
        charged < reported_cost(&stream_body, 60),
        "charged {charged}: only what was delivered"
    );
    gw.stop().await;

    // A deferred charge (settle after the upstream) whose client leaves:
    // nothing is broadcast and the claim is free for a retry.
    let deferred = Options {
        settle_after_upstream: true,
        db_path: Some(h.dir.path().join("deferred.db")),
        ..opts.clone()
    };
    let gw = h.gateway(&deferred).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    for stream in [false, true] {
        let body = chat("gpt-4o-mini", stream, json!({}));
        upstream.set(Mode::Slow(Duration::from_secs(3)));
        let charge = challenges_for(&h, &url, &body)
            .await
            .into_iter()
            .find(|c| c.intent.as_str() == "charge")
            .unwrap();
        let auth = pay(&charge, signer(PAYER), &h.devnet.rpc_url()).await;
        let payer_before = h.balance(DEV_ACCOUNTS[PAYER].address).await;
        let send = post(&h.http, &url, &body, Some(&auth));
        assert!(
            tokio::time::timeout(Duration::from_millis(500), send)
                .await
                .is_err()
        );
        let claims = h.ledger(&deferred);
        let key = format!("challenge:{}", charge.id);
        wait_until("the charge claim is released", || async {
            let claimed = claims.claim(&key).await.unwrap();
            if claimed == tollgate_ledger::ClaimOutcome::Claimed {
                claims.release_claim(&key).await.unwrap();
                true
            } else {
                false
            }
        })
        .await;
        assert_eq!(
            h.balance(DEV_ACCOUNTS[PAYER].address).await,
            payer_before,
            "nothing broadcast"
        );
        let payee_before = h.balance(DEV_ACCOUNTS[RECIPIENT].address).await;
        upstream.set(if stream { Mode::stream(5) } else { Mode::Json });
        let served = post(&h.http, &url, &body, Some(&auth)).await;
        assert_eq!(served.status(), 200, "stream: {stream}");
        let _ = served.bytes().await.unwrap();
        assert_eq!(
            h.balance(DEV_ACCOUNTS[RECIPIENT].address).await - payee_before,
            amount(&charge),
            "paid once"
        );
    }
    gw.stop().await;
}

/// Every framing and every way the bytes can arrive.
fn framings() -> Vec<(LineEnd, Writes, bool)> {
    let mut all = Vec::new();
    for line_end in [LineEnd::Lf, LineEnd::CrLf, LineEnd::Cr] {
        for writes in [
            Writes::PerEvent,
            Writes::ByteByByte,
            Writes::Coalesced,
            Writes::Split,
        ] {
            all.push((line_end, writes, false));
        }
        all.push((line_end, Writes::PerEvent, true));
    }
    all
}

/// The words a client reads from an OpenAI-format stream, and whether it
/// ended with `[DONE]`.
fn read_openai_stream(text: &str) -> (String, bool) {
    let mut content = String::new();
    let mut done = false;
    for event in text.split("\n\n") {
        for line in event.lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let chunk: Value = serde_json::from_str(data).unwrap();
            if let Some(part) = chunk["choices"][0]["delta"]["content"].as_str() {
                content.push_str(part);
            }
        }
    }
    (content, done)
}

fn expected_words(words: usize) -> String {
    (0..words)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_framing_is_metered_exactly_on_sessions_charges_and_translation() {
    const WORDS: usize = 12;
    let h = Harness::start_sessions(MockOptions::default()).await;
    let upstream = FaultUpstream::start(Mode::Json).await;
    let opts = options(&upstream);
    let gw = h.gateway(&opts).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let (channel, _) = open_channel(&h, &upstream, &url).await;
    let ledger = h.ledger(&opts);
    for (line_end, writes, no_final_blank) in framings() {
        let case = format!("{line_end:?} {writes:?} unterminated={no_final_blank}");
        upstream.set(Mode::Stream(StreamSpec {
            line_end,
            writes,
            no_final_blank,
            ..StreamSpec::words(WORDS)
        }));
        for model in ["gpt-4o-mini", "claude-haiku-4-5"] {
            let body = chat(model, true, json!({}));
            // Session stream: charged exactly the upstream's usage.
            let before = h.stored_channel(&opts, channel).await;
            let challenge = session_challenge(&challenges_for(&h, &url, &body).await);
            let voucher =
                h.payer()
                    .pay_voucher(&challenge, channel, before.accepted + amount(&challenge));
            let response = post(&h.http, &url, &body, Some(&voucher)).await;
            assert_eq!(response.status(), 200, "{case} {model}");
            let text = response.text().await.unwrap();
            let (content, done) = read_openai_stream(&text);
            assert_eq!(content, expected_words(WORDS), "{case} {model}: {text}");
            assert!(done, "{case} {model}: a whole stream ends with [DONE]");
            assert!(text.contains("event: payment-receipt"), "{case} {model}");
            let after = h.stored_channel(&opts, channel).await;
            let table_body = chat(model, true, json!({}));
            assert_eq!(
                after.spent - before.spent,
                reported_cost(&table_body, WORDS as u64),
                "{case} {model}: the reported usage, exactly"
            );

            // Charge stream: the usage record has the reported usage.
            let charge = challenges_for(&h, &url, &body)
                .await
                .into_iter()
                .find(|c| c.intent.as_str() == "charge")
                .unwrap();
            let auth = pay(&charge, signer(PAYER), &h.devnet.rpc_url()).await;
            let response = post(&h.http, &url, &body, Some(&auth)).await;
            assert_eq!(response.status(), 200, "{case} {model} charge");
            let (content, done) = read_openai_stream(&response.text().await.unwrap());
            assert_eq!(content, expected_words(WORDS));
            assert!(done);
            let deadline = Instant::now() + Duration::from_secs(5);
            let record = loop {
                if let Some(r) = ledger.usage_for(&charge.id).await.unwrap().pop() {
                    break r;
                }
                assert!(Instant::now() < deadline, "{case}: usage recorded");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert!(record.usage_reported, "{case} {model}: usage seen");
            assert_eq!(
                (record.input_tokens, record.output_tokens),
                (PROMPT_TOKENS, WORDS as u64),
                "{case} {model}"
            );
        }
    }
    gw.stop().await;
}
