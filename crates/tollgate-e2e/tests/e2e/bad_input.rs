//! Every malformed, forged or unpayable request gets a clear problem, the
//! right status, a fresh challenge when it is a 402 — and never reaches the
//! upstream nor moves money.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use base64::Engine;
use common::*;
use tollgate_devnet::{ALPHA_USD, DEV_ACCOUNTS};

struct Case {
    h: Harness,
    gw: Gateway,
    url: String,
    before: u128,
}

impl Case {
    async fn start(options: Options) -> Self {
        let h = Harness::start().await;
        let gw = h.gateway(&options).await;
        let url = format!("{}/v1/chat/completions", gw.url);
        let before = h.balance(DEV_ACCOUNTS[RECIPIENT].address).await;
        Self { h, gw, url, before }
    }

    async fn challenge(&self) -> mpp::PaymentChallenge {
        challenges(&post(&self.h.http, &self.url, &chat_body(), None).await).remove(0)
    }

    /// Sends `auth` and checks a 402 with a fresh challenge and `slug`.
    async fn refused(&self, auth: &str, slug: &str) -> serde_json::Value {
        let response = post(&self.h.http, &self.url, &chat_body(), Some(auth)).await;
        let fresh = challenges(&response);
        let body = problem(response, 402, slug).await;
        assert_eq!(body["challengeId"], fresh[0].id.as_str());
        body
    }

    async fn nothing_happened(self) {
        assert_eq!(
            self.h.upstream.count(),
            0,
            "the upstream must not be called"
        );
        assert_eq!(
            self.h.balance(DEV_ACCOUNTS[RECIPIENT].address).await,
            self.before
        );
        self.gw.stop().await;
    }
}

/// A change to a challenge's `request` object.
type RequestEdit = Box<dyn Fn(&mut serde_json::Value)>;

fn b64(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_credentials_are_refused_with_a_fresh_challenge() {
    let case = Case::start(Options::default()).await;
    for garbled in [
        "Payment".to_owned(),
        "Payment !!!not-base64!!!".to_owned(),
        format!("Payment {}", b64("{not json")),
        format!("Payment {}", b64(r#"{"challenge":{"id":"x"}}"#)),
        format!("Payment {}", b64(r#"{"payload":{}}"#)),
    ] {
        case.refused(&garbled, "malformed-credential").await;
    }
    let oversized = format!("Payment {}", "A".repeat(20_000));
    let body = case.refused(&oversized, "malformed-credential").await;
    assert!(body["detail"].as_str().unwrap().contains("exceeds"));

    // Another scheme is not a payment attempt: the client simply has not paid.
    case.refused("Bearer sk-live-123", "payment-required").await;

    // Bytes that are not visible ASCII.
    let raw = reqwest::header::HeaderValue::from_bytes(b"Payment \xff\xfe").unwrap();
    let response = case
        .h
        .http
        .post(&case.url)
        .header("authorization", raw)
        .body(chat_body())
        .send()
        .await
        .unwrap();
    challenges(&response);
    problem(response, 402, "malformed-credential").await;
    case.nothing_happened().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_misdirected_challenges_are_refused() {
    let case = Case::start(Options::default()).await;
    let rpc = case.h.devnet.rpc_url();

    // Unknown id.
    let mut unknown = case.challenge().await;
    unknown.id = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    case.refused(
        &pay(&unknown, signer(PAYER), &rpc).await,
        "invalid-challenge",
    )
    .await;

    // Tampered: a lower price under the original id.
    let original = case.challenge().await;
    let cheaper = with_request(&original, |r| r["amount"] = "1".into());
    case.refused(
        &pay_altered(&cheaper, &cheaper, signer(PAYER), &rpc).await,
        "invalid-challenge",
    )
    .await;

    // Expired: correctly signed by our secret, but its time has passed.
    let live = case.challenge().await;
    let expired = mpp::PaymentChallenge::with_secret_key_full(
        SECRET,
        live.realm.clone(),
        live.method.clone(),
        live.intent.clone(),
        live.request.clone(),
        Some("2020-01-01T00:00:00Z"),
        live.digest.as_deref(),
        live.description.as_deref(),
        live.opaque.clone(),
        None,
    );
    case.refused(
        &pay_altered(&expired, &live, signer(PAYER), &rpc).await,
        "payment-expired",
    )
    .await;

    // Issued for another route (same body, same price table entry aside).
    let embeddings = format!("{}/v1/embeddings", case.gw.url);
    let other_route =
        challenges(&post(&case.h.http, &embeddings, &chat_body(), None).await).remove(0);
    let body = case
        .refused(
            &pay(&other_route, signer(PAYER), &rpc).await,
            "invalid-challenge",
        )
        .await;
    assert!(
        body["detail"].as_str().unwrap().contains("another route"),
        "{body}"
    );

    // Body changed after the challenge was issued.
    let challenge = case.challenge().await;
    let auth = pay(&challenge, signer(PAYER), &rpc).await;
    let changed = chat_body().replace("one line", "ten pages");
    let response = post(&case.h.http, &case.url, &changed, Some(&auth)).await;
    challenges(&response);
    let body = problem(response, 402, "invalid-challenge").await;
    assert!(body["detail"].as_str().unwrap().contains("body"), "{body}");
    case.nothing_happened().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_pay_the_wrong_thing_are_refused() {
    let case = Case::start(Options::default()).await;
    let rpc = case.h.devnet.rpc_url();
    let payer = DEV_ACCOUNTS[PAYER].address;
    let payer_before = case.h.balance(payer).await;
    let edits: [(&str, RequestEdit); 4] = [
        (
            "amount",
            Box::new(|r| r["amount"] = (CHAT_PRICE - 1).to_string().into()),
        ),
        ("token", Box::new(|r| r["currency"] = ALPHA_USD.into())),
        (
            "recipient",
            Box::new(|r| r["recipient"] = DEV_ACCOUNTS[3].address.into()),
        ),
        (
            "chain",
            Box::new(|r| r["methodDetails"]["chainId"] = 4217.into()),
        ),
    ];
    for (what, edit) in edits {
        let challenge = case.challenge().await;
        let wrong = with_request(&challenge, edit);
        let auth = pay_altered(&challenge, &wrong, signer(PAYER), &rpc).await;
        let body = case.refused(&auth, "verification-failed").await;
        assert!(
            !body["detail"].as_str().unwrap().contains("0x70997970"),
            "wrong {what}: {body}"
        );
    }
    assert_eq!(
        case.h.balance(payer).await,
        payer_before,
        "no refused transfer was mined"
    );
    case.nothing_happened().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_without_funds_is_refused_before_anything_is_mined() {
    let case = Case::start(Options::default()).await;
    let broke = alloy::signers::local::PrivateKeySigner::random();
    let challenge = case.challenge().await;
    let auth = pay_altered(&challenge, &challenge, broke, &case.h.devnet.rpc_url()).await;
    let body = case.refused(&auth, "verification-failed").await;
    assert!(
        body["detail"].as_str().unwrap().contains("would fail"),
        "{body}"
    );
    case.nothing_happened().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_chain_serves_nothing_and_the_challenge_stays_usable() {
    let h = Harness::start().await;
    let db = h.dir.path().join("outage.db");
    let down = h
        .gateway(&Options {
            rpc_url: Some("http://127.0.0.1:9".into()),
            db_path: Some(db.clone()),
            ..Options::default()
        })
        .await;
    let url = format!("{}/v1/chat/completions", down.url);
    let challenge = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let response = post(&h.http, &url, &chat_body(), Some(&auth)).await;
    assert!(response.headers().get("www-authenticate").is_none());
    assert_eq!(response.headers()["retry-after"], "5");
    problem(response, 503, "chain-unavailable").await;
    assert_eq!(h.upstream.count(), 0);
    down.stop().await;

    // Once the chain is back, the same credential pays (it was never spent).
    let up = h
        .gateway(&Options {
            db_path: Some(db),
            ..Options::default()
        })
        .await;
    let url = format!("{}/v1/chat/completions", up.url);
    assert_eq!(
        post(&h.http, &url, &chat_body(), Some(&auth))
            .await
            .status(),
        200
    );
    assert_eq!(h.upstream.count(), 1);
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_unknown_routes_and_accept_payment() {
    let case = Case::start(Options::default()).await;
    let huge = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(70_000)
    );
    // Its own connection: the gateway answers 413 without reading the whole
    // body and drops that connection, which a pooled client might reuse.
    let response = post(&reqwest::Client::new(), &case.url, &huge, None).await;
    assert_eq!(response.status(), 413);
    assert!(response.headers().get("www-authenticate").is_none());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "body-too-large");

    let response = post(
        &case.h.http,
        &format!("{}/v1/nope", case.gw.url),
        "{}",
        None,
    )
    .await;
    assert_eq!(response.status(), 404);

    // A client that accepts only another method still gets our offer (the
    // spec lets servers ignore a header that matches nothing); one that
    // accepts ours gets exactly it.
    for accept in [
        "stripe/charge",
        "tempo/charge, stripe/charge;q=0.5",
        "tempo/*",
    ] {
        let response = case
            .h
            .http
            .post(&case.url)
            .header("accept-payment", accept)
            .body(chat_body())
            .send()
            .await
            .unwrap();
        let offered = challenges(&response);
        assert_eq!(offered.len(), 1);
        assert_eq!(offered[0].method.as_str(), "tempo");
        assert_eq!(offered[0].intent.as_str(), "charge");
    }
    case.nothing_happened().await;
}
