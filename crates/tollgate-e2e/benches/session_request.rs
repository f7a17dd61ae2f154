//! Gateway overhead of a session-paid request under an open-loop load.
//!
//! For each `[store] durability` (`normal`, then `full`, the default) a
//! gateway is started on its own database and one channel is opened on the
//! devnet with its whole deposit authorized by the opening voucher. Every
//! measured request then resends that same, already accepted voucher on one
//! reused session challenge (for one fixed body), so the hot path is:
//! challenge binding check, voucher signature recovery, idempotent accept,
//! reserve, upstream call, commit (and the usage record). The upstream
//! serves the harness mock's answer without delay (see [`fixed_upstream`]).
//!
//! Load: 2 000 req/s (`RATE=n` to change it) for 10 s after 2 s of warm-up,
//! sent on a tokio interval regardless of responses (open loop; tokio's
//! 1 ms timer sends them in pairs) over a keep-alive client. Latency runs
//! from each request's send to the end of its body; how late sends left
//! against the schedule is printed too (the generator shares the cores, so
//! a saturated gateway delays them). The same load is sent to the
//! upstream directly; the gateway overhead is the difference of the
//! percentiles. Gateway, upstream and load generator share this process
//! and the machine's cores (as in `paid_request`); the CPU time the whole
//! process used per request is printed too, so the gateway's share is the
//! difference. Logs are formatted at `info` (the binary's default) into a
//! sink.
//!
//! Both session protocols are measured in the same run: v1 (escrow
//! contract) and v2 (the devnet's channel reserve; its vouchers carry the
//! channel descriptor, checked against the stored one on every request).
//!
//! Run: `cargo bench -p tollgate-e2e --bench session_request`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load.rs"]
mod load;

use common::session::{Payer, session_challenge};
use common::*;
use load::*;
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_mock::MockOptions;

const DEFAULT_RATE: u32 = 2_000;

/// Opens a channel authorizing `requests` worst cases and returns the
/// `Authorization` value every measured request reuses.
async fn authorize(
    h: &Harness,
    url: &str,
    body: &str,
    requests: u128,
    protocol: &str,
    payer_index: usize,
) -> String {
    let challenge = session_challenge(&challenges(&post(&h.http, url, body, None).await));
    let quote: u128 = challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let deposit = quote * requests;
    let balance = h.balance(DEV_ACCOUNTS[PAYER].address).await;
    println!("{protocol}: quote {quote} base units; deposit {deposit} of balance {balance}");
    assert!(balance >= deposit, "the payer cannot fund the channel");
    let auth = if protocol == "v2" {
        // A v2 open rides an expiring nonce, valid for a few seconds past
        // the latest block; the devnet mines only on transactions, so give
        // it a fresh block after the previous run's quiet minute.
        let _: serde_json::Value = h
            .devnet
            .rpc()
            .call("evm_mine", serde_json::json!([]))
            .await
            .unwrap();
        // Each run's channel from its own account.
        let payer = common::session_v2::Payer::new(
            signer(payer_index),
            &h.devnet.rpc_url(),
            h.devnet.channel_reserve().unwrap(),
        );
        let (id, open) = payer.open(&challenge, deposit, deposit).await;
        let opened = post(&h.http, url, body, Some(&open)).await;
        let status = opened.status();
        assert_eq!(status, 200, "{}", opened.text().await.unwrap());
        payer.pay_voucher(&challenge, id, deposit).await
    } else {
        let payer = Payer::new(
            signer(PAYER),
            &h.devnet.rpc_url(),
            h.devnet.escrow().unwrap(),
        );
        let (channel, open) = payer.open(&challenge, deposit, deposit).await;
        assert_eq!(post(&h.http, url, body, Some(&open)).await.status(), 200);
        payer.pay_voucher(&challenge, channel, deposit)
    };
    assert_eq!(post(&h.http, url, body, Some(&auth)).await.status(), 200);
    auth
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    quiet_logs();
    let rate = rate(DEFAULT_RATE);
    let h = Harness::start_sessions(MockOptions::default()).await;
    let client = client();
    let body = chat_body();
    let mock_url = format!("{}/v1/chat/completions", h.upstream_url);
    let upstream = fixed_upstream(
        post(&client, &mock_url, &body, None)
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .await;
    let direct_url = format!("{upstream}/v1/chat/completions");
    let requests = u128::from(rate * (SECONDS + WARM_UP_SECONDS)) + 1_000;

    load(&client, &direct_url, &body, None, rate, WARM_UP_SECONDS).await;
    let mut mock = load(&client, &mock_url, &body, None, rate, SECONDS).await;
    let mut direct = load(&client, &direct_url, &body, None, rate, SECONDS).await;

    print_conditions(rate);
    report("harness mock directly", &mut mock);
    let (d50, d99) = report("fixed upstream directly", &mut direct);
    for (run, durability) in ["normal", "full"].into_iter().enumerate() {
        for protocol in ["v1", "v2"] {
            let extra = format!("protocol = \"{protocol}\"\n");
            let (gw, stop) = gateway_with(&h, &upstream, durability, None, extra).await;
            let url = format!("{gw}/v1/chat/completions");
            let payer_index = [PAYER, 4][run];
            let auth = authorize(&h, &url, &body, requests, protocol, payer_index).await;
            load(&client, &url, &body, Some(&auth), rate, WARM_UP_SECONDS).await;
            let mut run = load(&client, &url, &body, Some(&auth), rate, SECONDS).await;
            let name = format!("session {protocol} via gateway ({durability})");
            let (g50, g99) = report(&name, &mut run);
            print_overhead(&format!("{protocol} {durability}"), (g50, g99), (d50, d99));
            stop().await;
        }
    }
}
