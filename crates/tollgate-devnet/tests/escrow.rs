//! Our escrow contract on a real local chain: open, settle, close, forced
//! close — driven with raw JSON-RPC from unlocked dev accounts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use serde_json::{Value, json};
use tollgate_devnet::{DEV_ACCOUNTS, Devnet, DevnetOptions, PATH_USD, RpcClient};

const PAYER: usize = 3;
const PAYEE: usize = 4;

fn word(hex: &str) -> String {
    format!("{:0>64}", hex.trim_start_matches("0x").to_ascii_lowercase())
}

fn amount(v: u128) -> String {
    format!("{v:064x}")
}

async fn send(rpc: &RpcClient, from: usize, to: &str, data: String) -> Value {
    let hash: String = rpc
        .call("eth_sendTransaction", json!([{"from": DEV_ACCOUNTS[from].address, "to": to, "data": data, "gas": "0x200000"}]))
        .await
        .unwrap();
    rpc.wait_receipt(&hash).await.unwrap()
}

async fn call(rpc: &RpcClient, to: &str, data: String) -> String {
    rpc.call("eth_call", json!([{"to": to, "data": data}, "latest"]))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_escrow_matches_the_reference_behaviour() {
    let devnet = Devnet::start(DevnetOptions {
        escrow: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let rpc = devnet.rpc();
    let escrow = devnet.escrow().unwrap().to_owned();
    let payer = DEV_ACCOUNTS[PAYER].address;
    let payee = DEV_ACCOUNTS[PAYEE].address;

    // Same typehash as the reference contract.
    assert_eq!(
        call(rpc, &escrow, "0x94739e87".into()).await,
        "0xe97c93f01d3ef8eaba1586553df13308f236815bf4ea49c7b696895d8f5ea68a"
    );
    // CLOSE_GRACE_PERIOD = 15 minutes.
    assert_eq!(
        u128::from_str_radix(
            call(rpc, &escrow, "0x956c8327".into())
                .await
                .trim_start_matches("0x"),
            16
        )
        .unwrap(),
        900
    );

    // approve + open(payee, token, 1_000_000, salt, 0)
    let approve = format!("0x095ea7b3{}{}", word(&escrow), amount(10_000_000));
    assert_eq!(send(rpc, PAYER, PATH_USD, approve).await["status"], "0x1");
    let salt = "11".repeat(32);
    let open = format!(
        "0xc79ea485{}{}{}{salt}{}",
        word(payee),
        word(PATH_USD),
        amount(1_000_000),
        word("0")
    );
    let before = rpc.token_balance(PATH_USD, payer).await.unwrap();
    let receipt = send(rpc, PAYER, &escrow, open.clone()).await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert!(before - rpc.token_balance(PATH_USD, payer).await.unwrap() >= 1_000_000);
    // Reopening with the same salt fails.
    assert_eq!(send(rpc, PAYER, &escrow, open).await["status"], "0x0");

    // The channel id from the event equals computeChannelId.
    let channel_id = receipt["logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["address"].as_str().unwrap().eq_ignore_ascii_case(&escrow))
        .map(|l| l["topics"][1].as_str().unwrap().to_owned())
        .unwrap();
    let computed = call(
        rpc,
        &escrow,
        format!(
            "0x5af3dc68{}{}{}{salt}{}",
            word(payer),
            word(payee),
            word(PATH_USD),
            word("0")
        ),
    )
    .await;
    assert_eq!(computed, channel_id);

    // Only the payee may settle; a garbage signature is refused.
    let settle = format!(
        "0x516d3b88{}{}{}{}{}",
        word(&channel_id),
        amount(100),
        amount(96),
        amount(65),
        "00".repeat(96)
    );
    assert_eq!(
        send(rpc, PAYER, &escrow, settle.clone()).await["status"],
        "0x0"
    );
    assert_eq!(send(rpc, PAYEE, &escrow, settle).await["status"], "0x0");

    // Forced close: request, then withdraw only after the grace period.
    let request_close = format!("0x6bf5fe6f{}", word(&channel_id));
    assert_eq!(
        send(rpc, PAYER, &escrow, request_close).await["status"],
        "0x1"
    );
    let withdraw = format!("0x8e19899e{}", word(&channel_id));
    assert_eq!(
        send(rpc, PAYER, &escrow, withdraw.clone()).await["status"],
        "0x0"
    );
    rpc.increase_time(901).await.unwrap();
    let before = rpc.token_balance(PATH_USD, payer).await.unwrap();
    assert_eq!(
        send(rpc, PAYER, &escrow, withdraw.clone()).await["status"],
        "0x1"
    );
    assert!(
        rpc.token_balance(PATH_USD, payer).await.unwrap() + 1_000 > before + 1_000_000,
        "refunded"
    );
    // Finalized: nothing more.
    assert_eq!(send(rpc, PAYER, &escrow, withdraw).await["status"], "0x0");
}
