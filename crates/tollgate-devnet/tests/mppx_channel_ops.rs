//! The reference SDK's v2 channel operations (mppx@0.11.0, the code its
//! default `tempo.session` client runs) against the devnet's channel
//! reserve, through the front, with no transport patches: two opens and two
//! top-ups from one payer (expiring nonces), the channel ids and
//! expiring-nonce hashes mppx computed before broadcasting equal what the
//! stand-in derived, and mppx's initial vouchers settle on chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod support;

use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::{B256, Bytes};
use serde_json::Value;
use support::*;
use tollgate_devnet::reserve::{self, ChannelDescriptor};
use tollgate_devnet::{DEV_ACCOUNTS, cache_dir, npm_install};

// The pinned install the e2e tests use, so it is downloaded once.
const MPPX: &str = "mppx@0.11.0";
const VIEM: &str = "viem@2.57.0";

async fn mppx_prefix() -> PathBuf {
    let prefix = cache_dir().join("mppx-0.11.0");
    let bin = prefix.join("node_modules/.bin/mppx");
    npm_install(&prefix, &[MPPX, VIEM], &bin)
        .await
        .expect("mppx installs from npm");
    prefix
}

fn descriptor(value: &Value) -> ChannelDescriptor {
    let field = |key: &str| value[key].as_str().unwrap();
    ChannelDescriptor {
        payer: field("payer").parse().unwrap(),
        payee: field("payee").parse().unwrap(),
        operator: field("operator").parse().unwrap(),
        token: field("token").parse().unwrap(),
        salt: field("salt").parse().unwrap(),
        authorizedSigner: field("authorizedSigner").parse().unwrap(),
        expiringNonceHash: field("expiringNonceHash").parse().unwrap(),
    }
}

#[tokio::test]
async fn mppx_opens_tops_up_and_signs_what_the_reserve_accepts() {
    let prefix = mppx_prefix().await;
    let chain = Chain::start().await;
    let payer = dev(2);
    let payee = dev(4);

    let script = prefix.join(format!("tollgate-reserve-ops-{}.mjs", std::process::id()));
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/reserve_channel_ops.mjs"),
        &script,
    )
    .unwrap();
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .current_dir(&prefix)
        .env("RPC_URL", &chain.front)
        .env("PAYER_KEY", DEV_ACCOUNTS[2].private_key)
        .env("PAYEE", format!("{:#x}", payee.address()))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the mppx script finishes")
        .unwrap();
    let _ = std::fs::remove_file(&script);
    assert!(
        output.status.success(),
        "mppx script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let opens = report["opens"].as_array().unwrap();
    assert_eq!(opens.len(), 2, "{report}");

    let payee_before = chain.balance(path_usd(), payee.address()).await;
    for open in opens {
        assert_eq!(open["openStatus"], "success", "{open}");
        assert_eq!(open["topUpStatus"], "success", "{open}");
        let d = descriptor(&open["descriptor"]);
        let id: B256 = open["channelId"].as_str().unwrap().parse().unwrap();
        assert_eq!((d.payer, d.payee), (payer.address(), payee.address()));
        // What mppx derived before broadcasting is what the chain derived.
        let emitted = &open["emitted"][0];
        assert_eq!(
            emitted["channelId"]
                .as_str()
                .unwrap()
                .parse::<B256>()
                .unwrap(),
            id
        );
        assert_eq!(
            emitted["expiringNonceHash"]
                .as_str()
                .unwrap()
                .parse::<B256>()
                .unwrap(),
            d.expiringNonceHash
        );
        assert_eq!(reserve::channel_id(&d, CHAIN_ID), id);
        assert_eq!(open["newDeposit"][0], "1500000");
        let channel = reserve::read_channel(chain.devnet.rpc(), &d).await.unwrap();
        assert_eq!(channel.state.deposit.to::<u128>(), 1_500_000);

        // mppx's initial voucher settles: same domain, digest and signer.
        let amount: u128 = open["initialVoucher"]["cumulativeAmount"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let signature: Bytes = open["initialVoucher"]["signature"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let sent = chain
            .call_reserve(&payee, settle_call(&d, amount, signature))
            .await;
        assert!(sent.succeeded(), "{}", sent.receipt);
        assert_eq!(chain.state(id).await.0, amount);
    }
    assert_eq!(
        chain.balance(path_usd(), payee.address()).await - payee_before,
        2_000
    );
}
