//! `tollgate pay` with the charge intent, run as a child process against
//! the real gateway binary on a local chain: pull, push, fee sponsorship,
//! the spend cap, and servers that send bad challenges or refuse payment
//! (each refused with a clear message, never paid twice).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::{common, support};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{Value, json};
use support::launch;
use tollgate_devnet::{DEV_ACCOUNTS, PATH_USD};
use tollgate_mock::MockOptions;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `tollgate pay <args> --rpc-url … --state …` as the payer.
async fn pay(h: &Harness, args: &[&str]) -> Run {
    let state = h.dir.path().join("pay.db");
    run_pay(h, &state, args).await
}

async fn run_pay(h: &Harness, state: &Path, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .arg("pay")
        .args(args)
        .arg("--rpc-url")
        .arg(h.devnet.rpc_url())
        .arg("--state")
        .arg(state)
        .env("RUST_LOG", "warn");
    if args.contains(&"--key-file") {
        command.env_remove("TOLLGATE_PRIVATE_KEY");
    } else {
        command.env("TOLLGATE_PRIVATE_KEY", DEV_ACCOUNTS[PAYER].private_key);
    }
    let output = command.output().await.expect("the tollgate binary runs");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    // Whatever happened, the key never shows.
    let key = DEV_ACCOUNTS[PAYER].private_key.trim_start_matches("0x");
    assert!(!run.stdout.contains(key) && !run.stderr.contains(key));
    assert!(!run.stderr.to_lowercase().contains("authorization: payment"));
    run
}

fn quoted() -> Options {
    Options {
        quoted: true,
        ..Options::default()
    }
}

fn amount(challenge: &mpp::PaymentChallenge) -> u128 {
    challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The charge the gateway quotes for `body` (an unpaid request: no upstream
/// call, no state).
async fn quote(h: &Harness, url: &str, body: &str) -> u128 {
    let all = challenges(&post(&h.http, url, body, None).await);
    amount(all.iter().find(|c| c.intent.as_str() == "charge").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charge_pull_and_push_pay_exactly_the_quote() {
    let h = Harness::start_with(MockOptions::default()).await;
    let options = quoted();
    let gw = launch(&h, &options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let body = chat_body();
    let price = quote(&h, &url, &body).await;
    assert!(price > 0);
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let before = h.balance(recipient).await;

    // Pull (default): the server broadcasts the signed transfer.
    let run = pay(&h, &["--json", &body, "-v", &url]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let answer: Value = serde_json::from_str(&run.stdout).expect("the JSON answer on stdout");
    assert!(answer["choices"][0]["message"]["content"].is_string());
    assert_eq!(h.balance(recipient).await - before, price);
    // -v shows the decoded challenge and the receipt.
    assert!(
        run.stderr.contains("* offer: tempo/charge"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!("\"amount\":\"{price}\"")));
    assert!(run.stderr.contains("(pull)"));
    assert!(run.stderr.contains("* receipt: {"), "{}", run.stderr);

    // Push: the client broadcasts and sends the hash.
    let run = pay(&h, &["--json", &body, "--push", "-v", &url]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let answer: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(answer["choices"].is_array());
    assert!(run.stderr.contains("(push), tx 0x"), "{}", run.stderr);
    assert_eq!(h.balance(recipient).await - before, 2 * price);
    assert_eq!(h.upstream.count(), 2);

    // -i includes the status line and headers (the receipt among them).
    let run = pay(&h, &["--json", &body, "-i", &url]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(
        run.stdout.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.to_lowercase().contains("\r\npayment-receipt: "));
    assert_eq!(h.balance(recipient).await - before, 3 * price);
    gw.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sponsored_charge_costs_the_payer_exactly_the_amount() {
    let h = Harness::start().await;
    let options = Options {
        fee_payer: true,
        quoted: true,
        ..Options::default()
    };
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let body = chat_body();
    let price = quote(&h, &url, &body).await;
    let payer = DEV_ACCOUNTS[PAYER].address;
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let (payer_before, recipient_before) = (h.balance(payer).await, h.balance(recipient).await);

    let out = h.dir.path().join("answer.json");
    let run = pay(
        &h,
        &["--json", &body, "-v", "-o", out.to_str().unwrap(), &url],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("fees sponsored"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "-o writes the body to the file");
    let answer: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(answer["choices"].is_array());
    assert_eq!(h.balance(recipient).await - recipient_before, price);
    assert_eq!(
        payer_before - h.balance(payer).await,
        price,
        "the sponsor paid the fees"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_amount_and_allow_lists_refuse_before_signing() {
    let h = Harness::start().await;
    let options = quoted();
    let gw = launch(&h, &options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let body = chat_body();
    let price = quote(&h, &url, &body).await;
    let payer = DEV_ACCOUNTS[PAYER].address;
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let balances = (h.balance(payer).await, h.balance(recipient).await);

    let cap = (price - 1).to_string();
    let run = pay(&h, &["--json", &body, "--max-amount", &cap, &url]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "asks for {price} base units, above --max-amount {cap}"
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing was signed or paid"));
    assert!(run.stdout.is_empty());

    let other = DEV_ACCOUNTS[3].address;
    for args in [
        vec!["--allow-recipient", other],
        vec!["--allow-token", tollgate_devnet::ALPHA_USD],
        vec!["--chain-id", "1"],
    ] {
        let mut all = vec!["--json", body.as_str()];
        all.extend(args.iter().copied());
        all.push(&url);
        let run = pay(&h, &all).await;
        assert_eq!(run.code, 1, "{args:?}");
        assert!(
            run.stderr.contains("refused by spend policy"),
            "{}",
            run.stderr
        );
    }

    // No funds moved (not even fees), no request reached the upstream.
    assert_eq!(
        (h.balance(payer).await, h.balance(recipient).await),
        balances
    );
    assert_eq!(h.upstream.count(), 0);

    // The cap at exactly the price pays (key from a file this time).
    let key_file = h.dir.path().join("payer.key");
    std::fs::write(&key_file, format!("{}\n", DEV_ACCOUNTS[PAYER].private_key)).unwrap();
    let run = pay(
        &h,
        &[
            "--json",
            &body,
            "--max-amount",
            &price.to_string(),
            "--key-file",
            key_file.to_str().unwrap(),
            &url,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(h.balance(recipient).await - balances.1, price);
    gw.kill().await;
}

// ---- servers that misbehave -------------------------------------------

/// A loopback server answering every request with a 402 carrying `offers`;
/// with `refuse_paid`, a paid retry gets a 402 problem instead of service.
/// Returns its URL and the number of requests it received.
async fn fake_server(offers: Vec<String>) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let offers = offers.clone();
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let paid = headers.contains_key("authorization");
            let problem = if paid {
                json!({"type": "https://paymentauth.org/problems/verification-failed",
                       "title": "Verification Failed", "status": 402,
                       "code": "verification-failed",
                       "detail": "the fake server refuses every payment"})
            } else {
                json!({"type": "https://paymentauth.org/problems/payment-required",
                       "status": 402, "code": "payment-required", "detail": "pay"})
            };
            let mut response: Response = (
                StatusCode::PAYMENT_REQUIRED,
                [("content-type", "application/problem+json")],
                problem.to_string(),
            )
                .into_response();
            for offer in &offers {
                response
                    .headers_mut()
                    .append("www-authenticate", HeaderValue::from_str(offer).unwrap());
            }
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/chat/completions",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, count)
}

fn offer(method: &str, request: Value, expires: &str) -> String {
    let challenge = mpp::PaymentChallenge::new(
        format!("fake-{}", uuid_like()),
        "fake.test",
        method,
        "charge",
        mpp::protocol::core::Base64UrlJson::from_value(&request).unwrap(),
    )
    .with_expires(expires);
    mpp::format_www_authenticate(&challenge).unwrap()
}

fn uuid_like() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn tempo_request(amount: u128) -> Value {
    json!({
        "amount": amount.to_string(),
        "currency": PATH_USD,
        "recipient": DEV_ACCOUNTS[RECIPIENT].address,
        "methodDetails": {"chainId": 42431},
    })
}

fn in_minutes(minutes: u64) -> String {
    mpp::expires::minutes(minutes)
}

/// An RFC 3339 time that has passed.
const LONG_AGO: &str = "2024-01-01T00:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_challenges_are_refused_and_a_second_402_is_never_paid_again() {
    let h = Harness::start().await;
    let payer = DEV_ACCOUNTS[PAYER].address;
    let recipient = DEV_ACCOUNTS[RECIPIENT].address;
    let body = chat_body();
    let (payer_before, recipient_before) = (h.balance(payer).await, h.balance(recipient).await);

    // 1. Garbage in WWW-Authenticate.
    let (url, count) = fake_server(vec!["Payment garbage!!, ===".to_owned()]).await;
    let run = pay(&h, &["--json", &body, &url]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("malformed payment challenge"),
        "{}",
        run.stderr
    );
    assert_eq!(count.load(Ordering::SeqCst), 1, "no retry");

    // 2. A method this client does not know.
    let stripe = offer(
        "stripe",
        json!({"amount": "100", "currency": "usd"}),
        &in_minutes(5),
    );
    let (url, count) = fake_server(vec![stripe]).await;
    let run = pay(&h, &["--json", &body, &url]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("no offer this client can pay: offered stripe/charge"),
        "{}",
        run.stderr
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // 3. An expired challenge.
    let expired = offer("tempo", tempo_request(1_234), LONG_AGO);
    let (url, count) = fake_server(vec![expired]).await;
    let run = pay(&h, &["--json", &body, &url]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("expired"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was paid"));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(
        (h.balance(payer).await, h.balance(recipient).await),
        (payer_before, recipient_before),
        "nothing moved so far"
    );

    // 4. A server that answers 402 again after being paid (push mode: the
    //    transfer really lands). Exactly one payment, then a clear error.
    let valid = offer("tempo", tempo_request(1_234), &in_minutes(5));
    let (url, count) = fake_server(vec![valid]).await;
    let run = pay(&h, &["--json", &body, "--push", &url]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "the server refused the payment (402): verification-failed: the fake server refuses every payment"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("the transfer of 1234 was broadcast (tx 0x"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("not retried"));
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "one unpaid, one paid request"
    );
    assert_eq!(
        h.balance(recipient).await - recipient_before,
        1_234,
        "paid once"
    );

    // Pull mode: the fake server never broadcasts, so nothing moves at all.
    let valid = offer("tempo", tempo_request(1_234), &in_minutes(5));
    let (url, count) = fake_server(vec![valid]).await;
    let run = pay(&h, &["--json", &body, &url]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("refused the payment (402)"));
    assert!(
        run.stderr.contains("handed to the server"),
        "{}",
        run.stderr
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(h.balance(recipient).await - recipient_before, 1_234);
}
