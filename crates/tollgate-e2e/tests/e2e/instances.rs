//! Several gateway instances on one store, end to end on the local chain:
//! three in-process gateways on one PostgreSQL database share channels,
//! claims and stream wake-ups; two on one SQLite file leave each other's
//! holds alone; a bad or vanishing PostgreSQL is a clear error or a 503.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use crate::common;

use std::time::{Duration, Instant};

use common::session::{receipt, session_challenge};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_mock::MockOptions;

const DEPOSIT: u128 = 1_000_000;

fn chat(max_tokens: u32, stream: bool) -> String {
    json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
    .to_string()
}

fn sessions_on(pg_url: Option<String>) -> Options {
    Options {
        quoted: true,
        session: true,
        session_extra: "stream_voucher_timeout_secs = 20\n".into(),
        pg_url,
        ..Options::default()
    }
}

async fn challenge_for(h: &Harness, url: &str, body: &str) -> mpp::PaymentChallenge {
    session_challenge(&challenges(&post(&h.http, url, body, None).await))
}

fn number(value: &Value) -> u128 {
    value.as_str().unwrap().parse().unwrap()
}

fn quote(challenge: &mpp::PaymentChallenge) -> u128 {
    number(&challenge.request.decode_value().unwrap()["amount"])
}

/// One SSE event: (event name, data).
fn parse_event(raw: &str) -> (String, String) {
    let mut name = "message".to_owned();
    let mut data = String::new();
    for line in raw.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim());
        }
    }
    (name, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_serve_at_most_what_one_balance_covers() {
    let Some(pg) = pg_database().await else {
        return;
    };
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = sessions_on(Some(pg));
    let gateways = [
        h.gateway(&options).await,
        h.gateway(&options).await,
        h.gateway(&options).await,
    ];
    let urls: Vec<String> = gateways
        .iter()
        .map(|g| format!("{}/v1/chat/completions", g.url))
        .collect();
    let payer = h.payer();
    let body = chat(24, false);
    let challenge = challenge_for(&h, &urls[0], &body).await;
    let quote = quote(&challenge);
    let (channel, open) = payer.open(&challenge, DEPOSIT, quote).await;
    let first = post(&h.http, &urls[0], &body, Some(&open)).await;
    assert_eq!(first.status(), 200);
    let cost = number(&receipt(&first)["spent"]);
    // A balance that covers exactly one hundred more, on one voucher that
    // every instance sees.
    let accepted = cost + 100 * cost;
    let voucher = payer.pay_voucher(&challenge, channel, accepted);

    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let http = h.http.clone();
            let (url, body, voucher) = (urls[i % 3].clone(), body.clone(), voucher.clone());
            tokio::spawn(async move { post(&http, &url, &body, Some(&voucher)).await })
        })
        .collect();
    let (mut served, mut refused) = (0u128, 0);
    for task in tasks {
        let response = task.await.unwrap();
        match response.status().as_u16() {
            200 => served += 1,
            402 => {
                let p = problem(response, 402, "session/insufficient-balance").await;
                assert!(p["challengeId"].is_string(), "a fresh challenge: {p}");
                refused += 1;
            }
            other => panic!(
                "unexpected status {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    let stored = h.stored_channel(&options, channel).await;
    assert!(
        served <= 100 && served >= 100 * cost / quote,
        "served {served} (cost {cost}, quote {quote})"
    );
    assert_eq!(served as usize + refused, 300);
    assert_eq!(stored.accepted, accepted);
    assert_eq!(stored.reserved, 0);
    assert_eq!(stored.spent, cost * (served + 1), "spent is exact");
    for gateway in gateways {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_charge_credential_sent_to_two_instances_pays_once() {
    let Some(pg) = pg_database().await else {
        return;
    };
    let h = Harness::start().await;
    let options = Options {
        pg_url: Some(pg),
        ..Options::default()
    };
    let (a, b) = (h.gateway(&options).await, h.gateway(&options).await);
    let payee = DEV_ACCOUNTS[RECIPIENT].address;
    let payee_before = h.balance(payee).await;
    let url_a = format!("{}/v1/chat/completions", a.url);
    let url_b = format!("{}/v1/chat/completions", b.url);
    let challenge = challenges(&post(&h.http, &url_a, &chat_body(), None).await).remove(0);
    let auth = pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await;
    let body = chat_body();
    let (x, y) = tokio::join!(
        post(&h.http, &url_a, &body, Some(&auth)),
        post(&h.http, &url_b, &body, Some(&auth))
    );
    let statuses = [x.status().as_u16(), y.status().as_u16()];
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    let loser = if statuses[0] == 200 { y } else { x };
    problem(loser, 402, "invalid-challenge").await;
    assert_eq!(h.upstream.count(), 1, "served once");
    assert_eq!(
        h.balance(payee).await - payee_before,
        CHAT_PRICE,
        "paid once"
    );
    a.stop().await;
    b.stop().await;
}

/// Reads a stream until `payment-need-voucher`, then POSTs the voucher it
/// asks for to `voucher_url` and reads on. Returns the wake-up latency
/// (voucher sent → next content event) and the final receipt.
async fn pause_and_resume(
    h: &Harness,
    stream_url: &str,
    voucher_url: &str,
    accepted: u128,
    channel: common::session::Channel,
) -> (Duration, Value) {
    let payer = h.payer();
    let body = chat(4000, true);
    let challenge = challenge_for(h, stream_url, &body).await;
    let response = post(
        &h.http,
        stream_url,
        &body,
        Some(&payer.pay_voucher(&challenge, channel, accepted)),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut sent_at = None;
    let mut woke_after = None;
    let mut last = None;
    while let Some(chunk) = stream.next().await {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let raw: String = buffer.drain(..end + 2).collect();
            let (name, data) = parse_event(&raw);
            match name.as_str() {
                "payment-need-voucher" => {
                    assert!(sent_at.is_none(), "asked once: the voucher covers the rest");
                    let need: Value = serde_json::from_str(&data).unwrap();
                    let required = number(&need["requiredCumulative"]);
                    let voucher = payer.pay_voucher(&challenge, channel, required);
                    sent_at = Some(Instant::now());
                    let top_up = h
                        .http
                        .post(voucher_url)
                        .header("authorization", voucher)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(top_up.status(), 200, "the other instance accepts it");
                }
                "payment-receipt" => last = Some(serde_json::from_str(&data).unwrap()),
                "message" if data.contains("\"content\"") => {
                    if let (Some(sent), None) = (sent_at, woke_after) {
                        woke_after = Some(sent.elapsed());
                    }
                }
                _ => {}
            }
        }
    }
    let woke_after = woke_after.expect("the stream paused and resumed");
    (woke_after, last.expect("a final receipt"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_paused_on_one_instance_resumes_on_a_voucher_posted_to_another() {
    let Some(pg) = pg_database().await else {
        return;
    };
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 150,
        ..MockOptions::default()
    })
    .await;
    let options = sessions_on(Some(pg));
    let (one, two) = (h.gateway(&options).await, h.gateway(&options).await);
    let url_one = format!("{}/v1/chat/completions", one.url);
    let url_two = format!("{}/v1/chat/completions", two.url);
    let body = chat(160, false);
    let challenge = challenge_for(&h, &url_one, &body).await;
    let (channel, open) = h.payer().open(&challenge, DEPOSIT, quote(&challenge)).await;
    let first = post(&h.http, &url_one, &body, Some(&open)).await;
    assert_eq!(first.status(), 200);
    let spent = number(&receipt(&first)["spent"]);
    // Just enough to start a stream (the prompt is covered), not to finish.
    let accepted = quote(&challenge) + 60;

    let (woke_after, last) = pause_and_resume(&h, &url_one, &url_two, accepted, channel).await;
    eprintln!("cross-instance wake-up: {woke_after:?} from voucher sent to next content event");
    let stored = h.stored_channel(&options, channel).await;
    assert_eq!(number(&last["spent"]), stored.spent);
    assert!(stored.spent > spent);
    assert_eq!(stored.reserved, 0);
    assert!(stored.spent <= stored.accepted);
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_one_sqlite_file_a_restart_leaves_a_live_instances_holds_alone() {
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 150,
        ..MockOptions::default()
    })
    .await;
    let options = |id: &str| Options {
        instance_id: Some(id.into()),
        ..sessions_on(None)
    };
    let a = h.gateway(&options("gw-a")).await;
    let b = h.gateway(&options("gw-b")).await;
    let url_a = format!("{}/v1/chat/completions", a.url);
    let body = chat(160, false);
    let challenge = challenge_for(&h, &url_a, &body).await;
    let payer = h.payer();
    let (channel, open) = payer.open(&challenge, DEPOSIT, quote(&challenge)).await;
    assert_eq!(
        post(&h.http, &url_a, &body, Some(&open)).await.status(),
        200
    );

    // A stream on `a` pauses for a voucher, holding its reservation.
    let accepted = quote(&challenge) + 60;
    let stream_body = chat(4000, true);
    let stream_challenge = challenge_for(&h, &url_a, &stream_body).await;
    let response = post(
        &h.http,
        &url_a,
        &stream_body,
        Some(&payer.pay_voucher(&stream_challenge, channel, accepted)),
    )
    .await;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let required = 'read: loop {
        buffer.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let raw: String = buffer.drain(..end + 2).collect();
            let (name, data) = parse_event(&raw);
            if name == "payment-need-voucher" {
                let need: Value = serde_json::from_str(&data).unwrap();
                break 'read number(&need["requiredCumulative"]);
            }
        }
    };
    let held = h.stored_channel(&options("gw-a"), channel).await.reserved;
    assert!(held > 0, "the paused stream holds its reservation");

    // `b` restarts on the same file: it releases its own holds, not a's.
    b.stop().await;
    let b = h.gateway(&options("gw-b")).await;
    assert_eq!(
        h.stored_channel(&options("gw-a"), channel).await.reserved,
        held,
        "a live instance's hold survives another's restart"
    );

    // The stream goes on and ends with an exact receipt.
    let top_up = h
        .http
        .post(&url_a)
        .header(
            "authorization",
            payer.pay_voucher(&stream_challenge, channel, required),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(top_up.status(), 200);
    let mut last = None;
    while let Some(chunk) = stream.next().await {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let raw: String = buffer.drain(..end + 2).collect();
            let (name, data) = parse_event(&raw);
            if name == "payment-receipt" {
                last = Some(serde_json::from_str::<Value>(&data).unwrap());
            }
        }
    }
    let stored = h.stored_channel(&options("gw-a"), channel).await;
    assert_eq!(number(&last.unwrap()["spent"]), stored.spent);
    assert_eq!(stored.reserved, 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_wrong_postgres_url_is_a_clear_startup_error() {
    let h = Harness::start().await;
    let mut urls = vec![
        // Nothing listens on port 1.
        "postgres://tollgate@127.0.0.1:1/postgres".to_owned(),
    ];
    if let Some(server) = tollgate_ledger::test_server_url().unwrap() {
        // A server that is there, a database that is not.
        let base = server.rsplit_once('/').unwrap().0;
        urls.push(format!("{base}/no_such_database"));
    }
    for url in urls {
        let options = Options {
            pg_url: Some(url.clone()),
            ..Options::default()
        };
        let config = tollgate_server::Config::from_toml(
            &h.config_text(&options),
            h.dir.path(),
            [
                ("E2E_SECRET_0".to_owned(), SECRET.to_owned()),
                ("E2E_UPSTREAM_KEY".to_owned(), UPSTREAM_KEY.to_owned()),
                (
                    "E2E_OPERATOR_KEY".to_owned(),
                    tollgate_devnet::DEV_ACCOUNTS[RECIPIENT]
                        .private_key
                        .to_owned(),
                ),
                ("E2E_PG_URL".to_owned(), url.clone()),
            ],
        )
        .unwrap();
        let error = tollgate_server::build(&config)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("`store.url`"), "{url}: {error}");
        assert!(error.contains("PostgreSQL at 127.0.0.1:"), "{url}: {error}");
        assert!(!error.contains("tollgate@"), "no credentials: {error}");
    }
    // Not a connection string at all: refused while loading the config.
    let options = Options {
        pg_url: Some("postgres://[bad".into()),
        ..Options::default()
    };
    let error = tollgate_server::Config::from_toml(
        &h.config_text(&options),
        h.dir.path(),
        [
            ("E2E_SECRET_0".to_owned(), SECRET.to_owned()),
            ("E2E_UPSTREAM_KEY".to_owned(), UPSTREAM_KEY.to_owned()),
            (
                "E2E_OPERATOR_KEY".to_owned(),
                tollgate_devnet::DEV_ACCOUNTS[RECIPIENT]
                    .private_key
                    .to_owned(),
            ),
            (
                "E2E_PG_URL".to_owned(),
                "host=/tmp port=notaport".to_owned(),
            ),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("`store.url`"), "{error}");
}

/// A PostgreSQL server of this test's own (it is stopped and started).
struct OwnServer {
    dir: tempfile::TempDir,
}

impl OwnServer {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-test-server")
    }

    async fn run(&self, command: &str) -> String {
        let output = tokio::process::Command::new(Self::script())
            .arg(command)
            .arg(self.dir.path())
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "pg-test-server {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    async fn start() -> (Self, String) {
        let server = Self {
            dir: tempfile::Builder::new()
                .prefix("tollgate-pg-")
                .tempdir_in("/tmp")
                .unwrap(),
        };
        let url = server.run("start").await;
        (server, url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_going_away_gives_503_then_recovers_with_nothing_half_written() {
    // Needs the PostgreSQL binaries; under CI they are installed (and the
    // shared test server proves it), elsewhere this is skipped like the rest.
    if tollgate_ledger::test_server_url().unwrap().is_none() {
        eprintln!("TOLLGATE_TEST_PG_URL is not set: PostgreSQL test skipped");
        return;
    }
    let (server, url) = OwnServer::start().await;
    let h = Harness::start_sessions(MockOptions::default()).await;
    let options = Options {
        lease_secs: Some(4),
        ..sessions_on(Some(url))
    };
    let gw = h.gateway(&options).await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let payer = h.payer();
    let body = chat(24, false);
    let challenge = challenge_for(&h, &url, &body).await;
    let accepted = 20 * quote(&challenge);
    let (channel, open) = payer.open(&challenge, DEPOSIT, accepted).await;
    let first = post(&h.http, &url, &body, Some(&open)).await;
    assert_eq!(first.status(), 200);
    let cost = number(&receipt(&first)["spent"]);
    let voucher = payer.pay_voucher(&challenge, channel, accepted);
    let served_before = h.upstream.count();

    server.run("stop").await;
    // Paid requests cannot be accounted: 503, nothing served or charged.
    for _ in 0..3 {
        let response = post(&h.http, &url, &body, Some(&voucher)).await;
        assert_eq!(response.headers()["retry-after"], "5");
        let p = problem(response, 503, "store-unavailable").await;
        assert_eq!(p["code"], "store-unavailable");
    }
    assert_eq!(h.upstream.count(), served_before, "nothing was served");
    // Unpaid requests still get their challenges (no state needed).
    challenges(&post(&h.http, &url, &body, None).await);

    server.run("start").await;
    let mut recovered = false;
    for _ in 0..100 {
        let response = post(&h.http, &url, &body, Some(&voucher)).await;
        if response.status() == 200 {
            assert_eq!(
                number(&receipt(&response)["spent"]),
                2 * cost,
                "nothing was charged while the store was away"
            );
            recovered = true;
            break;
        }
        assert_eq!(response.status(), 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "serving again once PostgreSQL is back");
    let again = post(&h.http, &url, &body, Some(&voucher)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(number(&receipt(&again)["spent"]), 3 * cost);
    let stored = h.stored_channel(&options, channel).await;
    assert_eq!((stored.accepted, stored.spent), (accepted, 3 * cost));
    assert_eq!(stored.reserved, 0, "no hold left behind");
    assert_eq!(
        h.upstream.count(),
        served_before + 2,
        "served exactly the two answered requests"
    );
    gw.stop().await;
    server.run("stop").await;
}
