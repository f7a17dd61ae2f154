//! Interop: the reference TypeScript CLI (`mppx` from npm) pays a Tollgate
//! charge route on the local chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use std::process::Stdio;

use common::*;
use tollgate_devnet::{DEV_ACCOUNTS, cache_dir, npm_install};

const MPPX: &str = "mppx@0.11.0";
const VIEM: &str = "viem@2.57.0";

async fn mppx_cli() -> std::path::PathBuf {
    let prefix = cache_dir().join("mppx-0.11.0");
    let bin = prefix.join("node_modules/.bin/mppx");
    npm_install(&prefix, &[MPPX, VIEM], &bin)
        .await
        .expect("mppx installs from npm");
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mppx_cli_pays_a_tollgate_charge_route() {
    let cli = mppx_cli().await;
    let h = Harness::start().await;
    let gw = h.gateway(&Options::default()).await;
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let before = h.balance(recipient).await;
    let home = tempfile::tempdir().unwrap();

    let output = tokio::process::Command::new(&cli)
        .arg(format!("{}/v1/chat/completions", gw.url))
        .args(["--rpc-url", &h.devnet.rpc_url(), "-J", &chat_body(), "-i"])
        .env("MPPX_PRIVATE_KEY", DEV_ACCOUNTS[PAYER].private_key)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env("XDG_DATA_HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "mppx failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("200"), "{stdout}");
    let receipt_line = stdout
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("payment-receipt:"))
        .expect("a receipt header");
    let value = receipt_line.split_once(':').map(|(_, v)| v.trim()).unwrap();
    let receipt = mpp::parse_receipt(value).unwrap();
    assert!(receipt.is_success());
    assert!(stdout.contains("chat.completion"));
    assert_eq!(h.balance(recipient).await - before, CHAT_PRICE);
    assert_eq!(h.upstream.count(), 1);
    gw.stop().await;
}
