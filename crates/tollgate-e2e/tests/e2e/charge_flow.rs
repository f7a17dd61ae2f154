//! Paid requests on a real local Tempo chain: pull, push, proof, fee
//! sponsorship, single use under concurrency and across restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use alloy::primitives::keccak256;
use common::*;
use tollgate_devnet::DEV_ACCOUNTS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_payment_serves_once_and_moves_exactly_the_price() {
    let h = Harness::start().await;
    let gw = h.gateway(&Options::default()).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;

    let unpaid = post(&h.http, &url, &chat_body(), None).await;
    let challenge = challenges(&unpaid).remove(0);
    let body = problem(unpaid, 402, "payment-required").await;
    assert_eq!(body["challengeId"], challenge.id.as_str());
    assert_eq!(
        h.upstream.count(),
        0,
        "an unpaid request never reaches the upstream"
    );
    assert!(
        challenge
            .digest
            .as_deref()
            .unwrap()
            .starts_with("sha-256=:")
    );
    assert!(challenge.expires.is_some() && challenge.opaque.is_some());
    let request = challenge.request.decode_value().unwrap();
    assert_eq!(request["amount"], CHAT_PRICE.to_string());
    assert_eq!(request["methodDetails"]["chainId"], 42431);

    let before = h.balance(recipient).await;
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let paid = post(&h.http, &url, &chat_body(), Some(&auth)).await;
    assert_eq!(paid.status(), 200);
    assert_eq!(paid.headers()["cache-control"], "private");
    let receipt = mpp::parse_receipt(paid.headers()["payment-receipt"].to_str().unwrap()).unwrap();
    assert!(receipt.is_success());
    assert!(receipt.reference.starts_with("0x") && receipt.reference.len() == 66);
    let answer: serde_json::Value = paid.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(h.balance(recipient).await - before, CHAT_PRICE);

    // The upstream saw our key, the exact body, and none of the payer's headers.
    let seen = h.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {UPSTREAM_KEY}")
    );
    assert_eq!(seen[0].body, chat_body().as_bytes());
    assert!(
        seen[0]
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("payment"))
    );

    // Replaying the very same credential is refused with a fresh challenge.
    let replay = post(&h.http, &url, &chat_body(), Some(&auth)).await;
    let fresh = challenges(&replay).remove(0);
    assert_ne!(fresh.id, challenge.id);
    problem(replay, 402, "invalid-challenge").await;
    assert_eq!(h.balance(recipient).await - before, CHAT_PRICE);
    assert_eq!(h.upstream.count(), 1);

    let credential = mpp::parse_authorization(&auth).unwrap();
    let signed_tx = credential.payload["signature"].as_str().unwrap().to_owned();
    let receipt_header = mpp::format_receipt(&receipt).unwrap();
    logs::assert_absent(&[
        auth.trim_start_matches("Payment "),
        &signed_tx,
        &signed_tx[signed_tx.len() - 40..],
        DEV_ACCOUNTS[PAYER].address,
        &receipt.reference,
        &receipt_header,
        SECRET,
        UPSTREAM_KEY,
    ]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_payment_is_confirmed_from_the_receipt_logs() {
    let h = Harness::start().await;
    let gw = h.gateway(&Options::default()).await;
    let url = format!("{}/v1/embeddings", gw.url);
    let body = r#"{"model":"text-embedding-3-small","input":"hello"}"#;
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let before = h.balance(recipient).await;

    let challenge = challenges(&post(&h.http, &url, body, None).await).remove(0);
    // The payer signs and broadcasts the transfer itself, then sends the hash.
    let signed = mpp::client::tempo::charge::TempoCharge::from_challenge(&challenge)
        .unwrap()
        .sign_with_options(
            &signer(PAYER),
            mpp::client::tempo::charge::SignOptions {
                rpc_url: Some(h.devnet.rpc_url()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let raw = format!("0x{}", alloy::hex::encode(signed.tx_bytes()));
    let _: serde_json::Value = h
        .devnet
        .rpc()
        .call("eth_sendRawTransactionSync", serde_json::json!([raw]))
        .await
        .unwrap();
    let hash = format!("{:#x}", keccak256(signed.tx_bytes()));
    let credential =
        mpp::PaymentCredential::new(challenge.to_echo(), mpp::PaymentPayload::hash(&hash));
    let auth = mpp::format_authorization(&credential).unwrap();

    let paid = post(&h.http, &url, body, Some(&auth)).await;
    assert_eq!(paid.status(), 200);
    let receipt = mpp::parse_receipt(paid.headers()["payment-receipt"].to_str().unwrap()).unwrap();
    assert_eq!(receipt.reference, hash);
    assert_eq!(h.balance(recipient).await - before, EMBED_PRICE);

    // Same hash again, and the same hash under a brand-new challenge: both refused.
    problem(
        post(&h.http, &url, body, Some(&auth)).await,
        402,
        "invalid-challenge",
    )
    .await;
    let other = challenges(&post(&h.http, &url, body, None).await).remove(0);
    let reuse = mpp::PaymentCredential::new(other.to_echo(), mpp::PaymentPayload::hash(&hash));
    let reuse = mpp::format_authorization(&reuse).unwrap();
    problem(
        post(&h.http, &url, body, Some(&reuse)).await,
        402,
        "verification-failed",
    )
    .await;
    assert_eq!(h.upstream.count(), 1);
    assert_eq!(h.balance(recipient).await - before, EMBED_PRICE);
    logs::assert_absent(&[&auth, &hash, DEV_ACCOUNTS[PAYER].address]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_amount_route_takes_a_signed_proof_once() {
    let h = Harness::start().await;
    let gw = h.gateway(&Options::default()).await;
    let url = format!("{}/v1/models", gw.url);
    let unpaid = h.http.get(&url).send().await.unwrap();
    let challenge = challenges(&unpaid).remove(0);
    assert_eq!(challenge.request.decode_value().unwrap()["amount"], "0");
    assert!(challenge.digest.is_none(), "no body, no digest");

    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let paid = h
        .http
        .get(&url)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let receipt = mpp::parse_receipt(paid.headers()["payment-receipt"].to_str().unwrap()).unwrap();
    assert_eq!(receipt.reference, challenge.id);

    let replay = h
        .http
        .get(&url)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    problem(replay, 402, "invalid-challenge").await;
    // A proof signed by someone other than the claimed source is refused.
    let forged = {
        let mut credential = mpp::parse_authorization(
            &pay(
                &challenges(&h.http.get(&url).send().await.unwrap()).remove(0),
                signer(3),
                &h.devnet.rpc_url(),
            )
            .await,
        )
        .unwrap();
        credential.source = Some(format!(
            "did:pkh:eip155:42431:{}",
            DEV_ACCOUNTS[PAYER].address
        ));
        mpp::format_authorization(&credential).unwrap()
    };
    let refused = h
        .http
        .get(&url)
        .header("authorization", &forged)
        .send()
        .await
        .unwrap();
    problem(refused, 402, "verification-failed").await;
    assert_eq!(h.upstream.count(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sponsored_payment_costs_the_payer_exactly_the_price() {
    let h = Harness::start().await;
    let gw = h
        .gateway(&Options {
            fee_payer: true,
            ..Options::default()
        })
        .await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = DEV_ACCOUNTS[PAYER].address;
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let (payer_before, recipient_before) = (h.balance(payer).await, h.balance(recipient).await);

    let challenge = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    assert_eq!(
        challenge.request.decode_value().unwrap()["methodDetails"]["feePayer"],
        true
    );
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let paid = post(&h.http, &url, &chat_body(), Some(&auth)).await;
    assert_eq!(paid.status(), 200, "{:?}", paid.text().await);
    assert_eq!(h.balance(recipient).await - recipient_before, CHAT_PRICE);
    assert_eq!(
        payer_before - h.balance(payer).await,
        CHAT_PRICE,
        "the sponsor paid the fee"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_of_one_credential_have_exactly_one_success() {
    let h = Harness::start().await;
    let gw = h.gateway(&Options::default()).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let before = h.balance(recipient).await;
    let challenge = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;

    let attempts = (0..12).map(|_| {
        let (http, url, auth) = (h.http.clone(), url.clone(), auth.clone());
        tokio::spawn(async move {
            post(&http, &url, &chat_body(), Some(&auth))
                .await
                .status()
                .as_u16()
        })
    });
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 402),
        "{statuses:?}"
    );
    assert_eq!(h.upstream.count(), 1);
    assert_eq!(h.balance(recipient).await - before, CHAT_PRICE);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_credential_stays_spent_after_a_restart() {
    let h = Harness::start().await;
    let options = Options {
        db_path: Some(h.dir.path().join("restart.db")),
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let challenge = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    assert_eq!(
        post(&h.http, &url, &chat_body(), Some(&auth))
            .await
            .status(),
        200
    );
    gw.stop().await;

    let restarted = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", restarted.url);
    problem(
        post(&h.http, &url, &chat_body(), Some(&auth)).await,
        402,
        "invalid-challenge",
    )
    .await;
    assert_eq!(h.upstream.count(), 1);
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_in_secret_keeps_live_challenges_valid() {
    let h = Harness::start().await;
    let old = h.gateway(&Options::default()).await;
    let url = format!("{}/v1/chat/completions", old.url);
    let challenge = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    let second = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    old.stop().await;

    let new_secret = "rotated-secret-that-is-also-long-enough-0002".to_owned();
    let rotated = h
        .gateway(&Options {
            secrets: vec![new_secret.clone(), SECRET.to_owned()],
            ..Options::default()
        })
        .await;
    let url = format!("{}/v1/chat/completions", rotated.url);
    let fresh = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    assert!(
        fresh.verify(&new_secret),
        "the first secret signs new challenges"
    );
    assert!(!fresh.verify(SECRET));
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    assert_eq!(
        post(&h.http, &url, &chat_body(), Some(&auth))
            .await
            .status(),
        200
    );
    rotated.stop().await;

    // Once the old secret is retired, its challenges are unknown.
    let retired = h
        .gateway(&Options {
            secrets: vec![new_secret],
            ..Options::default()
        })
        .await;
    let url = format!("{}/v1/chat/completions", retired.url);
    let auth = pay(&second, signer(PAYER), &h.devnet.rpc_url()).await;
    problem(
        post(&h.http, &url, &chat_body(), Some(&auth)).await,
        402,
        "invalid-challenge",
    )
    .await;
    assert_eq!(h.upstream.count(), 1);
    retired.stop().await;
}

/// A fixed-price request the upstream refuses (no `messages`).
const REFUSED_BY_UPSTREAM: &str = r#"{"model":"gpt-4o-mini"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_payment_settles_before_the_upstream_is_called_and_a_failure_is_refunded() {
    let h = Harness::start().await;
    let options = Options::default();
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let before = h.balance(recipient).await;
    let challenge = challenges(&post(&h.http, &url, REFUSED_BY_UPSTREAM, None).await).remove(0);
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let response = post(&h.http, &url, REFUSED_BY_UPSTREAM, Some(&auth)).await;
    assert_eq!(
        response.status(),
        400,
        "the upstream's own error comes back"
    );
    assert!(response.headers().get("payment-receipt").is_none());
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    // The payment was taken first; the failed call is refunded in full,
    // on chain, to the account that paid.
    let refund = h.refunded(&options, &challenge.id).await;
    assert_eq!(refund.amount, CHAT_PRICE);
    assert_eq!(refund.reason, "undelivered");
    assert_eq!(
        refund.payer.as_deref(),
        Some(DEV_ACCOUNTS[PAYER].address.to_ascii_lowercase().as_str())
    );
    assert_eq!(h.balance(recipient).await, before, "refunded exactly");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_after_the_upstream_makes_failed_calls_free() {
    let h = Harness::start().await;
    let gw = h
        .gateway(&Options {
            settle_after_upstream: true,
            ..Options::default()
        })
        .await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let payer = DEV_ACCOUNTS[PAYER].address;
    let (before, payer_before) = (h.balance(recipient).await, h.balance(payer).await);

    let challenge = challenges(&post(&h.http, &url, REFUSED_BY_UPSTREAM, None).await).remove(0);
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let response = post(&h.http, &url, REFUSED_BY_UPSTREAM, Some(&auth)).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("payment-receipt").is_none());
    assert_eq!(h.balance(recipient).await, before, "nothing was broadcast");
    assert_eq!(h.balance(payer).await, payer_before);

    // A successful call settles once the upstream has answered.
    let challenge = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let response = post(&h.http, &url, &chat_body(), Some(&auth)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("payment-receipt").is_some());
    assert_eq!(h.balance(recipient).await - before, CHAT_PRICE);
    problem(
        post(&h.http, &url, &chat_body(), Some(&auth)).await,
        402,
        "invalid-challenge",
    )
    .await;
    gw.stop().await;
}
