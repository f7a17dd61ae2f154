//! Session payments end to end on a real local chain with the escrow
//! deployed: open, metered requests (one stream paused for a voucher),
//! close; exact on-chain balances.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use std::time::Duration;

use common::session::{Payer, credential, receipt, session_challenge, voucher_payload};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::ChannelBook;
use tollgate_mock::MockOptions;

const DEPOSIT: u128 = 1_000_000;

fn session_options() -> Options {
    Options {
        quoted: true,
        session: true,
        session_extra: "stream_voucher_timeout_secs = 5\n".into(),
        ..Options::default()
    }
}

fn chat(model: &str, max_tokens: u32, stream: bool) -> String {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
    .to_string()
}

async fn challenge_for(h: &Harness, url: &str, body: &str) -> mpp::PaymentChallenge {
    let response = post(&h.http, url, body, None).await;
    let all = challenges(&response);
    assert_eq!(all.len(), 2, "charge and session are offered");
    session_challenge(&all)
}

fn amount(challenge: &mpp::PaymentChallenge) -> u128 {
    challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn number(value: &Value) -> u128 {
    value.as_str().unwrap().parse().unwrap()
}

/// One SSE event: (event name, data).
fn parse_event(raw: &str) -> (String, String) {
    let mut name = "message".to_owned();
    let mut data = String::new();
    for line in raw.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim());
        }
    }
    (name, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_meter_stream_past_balance_and_close_exactly() {
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 150,
        ..MockOptions::default()
    })
    .await;
    let options = session_options();
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = h.payer();
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payer_before = h.balance(DEV_ACCOUNTS[PAYER].address).await;
    let payee_before = h.balance(payee).await;

    // 1. The challenge names the escrow, chain, deposit; open with the
    //    first request's worst case authorized.
    let body = chat("gpt-4o", 160, false);
    let challenge = challenge_for(&h, &url, &body).await;
    let request = challenge.request.decode_value().unwrap();
    assert_eq!(
        request["methodDetails"]["escrowContract"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        h.devnet.escrow().unwrap().to_lowercase()
    );
    assert_eq!(request["methodDetails"]["chainId"], 42431);
    assert_eq!(request["suggestedDeposit"], "5000000");
    let quote = amount(&challenge);
    let (channel, auth) = payer.open(&challenge, DEPOSIT, quote).await;
    let response = post(&h.http, &url, &body, Some(&auth)).await;
    assert_eq!(response.status(), 200);
    let first_header = response.headers()["payment-receipt"]
        .to_str()
        .unwrap()
        .to_owned();
    let first = receipt(&response);
    assert_eq!(first["intent"], "session");
    assert_eq!(first["channelId"], format!("{:#x}", channel.id));
    assert_eq!(number(&first["acceptedCumulative"]), quote);
    let spent_1 = number(&first["spent"]);
    assert!(
        spent_1 > 0 && spent_1 < quote,
        "charged the usage, not the quote"
    );
    assert!(first["units"].as_u64().unwrap() > 0);
    let _: Value = response.json().await.unwrap();

    // 2. A second request on the same channel: the voucher covers it.
    let challenge = challenge_for(&h, &url, &body).await;
    let cumulative = spent_1 + amount(&challenge);
    let response = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&challenge, channel, cumulative)),
    )
    .await;
    assert_eq!(response.status(), 200);
    let second = receipt(&response);
    let spent_2 = number(&second["spent"]);
    assert_eq!(spent_2 - spent_1, spent_1, "same request, same actual cost");

    // 3. A request whose worst case exceeds what is authorized → 402
    //    insufficient-balance with what is missing, and a fresh challenge.
    let accepted = number(&second["acceptedCumulative"]);
    assert_eq!(accepted, cumulative);
    let big = chat("gpt-4o", 4000, false);
    let challenge = challenge_for(&h, &url, &big).await;
    let response = post(
        &h.http,
        &url,
        &big,
        Some(&payer.pay_voucher(&challenge, channel, accepted)),
    )
    .await;
    let refused = problem(response, 402, "session/insufficient-balance").await;
    let available = accepted - spent_2;
    assert_eq!(
        number(&refused["requiredTopUp"]),
        amount(&challenge) - available
    );

    // 4. A stream may start on what is left (it covers the prompt), is
    //    metered as it goes, pauses for a voucher when the balance runs out,
    //    resumes when one arrives on another request, ends with a receipt.
    let stream_body = chat("gpt-4o", 4000, true);
    let accepted = accepted + 60; // just enough to start: the prompt is covered
    let available = accepted - spent_2;
    let challenge = challenge_for(&h, &url, &stream_body).await;
    let response = post(
        &h.http,
        &url,
        &stream_body,
        Some(&payer.pay_voucher(&challenge, channel, accepted)),
    )
    .await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(number(&receipt(&response)["acceptedCumulative"]), accepted);
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut stream = response.bytes_stream();
    let mut asked = None;
    while let Some(chunk) = stream.next().await {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let raw: String = buffer.drain(..end + 2).collect();
            let (name, data) = parse_event(&raw);
            if name == "payment-need-voucher" {
                let need: Value = serde_json::from_str(&data).unwrap();
                assert_eq!(need["channelId"], format!("{:#x}", channel.id));
                assert_eq!(number(&need["acceptedCumulative"]), accepted);
                assert_eq!(number(&need["deposit"]), DEPOSIT);
                let required = number(&need["requiredCumulative"]);
                assert!(required > accepted);
                asked = Some(required);
                // The voucher goes on a separate, body-less request.
                let top_up = h
                    .http
                    .post(&url)
                    .header(
                        "authorization",
                        payer.pay_voucher(&challenge, channel, required),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(top_up.status(), 200);
                assert_eq!(number(&receipt(&top_up)["acceptedCumulative"]), required);
            }
            events.push((name, data));
        }
    }
    let required = asked.expect("the stream asked for a voucher");
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let content = events
        .iter()
        .filter(|(n, d)| n == "message" && d.contains("\"content\""))
        .count();
    assert!(content >= 150, "the whole answer was delivered: {names:?}");
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let (name, data) = &events[events.len() - 2];
    assert_eq!(name, "payment-receipt");
    let final_receipt: Value = serde_json::from_str(data).unwrap();
    assert_eq!(number(&final_receipt["acceptedCumulative"]), required);
    let spent_3 = number(&final_receipt["spent"]);
    assert!(
        spent_3 - spent_2 > available,
        "the stream cost more than its first balance"
    );
    assert!(spent_3 <= required);
    // The usage chunk the gateway asked for stayed hidden.
    assert!(!events.iter().any(|(_, d)| d.contains("prompt_tokens")));

    // 5. Close with a voucher for exactly what was spent.
    let challenge = challenge_for(&h, &url, &body).await;
    let close = h
        .http
        .post(&url)
        .header("authorization", payer.close(&challenge, channel, spent_3))
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), 200);
    let closed = receipt(&close);
    assert!(closed["txHash"].as_str().unwrap().starts_with("0x"));
    assert_eq!(number(&closed["spent"]), spent_3);

    // On chain: the payee gained exactly `spent`; the payer got the rest back.
    assert_eq!(h.balance(payee).await - payee_before, spent_3);
    assert_eq!(
        payer_before - h.balance(DEV_ACCOUNTS[PAYER].address).await,
        spent_3
    );
    let stored = h.stored_channel(&options, channel).await;
    assert_eq!(
        (stored.settled, stored.spent, stored.reserved),
        (spent_3, spent_3, 0)
    );
    assert_eq!(stored.status, tollgate_ledger::ChannelStatus::Finalized);

    // A finalized channel takes no more vouchers: 410 with the spec's type.
    let challenge = challenge_for(&h, &url, &body).await;
    let response = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&challenge, channel, spent_3 + 500)),
    )
    .await;
    let gone = problem(response, 410, "session/channel-finalized").await;
    assert!(gone["challengeId"].is_string());

    // Nothing private reached the logs: credentials, signatures, the payer's
    // address, receipts.
    logs::assert_absent(&[
        &auth,
        DEV_ACCOUNTS[PAYER].address,
        &payer.voucher(channel, spent_3),
        &payer.voucher(channel, required),
        &first_header,
        closed["txHash"].as_str().unwrap(),
    ]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn top_up_by_head_raises_the_deposit() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = session_options();
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = h.payer();
    let body = chat("gpt-4o-mini", 16, false);
    let challenge = challenge_for(&h, &url, &body).await;
    let (channel, open) = payer.open(&challenge, 100_000, amount(&challenge)).await;
    assert_eq!(post(&h.http, &url, &body, Some(&open)).await.status(), 200);

    // An unpaid HEAD gets a session challenge and no body.
    let head = h.http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 402);
    let fresh = session_challenge(&challenges(&head));
    assert_eq!(head.bytes().await.unwrap().len(), 0);

    // A voucher above the deposit is refused until the top-up lands.
    let above = payer.pay_voucher(&fresh, channel, 150_000);
    let r = h
        .http
        .head(&url)
        .header("authorization", &above)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);

    let top_up = payer.top_up(&fresh, channel, 100_000).await;
    let r = h
        .http
        .head(&url)
        .header("authorization", top_up)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("payment-receipt").is_some());
    let stored = h.stored_channel(&options, channel).await;
    assert_eq!(stored.deposit, 200_000);

    let r = h
        .http
        .head(&url)
        .header("authorization", &above)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(number(&receipt(&r)["acceptedCumulative"]), 150_000);

    // A top-up transaction for another amount than it claims is refused.
    let tx = payer.top_up_tx(channel, 5).await;
    let lying = credential(
        &fresh,
        json!({
            "action": "topUp",
            "type": "transaction",
            "channelId": format!("{:#x}", channel.id),
            "transaction": format!("0x{}", alloy::hex::encode(&tx)),
            "additionalDeposit": "6",
        }),
    );
    let r = h
        .http
        .head(&url)
        .header("authorization", lying)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let stored = h.stored_channel(&options, channel).await;
    assert_eq!(stored.deposit, 200_000, "nothing was broadcast");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_without_a_voucher_ends_charging_only_what_was_delivered() {
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 300,
        ..MockOptions::default()
    })
    .await;
    let options = Options {
        session_extra: "stream_voucher_timeout_secs = 1\n".into(),
        ..session_options()
    };
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = h.payer();
    let body = chat("gpt-4o", 4000, true);
    let challenge = challenge_for(&h, &url, &body).await;
    // Authorize a little: enough for the prompt and a few tokens.
    let (channel, open) = payer.open(&challenge, DEPOSIT, 300).await;
    let response = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events: Vec<(String, String)> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(parse_event)
        .collect();
    assert!(events.iter().any(|(n, _)| n == "payment-need-voucher"));
    let delivered = events
        .iter()
        .filter(|(n, d)| n == "message" && d.contains("\"content\""))
        .count();
    assert!(
        delivered > 0 && delivered < 300,
        "delivered {delivered} of 300"
    );
    let (name, data) = events.iter().rev().find(|(n, _)| n != "message").unwrap();
    assert_eq!(name, "payment-receipt");
    let last: Value = serde_json::from_str(data).unwrap();
    let spent = number(&last["spent"]);
    assert!(spent <= 300, "never beyond what was authorized");
    let stored = h.stored_channel(&options, channel).await;
    assert_eq!((stored.spent, stored.reserved), (spent, 0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_retries_replay_without_a_second_debit() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = session_options();
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = h.payer();
    let body = chat("gpt-4o-mini", 32, false);
    let challenge = challenge_for(&h, &url, &body).await;
    let (channel, open) = payer
        .open(&challenge, DEPOSIT, 10 * amount(&challenge))
        .await;

    let send = |auth: String, key: &'static str, body: String| {
        let http = h.http.clone();
        let url = url.clone();
        async move {
            http.post(&url)
                .header("content-type", "application/json")
                .header("authorization", auth)
                .header("idempotency-key", key)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = send(open.clone(), "retry-1", body.clone()).await;
    assert_eq!(first.status(), 200);
    let first_receipt = first.headers()["payment-receipt"].clone();
    let first_body = first.text().await.unwrap();
    let calls = h.upstream.requests().len();

    let again = send(open.clone(), "retry-1", body.clone()).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["payment-receipt"], first_receipt);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first_body);
    assert_eq!(
        h.upstream.requests().len(),
        calls,
        "the upstream was not called again"
    );

    // The same key for another body is refused.
    let other = chat("gpt-4o-mini", 33, false);
    let challenge = challenge_for(&h, &url, &other).await;
    let reused = send(
        payer.pay_voucher(&challenge, channel, 10 * amount(&challenge) + 1),
        "retry-1",
        other,
    )
    .await;
    assert_eq!(reused.status(), 422);

    let stored = h.stored_channel(&options, channel).await;
    let spent: u128 = number(&receipt_value(&first_receipt)["spent"]);
    assert_eq!(stored.spent, spent, "debited once");
    gw.stop().await;
}

fn receipt_value(header: &reqwest::header::HeaderValue) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.to_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_parallel_requests_on_a_balance_for_fifty() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = session_options();
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = h.payer();
    let body = chat("gpt-4o", 24, false);
    let challenge = challenge_for(&h, &url, &body).await;
    let quote = amount(&challenge);
    // Open and serve one request to learn what one costs…
    let (channel, open) = payer.open(&challenge, DEPOSIT, quote).await;
    let first = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(first.status(), 200);
    let cost = number(&receipt(&first)["spent"]);
    assert!(cost <= quote);
    // …then authorize a balance that covers exactly fifty more.
    let accepted = cost + 50 * cost;
    let voucher = payer.pay_voucher(&challenge, channel, accepted);

    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let http = h.http.clone();
            let (url, body, voucher) = (url.clone(), body.clone(), voucher.clone());
            tokio::spawn(async move { post(&http, &url, &body, Some(&voucher)).await })
        })
        .collect();
    let mut served = 0u128;
    let mut refused = 0;
    for task in tasks {
        let response = task.await.unwrap();
        match response.status().as_u16() {
            200 => served += 1,
            402 => {
                let p = problem(response, 402, "session/insufficient-balance").await;
                assert!(p["challengeId"].is_string());
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let stored = h.stored_channel(&options, channel).await;
    // At most fifty. A request starts only when its whole worst case fits
    // beside the others in flight, so at least the balance's worth of worst
    // cases is served, and never more than the balance covers.
    assert!(
        served <= 50 && served >= 50 * cost / quote,
        "served {served} (cost {cost}, quote {quote})"
    );
    assert_eq!(served as usize + refused, 200);
    assert_eq!(stored.accepted, accepted);
    assert_eq!(stored.reserved, 0);
    assert_eq!(stored.spent, cost * (served + 1));
    assert!(
        stored.spent <= stored.accepted,
        "the balance never went negative"
    );
    gw.stop().await;
}

/// A gateway with sessions and a channel opened by [`PAYER`] with one
/// paid chat request.
struct OpenChannel {
    h: Harness,
    options: Options,
    gw: Gateway,
    url: String,
    payer: Payer,
    body: String,
    challenge: mpp::PaymentChallenge,
    quote: u128,
    channel: common::session::Channel,
}

impl OpenChannel {
    async fn start() -> Self {
        let h = Harness::start_sessions(MockOptions::default()).await;
        let options = session_options();
        let gw = h.gateway(&options).await;
        let url = format!("{}/v1/chat/completions", gw.url);
        let escrow = h.devnet.escrow().unwrap();
        let payer = Payer::new(signer(PAYER), &h.devnet.rpc_url(), escrow);
        let body = chat("gpt-4o-mini", 16, false);
        let challenge = challenge_for(&h, &url, &body).await;
        let quote = amount(&challenge);
        let (channel, open) = payer.open(&challenge, DEPOSIT, quote).await;
        assert_eq!(post(&h.http, &url, &body, Some(&open)).await.status(), 200);
        Self {
            h,
            options,
            gw,
            url,
            payer,
            body,
            challenge,
            quote,
            channel,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_vouchers_get_the_spec_problem_types() {
    let OpenChannel {
        h,
        gw,
        url,
        payer,
        body,
        challenge,
        quote,
        channel,
        ..
    } = OpenChannel::start().await;
    let calls = h.upstream.requests().len();

    let try_voucher = |payload: Value| {
        let http = h.http.clone();
        let (url, body, challenge) = (url.clone(), body.clone(), challenge.clone());
        async move { post(&http, &url, &body, Some(&credential(&challenge, payload))).await }
    };
    let cum = 10 * quote;

    // Signed by someone else.
    let stranger = common::session::voucher_by(&signer(3), payer.escrow, 42431, channel, cum);
    let r = try_voucher(voucher_payload("voucher", channel, cum, &stranger)).await;
    problem(r, 402, "session/signer-mismatch").await;

    // Wrong domain: another chain id, another escrow contract.
    for (escrow, chain) in [
        (payer.escrow, 1),
        (
            "0x00000000000000000000000000000000000000e5"
                .parse()
                .unwrap(),
            42431,
        ),
    ] {
        let sig = common::session::voucher_by(&payer.key, escrow, chain, channel, cum);
        let r = try_voucher(voucher_payload("voucher", channel, cum, &sig)).await;
        problem(r, 402, "session/signer-mismatch").await;
    }

    // High-s twin of a valid signature.
    let good = payer.voucher(channel, cum);
    let parsed =
        alloy::primitives::Signature::from_raw(&alloy::hex::decode(&good).unwrap()).unwrap();
    let n = alloy::primitives::U256::from_str_radix(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
        16,
    )
    .unwrap();
    let high = alloy::primitives::Signature::new(parsed.r(), n - parsed.s(), !parsed.v());
    let high = format!("0x{}", alloy::hex::encode(high.as_bytes()));
    let r = try_voucher(voucher_payload("voucher", channel, cum, &high)).await;
    problem(r, 402, "session/invalid-signature").await;
    // Garbage signature bytes.
    let r = try_voucher(voucher_payload("voucher", channel, cum, "0x1234")).await;
    problem(r, 402, "session/invalid-signature").await;

    // Below what was accepted (vouchers of concurrent requests cross on
    // the way): answered like a resubmission, served from what the higher
    // voucher authorized, which stays the highest.
    assert_eq!(
        try_voucher(voucher_payload("voucher", channel, cum, &good))
            .await
            .status(),
        200
    );
    let lower = payer.voucher(channel, cum - 1);
    let r = try_voucher(voucher_payload("voucher", channel, cum - 1, &lower)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        common::session::receipt(&r)["acceptedCumulative"],
        cum.to_string()
    );

    // Above the deposit (the chain agrees after a refresh).
    let above = payer.voucher(channel, DEPOSIT + 1);
    let r = try_voucher(voucher_payload("voucher", channel, DEPOSIT + 1, &above)).await;
    problem(r, 402, "session/amount-exceeds-deposit").await;

    // A channel nobody opened.
    let unknown = common::session::Channel {
        id: alloy::primitives::B256::repeat_byte(0x42),
    };
    let sig = payer.voucher(unknown, cum);
    let r = try_voucher(voucher_payload("voucher", unknown, cum, &sig)).await;
    problem(r, 410, "session/channel-not-found").await;

    // A challenge that is not ours, on a body-less action.
    let mut forged = challenge.clone();
    forged.id = "forged-challenge-id".into();
    let r = h
        .http
        .post(&url)
        .header(
            "authorization",
            payer.pay_voucher(&forged, channel, cum + 1),
        )
        .send()
        .await
        .unwrap();
    problem(r, 402, "session/challenge-not-found").await;

    // An unknown action.
    let r =
        try_voucher(json!({"action": "steal", "channelId": format!("{:#x}", channel.id)})).await;
    problem(r, 402, "invalid-payload").await;

    assert_eq!(
        h.upstream.requests().len(),
        calls + 2,
        "only the valid vouchers were served"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forced_close_is_settled_before_the_grace_period_ends() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        session_extra: "settle_interval_secs = 1\n".into(),
        ..session_options()
    };
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = h.payer();
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;
    let payer_before = h.balance(DEV_ACCOUNTS[PAYER].address).await;
    let body = chat("gpt-4o-mini", 32, false);
    let challenge = challenge_for(&h, &url, &body).await;
    let quote = amount(&challenge);
    let (channel, open) = payer.open(&challenge, DEPOSIT, quote).await;
    let response = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(response.status(), 200);
    let spent = number(&receipt(&response)["spent"]);

    // The payer walks away: requestClose on chain.
    assert_eq!(
        payer.send(Payer::request_close(channel)).await["status"],
        "0x1"
    );
    // The worker notices and settles what is owed (the open voucher covers it).
    let ledger = h.ledger(&options);
    let id = format!("{:#x}", channel.id);
    let mut settled = 0;
    for _ in 0..100 {
        settled = ledger.channel(&id).await.unwrap().unwrap().settled;
        if settled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        settled, quote,
        "the smallest voucher covering spent ({spent})"
    );
    // No more service on a closing channel.
    let challenge = challenge_for(&h, &url, &body).await;
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&challenge, channel, 2 * quote)),
    )
    .await;
    problem(r, 410, "session/channel-finalized").await;

    // After the grace period the payer withdraws the rest.
    h.devnet.rpc().increase_time(901).await.unwrap();
    assert_eq!(payer.send(Payer::withdraw(channel)).await["status"], "0x1");
    assert_eq!(h.balance(payee).await - payee_before, quote);
    assert_eq!(
        payer_before - h.balance(DEV_ACCOUNTS[PAYER].address).await,
        quote
    );
    gw.stop().await;
}

/// The gateway decodes a re-sent session credential once; what it pays for
/// is still checked with every request: the body, the route, a forged twin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resent_voucher_is_checked_against_every_request_it_pays_for() {
    let OpenChannel {
        h,
        options,
        gw,
        url,
        payer,
        body,
        challenge,
        quote,
        channel,
    } = OpenChannel::start().await;
    let cum = 10 * quote;
    let voucher = credential(
        &challenge,
        voucher_payload("voucher", channel, cum, &payer.voucher(channel, cum)),
    );
    let served = h.upstream.requests().len();
    for _ in 0..3 {
        let r = post(&h.http, &url, &body, Some(&voucher)).await;
        assert_eq!(r.status(), 200);
    }

    // The same header with another body: its challenge bound this one.
    let other_body = chat("gpt-4o-mini", 17, false);
    let r = post(&h.http, &url, &other_body, Some(&voucher)).await;
    let fresh = challenges(&r);
    let problem_body = problem(r, 402, "invalid-challenge").await;
    assert!(
        problem_body["detail"].as_str().unwrap().contains("body"),
        "{problem_body}"
    );
    assert_eq!(problem_body["challengeId"], fresh[0].id.as_str());

    // The same header on another route.
    let embeddings = format!("{}/v1/embeddings", gw.url);
    let embedding = json!({"model": "text-embedding-3-small", "input": "one line"}).to_string();
    let r = post(&h.http, &embeddings, &embedding, Some(&voucher)).await;
    let problem_body = problem(r, 402, "invalid-challenge").await;
    assert!(
        problem_body["detail"]
            .as_str()
            .unwrap()
            .contains("another route"),
        "{problem_body}"
    );

    // A twin with an altered id but the same voucher is not ours.
    let mut forged = challenge.clone();
    forged.id = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    let twin = credential(
        &forged,
        voucher_payload("voucher", channel, cum, &payer.voucher(channel, cum)),
    );
    let r = post(&h.http, &url, &body, Some(&twin)).await;
    problem(r, 402, "invalid-challenge").await;

    // And the original still pays, exactly the quotes served.
    assert_eq!(
        post(&h.http, &url, &body, Some(&voucher)).await.status(),
        200
    );
    assert_eq!(h.upstream.requests().len(), served + 4);
    let stored = h
        .ledger(&options)
        .channel(&format!("{:#x}", channel.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.reserved, 0);
    assert!(stored.spent <= 5 * quote && stored.spent > 0, "{stored:?}");
    gw.stop().await;
}
