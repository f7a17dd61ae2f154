//! Challenge issuance and credential parse + HMAC/binding verification, per
//! core. Run: `cargo bench -p tollgate-payments --bench challenges`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate_payments::binding::{Spend, Verified, check, parse_authorization};
use tollgate_payments::{
    Address, ChallengeIssuer, ChallengeKeys, ChargeOffer, Offer, SubmissionModes,
};

const SCOPE: &str = "POST /v1/chat/completions";
const BODY: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Explain micropayment protocols in one paragraph."}],"max_tokens":256,"temperature":0.7}"#;

fn setup() -> (ChallengeIssuer, ChallengeKeys, Vec<Offer>) {
    let keys = ChallengeKeys::new(vec![
        "bench-secret-that-is-at-least-32-bytes-long".into(),
        "older-secret-still-verifying-32-bytes-long!".into(),
    ])
    .unwrap();
    let issuer = ChallengeIssuer::new("api.example.com", keys.clone(), Duration::from_secs(300));
    let offers = vec![Offer::TempoCharge(ChargeOffer {
        amount: 10_000,
        currency: "0x20c0000000000000000000000000000000000000"
            .parse::<Address>()
            .unwrap(),
        recipient: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            .parse::<Address>()
            .unwrap(),
        chain_id: 42431,
        fee_payer: false,
        modes: SubmissionModes::default(),
        description: Some("Chat completion".into()),
    })];
    (issuer, keys, offers)
}

fn bench(c: &mut Criterion) {
    let (issuer, keys, offers) = setup();
    let mut group = c.benchmark_group("challenge");
    group.throughput(Throughput::Elements(1));
    group.bench_function("issue", |b| {
        b.iter(|| {
            issuer
                .issue(black_box(&offers[0]), SCOPE, black_box(BODY))
                .unwrap()
        })
    });

    // A credential as a pull-mode client sends it (≈ 300-byte signed tx).
    let issued = issuer.issue(&offers[0], SCOPE, BODY).unwrap();
    let challenge = mpp::parse_www_authenticate(&issued.header).unwrap();
    let payload = serde_json::json!({"type": "transaction", "signature": format!("0x76{}", "ab".repeat(300))});
    let credential = mpp::PaymentCredential::new(challenge.to_echo(), payload);
    let header = mpp::format_authorization(&credential).unwrap();
    let spend = Spend {
        realm: "api.example.com",
        scope: SCOPE,
        body: BODY,
        offers: &offers,
    };
    group.bench_function("parse_and_verify", |b| {
        b.iter(|| {
            let credential = parse_authorization(black_box(&header), 16 * 1024)
                .unwrap()
                .unwrap();
            check(&keys, &credential, &spend).unwrap();
        })
    });
    // A re-sent session credential: decoded and HMAC-checked once
    // (the gateway's credential cache), then only what the request changes.
    let parsed = parse_authorization(&header, 16 * 1024).unwrap().unwrap();
    let verified = Verified::new(&keys, &parsed);
    group.bench_function("recheck_verified", |b| {
        b.iter(|| {
            verified
                .check(black_box(&parsed.challenge), &spend)
                .unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
