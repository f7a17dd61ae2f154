//! What the open-loop benches share: the load generator, the report, a
//! gateway on its own database with a chosen durability, and a
//! fixed-answer upstream. Included with `#[path = "support/load.rs"] mod load;`
//! next to `mod common;`.
#![allow(dead_code)]

use std::time::Duration;

use tokio::time::Instant;
use tollgate_devnet::DEV_ACCOUNTS;

use crate::common::*;

pub const SECONDS: u32 = 10;
pub const WARM_UP_SECONDS: u32 = 2;

/// Requests per second: `RATE=n cargo bench …`, else `default`.
pub fn rate(default: u32) -> u32 {
    std::env::var("RATE").map_or(default, |r| r.parse().expect("RATE is a number"))
}

/// Quiet logs, installed before the harness (its debug-level capture would
/// dominate the figures).
pub fn quiet_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .init();
}

/// A keep-alive client; requests stuck behind a collapsed gateway count as
/// errors after 10 s.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn print_conditions(rate: u32) {
    println!(
        "\n{rate} req/s open loop for {SECONDS} s, {} cores, load avg {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

/// Prints gateway minus direct at p50 and p99.
pub fn print_overhead(name: &str, gateway: (Duration, Duration), direct: (Duration, Duration)) {
    println!(
        "{:<60} p50={:>7.3} ms  p99={:>7.3} ms",
        format!("  gateway overhead ({name})"),
        ms(gateway.0.saturating_sub(direct.0)),
        ms(gateway.1.saturating_sub(direct.1)),
    );
}

pub struct Run {
    latencies: Vec<Duration>,
    /// How late each request left against its schedule (the load
    /// generator's own timer and scheduling delay).
    lags: Vec<Duration>,
    errors: usize,
    wall: Duration,
    /// CPU time of this whole process (client, upstream, gateway).
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

pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sends `rate` requests per second for `seconds`, open loop.
pub async fn load(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    auth: Option<&str>,
    rate: u32,
    seconds: u32,
) -> Run {
    let period = Duration::from_secs(1) / rate;
    let cpu = cpu_time();
    let start = Instant::now();
    let mut ticks = tokio::time::interval_at(start, period);
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
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

pub fn report(name: &str, run: &mut Run) -> (Duration, Duration) {
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

/// Like `Harness::gateway` (quoted routes, sessions, and `plans` when
/// given), with `[store] durability` set, its own file and `upstream` in
/// place of the harness mock.
/// Returns the URL and a handle that stops it.
pub async fn gateway(
    h: &Harness,
    upstream: &str,
    durability: &str,
    plans: Option<String>,
) -> (String, impl AsyncFnOnce()) {
    gateway_with(h, upstream, durability, plans, String::new()).await
}

/// Gateways started so far: each gets its own database file.
static GATEWAYS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// [`gateway`] with extra `[session]` keys (e.g. the protocol).
pub async fn gateway_with(
    h: &Harness,
    upstream: &str,
    durability: &str,
    plans: Option<String>,
    session_extra: String,
) -> (String, impl AsyncFnOnce()) {
    let options = Options {
        quoted: true,
        session: true,
        plans,
        session_extra,
        db_path: Some(h.dir.path().join(format!(
            "{durability}-{}.db",
            GATEWAYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))),
        ..Options::default()
    };
    let text = h.config_text(&options).replace(
        "[store]\n",
        &format!("[store]\ndurability = \"{durability}\"\n"),
    );
    let config = config_for(h, &options, &text, upstream);
    let tollgate_server::config::StoreBackend::Sqlite {
        durability: set, ..
    } = &config.store.backend
    else {
        panic!("a SQLite store")
    };
    assert_eq!(format!("{set:?}").to_lowercase(), durability);
    serve_config(&config).await
}

/// `options`' gateway (its store included) on `upstream`.
pub async fn gateway_for(
    h: &Harness,
    upstream: &str,
    options: &Options,
) -> (String, impl AsyncFnOnce()) {
    let config = config_for(h, options, &h.config_text(options), upstream);
    serve_config(&config).await
}

fn config_for(
    h: &Harness,
    options: &Options,
    text: &str,
    upstream: &str,
) -> tollgate_server::Config {
    let text = text.replace(&h.upstream_url, upstream);
    let mut env: Vec<(String, String)> = [
        ("E2E_SECRET_0", SECRET),
        ("E2E_UPSTREAM_KEY", UPSTREAM_KEY),
        ("E2E_OPERATOR_KEY", DEV_ACCOUNTS[RECIPIENT].private_key),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    if let Some(url) = &options.pg_url {
        env.push(("E2E_PG_URL".into(), url.clone()));
    }
    tollgate_server::Config::from_toml(&text, h.dir.path(), env).unwrap()
}

async fn serve_config(config: &tollgate_server::Config) -> (String, impl AsyncFnOnce() + use<>) {
    let router = tollgate_server::build(config).await.unwrap();
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

/// `workers` connections each sending its next request when the last one
/// answered (closed loop), spread round-robin over `urls`, for `seconds`.
pub async fn closed_loop(
    client: &reqwest::Client,
    urls: &[String],
    body: &str,
    auth: &str,
    workers: usize,
    seconds: u32,
) -> Run {
    let cpu = cpu_time();
    let start = Instant::now();
    let until = start + Duration::from_secs(u64::from(seconds));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, url) = (client.clone(), urls[w % urls.len()].clone());
            let (body, auth) = (body.to_owned(), auth.to_owned());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while Instant::now() < until {
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("authorization", &auth)
                        .body(body.clone())
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 200 => match r.bytes().await {
                            Ok(_) => latencies.push(sent.elapsed()),
                            Err(e) => {
                                first_error(e.to_string());
                                errors += 1;
                            }
                        },
                        Ok(r) => {
                            let status = r.status();
                            first_error(format!("{status} {}", r.text().await.unwrap_or_default()));
                            errors += 1;
                        }
                        Err(e) => {
                            first_error(e.to_string());
                            errors += 1;
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut run = Run {
        latencies: Vec::new(),
        lags: vec![Duration::ZERO],
        errors: 0,
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
    };
    for task in tasks {
        let (latencies, errors) = task.await.unwrap();
        run.latencies.extend(latencies);
        run.errors += errors;
    }
    run.wall = start.elapsed();
    run.cpu = cpu_time() - cpu;
    run
}

/// Requests served per second.
pub fn throughput(run: &Run) -> f64 {
    run.latencies.len() as f64 / run.wall.as_secs_f64()
}

/// Serves `answer` (the harness mock's answer to the benchmark body) on
/// the chat path, with no delay. The harness mock sleeps its `latency` even
/// when it is zero, which tokio rounds up to its next 1 ms tick.
pub async fn fixed_upstream(answer: axum::body::Bytes) -> String {
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
