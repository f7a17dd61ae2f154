//! Known paid traffic for the observability tests: charges and a session
//! on the quoted chat route, one unpaid request and two refused ones.

use serde_json::{Value, json};

use super::session::{Channel, receipt, session_challenge};
use super::*;

pub const CHAT: &str = "POST /v1/chat/completions";
pub const PROMPT: &str = "Explain payment channels in one line, observability edition.";

pub fn chat(model: &str, max_tokens: u32) -> String {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
    })
    .to_string()
}

/// What was sent, as the client saw it.
pub struct Traffic {
    /// Base units paid by charges (the challenges' amounts).
    pub charged: u128,
    pub charges: u64,
    /// What the session receipts say was spent.
    pub session_spent: u128,
    pub session_requests: u64,
    /// Unpaid requests answered 402 (the first challenge of each paid one
    /// included).
    pub unpaid: u64,
    pub channel: Channel,
    /// `Authorization` values sent (none may be logged or labelled).
    pub credentials: Vec<String>,
}

fn amount(challenge: &mpp::PaymentChallenge) -> u128 {
    challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Two charges (gpt-4o-mini), two session requests (gpt-4o), one invalid
/// body and one unknown model (400s, before any challenge).
pub async fn send(h: &Harness, gateway: &Gateway) -> Traffic {
    let url = format!("{}/v1/chat/completions", gateway.url);
    let mut traffic = Traffic {
        charged: 0,
        charges: 0,
        session_spent: 0,
        session_requests: 0,
        unpaid: 0,
        channel: Channel {
            id: Default::default(),
        },
        credentials: Vec::new(),
    };
    for max_tokens in [16, 32] {
        let body = chat("gpt-4o-mini", max_tokens);
        let offered = challenges(&post(&h.http, &url, &body, None).await);
        traffic.unpaid += 1;
        let charge = offered
            .iter()
            .find(|c| c.intent.as_str() == "charge")
            .unwrap();
        let auth = pay(charge, signer(PAYER), &h.devnet.rpc_url()).await;
        let response = post(&h.http, &url, &body, Some(&auth)).await;
        assert_eq!(response.status(), 200);
        let _: Value = response.json().await.unwrap();
        traffic.charged += amount(charge);
        traffic.charges += 1;
        traffic.credentials.push(auth);
    }
    let payer = h.payer();
    let body = chat("gpt-4o", 64);
    let challenge = session_challenge(&challenges(&post(&h.http, &url, &body, None).await));
    traffic.unpaid += 1;
    let quote = amount(&challenge);
    let (channel, open) = payer.open(&challenge, 1_000_000, quote).await;
    let response = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(response.status(), 200);
    let spent: u128 = receipt(&response)["spent"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let _: Value = response.json().await.unwrap();
    traffic.credentials.push(open);
    let challenge = session_challenge(&challenges(&post(&h.http, &url, &body, None).await));
    traffic.unpaid += 1;
    let voucher = payer.pay_voucher(&challenge, channel, spent + amount(&challenge));
    let response = post(&h.http, &url, &body, Some(&voucher)).await;
    assert_eq!(response.status(), 200);
    traffic.session_spent = receipt(&response)["spent"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let _: Value = response.json().await.unwrap();
    traffic.credentials.push(voucher);
    traffic.session_requests = 2;
    traffic.channel = channel;

    assert_eq!(post(&h.http, &url, "{not json", None).await.status(), 400);
    assert_eq!(
        post(&h.http, &url, &chat("no-such-model", 8), None)
            .await
            .status(),
        400
    );
    traffic
}
