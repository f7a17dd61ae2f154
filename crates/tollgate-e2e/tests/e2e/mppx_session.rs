//! Interop: the reference TypeScript SDK's v1 session client
//! (`tempo.sessionLegacy` from mppx@0.11.0; the mppx CLI only speaks v2)
//! opens an escrow channel with Tollgate, pays several requests with
//! cumulative vouchers (one streamed), and closes it on chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tollgate_devnet::{DEV_ACCOUNTS, PATH_USD, cache_dir, npm_install};
use tollgate_ledger::{ChannelBook, ChannelStatus};
use tollgate_mock::MockOptions;

// The same pinned install as `mppx_interop.rs`, so it is downloaded once.
const MPPX: &str = "mppx@0.11.0";
const VIEM: &str = "viem@2.57.0";
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

async fn mppx_prefix() -> PathBuf {
    let prefix = cache_dir().join("mppx-0.11.0");
    let bin = prefix.join("node_modules/.bin/mppx");
    npm_install(&prefix, &[MPPX, VIEM], &bin)
        .await
        .expect("mppx installs from npm");
    prefix
}

/// Copies `tests/node/<script>` next to the prefix's `node_modules` (ESM
/// ignores `NODE_PATH`), under a per-process name so parallel runs never
/// share a half-written file.
fn place_script(prefix: &std::path::Path, script: &str) -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/node")
        .join(script);
    let stem = script.trim_end_matches(".mjs");
    let target = prefix.join(format!("tollgate-{stem}-{}.mjs", std::process::id()));
    std::fs::copy(&source, &target).expect("the node script copies into the prefix");
    target
}

/// The last `lines` lines the gateway logged, for failure messages.
fn gateway_log_tail(lines: usize) -> String {
    let all = common::logs::captured();
    let kept: Vec<&str> = all.lines().filter(|l| l.contains("tollgate")).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

fn number(value: &Value) -> u128 {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a decimal string, got {value}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mppx_legacy_session_client_opens_pays_streams_and_closes() {
    let prefix = mppx_prefix().await;
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        quoted: true,
        session: true,
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let escrow = h.devnet.escrow().unwrap().to_owned();
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;

    let script = place_script(&prefix, "session_client.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .current_dir(&prefix)
        .env("TOLLGATE_URL", &gw.url)
        .env("RPC_URL", h.devnet.rpc_url())
        .env("PAYER_KEY", DEV_ACCOUNTS[PAYER].private_key)
        .env("ESCROW", &escrow)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(NODE_TIMEOUT, run).await;
    let _ = std::fs::remove_file(&script);
    let output = output
        .unwrap_or_else(|_| panic!("the node session client ran over {NODE_TIMEOUT:?}"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the node session client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the script prints JSON ({e}):\n{stdout}\n{stderr}"));
    let context = format!(
        "{report:#}\n{stderr}\ngateway log (tail):\n{}",
        gateway_log_tail(80)
    );

    assert!(report["error"].is_null(), "mppx threw: {context}");

    // One channel for everything.
    let channel_id = report["channelId"]
        .as_str()
        .unwrap_or_else(|| panic!("a channel was opened: {context}"))
        .to_lowercase();

    // What went over the wire: each paid request first met a 402, then
    // mppx opened the channel once, paid the rest with vouchers (the stream
    // included) and closed with a body-less POST.
    let actions: Vec<&str> = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["open", "voucher", "voucher", "voucher", "close"],
        "{context}"
    );
    for exchange in report["trace"].as_array().unwrap() {
        let expected = if exchange["action"].is_null() {
            402
        } else {
            200
        };
        assert_eq!(exchange["status"], expected, "{context}");
    }

    // Three plain requests, each 200 with a session receipt.
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3, "{context}");
    let mut receipts = Vec::new();
    for request in requests {
        assert_eq!(request["status"], 200, "{context}");
        assert_eq!(request["object"], "chat.completion", "{context}");
        receipts.push(request["receipt"].clone());
    }

    // The streamed request: content arrived, and the closing
    // `payment-receipt` event reached the client.
    let stream = &report["stream"];
    assert!(stream["error"].is_null(), "the stream failed: {context}");
    let messages = stream["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m.as_str().unwrap_or("").contains("chat.completion.chunk")),
        "the stream delivered chunks: {context}"
    );
    let stream_receipts = stream["receipts"].as_array().unwrap();
    assert!(!stream_receipts.is_empty(), "a stream receipt: {context}");
    receipts.extend(stream_receipts.iter().cloned());

    // Every receipt is a v1 session receipt for the same channel; spent
    // and the accepted cumulative only grow; the server charged the usage,
    // never more than was authorized.
    let mut last_spent = 0;
    let mut last_accepted = 0;
    let mut largest_step = 0;
    for receipt in &receipts {
        assert_eq!(receipt["method"], "tempo", "{context}");
        assert_eq!(receipt["intent"], "session", "{context}");
        assert_eq!(receipt["status"], "success", "{context}");
        assert_eq!(
            receipt["channelId"].as_str().unwrap().to_lowercase(),
            channel_id,
            "{context}"
        );
        let spent = number(&receipt["spent"]);
        let accepted = number(&receipt["acceptedCumulative"]);
        assert!(spent >= last_spent, "spent never decreases: {context}");
        assert!(accepted >= last_accepted, "{context}");
        assert!(spent <= accepted, "{context}");
        largest_step = largest_step.max(accepted - last_accepted);
        last_spent = spent;
        last_accepted = accepted;
    }
    // Each of the four requests was charged something.
    let plain: Vec<u128> = receipts[..3].iter().map(|r| number(&r["spent"])).collect();
    assert!(
        plain[0] > 0 && plain[0] < plain[1] && plain[1] < plain[2],
        "{context}"
    );
    assert!(last_spent > plain[2], "the stream was charged: {context}");
    // The gateway charged the usage, not the worst case mppx authorized.
    assert!(last_spent < last_accepted, "{context}");
    assert!(h.upstream.count() >= 4, "the upstream served every request");

    // Close: a receipt with the settlement transaction.
    let close = &report["close"];
    assert!(
        report["closeError"].is_null() && close.is_object(),
        "close succeeded: {context}"
    );
    assert_eq!(close["intent"], "session", "{context}");
    assert_eq!(
        close["channelId"].as_str().unwrap().to_lowercase(),
        channel_id
    );
    let tx_hash = close["txHash"].as_str().unwrap_or("");
    assert!(
        tx_hash.starts_with("0x") && tx_hash.len() == 66,
        "{context}"
    );
    assert_eq!(number(&close["spent"]), last_spent, "{context}");

    // The gateway's ledger: finalized, settled at least what was spent and
    // at most one request's worst case more (mppx closes at its highest
    // accepted cumulative; the gateway captures the smallest voucher that
    // covers `spent`).
    let stored = h
        .ledger(&options)
        .channel(&channel_id)
        .await
        .unwrap()
        .expect("the gateway knows the channel");
    assert_eq!(stored.status, ChannelStatus::Finalized, "{stored:?}");
    assert_eq!(stored.spent, last_spent, "{stored:?}");
    assert_eq!(stored.reserved, 0, "{stored:?}");
    assert!(stored.settled >= stored.spent, "{stored:?}");
    assert!(
        stored.settled - stored.spent <= largest_step,
        "settled within one quote of spent: {stored:?}"
    );
    assert_eq!(stored.deposit, 1_000_000, "maxDeposit caps the deposit");
    assert_eq!(
        stored.payer.to_lowercase(),
        DEV_ACCOUNTS[PAYER].address.to_lowercase()
    );

    // On chain the payee gained exactly what was settled.
    assert_eq!(h.balance(payee).await - payee_before, stored.settled);
    gw.stop().await;
}

/// Runs `tests/node/<script>` with `env` and returns its JSON report and a
/// context string for failure messages.
async fn run_node(prefix: &std::path::Path, script: &str, env: &[(&str, &str)]) -> (Value, String) {
    let script = place_script(prefix, script);
    let mut command = tokio::process::Command::new("node");
    command
        .arg(&script)
        .current_dir(prefix)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(NODE_TIMEOUT, command.output()).await;
    let _ = std::fs::remove_file(&script);
    let output = output
        .unwrap_or_else(|_| panic!("the node session client ran over {NODE_TIMEOUT:?}"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the node session client failed ({}):\n{stdout}\n{stderr}\ngateway log (tail):\n{}",
        output.status,
        gateway_log_tail(80)
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the script prints JSON ({e}):\n{stdout}\n{stderr}"));
    let context = format!(
        "{report:#}\n{stderr}\ngateway log (tail):\n{}",
        gateway_log_tail(80)
    );
    (report, context)
}

/// The payer's pathUSD balance at `block` (a hex quantity or tag).
async fn balance_at(h: &Harness, holder: &str, block: &str) -> u128 {
    let holder = holder.trim_start_matches("0x").to_ascii_lowercase();
    let data = format!("0x70a08231{holder:0>64}");
    let hex: String = h
        .devnet
        .rpc()
        .call(
            "eth_call",
            serde_json::json!([{"to": PATH_USD, "data": data}, block]),
        )
        .await
        .unwrap();
    u128::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap()
}

/// The fee `payer` paid for transaction `hash` (in pathUSD, the token mppx
/// pays fees in when the challenge names no fee token): its balance change
/// over the transaction's block, less what the transaction moved on purpose.
async fn fee_of(h: &Harness, payer: &str, hash: &str, moved: u128) -> u128 {
    let receipt = h.devnet.rpc().wait_receipt(hash).await.unwrap();
    assert_eq!(receipt["status"], "0x1", "{receipt:#}");
    let block = receipt["blockNumber"].as_str().unwrap();
    let number = u64::from_str_radix(block.trim_start_matches("0x"), 16).unwrap();
    let before = balance_at(h, payer, &format!("{:#x}", number - 1)).await;
    let after = balance_at(h, payer, block).await;
    before - after - moved
}

/// The reference SDK's default session client (`tempo.session`, v2 only)
/// pays a v2 gateway: open on the channel reserve, three plain requests and
/// a stream on cumulative vouchers — the stream outgrows what its challenge
/// asked for, pauses for a voucher and resumes — then closes. The payee
/// gains exactly `spent`; the payer loses exactly `spent` plus the fee of
/// its open transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mppx_default_session_client_pays_over_v2() {
    let prefix = mppx_prefix().await;
    // Plain requests allow 256 output tokens and get all of them; the
    // stream allows 1024 and gets 600, well past the prompt plus the 256
    // output tokens its challenge asks for.
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 600,
        ..MockOptions::default()
    })
    .await;
    let options = Options {
        quoted: true,
        session: true,
        session_extra: "protocol = \"v2\"\n".into(),
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payer = DEV_ACCOUNTS[PAYER].address;
    let payee_before = h.balance(payee).await;
    let payer_before = h.balance(payer).await;
    let rpc_url = h.devnet.rpc_url();
    let (report, context) = run_node(
        &prefix,
        "session_client_v2.mjs",
        &[
            ("TOLLGATE_URL", &gw.url),
            ("RPC_URL", &rpc_url),
            ("PAYER_KEY", DEV_ACCOUNTS[PAYER].private_key),
            ("MAX_DEPOSIT", "1"),
        ],
    )
    .await;
    assert!(report["error"].is_null(), "mppx threw: {context}");
    let channel_id = report["channelId"]
        .as_str()
        .unwrap_or_else(|| panic!("a channel was opened: {context}"))
        .to_lowercase();
    let actions: Vec<&str> = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["action"].as_str())
        .collect();
    assert_eq!(actions.first(), Some(&"open"), "{context}");
    assert_eq!(actions.last(), Some(&"close"), "{context}");
    assert!(
        actions.iter().filter(|a| **a == "voucher").count() >= 3,
        "{context}"
    );

    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3, "{context}");
    for request in requests {
        assert_eq!(request["status"], 200, "{context}");
        assert_eq!(request["object"], "chat.completion", "{context}");
        assert_eq!(
            request["receipt"]["channelId"]
                .as_str()
                .unwrap()
                .to_lowercase(),
            channel_id,
            "{context}"
        );
        // The draft's headers, read by mppx's codec: the channel as the
        // gateway left it with this answer (its receipt says the same).
        assert_eq!(request["session"], channel_id.as_str(), "{context}");
        let snapshot = &request["snapshot"];
        let receipt = &request["receipt"];
        assert_eq!(snapshot["channelId"], channel_id.as_str(), "{context}");
        assert_eq!(snapshot["chainId"], 42431, "{context}");
        assert_eq!(
            snapshot["escrow"],
            tollgate_devnet::CHANNEL_RESERVE,
            "{context}"
        );
        assert_eq!(snapshot["spent"], receipt["spent"], "{context}");
        assert_eq!(
            snapshot["acceptedCumulative"], receipt["acceptedCumulative"],
            "{context}"
        );
        assert_eq!(
            snapshot["highestVoucher"]["cumulativeAmount"], receipt["acceptedCumulative"],
            "{context}"
        );
        assert_eq!(snapshot["settled"], "0", "{context}");
        assert_eq!(snapshot["deposit"], "1000000", "{context}");
    }
    let stream = &report["stream"];
    assert!(stream["error"].is_null(), "the stream failed: {context}");
    assert!(
        stream["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap_or("").contains("chat.completion.chunk")),
        "the stream delivered chunks: {context}"
    );
    // The stream paused for a voucher: the client saw
    // `payment-need-voucher`, answered it with a body-less voucher POST
    // while the stream was open, and the stream then ran to its end.
    assert!(
        report["needVoucherEvents"].as_u64().unwrap_or(0) >= 1,
        "the stream paused: {context}"
    );
    let paused_vouchers = report["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["phase"] == "stream"
                && t["action"] == "voucher"
                && t["method"] == "POST"
                && t["hasBody"] == false
        })
        .collect::<Vec<_>>();
    assert!(!paused_vouchers.is_empty(), "{context}");
    for exchange in &paused_vouchers {
        assert_eq!(exchange["status"], 200, "{context}");
    }
    let chunks: Vec<Value> = stream["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| serde_json::from_str(m.as_str()?).ok())
        .collect();
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"].is_string()),
        "the stream ran to its end after the pause: {context}"
    );
    let stream_receipts = stream["receipts"].as_array().unwrap();
    let stream_receipt = stream_receipts.last().expect("the stream's receipt");
    let before_stream = number(&requests[2]["receipt"]["spent"]);
    let stream_spent = number(&stream_receipt["spent"]) - before_stream;
    // What the stream's own challenge asked for: the prompt plus 256
    // output tokens, not its 1024-token worst case — and the stream was
    // charged beyond it, which only a voucher mid-stream authorized.
    let stream_challenge: u128 = report["streamChallengeAmount"]
        .as_str()
        .unwrap_or_else(|| panic!("the stream's challenge amount: {context}"))
        .parse()
        .unwrap();
    assert!(stream_spent > stream_challenge, "{context}");

    let close = &report["close"];
    assert!(
        report["closeError"].is_null() && close.is_object(),
        "close succeeded: {context}"
    );
    let tx_hash = close["txHash"].as_str().unwrap_or("");
    assert!(
        tx_hash.starts_with("0x") && tx_hash.len() == 66,
        "{context}"
    );

    let stored = h
        .ledger(&options)
        .channel(&channel_id)
        .await
        .unwrap()
        .expect("the gateway knows the channel");
    assert_eq!(stored.protocol, "v2", "{stored:?}");
    let descriptor: Value = serde_json::from_str(stored.descriptor.as_deref().unwrap()).unwrap();
    for request in requests {
        assert_eq!(request["snapshot"]["descriptor"], descriptor, "{context}");
    }
    assert_eq!(stored.status, ChannelStatus::Finalized, "{stored:?}");
    assert_eq!(stored.reserved, 0, "{stored:?}");
    assert!(stored.spent > 0, "{stored:?}");
    // v2 names the capture: exactly what was spent, not a voucher's amount.
    assert_eq!(stored.settled, stored.spent, "{stored:?}");
    assert_eq!(number(&close["spent"]), stored.spent, "{context}");
    assert_eq!(stored.spent, number(&stream_receipt["spent"]), "{context}");
    assert_eq!(h.balance(payee).await - payee_before, stored.spent);
    // The payer paid `spent` to the payee and got the rest of its deposit
    // back; the only other money it lost is the fee of its own open
    // transaction (mppx pays it in the channel's token). Nothing else.
    let open_tx = report["openTxHash"]
        .as_str()
        .unwrap_or_else(|| panic!("the open transaction: {context}"));
    let open_fee = fee_of(&h, payer, open_tx, stored.deposit).await;
    let payer_loss = payer_before - h.balance(payer).await;
    assert_eq!(payer_loss, stored.spent + open_fee, "{stored:?}");
    eprintln!(
        "v2 mppx: spent {} payer loss {payer_loss} (open fee {open_fee})",
        stored.spent
    );
    gw.stop().await;
}

/// `protocol = "both"`: one gateway serves mppx's legacy client
/// (`tempo.sessionLegacy`, v1) and its default client (`tempo.session`,
/// v2) side by side, each on its own channel and contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_gateway_serves_the_legacy_and_the_default_mppx_session_clients() {
    let prefix = mppx_prefix().await;
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        quoted: true,
        session: true,
        session_extra: "protocol = \"both\"\n".into(),
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let escrow = h.devnet.escrow().unwrap().to_owned();
    let rpc_url = h.devnet.rpc_url();
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;
    let legacy_env = [
        ("TOLLGATE_URL", gw.url.as_str()),
        ("RPC_URL", &rpc_url),
        ("PAYER_KEY", DEV_ACCOUNTS[PAYER].private_key),
        ("ESCROW", &escrow),
    ];
    let default_env = [
        ("TOLLGATE_URL", gw.url.as_str()),
        ("RPC_URL", &rpc_url),
        ("PAYER_KEY", DEV_ACCOUNTS[3].private_key),
        ("MAX_DEPOSIT", "1"),
    ];
    let legacy = run_node(&prefix, "session_client.mjs", &legacy_env);
    let default = run_node(&prefix, "session_client_v2.mjs", &default_env);
    let ((v1, v1_context), (v2, v2_context)) = tokio::join!(legacy, default);
    for (report, context) in [(&v1, &v1_context), (&v2, &v2_context)] {
        assert!(report["error"].is_null(), "mppx threw: {context}");
        assert!(report["closeError"].is_null(), "close failed: {context}");
        assert_eq!(report["requests"].as_array().unwrap().len(), 3, "{context}");
    }
    let ledger = h.ledger(&options);
    let mut settled = 0;
    for (report, protocol) in [(&v1, "v1"), (&v2, "v2")] {
        let id = report["channelId"].as_str().unwrap().to_lowercase();
        let stored = ledger.channel(&id).await.unwrap().unwrap();
        assert_eq!(stored.protocol, protocol, "{stored:?}");
        assert_eq!(stored.status, ChannelStatus::Finalized, "{stored:?}");
        settled += stored.settled;
    }
    assert_eq!(h.balance(payee).await - payee_before, settled);
    gw.stop().await;
}
