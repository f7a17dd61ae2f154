//! Gateway overhead of a paid turn on the accountless plan endpoint
//! `POST /v1/mpp/chat/completions` under an open-loop load.
//!
//! Modelled on `session_request` (read its header for the load, latency and
//! CPU accounting; its small helpers are copied here). For each
//! `[store] durability` (`normal`, then `full`, the default) a gateway is
//! started on its own database with a `[plans]` section whose one plan
//! serves an open model (custom prices, like `Qwen/Qwen3-8B-AWQ` in
//! `tests/plan_endpoint.rs`) on the `openai` runtime. The voucher bucket is
//! large enough for the whole run, so one channel is opened on the devnet
//! with a voucher for one bucket, and every measured turn resends that same
//! cumulative voucher on one reused challenge (for one fixed body). The hot
//! path is: parse and resolve the plan turn, price its worst case, check
//! the challenge binding (body digest, plan, model, pricing, caps), voucher
//! signature recovery, idempotent accept, reserve, runtime call, commit
//! (and the usage record), receipt. The runtime serves the harness mock's
//! answer without delay (see [`fixed_upstream`]).
//!
//! Load: 200 req/s (`RATE=n` to change it) for 10 s after 2 s of warm-up;
//! the same load is sent to the runtime directly, and the gateway overhead
//! is the difference of the percentiles. Gateway, runtime and load
//! generator share this process; the CPU time the whole process used per
//! request is printed, so the gateway's share is the difference.
//!
//! Run: `cargo bench -p tollgate-e2e --bench plan_turn`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::session::Payer;
use common::*;
use tokio::time::Instant;
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_providers::mock::MockOptions;

/// Requests per second; `RATE=1000 cargo bench …` to change it.
fn rate() -> u32 {
    std::env::var("RATE").map_or(200, |r| r.parse().expect("RATE is a number"))
}
const SECONDS: u32 = 10;
const WARM_UP_SECONDS: u32 = 2;
/// One bucket covers every turn of the run (a turn costs a few base units).
const BUCKET: u128 = 1_000_000_000;
const MODEL: &str = "Qwen/Qwen3-8B-AWQ";

fn plans_toml() -> String {
    format!(
        r#"
[plans]
voucher_bucket = {BUCKET}
suggested_deposit = {BUCKET}

[plans.models."{MODEL}"]
upstream = "openai"
input_per_mtok = 50000
output_per_mtok = 200000
context_window = 4096

[plans.plans.Starter]
models = ["{MODEL}"]
max_input_tokens = 2000
max_output_tokens = 256
"#
    )
}

fn turn_body() -> String {
    serde_json::json!({
        "plan": "Starter",
        "model_optimization": false,
        "model": MODEL,
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": 64,
    })
    .to_string()
}

struct Run {
    latencies: Vec<Duration>,
    /// How late each request left against its schedule.
    lags: Vec<Duration>,
    errors: usize,
    wall: Duration,
    /// CPU time of this whole process (client, runtime, gateway).
    cpu: Duration,
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ = 100
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
    let cpu = cpu_time();
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
            let sent = Instant::now();
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
            (ok, sent - scheduled, sent.elapsed())
        }));
    }
    let mut run = Run {
        latencies: Vec::with_capacity(tasks.len()),
        lags: Vec::with_capacity(tasks.len()),
        errors: 0,
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
    };
    for task in tasks {
        let (ok, lag, latency) = task.await.unwrap();
        run.lags.push(lag);
        if ok {
            run.latencies.push(latency);
        } else {
            run.errors += 1;
        }
    }
    run.wall = start.elapsed();
    run.cpu = cpu_time() - cpu;
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
        "{name:<30} ok={n:<5} errors={:<3} achieved={:>4.0}/s  p50={:>7.3} ms  p99={:>7.3} ms  max={:>7.3} ms  cpu={:>4.0} µs/req  send lag p99={:.3} ms",
        run.errors,
        n as f64 / run.wall.as_secs_f64(),
        ms(p50),
        ms(p99),
        ms(max),
        run.cpu.as_secs_f64() * 1e6 / (n + run.errors) as f64,
        ms(percentile(&mut run.lags, 0.99)),
    );
    (p50, p99)
}

/// Like `Harness::gateway`, with the plans, `[store] durability` set, its
/// own file and `upstream` in place of the harness mock.
/// Returns the URL and a handle that stops it.
async fn gateway(h: &Harness, upstream: &str, durability: &str) -> (String, impl AsyncFnOnce()) {
    let options = Options {
        quoted: true,
        session: true,
        plans: Some(plans_toml()),
        db_path: Some(h.dir.path().join(format!("{durability}.db"))),
        ..Options::default()
    };
    let text = h
        .config_text(&options)
        .replace(
            "[store]\n",
            &format!("[store]\ndurability = \"{durability}\"\n"),
        )
        .replace(&h.upstream_url, upstream);
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
    let task = tokio::spawn(tollgate_server::serve(listener, router, async {
        let _ = rx.await;
    }));
    // Graceful: lets a backlog drain before the next gateway is measured.
    let stop = async move || {
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    };
    (url, stop)
}

/// Opens a channel with a voucher for one (run-sized) bucket and returns
/// the `Authorization` value every measured turn reuses.
async fn authorize(h: &Harness, url: &str, body: &str) -> String {
    let payer = Payer::new(
        signer(PAYER),
        &h.devnet.rpc_url(),
        h.devnet.escrow().unwrap(),
    );
    let challenge = challenges(&post(&h.http, url, body, None).await).remove(0);
    let balance = h.balance(DEV_ACCOUNTS[PAYER].address).await;
    assert!(balance >= BUCKET, "the payer cannot fund the channel");
    let (channel, open) = payer.open(&challenge, BUCKET, BUCKET).await;
    let opened = post(&h.http, url, body, Some(&open)).await;
    assert_eq!(opened.status(), 200);
    let receipt = session::receipt(&opened);
    println!(
        "bucket {BUCKET} of balance {balance}; first turn cost {} base units",
        receipt["spent"].as_str().unwrap()
    );
    let auth = payer.pay_voucher(&challenge, channel, BUCKET);
    assert_eq!(post(&h.http, url, body, Some(&auth)).await.status(), 200);
    auth
}

/// Serves `answer` (the harness mock's answer to the turn) on the chat
/// path, with no delay. The harness mock sleeps its `latency` even when it
/// is zero, which tokio rounds up to its next 1 ms tick.
async fn fixed_upstream(answer: axum::body::Bytes) -> String {
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let answer = answer.clone();
            async move { ([("content-type", "application/json")], answer) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Installed before the harness: its debug-level capture would dominate.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .init();
    let h = Harness::start_sessions(MockOptions::default()).await;
    // Requests stuck behind a collapsed gateway count as errors after 10 s.
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = turn_body();
    // The mock ignores the plan fields: its answer is the one to the turn.
    let mock_url = format!("{}/v1/chat/completions", h.upstream_url);
    let answer = post(&client, &mock_url, &body, None).await;
    let upstream = fixed_upstream(answer.bytes().await.unwrap()).await;
    let direct_url = format!("{upstream}/v1/chat/completions");

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
    let (d50, d99) = report("runtime directly", &mut direct);
    for durability in ["normal", "full"] {
        let (gw, stop) = gateway(&h, &upstream, durability).await;
        let url = format!("{gw}/v1/mpp/chat/completions");
        let auth = authorize(&h, &url, &body).await;
        load(&client, &url, &body, Some(&auth), WARM_UP_SECONDS).await;
        let mut run = load(&client, &url, &body, Some(&auth), SECONDS).await;
        let (g50, g99) = report(&format!("plan turn via gateway ({durability})"), &mut run);
        println!(
            "{:<60} p50={:>7.3} ms  p99={:>7.3} ms",
            format!("  gateway overhead ({durability})"),
            ms(g50.saturating_sub(d50)),
            ms(g99.saturating_sub(d99)),
        );
        stop().await;
    }
}
