//! `tollgate channels` against a running gateway's database: list, settle
//! what was spent, close.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::{common, support};

use common::session::{receipt, session_challenge};
use common::*;
use serde_json::{Value, json};
use support::{launch, run_cli};
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_mock::MockOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_list_settle_and_close_channels() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        quoted: true,
        session: true,
        ..Options::default()
    };
    let gw = launch(&h, &options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = h.payer();
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400}).to_string();
    let challenge = session_challenge(&challenges(&post(&h.http, &url, &body, None).await));
    let (channel, open) = payer.open(&challenge, 1_000_000, 50_000).await;
    let response = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(response.status(), 200);
    let spent: u128 = receipt(&response)["spent"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let id = format!("{:#x}", channel.id);

    let listed: Value =
        serde_json::from_str(&run_cli(&h, &options, "channels", &["list", "--json"]).await)
            .unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channelId"] == id)
        .unwrap()
        .clone();
    assert_eq!(row["status"], "open");
    assert_eq!(row["spent"], spent.to_string());
    assert_eq!(row["acceptedCumulative"], "50000");
    assert_eq!(row["unsettled"], spent.to_string());
    let text = run_cli(&h, &options, "channels", &["list"]).await;
    assert!(text.contains(&id));
    assert!(
        !text
            .to_lowercase()
            .contains(&DEV_ACCOUNTS[PAYER].address.to_lowercase()[2..]),
        "no payer address"
    );

    // No voucher at or below `spent` yet: a settlement would over-capture,
    // so it declines.
    let out = run_cli(&h, &options, "channels", &["settle", &id]).await;
    assert!(out.contains("no voucher"), "{out}");

    // Close: captures the smallest voucher covering spent (the open voucher)
    // and refunds the rest of the deposit.
    let out = run_cli(&h, &options, "channels", &["close", &id]).await;
    assert!(out.contains("closed"), "{out}");
    assert_eq!(h.balance(payee).await - payee_before, 50_000);
    let listed: Value =
        serde_json::from_str(&run_cli(&h, &options, "channels", &["list", "--json"]).await)
            .unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channelId"] == id)
        .unwrap()
        .clone();
    assert_eq!(row["status"], "finalized");
    assert_eq!(row["settled"], "50000");
    gw.kill().await;
}
