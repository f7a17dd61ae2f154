//! Gateway overhead of a session-paid request under an open-loop load.
//!
//! One channel per gateway is opened on the devnet with its whole deposit
//! authorized by the opening voucher; every measured request then resends
//! that same, already accepted voucher on one reused session challenge (for
//! one fixed body), so the hot path is: challenge binding check, voucher
//! signature recovery, idempotent accept, reserve, upstream call, commit.
//!
//! Load: 2 000 req/s for 10 s (after 2 s of warm-up), sent on a tokio
//! interval regardless of responses (open loop; tokio's 1 ms timer sends
//! them in pairs) over a keep-alive client. Latency is measured from each
//! request's scheduled send time to the end of its body. The same load is
//! sent to the mock upstream directly; the gateway overhead is the
//! difference of the percentiles. Gateway, mock and load generator share
//! this process and the machine's cores (like `paid_request`). Logs are
//! formatted at `info` (the binary's default) into a sink.
//!
//! Run: `cargo bench -p tollgate-e2e --bench session_request`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::session::{Payer, session_challenge};
use common::*;
use tokio::time::Instant;
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_providers::mock::MockOptions;

/// Requests per second; `RATE=1000 cargo bench …` to change it.
fn rate() -> u32 {
    std::env::var("RATE").map_or(2_000, |r| r.parse().expect("RATE is a number"))
}
const SECONDS: u32 = 10;
const WARM_UP_SECONDS: u32 = 2;

struct Run {
    latencies: Vec<Duration>,
    errors: usize,
    wall: Duration,
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sends `rate()` requests per second for `seconds`, open loop.
async fn load(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    auth: Option<&str>,
    seconds: u32,
) -> Run {
    let period = Duration::from_secs(1) / rate();
    let start = Instant::now();
    let mut ticks = tokio::time::interval_at(start, period);
    let mut tasks = Vec::new();
    for i in 0..rate() * seconds {
        ticks.tick().await;
        let scheduled = start + period * i;
        let request = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        let request = match auth {
            Some(auth) => request.header("authorization", auth),
            None => request,
        };
        tasks.push(tokio::spawn(async move {
            let ok = match request.send().await {
                Ok(response) if response.status() == 200 => response.bytes().await.is_ok(),
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    first_error(format!("{status} {text}"));
                    false
                }
                Err(e) => {
                    first_error(e.to_string());
                    false
                }
            };
            (ok, scheduled.elapsed())
        }));
    }
    let mut run = Run {
        latencies: Vec::with_capacity(tasks.len()),
        errors: 0,
        wall: Duration::ZERO,
    };
    for task in tasks {
        let (ok, latency) = task.await.unwrap();
        if ok {
            run.latencies.push(latency);
        } else {
            run.errors += 1;
        }
    }
    run.wall = start.elapsed();
    run
}

/// Prints the first failure of the run only.
fn first_error(what: String) {
    static SEEN: std::sync::Once = std::sync::Once::new();
    SEEN.call_once(|| println!("first failure: {what}"));
}

fn report(name: &str, run: &mut Run) -> (Duration, Duration) {
    let n = run.latencies.len();
    let (p50, p99) = (
        percentile(&mut run.latencies, 0.50),
        percentile(&mut run.latencies, 0.99),
    );
    let max = *run.latencies.last().unwrap();
    println!(
        "{name:<34} ok={n:<6} errors={:<4} achieved={:>6.0}/s  p50={:>7.3} ms  p99={:>7.3} ms  max={:>7.3} ms",
        run.errors,
        n as f64 / run.wall.as_secs_f64(),
        ms(p50),
        ms(p99),
        ms(max),
    );
    (p50, p99)
}

/// Like `Harness::gateway`, with `[store] durability` set and its own file.
/// Returns the URL and the sender that stops it.
async fn gateway(h: &Harness, durability: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let options = Options {
        quoted: true,
        session: true,
        db_path: Some(h.dir.path().join(format!("{durability}.db"))),
        ..Options::default()
    };
    let text = h.config_text(&options).replace(
        "[store]\n",
        &format!("[store]\ndurability = \"{durability}\"\n"),
    );
    let env = [
        ("E2E_SECRET_0", SECRET),
        ("E2E_UPSTREAM_KEY", UPSTREAM_KEY),
        ("E2E_OPERATOR_KEY", DEV_ACCOUNTS[RECIPIENT].private_key),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = tollgate_server::Config::from_toml(&text, h.dir.path(), env).unwrap();
    assert_eq!(
        format!("{:?}", config.store.durability).to_lowercase(),
        durability
    );
    let router = tollgate_server::build(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tollgate_server::serve(listener, router, async {
        let _ = rx.await;
    }));
    (url, tx)
}

/// Opens a channel authorizing `requests` worst cases and returns the
/// `Authorization` value every measured request reuses.
async fn authorize(h: &Harness, url: &str, body: &str, requests: u128) -> String {
    let payer = Payer::new(
        signer(PAYER),
        &h.devnet.rpc_url(),
        h.devnet.escrow().unwrap(),
    );
    let challenge = session_challenge(&challenges(&post(&h.http, url, body, None).await));
    let quote: u128 = challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let deposit = quote * requests;
    let balance = h.balance(DEV_ACCOUNTS[PAYER].address).await;
    println!("quote {quote} base units; deposit {deposit} of balance {balance}");
    assert!(balance >= deposit, "the payer cannot fund the channel");
    let (channel, open) = payer.open(&challenge, deposit, deposit).await;
    assert_eq!(post(&h.http, url, body, Some(&open)).await.status(), 200);
    let auth = payer.pay_voucher(&challenge, channel, deposit);
    assert_eq!(post(&h.http, url, body, Some(&auth)).await.status(), 200);
    auth
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Installed before the harness: its debug-level capture would dominate.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .init();
    let h = Harness::start_sessions(MockOptions::default()).await;
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let body = chat_body();
    let direct_url = format!("{}/v1/chat/completions", h.upstream_url);
    let requests = u128::from(rate() * (SECONDS + WARM_UP_SECONDS)) + 1_000;

    load(&client, &direct_url, &body, None, WARM_UP_SECONDS).await;
    let mut direct = load(&client, &direct_url, &body, None, SECONDS).await;

    println!(
        "\n{} req/s open loop for {SECONDS} s, {} cores, load avg {}",
        rate(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let (d50, d99) = report("mock upstream directly", &mut direct);
    for durability in ["full", "normal"] {
        let (gw, stop) = gateway(&h, durability).await;
        let url = format!("{gw}/v1/chat/completions");
        let auth = authorize(&h, &url, &body, requests).await;
        load(&client, &url, &body, Some(&auth), WARM_UP_SECONDS).await;
        let mut run = load(&client, &url, &body, Some(&auth), SECONDS).await;
        let (g50, g99) = report(&format!("session via gateway ({durability})"), &mut run);
        println!(
            "{:<34} p50={:>7.3} ms  p99={:>7.3} ms",
            format!("  gateway overhead ({durability})"),
            ms(g50.saturating_sub(d50)),
            ms(g99.saturating_sub(d99)),
        );
        let _ = stop.send(());
    }
}
