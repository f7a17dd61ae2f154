//! Interop, paying side: `tollgate pay` pays a server written with the
//! reference TypeScript SDK's server API (`mppx/server` from mppx@0.11.0,
//! `tests/node/mppx_charge_server.mjs`) on a local chain: a Tempo charge in
//! pathUSD, pull (the server broadcasts) and push (we broadcast and send
//! the hash), and pull with the fees sponsored by the server's fee payer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tollgate_devnet::{DEV_ACCOUNTS, Devnet, DevnetOptions, PATH_USD, cache_dir, npm_install};

// The same pinned install as the e2e interop tests, so it is downloaded once.
const MPPX: &str = "mppx@0.11.0";
const VIEM: &str = "viem@2.57.0";
const PAYER: usize = 0;
const RECIPIENT: usize = 1;
const SPONSOR: usize = 2;
/// 0.012345 pathUSD.
const AMOUNT: u128 = 12_345;
const SECRET: &str = "mppx-server-test-secret-that-is-long-enough-01";

async fn mppx_prefix() -> PathBuf {
    let prefix = cache_dir().join("mppx-0.11.0");
    let bin = prefix.join("node_modules/.bin/mppx");
    npm_install(&prefix, &[MPPX, VIEM], &bin)
        .await
        .expect("mppx installs from npm");
    prefix
}

/// The mppx server as a child process, its script copied next to the
/// prefix's `node_modules` (ESM ignores `NODE_PATH`) under a name of its
/// own, removed on drop.
struct MppxServer {
    child: tokio::process::Child,
    script: PathBuf,
    url: String,
}

impl Drop for MppxServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.script);
    }
}

impl MppxServer {
    async fn start(prefix: &Path, devnet: &Devnet, fee_payer: Option<&str>) -> Self {
        static COPIES: AtomicU64 = AtomicU64::new(0);
        let source =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/mppx_charge_server.mjs");
        let script = prefix.join(format!(
            "tollgate-mppx-charge-server-{}-{}.mjs",
            std::process::id(),
            COPIES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::copy(&source, &script).expect("the node script copies into the prefix");
        let mut command = tokio::process::Command::new("node");
        command
            .arg(&script)
            .current_dir(prefix)
            .env("RPC_URL", devnet.rpc_url())
            .env("RECIPIENT", DEV_ACCOUNTS[RECIPIENT].address)
            .env("AMOUNT", AMOUNT.to_string())
            .env("SECRET_KEY", SECRET)
            .env_remove("FEE_PAYER_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(key) = fee_payer {
            command.env("FEE_PAYER_KEY", key);
        }
        let mut child = command.spawn().expect("node runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the mppx server prints its port")
            .unwrap()
            .unwrap_or_else(|| panic!("the mppx server exited: {:?}", child.try_wait()));
        let port: u16 = line
            .strip_prefix("listening on ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        // Keep draining stdout so the server never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            script,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn pay(devnet: &Devnet, state: &Path, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("pay")
        .args(args)
        .arg("--rpc-url")
        .arg(devnet.rpc_url())
        .arg("--state")
        .arg(state)
        .env("TOLLGATE_PRIVATE_KEY", DEV_ACCOUNTS[PAYER].private_key)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the tollgate binary runs");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let key = DEV_ACCOUNTS[PAYER].private_key.trim_start_matches("0x");
    assert!(!run.stdout.contains(key) && !run.stderr.contains(key));
    run
}

async fn balance(devnet: &Devnet, account: usize) -> u128 {
    devnet
        .rpc()
        .token_balance(PATH_USD, DEV_ACCOUNTS[account].address)
        .await
        .unwrap()
}

fn answer(run: &Run) -> Value {
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("a JSON answer ({e}): {}", run.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_pay_pays_an_mppx_server_pull_and_push() {
    let prefix = mppx_prefix().await;
    let devnet = Devnet::start(DevnetOptions::default())
        .await
        .expect("devnet starts");
    let server = MppxServer::start(&prefix, &devnet, None).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("pay.db");
    let url = format!("{}/paid", server.url);
    let before = balance(&devnet, RECIPIENT).await;

    // Unpaid: mppx's 402 with a tempo/charge challenge for the amount.
    let unpaid = reqwest::get(&url).await.unwrap();
    assert_eq!(unpaid.status(), 402);
    let challenge =
        mpp::parse_www_authenticate(unpaid.headers()["www-authenticate"].to_str().unwrap())
            .unwrap();
    assert_eq!(
        (challenge.method.as_str(), challenge.intent.as_str()),
        ("tempo", "charge")
    );
    let request = challenge.request.decode_value().unwrap();
    assert_eq!(request["amount"], AMOUNT.to_string());

    // Over the spend cap: refused before signing.
    let cap = (AMOUNT - 1).to_string();
    let run = pay(&devnet, &state, &["--max-amount", &cap, &url]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("refused by spend policy"),
        "{}",
        run.stderr
    );
    assert_eq!(balance(&devnet, RECIPIENT).await, before);

    // Pull (default): the signed transfer is broadcast by mppx.
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let run = pay(
        &devnet,
        &state,
        &[
            "-v",
            "--allow-recipient",
            recipient,
            "--max-amount",
            &AMOUNT.to_string(),
            &url,
        ],
    )
    .await;
    let json = answer(&run);
    assert_eq!(json["ok"], true);
    assert_eq!(json["method"], "GET");
    assert_eq!(json["served"], 1);
    assert!(run.stderr.contains("(pull)"), "{}", run.stderr);
    assert!(run.stderr.contains("* receipt: {"), "{}", run.stderr);
    assert!(
        run.stderr.contains("\"status\":\"success\""),
        "{}",
        run.stderr
    );
    assert_eq!(balance(&devnet, RECIPIENT).await - before, AMOUNT);

    // Push: broadcast here, mppx verifies the hash (POST with a JSON body).
    let run = pay(
        &devnet,
        &state,
        &["-v", "--push", "--json", r#"{"q":"hello"}"#, &url],
    )
    .await;
    let json = answer(&run);
    assert_eq!(json["method"], "POST");
    assert_eq!(json["served"], 2);
    assert!(run.stderr.contains("(push), tx 0x"), "{}", run.stderr);
    assert_eq!(balance(&devnet, RECIPIENT).await - before, 2 * AMOUNT);

    // -i shows mppx's receipt header.
    let run = pay(&devnet, &state, &["-i", &url]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let receipt = run
        .stdout
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("payment-receipt:")
                .then(|| l.split_once(':').unwrap().1.trim().to_owned())
        })
        .expect("a Payment-Receipt header");
    assert!(mpp::parse_receipt(&receipt).unwrap().is_success());
    assert_eq!(balance(&devnet, RECIPIENT).await - before, 3 * AMOUNT);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_pay_pays_an_mppx_server_that_sponsors_fees() {
    let prefix = mppx_prefix().await;
    let devnet = Devnet::start(DevnetOptions::default())
        .await
        .expect("devnet starts");
    let server = MppxServer::start(&prefix, &devnet, Some(DEV_ACCOUNTS[SPONSOR].private_key)).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/paid", server.url);
    let (payer_before, recipient_before) = (
        balance(&devnet, PAYER).await,
        balance(&devnet, RECIPIENT).await,
    );

    let run = pay(&devnet, &dir.path().join("pay.db"), &["-v", &url]).await;
    let json = answer(&run);
    assert_eq!(json["ok"], true);
    assert!(run.stderr.contains("\"feePayer\":true"), "{}", run.stderr);
    assert!(run.stderr.contains("fees sponsored"), "{}", run.stderr);
    assert_eq!(balance(&devnet, RECIPIENT).await - recipient_before, AMOUNT);
    assert_eq!(
        payer_before - balance(&devnet, PAYER).await,
        AMOUNT,
        "the sponsor paid the fees"
    );
    server.stop().await;
}
