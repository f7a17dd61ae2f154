//! Session protocol v2 through the real gateway on the devnet's channel
//! reserve: every bad v2 input gets its problem and a fresh challenge,
//! and `protocol = "both"` serves v1 and v2 channels side by side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use alloy::primitives::{Address, B256};
use common::session::{Payer, credential};
use common::*;
use serde_json::{Value, json};
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::ChannelBook;
use tollgate_mock::MockOptions;

const DEPOSIT: u128 = 1_000_000;

fn options(protocol: &str) -> Options {
    Options {
        quoted: true,
        session: true,
        session_extra: format!("protocol = \"{protocol}\"\n"),
        ..Options::default()
    }
}

fn chat() -> String {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 16,
    })
    .to_string()
}

fn amount(challenge: &mpp::PaymentChallenge) -> u128 {
    challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn protocol_of(challenge: &mpp::PaymentChallenge) -> Option<String> {
    challenge.request.decode_value().unwrap()["methodDetails"]["sessionProtocol"]
        .as_str()
        .map(str::to_owned)
}

/// The 402's session challenges by protocol marker.
async fn session_challenges(h: &Harness, url: &str, body: &str) -> Vec<mpp::PaymentChallenge> {
    challenges(&post(&h.http, url, body, None).await)
        .into_iter()
        .filter(|c| c.intent.as_str() == "session")
        .collect()
}

/// A refusal on the paid resource: the problem, and a fresh challenge.
async fn refused(response: reqwest::Response, status: u16, slug: &str) {
    let fresh = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .count();
    problem(response, status, slug).await;
    if status == 402 {
        assert!(
            fresh > 0,
            "{slug}: a fresh challenge comes with the refusal"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_v2_input_gets_the_right_problem_and_a_fresh_challenge() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = options("v2");
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let body = chat();
    let offered = session_challenges(&h, &url, &body).await;
    assert_eq!(offered.len(), 1);
    let challenge = offered[0].clone();
    assert_eq!(protocol_of(&challenge).as_deref(), Some("v2"));
    let details = &challenge.request.decode_value().unwrap()["methodDetails"];
    assert_eq!(details["chainId"], 42431);
    assert_eq!(
        details["escrowContract"].as_str().unwrap().to_lowercase(),
        tollgate_devnet::CHANNEL_RESERVE
    );
    let payer = h.payer_v2();
    let quote = amount(&challenge);
    let (id, open) = payer.open(&challenge, DEPOSIT, quote).await;
    assert_eq!(post(&h.http, &url, &body, Some(&open)).await.status(), 200);
    let stored = h
        .ledger(&options)
        .channel(&format!("{id:#x}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.protocol, "v2");

    let send = |payload: Value| {
        let http = h.http.clone();
        let (url, body, challenge) = (url.clone(), body.clone(), challenge.clone());
        async move { post(&http, &url, &body, Some(&credential(&challenge, payload))).await }
    };
    let cum = 10 * quote;
    let reserve = payer.reserve;

    // A v1-domain voucher ("Tempo Stream Channel", uint128) for a v2 channel.
    let v1_domain = common::session::voucher_by(
        &payer.key,
        reserve,
        42431,
        common::session::Channel { id },
        cum,
    );
    refused(
        send(payer.payload("voucher", id, cum, &v1_domain)).await,
        402,
        "session/signer-mismatch",
    )
    .await;
    // Another chain, another reserve.
    let other_chain = payer.signature(id, cum, reserve, 1).await;
    refused(
        send(payer.payload("voucher", id, cum, &other_chain)).await,
        402,
        "session/signer-mismatch",
    )
    .await;
    let other_reserve = payer
        .signature(id, cum, Address::repeat_byte(0xe5), 42431)
        .await;
    refused(
        send(payer.payload("voucher", id, cum, &other_reserve)).await,
        402,
        "session/signer-mismatch",
    )
    .await;
    // Signed by someone else.
    let stranger = tollgate_client::reserve::voucher_signature(&signer(3), reserve, 42431, id, cum)
        .await
        .unwrap();
    refused(
        send(payer.payload("voucher", id, cum, &stranger)).await,
        402,
        "session/signer-mismatch",
    )
    .await;
    // An amount above uint96.
    let huge = (1u128 << 96).to_string();
    let mut payload = payer.payload("voucher", id, 0, &format!("0x{}", "11".repeat(65)));
    payload["cumulativeAmount"] = json!(huge);
    refused(send(payload).await, 402, "invalid-payload").await;
    // A wrong descriptor for this channel.
    let good = payer.signature(id, cum, reserve, 42431).await;
    let mut payload = payer.payload("voucher", id, cum, &good);
    payload["descriptor"]["salt"] = json!(format!("{:#x}", B256::repeat_byte(1)));
    refused(send(payload).await, 402, "verification-failed").await;
    // A channel id that is not the descriptor's.
    let mut payload = payer.payload("voucher", id, cum, &good);
    payload["channelId"] = json!(format!("{:#x}", B256::repeat_byte(0x42)));
    refused(send(payload).await, 402, "verification-failed").await;
    // No descriptor.
    let mut payload = payer.payload("voucher", id, cum, &good);
    payload.as_object_mut().unwrap().remove("descriptor");
    refused(send(payload).await, 402, "invalid-payload").await;

    // Nothing of that was accepted; the good voucher still pays.
    let stored = h
        .ledger(&options)
        .channel(&format!("{id:#x}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.accepted, quote);
    let ok = send(payer.payload("voucher", id, cum, &good)).await;
    assert_eq!(ok.status(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_protocols_are_offered_and_served_side_by_side() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = options("both");
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let body = chat();
    let offered = session_challenges(&h, &url, &body).await;
    let protocols: Vec<Option<String>> = offered.iter().map(protocol_of).collect();
    assert_eq!(
        protocols,
        [Some("v2".to_owned()), None],
        "v2 first, then v1"
    );
    let v2 = offered[0].clone();
    let v1 = offered[1].clone();
    let quote = amount(&v2);

    // A v2 channel on the v2 challenge, a v1 channel on the v1 challenge.
    let payer_v2 = h.payer_v2();
    let (v2_id, open) = payer_v2.open(&v2, DEPOSIT, 4 * quote).await;
    assert_eq!(post(&h.http, &url, &body, Some(&open)).await.status(), 200);
    let payer_v1 = Payer::new(
        signer(PAYER),
        &h.devnet.rpc_url(),
        h.devnet.escrow().unwrap(),
    );
    let (v1_channel, open) = payer_v1.open(&v1, DEPOSIT, 4 * quote).await;
    assert_eq!(post(&h.http, &url, &body, Some(&open)).await.status(), 200);

    // Each pays on its own challenge…
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&payer_v2.pay_voucher(&v2, v2_id, 4 * quote).await),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("payment-session-snapshot"));
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&payer_v1.pay_voucher(&v1, v1_channel, 4 * quote)),
    )
    .await;
    assert_eq!(r.status(), 200);
    // The draft's snapshot is for v2 channels only.
    assert!(!r.headers().contains_key("payment-session"));
    assert!(!r.headers().contains_key("payment-session-snapshot"));
    // …and not on the other's.
    let crossed = post(
        &h.http,
        &url,
        &body,
        Some(&payer_v2.pay_voucher(&v1, v2_id, 4 * quote).await),
    )
    .await;
    problem(crossed, 402, "invalid-challenge").await;

    let ledger = h.ledger(&options);
    let mut protocols: Vec<String> = ledger
        .channels()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.protocol)
        .collect();
    protocols.sort();
    assert_eq!(protocols, ["v1", "v2"]);

    // Both close, each through its own contract.
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let before = h.balance(payee).await;
    let spent_v2 = ledger
        .channel(&format!("{v2_id:#x}"))
        .await
        .unwrap()
        .unwrap()
        .spent;
    let spent_v1 = ledger
        .channel(&format!("{:#x}", v1_channel.id))
        .await
        .unwrap()
        .unwrap()
        .spent;
    let close_v2 = payer_v2.close(&v2, v2_id, spent_v2).await;
    let r = h
        .http
        .post(&url)
        .header("authorization", close_v2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let close_v1 = payer_v1.close(&v1, v1_channel, spent_v1);
    let r = h
        .http
        .post(&url)
        .header("authorization", close_v1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.balance(payee).await - before, spent_v1 + spent_v2);
    gw.stop().await;
}

/// The `Payment-Session-Snapshot` header, decoded (unpadded base64url JSON).
fn snapshot_header(response: &reqwest::Response) -> Value {
    use base64::Engine;
    let header = response
        .headers()
        .get("payment-session-snapshot")
        .unwrap_or_else(|| panic!("a snapshot header: {:?}", response.headers()))
        .to_str()
        .unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A snapshot says exactly what the gateway's ledger holds for the channel.
async fn assert_snapshot_is_the_ledger(
    snapshot: &Value,
    ledger: &tollgate_ledger::SqliteLedger,
    id: B256,
    required: u128,
) {
    let id = format!("{id:#x}");
    let stored = ledger.channel(&id).await.unwrap().unwrap();
    let highest = ledger
        .voucher_covering(&id, stored.accepted)
        .await
        .unwrap()
        .unwrap();
    let descriptor: Value = serde_json::from_str(stored.descriptor.as_deref().unwrap()).unwrap();
    assert_eq!(
        *snapshot,
        json!({
            "acceptedCumulative": stored.accepted.to_string(),
            "chainId": 42431,
            "channelId": id,
            "deposit": stored.deposit.to_string(),
            "descriptor": descriptor,
            "escrow": tollgate_devnet::CHANNEL_RESERVE,
            "requiredCumulative": required.max(stored.accepted).to_string(),
            "settled": stored.settled.to_string(),
            "spent": stored.spent.to_string(),
            "units": stored.units,
            "highestVoucher": {
                "channelId": id,
                "cumulativeAmount": stored.accepted.to_string(),
                "signature": highest.signature,
            },
        }),
        "{stored:?}"
    );
}

/// v2 answers carry the draft's `Payment-Session` (the channel) and
/// `Payment-Session-Snapshot` (its state, as the ledger has it); a 402
/// refusing a request the channel cannot cover carries the snapshot in
/// `methodDetails.sessionSnapshot`, and a voucher answering that challenge
/// is accepted. A closed channel, and a v1 channel, get neither header.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_answers_carry_the_session_snapshot_the_ledger_holds() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = options("v2");
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let body = chat();
    let challenge = session_challenges(&h, &url, &body).await.remove(0);
    assert!(
        challenge.request.decode_value().unwrap()["methodDetails"]
            .get("sessionSnapshot")
            .is_none(),
        "an unpaid request learns nothing about any channel"
    );
    let quote = amount(&challenge);
    let payer = h.payer_v2();
    let ledger = h.ledger(&options);

    // Open, authorizing exactly this request's worst case.
    let (id, open) = payer.open(&challenge, DEPOSIT, quote).await;
    let r = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["payment-session"].to_str().unwrap(),
        format!("{id:#x}")
    );
    let snapshot = snapshot_header(&r);
    assert_snapshot_is_the_ledger(&snapshot, &ledger, id, 0).await;
    let spent = ledger
        .channel(&format!("{id:#x}"))
        .await
        .unwrap()
        .unwrap()
        .spent;
    assert!(spent > 0 && snapshot["spent"] == spent.to_string());

    // The same voucher again does not cover another worst case: the 402
    // names the channel's state and what this request needs authorized.
    let again = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&challenge, id, quote).await),
    )
    .await;
    let fresh = challenges(&again)
        .into_iter()
        .find(|c| c.intent.as_str() == "session")
        .unwrap();
    problem(again, 402, "session/insufficient-balance").await;
    let hinted = fresh.request.decode_value().unwrap()["methodDetails"]["sessionSnapshot"].clone();
    assert_snapshot_is_the_ledger(&hinted, &ledger, id, spent + quote).await;
    let required: u128 = hinted["requiredCumulative"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(required, spent + quote);

    // A voucher for it, answering the hinted challenge, is served.
    let r = post(
        &h.http,
        &url,
        &body,
        Some(&payer.pay_voucher(&fresh, id, required).await),
    )
    .await;
    assert_eq!(r.status(), 200);
    let snapshot = snapshot_header(&r);
    assert_snapshot_is_the_ledger(&snapshot, &ledger, id, 0).await;
    assert_eq!(snapshot["acceptedCumulative"], required.to_string());

    // The HEAD preflight with a voucher: the headers, no body.
    let r = h
        .http
        .head(&url)
        .header(
            "authorization",
            payer.pay_voucher(&challenge, id, required + 1).await,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["payment-session"].to_str().unwrap(),
        format!("{id:#x}")
    );
    assert_snapshot_is_the_ledger(&snapshot_header(&r), &ledger, id, 0).await;

    // A close ends the channel: a receipt, no snapshot.
    let stored = ledger.channel(&format!("{id:#x}")).await.unwrap().unwrap();
    let r = h
        .http
        .post(&url)
        .header(
            "authorization",
            payer.close(&challenge, id, stored.spent).await,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("payment-receipt"));
    assert!(!r.headers().contains_key("payment-session"));
    assert!(!r.headers().contains_key("payment-session-snapshot"));
    gw.stop().await;
}
