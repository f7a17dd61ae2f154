//! Twenty `tollgate pay` processes at once on one channel state (issue 12,
//! item 14): each authorizes its own worst case on top of what the others
//! hold in the state file, so all are served, on one channel, and `spent`
//! is exactly the sum of what the answers cost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::{common, support};

use std::path::Path;

use common::*;
use serde_json::{Value, json};
use support::launch;
use tollgate_client::State;
use tollgate_devnet::{ALPHA_USD, DEV_ACCOUNTS};
use tollgate_ledger::ChannelBook;
use tollgate_mock::MockOptions;
use tollgate_pricing::{Endpoint, PriceTable, UsageDetail, actual_cost_detail};

const DEPOSIT: u128 = 200_000;
const CONCURRENT: usize = 20;

async fn run_pay(h: &Harness, state: &Path, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("pay")
        .args(args)
        .arg("--rpc-url")
        .arg(h.devnet.rpc_url())
        .arg("--state")
        .arg(state)
        .env("TOLLGATE_PRIVATE_KEY", DEV_ACCOUNTS[PAYER].private_key)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("the tollgate binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What an answer's reported usage costs for `body`, by the shipped table.
fn cost(body: &str, answer: &Value) -> u128 {
    let table = PriceTable::builtin();
    let json: Value = serde_json::from_str(body).unwrap();
    let quote = Endpoint::Chat.quote(&table, &json).unwrap();
    let usage = &answer["usage"];
    actual_cost_detail(
        &table,
        Endpoint::Chat,
        &quote,
        Some(UsageDetail {
            input_tokens: usage["prompt_tokens"].as_u64().unwrap(),
            output_tokens: usage["completion_tokens"].as_u64().unwrap(),
            ..UsageDetail::default()
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_payers_on_one_channel_are_all_served_exactly() {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        quoted: true,
        session: true,
        ..Options::default()
    };
    let gw = launch(&h, &options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let escrow = h.devnet.escrow().unwrap().to_owned();
    let state_path = h.dir.path().join("pay.db");
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let deposit = DEPOSIT.to_string();
    let wallet = [
        "--intent",
        "session",
        "--fee-token",
        ALPHA_USD,
        "--max-deposit",
        deposit.as_str(),
        "--allow-escrow",
        escrow.as_str(),
        "--allow-recipient",
        payee,
    ];
    let body = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": 160,
    })
    .to_string();
    let mut args: Vec<&str> = vec!["--json", &body];
    args.extend(wallet);
    args.push(&url);

    // The channel is opened by a first invocation.
    let (code, stdout, stderr) = run_pay(&h, &state_path, &args).await;
    assert_eq!(code, 0, "stderr: {stderr}");
    let mut expected = cost(&body, &serde_json::from_str(&stdout).unwrap());

    // Twenty at once on the same state file.
    let runs =
        futures::future::join_all((0..CONCURRENT).map(|_| run_pay(&h, &state_path, &args))).await;
    for (i, (code, stdout, stderr)) in runs.iter().enumerate() {
        assert_eq!(*code, 0, "run {i} was served; stderr: {stderr}");
        let answer: Value = serde_json::from_str(stdout).expect("the JSON answer");
        assert!(answer["choices"].is_array());
        expected += cost(&body, &answer);
    }

    let ledger = h.ledger(&options);
    let channels = ledger.channels().await.unwrap();
    assert_eq!(channels.len(), 1, "one channel on the gateway");
    let served = &channels[0];
    assert_eq!(served.spent, expected, "spent is exactly what was used");
    assert_eq!(served.reserved, 0);
    assert!(served.accepted <= DEPOSIT);
    let state = State::open(&state_path).unwrap();
    let local = state.list().unwrap();
    assert_eq!(local.len(), 1, "one channel in the state");
    assert_eq!(local[0].spent, served.spent, "the receipts were recorded");
    assert_eq!(local[0].deposit, DEPOSIT, "no top-up was needed");
    gw.kill().await;
}
