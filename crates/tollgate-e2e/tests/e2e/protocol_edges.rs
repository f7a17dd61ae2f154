//! HTTP edges of a paid route on a real gateway: methods it does not serve,
//! broken chunked framing, a pushed transaction the chain never saw.
//! None of them reaches the upstream or moves money.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_devnet::DEV_ACCOUNTS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserved_methods_get_a_405_problem_with_allow() {
    let h = Harness::start().await;
    let gw = h.gateway(&Options::default()).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    for method in ["GET", "OPTIONS", "DELETE", "PROPFIND"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = h.http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allow.contains("POST"), "{method}: allow {allow}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status"], 405);
        assert_eq!(body["code"], "method-not-allowed");
    }
    assert_eq!(h.upstream.count(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_framing_is_a_400_problem() {
    let h = Harness::start().await;
    let gw = h.gateway(&Options::default()).await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              transfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""code":"malformed-body""#), "{answer}");
    assert!(!answer.contains("www-authenticate"), "{answer}");
    assert_eq!(h.upstream.count(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_hash_the_chain_never_saw_is_the_payers_fault() {
    let h = Harness::start().await;
    let gw = h.gateway(&Options::default()).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let before = h.balance(recipient).await;
    for _ in 0..3 {
        let challenge = challenges(&post(&h.http, &url, &chat_body(), None).await).remove(0);
        let random: [u8; 32] = std::array::from_fn(|_| rand_byte());
        let hash = format!("0x{}", alloy::hex::encode(random));
        let credential =
            mpp::PaymentCredential::new(challenge.to_echo(), mpp::PaymentPayload::hash(&hash));
        let auth = mpp::format_authorization(&credential).unwrap();
        let response = post(&h.http, &url, &chat_body(), Some(&auth)).await;
        assert!(response.headers().get("retry-after").is_none());
        let fresh = challenges(&response);
        let body = problem(response, 402, "verification-failed").await;
        assert_eq!(body["challengeId"], fresh[0].id.as_str());
        assert_ne!(fresh[0].id, challenge.id);
    }
    assert_eq!(h.upstream.count(), 0);
    assert_eq!(h.balance(recipient).await, before);
    gw.stop().await;
}

fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::time::SystemTime::now()) & 0xff) as u8
}
