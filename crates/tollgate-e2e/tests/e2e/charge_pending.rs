//! A charge whose transaction the node accepts but does not mine in time:
//! the payer is told it was submitted and not mined (503, nothing served,
//! the credential still unused), and the same credential pays once the
//! transaction is mined — exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use common::*;
use serde_json::json;
use tollgate_devnet::DEV_ACCOUNTS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_but_not_mined_is_said_and_the_same_credential_pays_later() {
    let h = Harness::start().await;
    let options = Options {
        chain_extra: "confirm_timeout_secs = 2\n".into(),
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let before = h.balance(recipient).await;

    let challenge = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    // The node keeps accepting transactions but mines none.
    let rpc = h.devnet.rpc();
    rpc.call::<serde_json::Value>("evm_setAutomine", json!([false]))
        .await
        .unwrap();
    let response = post(&h.http, &url, &chat_body(), Some(&auth)).await;
    assert_eq!(response.headers()["retry-after"], "5");
    let body = problem(response, 503, "chain-unavailable").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("submitted but not mined within 2 s") && detail.contains("same credential"),
        "{detail}"
    );
    assert_eq!(h.upstream.count(), 0, "nothing was served");

    // Mined now: the very same credential pays, once.
    rpc.call::<serde_json::Value>("evm_mine", json!([]))
        .await
        .unwrap();
    rpc.call::<serde_json::Value>("evm_setAutomine", json!([true]))
        .await
        .unwrap();
    assert_eq!(h.balance(recipient).await - before, CHAT_PRICE);
    let response = post(&h.http, &url, &chat_body(), Some(&auth)).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(h.upstream.count(), 1);
    let again = post(&h.http, &url, &chat_body(), Some(&auth)).await;
    assert_eq!(again.status(), 402, "a credential pays once");
    assert_eq!(h.upstream.count(), 1);
    assert_eq!(h.balance(recipient).await - before, CHAT_PRICE);
    gw.stop().await;
}
