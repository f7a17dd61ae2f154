//! Crash safety: the real `tollgate` binary is killed with SIGKILL in the
//! middle of a metered stream and in the middle of a settlement, then
//! restarted on the same database. Nothing accepted is lost, what a stream
//! delivered stays charged (at most one checkpoint interval short), nothing
//! beyond what was delivered, nothing twice, and the settlement completes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::{common, support};

use std::time::Duration;

use alloy::primitives::B256;
use common::session::{Channel, receipt, session_challenge};
use common::*;
use futures::StreamExt;
use serde_json::json;
use support::launch;
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::{ChannelBook, ChannelStatus};
use tollgate_mock::MockOptions;
use tollgate_pricing::{Endpoint, PriceTable, UsageDetail, actual_cost_detail};

fn options(protocol: &str) -> Options {
    Options {
        quoted: true,
        session: true,
        session_extra: format!("settle_interval_secs = 1\nprotocol = \"{protocol}\"\n"),
        // Restarted under the same id, it releases its own old holds.
        instance_id: Some("gw-crash".into()),
        ..Options::default()
    }
}

/// A payer on either session protocol.
enum AnyPayer {
    V1(common::session::Payer),
    V2(common::session_v2::Payer),
}

impl AnyPayer {
    fn of(h: &Harness, protocol: &str) -> Self {
        match protocol {
            "v2" => Self::V2(h.payer_v2()),
            _ => Self::V1(h.payer()),
        }
    }

    async fn open(
        &self,
        challenge: &mpp::PaymentChallenge,
        deposit: u128,
        initial: u128,
    ) -> (B256, String) {
        match self {
            Self::V1(p) => {
                let (channel, auth) = p.open(challenge, deposit, initial).await;
                (channel.id, auth)
            }
            Self::V2(p) => p.open(challenge, deposit, initial).await,
        }
    }

    async fn pay_voucher(
        &self,
        challenge: &mpp::PaymentChallenge,
        id: B256,
        cumulative: u128,
    ) -> String {
        match self {
            Self::V1(p) => p.pay_voucher(challenge, Channel { id }, cumulative),
            Self::V2(p) => p.pay_voucher(challenge, id, cumulative).await,
        }
    }

    async fn close(&self, challenge: &mpp::PaymentChallenge, id: B256, cumulative: u128) -> String {
        match self {
            Self::V1(p) => p.close(challenge, Channel { id }, cumulative),
            Self::V2(p) => p.close(challenge, id, cumulative).await,
        }
    }
}

fn chat(stream: bool) -> String {
    json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": 400,
        "stream": stream,
    })
    .to_string()
}

async fn session_challenge_for(h: &Harness, url: &str, body: &str) -> mpp::PaymentChallenge {
    session_challenge(&challenges(&post(&h.http, url, body, None).await))
}

fn quote(challenge: &mpp::PaymentChallenge) -> u128 {
    challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn spent(response: &reqwest::Response) -> u128 {
    receipt(response)["spent"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A stream checkpoints what it delivered every this many output tokens.
const CHECKPOINT_TOKENS: u64 = 16;

/// What the stream's content events delivered: how many, and their output
/// tokens counted one event at a time with the model's tokenizer (the
/// metering rule).
fn delivered_tokens(text: &str) -> (usize, u64) {
    let table = PriceTable::builtin();
    let (_, price) = table.chat_model("gpt-4o").unwrap();
    let mut events = 0;
    let mut tokens = 0;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<serde_json::Value>(data) else {
            continue;
        };
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str()
            && !piece.is_empty()
        {
            events += 1;
            tokens += price.encoding.count(piece).max(1);
        }
    }
    (events, tokens)
}

/// What the prompt of `body` plus `output` tokens cost by the table.
fn cost_of(body: &str, output: u64) -> u128 {
    let table = PriceTable::builtin();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    let quote = Endpoint::Chat.quote(&table, &json).unwrap();
    actual_cost_detail(
        &table,
        Endpoint::Chat,
        &quote,
        Some(UsageDetail {
            input_tokens: quote.input_units,
            output_tokens: output,
            ..UsageDetail::default()
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_stream_keeps_what_was_delivered_at_most_one_checkpoint_short() {
    killed_mid_stream("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_killed_mid_stream_keeps_what_was_delivered_at_most_one_checkpoint_short() {
    killed_mid_stream("v2").await;
}

async fn killed_mid_stream(protocol: &str) {
    // A slow stream: 150 tokens, 20 ms apart.
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 150,
        chunk_interval: Duration::from_millis(20),
        ..MockOptions::default()
    })
    .await;
    let options = Options {
        session_extra: format!(
            "settle_interval_secs = 1\nstream_checkpoint_tokens = {CHECKPOINT_TOKENS}\nprotocol = \"{protocol}\"\n"
        ),
        ..options(protocol)
    };
    let gw = launch(&h, &options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = AnyPayer::of(&h, protocol);

    let body = chat(false);
    let challenge = session_challenge_for(&h, &url, &body).await;
    let first_voucher = 10 * quote(&challenge);
    let (channel, open) = payer.open(&challenge, 1_000_000, first_voucher).await;
    let stored_protocol = |id: &str| {
        let ledger = h.ledger(&options);
        let id = id.to_owned();
        async move { ledger.channel(&id).await.unwrap().unwrap().protocol }
    };
    let first = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(first.status(), 200);
    let spent_before = spent(&first);
    let accepted = first_voucher + 1_000;

    // A stream on a new voucher; kill the gateway after 100 content events.
    let stream_body = chat(true);
    let challenge = session_challenge_for(&h, &url, &stream_body).await;
    let response = post(
        &h.http,
        &url,
        &stream_body,
        Some(&payer.pay_voucher(&challenge, channel, accepted).await),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if delivered_tokens(&text).0 >= 100 {
            break;
        }
    }
    gw.kill().await;
    drop(stream);
    let (events, seen) = delivered_tokens(&text);
    assert!((100..150).contains(&events), "killed mid-stream: {events}");

    // Restart on the same database.
    let gw = launch(&h, &options).await;
    let id = format!("{channel:#x}");
    assert_eq!(stored_protocol(&id).await, protocol);
    let stored = h.ledger(&options).channel(&id).await.unwrap().unwrap();
    assert_eq!(stored.accepted, accepted, "the accepted voucher survived");
    assert_eq!(stored.reserved, 0, "the dead stream's hold was released");
    // What the stream recorded as delivered stays charged: at least what
    // the client read, less one checkpoint interval; never beyond what the
    // whole answer would have cost.
    let charged = stored.spent - spent_before;
    assert!(
        charged >= cost_of(&stream_body, seen - CHECKPOINT_TOKENS),
        "charged {charged} for {seen} tokens seen"
    );
    assert!(
        charged <= cost_of(&stream_body, 150),
        "charged {charged}: no more than was delivered"
    );

    // The channel goes on: the same voucher pays one more request, once.
    let url = format!("{}/v1/chat/completions", gw.url);
    let challenge = session_challenge_for(&h, &url, &body).await;
    let again = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&challenge, channel, accepted).await),
    )
    .await;
    assert_eq!(again.status(), 200);
    let after = h.ledger(&options).channel(&id).await.unwrap().unwrap();
    assert_eq!(after.spent, stored.spent + spent_before);
    gw.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_settlement_completes_after_restart() {
    killed_mid_settlement("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_killed_mid_settlement_completes_after_restart() {
    killed_mid_settlement("v2").await;
}

async fn killed_mid_settlement(protocol: &str) {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = options(protocol);
    let gw = launch(&h, &options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = AnyPayer::of(&h, protocol);
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;

    let body = chat(false);
    let challenge = session_challenge_for(&h, &url, &body).await;
    let (channel, open) = payer.open(&challenge, 1_000_000, quote(&challenge)).await;
    let first = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(first.status(), 200);
    let spent = spent(&first);

    // Stop mining: the close transaction is signed, recorded and sent, but
    // not confirmed; kill the gateway while it waits.
    let rpc = h.devnet.rpc();
    let _: serde_json::Value = rpc.call("evm_setAutomine", json!([false])).await.unwrap();
    let closing = {
        let http = h.http.clone();
        let url = url.clone();
        let auth = payer.close(&challenge, channel, spent).await;
        tokio::spawn(async move { http.post(&url).header("authorization", auth).send().await })
    };
    let id = format!("{channel:#x}");
    let ledger = h.ledger(&options);
    assert_eq!(
        ledger.channel(&id).await.unwrap().unwrap().protocol,
        protocol
    );
    let mut in_flight = false;
    for _ in 0..200 {
        if ledger
            .channel(&id)
            .await
            .unwrap()
            .unwrap()
            .inflight
            .is_some()
        {
            in_flight = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(in_flight, "the close is recorded before it is broadcast");
    tokio::time::sleep(Duration::from_millis(300)).await; // let it reach the node
    gw.kill().await;
    let _ = closing.await;

    // The chain mines what was sent; the restarted gateway reconciles.
    let _: serde_json::Value = rpc.call("evm_setAutomine", json!([true])).await.unwrap();
    let _: serde_json::Value = rpc.call("evm_mine", json!([])).await.unwrap();
    let gw = launch(&h, &options).await;
    let mut stored = ledger.channel(&id).await.unwrap().unwrap();
    for _ in 0..200 {
        if stored.inflight.is_none() && stored.status == ChannelStatus::Finalized {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stored = ledger.channel(&id).await.unwrap().unwrap();
    }
    assert!(stored.inflight.is_none(), "the settlement was reconciled");
    assert_eq!(stored.status, ChannelStatus::Finalized);
    assert_eq!(stored.settled, spent);
    assert_eq!(
        h.balance(payee).await - payee_before,
        spent,
        "paid exactly once"
    );
    gw.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_refund_refunds_exactly_once_after_restart() {
    use common::faults::{FaultUpstream, Mode};
    use tollgate_ledger::{RefundBook, RefundState};

    let h = Harness::start().await;
    // The upstream never answers: the charge is settled, then the call
    // times out and the charge is refunded.
    let upstream = FaultUpstream::start(Mode::Timeout).await;
    let options = Options {
        upstream_url: Some(upstream.url.clone()),
        upstream_idle_secs: Some(2),
        ..Options::default()
    };
    let gw = launch(&h, &options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let before = h.balance(recipient).await;
    let challenge = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let calling = {
        let (http, url, auth) = (h.http.clone(), url.clone(), auth.clone());
        tokio::spawn(async move { post(&http, &url, &chat_body(), Some(&auth)).await.status() })
    };
    // The charge lands; then mining stops, so the refund is signed,
    // recorded and sent but not confirmed when the gateway dies.
    let paid = async {
        while h.balance(recipient).await == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), paid)
        .await
        .expect("the charge settled before the upstream call");
    let rpc = h.devnet.rpc();
    let _: serde_json::Value = rpc.call("evm_setAutomine", json!([false])).await.unwrap();
    assert_eq!(calling.await.unwrap(), 504, "the upstream timed out");
    let ledger = h.ledger(&options);
    let mut sent = None;
    for _ in 0..200 {
        if let Some(r) = ledger.refund(&challenge.id).await.unwrap()
            && r.state == RefundState::Sent
        {
            sent = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let sent = sent.expect("the refund is recorded, signed bytes and all, before it is broadcast");
    assert!(sent.signed_tx.is_some() && sent.tx_hash.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await; // let it reach the node
    gw.kill().await;

    // The chain mines what was sent; the restarted gateway confirms it and
    // sends nothing twice.
    let _: serde_json::Value = rpc.call("evm_setAutomine", json!([true])).await.unwrap();
    let _: serde_json::Value = rpc.call("evm_mine", json!([])).await.unwrap();
    let gw = launch(&h, &options).await;
    let refund = h.refunded(&options, &challenge.id).await;
    assert_eq!(
        refund.tx_hash, sent.tx_hash,
        "the same transfer, not a second one"
    );
    assert_eq!(h.balance(recipient).await, before, "refunded exactly once");
    gw.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_owed_without_a_key_is_paid_once_a_key_is_configured() {
    use common::faults::{FaultUpstream, Mode};
    use tollgate_ledger::{RefundBook, RefundState};

    let h = Harness::start().await;
    let upstream = FaultUpstream::start(Mode::Status(500)).await;
    let keyless = Options {
        upstream_url: Some(upstream.url.clone()),
        operator: false,
        ..Options::default()
    };
    let gw = launch(&h, &keyless).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let before = h.balance(recipient).await;
    let challenge = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let response = post(&h.http, &url, &chat_body(), Some(&auth)).await;
    assert_eq!(response.status(), 500);
    assert!(response.headers().get("payment-receipt").is_none());
    let ledger = h.ledger(&keyless);
    let mut owed = None;
    // The refund is recorded as owed first, its payer looked up after: wait
    // for both.
    for _ in 0..200 {
        if let Some(r) = ledger.refund(&challenge.id).await.unwrap()
            && r.payer.is_some()
        {
            owed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let owed = owed.expect("the refund is recorded as owed, with its payer");
    assert_eq!(owed.state, RefundState::Owed);
    assert_eq!(owed.amount, CHAT_PRICE);
    assert_eq!(
        owed.payer.as_deref(),
        Some(DEV_ACCOUNTS[PAYER].address.to_ascii_lowercase().as_str())
    );
    assert_eq!(h.balance(recipient).await - before, CHAT_PRICE, "not sent");
    gw.kill().await;

    // With the key, the restarted gateway pays what is owed.
    let keyed = Options {
        operator: true,
        ..keyless
    };
    let gw = launch(&h, &keyed).await;
    let refund = h.refunded(&keyed, &challenge.id).await;
    assert_eq!(refund.amount, CHAT_PRICE);
    assert_eq!(h.balance(recipient).await, before);
    gw.kill().await;
}
