//! `tollgate pay` with the session intent, each step a separate process
//! against the real gateway binary on a local chain with the escrow: open
//! on the first invocation, reuse the channel on the next (state file),
//! a stream that outruns its authorization and is fed a voucher
//! mid-stream, then `tollgate pay close` capturing exactly what was spent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::{common, support};

use std::path::Path;

use common::session::session_challenge;
use common::*;
use serde_json::{Value, json};
use support::launch;
use tollgate_client::{ChannelStatus, State};
use tollgate_devnet::{ALPHA_USD, DEV_ACCOUNTS};
use tollgate_ledger::ChannelBook;
use tollgate_mock::MockOptions;

const DEPOSIT: u128 = 100_000;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run_pay(h: &Harness, state: &Path, args: &[&str]) -> Run {
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
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let key = DEV_ACCOUNTS[PAYER].private_key.trim_start_matches("0x");
    assert!(!run.stdout.contains(key) && !run.stderr.contains(key));
    run
}

fn chat(model: &str, max_tokens: u32, stream: bool) -> String {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
    .to_string()
}

fn session_options() -> Options {
    Options {
        quoted: true,
        session: true,
        session_extra: "stream_voucher_timeout_secs = 5\n".into(),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_opens_once_is_reused_streams_past_its_balance_and_closes_exactly() {
    opens_reuses_streams_and_closes("v1").await;
}

/// The same on session protocol v2: the channel reserve, descriptors in
/// every credential, the reserve's close capturing exactly `spent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_session_opens_once_is_reused_streams_past_its_balance_and_closes_exactly() {
    opens_reuses_streams_and_closes("v2").await;
}

async fn opens_reuses_streams_and_closes(protocol: &str) {
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 150,
        ..MockOptions::default()
    })
    .await;
    let mut options = session_options();
    options.session_extra += &format!("protocol = \"{protocol}\"\n");
    let gw = launch(&h, &options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let escrow = match protocol {
        "v2" => h.devnet.channel_reserve().unwrap().to_owned(),
        _ => h.devnet.escrow().unwrap().to_owned(),
    };
    let state_path = h.dir.path().join("pay.db");
    let payer = DEV_ACCOUNTS[PAYER].address;
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payer_before = h.balance(payer).await;
    let payee_before = h.balance(payee).await;
    let deposit = DEPOSIT.to_string();
    // Fees in another token keep the pathUSD accounting exact.
    let wallet = [
        "--fee-token",
        ALPHA_USD,
        "--max-deposit",
        deposit.as_str(),
        "--allow-escrow",
        escrow.as_str(),
        "--allow-recipient",
        payee,
    ];
    let pay = async |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(wallet);
        run_pay(&h, &state_path, &all).await
    };

    // 1. First invocation: opens a channel (deposit capped by --max-deposit).
    let body = chat("gpt-4o", 160, false);
    let run = pay(&["--intent", "session", "--json", &body, "-v", &url]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let answer: Value = serde_json::from_str(&run.stdout).expect("the JSON answer");
    assert!(answer["choices"].is_array());
    assert!(
        run.stderr.contains("* offer: tempo/session"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("session: opening channel"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!("deposit {DEPOSIT}")));
    let ledger = h.ledger(&options);
    let channels = ledger.channels().await.unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].deposit, DEPOSIT);
    assert_eq!(channels[0].protocol, protocol);
    let state = State::open(&state_path).unwrap();
    let local = state.list().unwrap();
    assert_eq!(local.len(), 1);
    let channel = local[0].clone();
    assert_eq!(channel.status, ChannelStatus::Open);
    assert_eq!(format!("{:#x}", channel.channel_id), channels[0].channel_id);
    assert_eq!(channel.spent, channels[0].spent);
    assert_eq!(channel.accepted, channels[0].accepted);
    assert!(channel.spent > 0);
    assert_eq!(payer_before - h.balance(payer).await, DEPOSIT);

    // 2. A second process, default intent: the channel from the state file
    //    is used; no second open.
    let run = pay(&["--json", &body, "-v", &url]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("session: using channel"),
        "{}",
        run.stderr
    );
    let channels = ledger.channels().await.unwrap();
    assert_eq!(channels.len(), 1, "one channel on the gateway");
    assert_eq!(state.list().unwrap().len(), 1, "one channel in the state");
    let after_two = state.get(channel.channel_id).unwrap().unwrap();
    assert_eq!(after_two.spent, channels[0].spent);
    assert_eq!(
        after_two.spent,
        2 * channel.spent,
        "same request, same cost"
    );
    assert_eq!(payer_before - h.balance(payer).await, DEPOSIT);

    // 3. A stream authorized for only 300 beyond what was spent: it starts,
    //    outruns the balance, pauses with payment-need-voucher, gets its
    //    voucher on a body-less POST, and finishes.
    let stream_body = chat("gpt-4o", 4000, true);
    let run = pay(&["--json", &stream_body, "--authorize", "300", "-v", &url]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(
        run.stdout.contains("event: payment-need-voucher"),
        "{}",
        run.stdout
    );
    let content = run.stdout.matches("\"content\"").count();
    assert!(content >= 150, "the whole answer streamed: {content}");
    assert!(run.stdout.trim_end().ends_with("data: [DONE]"));
    assert!(
        run.stderr.contains("stream needs a voucher"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("voucher sent for cumulative"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("* final receipt: {"), "{}", run.stderr);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    let stored = ledger
        .channel(&channels[0].channel_id)
        .await
        .unwrap()
        .unwrap();
    let local = state.get(channel.channel_id).unwrap().unwrap();
    assert_eq!(local.spent, stored.spent, "the final receipt was recorded");
    assert_eq!(local.accepted, stored.accepted);
    assert!(
        stored.spent - after_two.spent > 300,
        "the stream cost more than its first authorization"
    );
    let spent = stored.spent;

    // 4. Close: exactly `spent` is captured; the rest returns to the payer.
    let close = async || {
        let args = [
            "close",
            &url,
            "--allow-escrow",
            &escrow,
            "--allow-recipient",
            payee,
        ];
        run_pay(&h, &state_path, &args).await
    };
    let run = close().await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let tx = run.stdout.trim();
    assert!(tx.starts_with("0x") && tx.len() == 66, "{tx}");
    assert_eq!(h.balance(payee).await - payee_before, spent);
    assert_eq!(payer_before - h.balance(payer).await, spent);
    let stored = ledger
        .channel(&channels[0].channel_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.settled, stored.spent), (spent, spent));
    assert_eq!(stored.status, tollgate_ledger::ChannelStatus::Finalized);
    let local = state.get(channel.channel_id).unwrap().unwrap();
    assert_eq!(local.status, ChannelStatus::Closed);
    assert_eq!(local.close_tx.as_deref(), Some(tx));

    // 5. With no usable channel left, the default is a charge again; a
    //    second close has nothing to close.
    let run = pay(&["--json", &body, "-v", &url]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("* charge:"), "{}", run.stderr);
    let run = close().await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no open channel"), "{}", run.stderr);
    gw.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_spend_caps_refuse_before_signing_and_top_ups_stay_under_the_cap() {
    spend_caps_and_top_ups("v1").await;
}

/// The same on v2: the top-up is the reserve's `topUp(descriptor, amount)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v2_session_spend_caps_refuse_before_signing_and_top_ups_stay_under_the_cap() {
    spend_caps_and_top_ups("v2").await;
}

async fn spend_caps_and_top_ups(protocol: &str) {
    let h = Harness::start_sessions(MockOptions::default()).await;
    let mut options = session_options();
    options.session_extra += &format!("protocol = \"{protocol}\"\n");
    let gw = launch(&h, &options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let state_path = h.dir.path().join("pay.db");
    let payer = DEV_ACCOUNTS[PAYER].address;
    let before = h.balance(payer).await;
    let body = chat("gpt-4o", 160, false);

    // Over --max-amount, and an escrow that is not allowed: refused before
    // any transaction is signed; no channel anywhere.
    for (extra, says) in [
        (vec!["--max-amount", "10"], "above --max-amount 10"),
        (
            vec!["--allow-escrow", DEV_ACCOUNTS[3].address],
            "is not an allowed escrow",
        ),
        (
            vec!["--max-deposit", "10"],
            "does not cover this request's worst case",
        ),
    ] {
        let mut args = vec!["--intent", "session", "--json", body.as_str(), url.as_str()];
        args.extend(extra.iter().copied());
        let run = run_pay(&h, &state_path, &args).await;
        assert_eq!(run.code, 1, "{extra:?}");
        assert!(
            run.stderr.contains("refused by spend policy"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(says), "{}", run.stderr);
    }
    assert_eq!(h.balance(payer).await, before);
    assert!(h.ledger(&options).channels().await.unwrap().is_empty());
    assert_eq!(h.upstream.count(), 0);

    // A channel whose deposit is exactly this request's worst case…
    let quote: u128 = session_challenge(&challenges(&post(&h.http, &url, &body, None).await))
        .request
        .decode_value()
        .unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let q = quote.to_string();
    let fee = ["--fee-token", ALPHA_USD];
    let mut args = vec![
        "--intent",
        "session",
        "--max-deposit",
        &q,
        "--json",
        &body,
        &url,
    ];
    args.extend(fee);
    let run = run_pay(&h, &state_path, &args).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let ledger = h.ledger(&options);
    let opened = ledger.channels().await.unwrap()[0].clone();
    assert_eq!(opened.deposit, quote);
    let spent = opened.spent;

    // …does not cover the next one: refused under the same cap (nothing
    // signed, nothing served)…
    let mut args = vec!["-v", "--max-deposit", &q, "--json", &body, &url];
    args.extend(fee);
    let run = run_pay(&h, &state_path, &args).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("would exceed the deposit cap"),
        "{}",
        run.stderr
    );
    assert_eq!(h.upstream.count(), 1);

    // …and topped up (HEAD with a topUp credential) under a higher one.
    let cap = (2 * quote).to_string();
    let mut args = vec!["-v", "--max-deposit", &cap, "--json", &body, &url];
    args.extend(fee);
    let run = run_pay(&h, &state_path, &args).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("topped up {spent}")),
        "{}",
        run.stderr
    );
    let channels = ledger.channels().await.unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].deposit, quote + spent);
    assert_eq!(channels[0].spent, 2 * spent);
    assert_eq!(channels[0].protocol, protocol);
    assert_eq!(before - h.balance(payer).await, quote + spent);
    gw.kill().await;
}

/// The library API as another Rust program would use it: a session paid
/// request, a stream read chunk by chunk (vouchers answered in the
/// background), and a close when the local `spent` is stale (the reader
/// dropped the stream before its final receipt).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn library_streams_in_the_background_and_closes_with_a_stale_spent() {
    use tollgate_client::{Client, Config, Event, IntentChoice, Request};

    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 150,
        chunk_interval: std::time::Duration::from_millis(5),
        ..MockOptions::default()
    })
    .await;
    let options = session_options();
    let gw = h.gateway(&options).await;
    let url: tollgate_client::Url = format!("{}/v1/chat/completions", gw.url).parse().unwrap();
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = events.clone();

    let mut config = Config::new(DEV_ACCOUNTS[PAYER].private_key.parse().unwrap());
    config.rpc_url = Some(h.devnet.rpc_url());
    config.state_path = h.dir.path().join("lib.db");
    config.intent = IntentChoice::Session;
    config.fee_token = Some(ALPHA_USD.parse().unwrap());
    config.policy.max_deposit = Some(DEPOSIT);
    config.policy.authorize = Some(300);
    config.observer = Some(std::sync::Arc::new(move |e: Event| {
        seen.lock().unwrap().push(format!("{e:?}"));
    }));
    let client = Client::new(config).unwrap();

    // A whole stream, vouchers answered in the background.
    let stream = chat("gpt-4o", 4000, true);
    let mut paid = client
        .send(Request::post(url.clone()).json(stream.clone()))
        .await
        .unwrap();
    assert_eq!(paid.status, 200);
    assert!(matches!(
        paid.paid,
        Some(tollgate_client::Payment::Session { opened: true, .. })
    ));
    let mut text = String::new();
    while let Some(chunk) = paid.body.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: payment-need-voucher"));
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let last = paid.body.final_receipt().expect("the final receipt event");
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("VoucherSent"))
    );
    let state = client.state(false).unwrap().unwrap();
    let channel = state.list().unwrap()[0].clone();
    assert_eq!(Some(channel.spent), last.spent());

    // A second stream, dropped after a few chunks: the local state keeps
    // the receipt from the response headers, the server charges what it
    // delivered.
    let mut paid = client
        .send(Request::post(url.clone()).json(stream))
        .await
        .unwrap();
    for _ in 0..5 {
        paid.body.chunk().await.unwrap();
    }
    drop(paid);
    let id = format!("{:#x}", channel.channel_id);
    let ledger = h.ledger(&options);
    let mut server = ledger.channel(&id).await.unwrap().unwrap();
    for _ in 0..100 {
        if server.reserved == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        server = ledger.channel(&id).await.unwrap().unwrap();
    }
    assert_eq!(server.reserved, 0);
    let local = state.get(channel.channel_id).unwrap().unwrap();
    assert!(local.spent < server.spent, "the local spent is stale");

    // Close: refused at the stale spent, closed at the highest signed.
    let closed = client.close_session(url).await.unwrap();
    assert_eq!(closed.cumulative, local.signed);
    assert!(closed.tx_hash.is_some());
    let server = ledger.channel(&id).await.unwrap().unwrap();
    assert!(server.settled >= server.spent && server.settled <= local.signed);
    assert_eq!(h.balance(payee).await - payee_before, server.settled);
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("refused a close at"))
    );
    gw.stop().await;
}
