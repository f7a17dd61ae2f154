//! Tollgate beside a bare reverse proxy, in one run (`scripts/bench`).
//!
//! One fixed-answer upstream (nginx from Debian returning a chat completion
//! with usage, and an SSE stream; both captured from `tollgate-mock`), and
//! the release `tollgate` binary as a child process with a default config
//! (`[store] durability = "full"`, info logs) plus what the scenarios need:
//! a free route, a quoted route with sessions, the plan endpoint.
//!
//! Closed loop (`wrk`, 2 threads, `CONNECTIONS` connections, default 16,
//! `SECONDS` each, default 10, after 2 s of warm-up), one after another:
//! - the upstream directly, and nginx as a bare keep-alive reverse proxy;
//! - the free route, and the unpaid quoted route (every answer a 402);
//! - session-paid requests: one channel, one voucher authorizing the whole
//!   run re-sent with every request on one session challenge;
//! - a plan-endpoint turn, paid the same way from one voucher bucket;
//! - streaming pass-through (a free route, and nginx, relaying the SSE).
//!
//! Then, from this process: new-voucher accepts (one channel per
//! connection, each request a body-less voucher raising the cumulative
//! amount: signature recovery and the durable accept, nothing served), and
//! an open loop at `RATE` req/s (default 2 000) against the free route and
//! session-paid requests, for the p99 a payment adds.
//!
//! For each Tollgate row a second table says where the gateway's time went:
//! the CPU its process used per request (`/proc`) and the mean time of each
//! phase of a request (its own metrics, from an `[admin]` listener), so work
//! and waiting can be told apart.
//!
//! Everything shares the machine's cores (wrk, nginx, the chain, this
//! process): read the ratios more than the absolute figures.
//!
//! Run: `scripts/bench` (or `cargo bench -p tollgate --bench compare` with
//! nginx and wrk installed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

#[path = "../../tollgate-e2e/tests/common/mod.rs"]
mod common;
#[path = "../../tollgate-e2e/benches/support/load.rs"]
mod load;
#[path = "../../tollgate-e2e/benches/support/process.rs"]
mod process;
#[path = "support/reference.rs"]
mod reference;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::session::{Payer, session_challenge, voucher_payload};
use common::*;
use reference::{Figure, Nginx, free_port, wrk};
use serde_json::json;
use tollgate_devnet::{ALPHA_USD, DEV_ACCOUNTS, PATH_USD};
use tollgate_mock::MockOptions;

const PLAN_MODEL: &str = "Qwen/Qwen3-8B-AWQ";
const BUCKET: u128 = 1_000_000_000;

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}

fn chat(stream: bool) -> String {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": 64,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body.to_string()
}

fn plan_turn() -> String {
    json!({
        "plan": "Starter",
        "model_optimization": false,
        "model": PLAN_MODEL,
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": 64,
    })
    .to_string()
}

fn config(h: &Harness, port: u16, admin_port: u16, upstream: &str) -> String {
    // `DURABILITY=normal` compares against SQLite without fsync.
    let durability = std::env::var("DURABILITY").unwrap_or_else(|_| "full".into());
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
realm = "bench"

[payments]
challenge_secrets = [{{ env = "BENCH_SECRET" }}]

[chain]
rpc_url = "{rpc}"
chain_id = 42431
currency = "{PATH_USD}"
recipient = "{recipient}"

[session]
protocol = "both"
escrow = "{escrow}"
operator_key = {{ env = "BENCH_OPERATOR_KEY" }}
fee_token = "{ALPHA_USD}"

[store]
path = "{db}"
durability = "{durability}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = {{ env = "BENCH_ADMIN_TOKEN" }}

[upstreams.openai]
kind = "openai_compatible"
base_url = "{upstream}"

[upstreams.runtime]
kind = "openai_compatible"
base_url = "{upstream}/plan"

[[routes]]
method = "POST"
path = "/v1/chat/completions"
upstream = "openai"
quote = "chat"

[[routes]]
method = "POST"
path = "/free/v1/chat/completions"
upstream = "openai"
free = true

[[routes]]
method = "POST"
path = "/free/stream"
upstream = "openai"
free = true

[plans]
voucher_bucket = {BUCKET}
suggested_deposit = {BUCKET}

[plans.models."{PLAN_MODEL}"]
upstream = "runtime"
input_per_mtok = 50000
output_per_mtok = 200000
context_window = 4096

[plans.plans.Starter]
models = ["{PLAN_MODEL}"]
max_input_tokens = 2000
max_output_tokens = 256
"#,
        rpc = h.devnet.rpc_url(),
        recipient = DEV_ACCOUNTS[RECIPIENT].address,
        escrow = h.devnet.escrow().unwrap(),
        db = h.dir.path().join("bench.db").display(),
    )
}

/// The operator token of the bench's admin listener (its metrics).
const ADMIN_TOKEN: &str = "bench-admin-token-not-a-secret";

/// The release gateway as a child process: its URL and its metrics' URL.
async fn launch(h: &Harness, upstream: &str) -> (tokio::process::Child, String, String) {
    let (port, admin_port) = (free_port(), free_port());
    let path = h.dir.path().join("bench.toml");
    std::fs::write(&path, config(h, port, admin_port, upstream)).unwrap();
    // `BENCH_GATEWAY=path` runs another build (A/B runs of two binaries).
    let binary = std::env::var("BENCH_GATEWAY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tollgate").to_owned());
    let child = tokio::process::Command::new(binary)
        .args(["serve", "--config"])
        .arg(&path)
        .env("BENCH_SECRET", SECRET)
        .env("BENCH_OPERATOR_KEY", DEV_ACCOUNTS[RECIPIENT].private_key)
        .env("BENCH_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        // `BENCH_LOG=path` keeps the gateway's log (else it is discarded).
        .stderr(match std::env::var("BENCH_LOG") {
            Ok(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            Err(_) => Stdio::null(),
        })
        .kill_on_drop(true)
        .spawn()
        .expect("the tollgate binary starts");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if let Ok(r) = h.http.get(format!("{url}/healthz")).send().await
            && r.status() == 200
        {
            return (child, url, format!("http://127.0.0.1:{admin_port}/metrics"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not come up");
}

/// What the gateway says about itself, read before and after a row: its
/// CPU time (`/proc`), the requests it answered and the time its phases
/// took (its own metrics, summed over routes).
#[derive(Debug, Default, Clone)]
struct Reading {
    cpu: Duration,
    /// Context switches of all its threads (voluntary and not).
    switches: u64,
    requests: f64,
    /// phase → seconds in all.
    phases: std::collections::BTreeMap<String, f64>,
}

struct Gauge {
    pid: u32,
    metrics: String,
    client: reqwest::Client,
}

impl Gauge {
    async fn read(&self) -> Reading {
        let text = self
            .client
            .get(&self.metrics)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut reading = Reading {
            cpu: process::cpu(self.pid),
            switches: process::context_switches(self.pid).total(),
            ..Reading::default()
        };
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if name.starts_with("tollgate_request_duration_seconds_count{") {
                reading.requests += value;
            } else if name.starts_with("tollgate_phase_seconds_sum{")
                && let Some(phase) = name
                    .split("phase=\"")
                    .nth(1)
                    .and_then(|p| p.split('"').next())
            {
                *reading.phases.entry(phase.to_owned()).or_default() += value;
            }
        }
        reading
    }
}

/// Per request of a row: gateway CPU µs, context switches, and the mean µs
/// of each phase.
fn per_request(before: &Reading, after: &Reading) -> Inside {
    let requests = (after.requests - before.requests).max(1.0);
    let cpu = (after.cpu.saturating_sub(before.cpu)).as_secs_f64() * 1e6 / requests;
    let switches = after.switches.saturating_sub(before.switches) as f64 / requests;
    let phases = after
        .phases
        .iter()
        .map(|(phase, total)| {
            let spent = total - before.phases.get(phase).copied().unwrap_or(0.0);
            (phase.clone(), spent * 1e6 / requests)
        })
        .collect();
    (cpu, switches, phases)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb / 1024.0
}

fn amount(challenge: &mpp::PaymentChallenge) -> u128 {
    challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn payer(h: &Harness) -> Payer {
    Payer::new(
        signer(PAYER),
        &h.devnet.rpc_url(),
        h.devnet.escrow().unwrap(),
    )
}

/// Opens a channel whose opening voucher authorizes `deposit`, and returns
/// the `Authorization` every session-paid request re-sends.
async fn session_auth(h: &Harness, url: &str, body: &str, deposit: u128) -> String {
    let payer = payer(h);
    let challenge = v1_challenge(&challenges(&post(&h.http, url, body, None).await));
    let (channel, open) = payer.open(&challenge, deposit, deposit).await;
    let opened = post(&h.http, url, body, Some(&open)).await;
    assert_eq!(opened.status(), 200, "{}", opened.text().await.unwrap());
    let auth = payer.pay_voucher(&challenge, channel, deposit);
    assert_eq!(post(&h.http, url, body, Some(&auth)).await.status(), 200);
    auth
}

/// The v1 (escrow) session challenge among a 402's.
fn v1_challenge(offered: &[mpp::PaymentChallenge]) -> mpp::PaymentChallenge {
    offered
        .iter()
        .find(|c| {
            c.intent.as_str() == "session"
                && c.request.decode_value().unwrap()["methodDetails"]["sessionProtocol"] != "v2"
        })
        .expect("a v1 session challenge")
        .clone()
}

/// [`session_auth`] on a v2 (channel reserve) channel.
async fn session_auth_v2(h: &Harness, url: &str, body: &str, deposit: u128) -> String {
    let reserve = h
        .devnet
        .channel_reserve()
        .expect("the devnet has the reserve");
    let payer = common::session_v2::Payer::new(signer(PAYER), &h.devnet.rpc_url(), reserve);
    let challenge = challenges(&post(&h.http, url, body, None).await)
        .into_iter()
        .find(|c| {
            c.intent.as_str() == "session"
                && c.request.decode_value().unwrap()["methodDetails"]["sessionProtocol"] == "v2"
        })
        .expect("a v2 session challenge");
    let (channel, open) = payer.open(&challenge, deposit, deposit).await;
    let opened = post(&h.http, url, body, Some(&open)).await;
    assert_eq!(opened.status(), 200, "{}", opened.text().await.unwrap());
    let auth = payer.pay_voucher(&challenge, channel, deposit).await;
    assert_eq!(post(&h.http, url, body, Some(&auth)).await.status(), 200);
    auth
}

async fn plan_auth(h: &Harness, url: &str, body: &str) -> String {
    let payer = payer(h);
    let challenge = challenges(&post(&h.http, url, body, None).await).remove(0);
    let (channel, open) = payer.open(&challenge, BUCKET, BUCKET).await;
    let opened = post(&h.http, url, body, Some(&open)).await;
    assert_eq!(opened.status(), 200, "{}", opened.text().await.unwrap());
    let auth = payer.pay_voucher(&challenge, channel, BUCKET);
    assert_eq!(post(&h.http, url, body, Some(&auth)).await.status(), 200);
    auth
}

/// New vouchers over HTTP: `connections` channels, one closed-loop client
/// each, every request a body-less voucher one base unit above the last.
async fn voucher_accepts(h: &Harness, url: &str, connections: usize, per: usize) -> Figure {
    let payer = Arc::new(payer(h));
    let body = chat(false);
    let mut lanes = Vec::new();
    for _ in 0..connections {
        let challenge = v1_challenge(&challenges(&post(&h.http, url, &body, None).await));
        let deposit = (per as u128 + 10) * 1_000;
        let (channel, open) = payer.open(&challenge, deposit, 1).await;
        let opened = h
            .http
            .post(url)
            .header("authorization", open)
            .send()
            .await
            .unwrap();
        assert_eq!(opened.status(), 200, "{}", opened.text().await.unwrap());
        let vouchers: Vec<String> = (0..per)
            .map(|i| {
                let cumulative = 2 + i as u128;
                common::session::credential(
                    &challenge,
                    voucher_payload(
                        "voucher",
                        channel,
                        cumulative,
                        &payer.voucher(channel, cumulative),
                    ),
                )
            })
            .collect();
        lanes.push(vouchers);
    }
    let started = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|vouchers| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let client = load::client();
                let mut latencies = Vec::with_capacity(vouchers.len());
                let mut failures = 0u64;
                for auth in vouchers {
                    let sent = Instant::now();
                    match client.post(&url).header("authorization", auth).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            latencies.push(sent.elapsed());
                        }
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, f) = task.await.unwrap();
        latencies.extend(l);
        errors += f;
    }
    let wall = started.elapsed();
    Figure {
        per_second: latencies.len() as f64 / wall.as_secs_f64(),
        p50_ms: load::ms(load::percentile(&mut latencies, 0.50)),
        p99_ms: load::ms(load::percentile(&mut latencies, 0.99)),
        non_2xx: 0,
        errors,
    }
}

/// A row's gateway CPU µs, context switches and phases' mean µs, per request.
type Inside = (f64, f64, Vec<(String, f64)>);

struct Table {
    rows: Vec<(String, Figure)>,
    /// Tollgate rows: what the gateway's own figures say.
    inside: Vec<(String, Inside)>,
}

impl Table {
    fn add(&mut self, name: &str, (figure, inside): (Figure, Inside)) {
        if name.starts_with("Tollgate") || name.starts_with("streaming, Tollgate") {
            self.inside.push((name.to_owned(), inside));
        }
        self.add_figure(name, figure);
    }

    fn add_figure(&mut self, name: &str, figure: Figure) {
        println!(
            "  measured {name}: {:.0} req/s (non-2xx {}, errors {})",
            figure.per_second, figure.non_2xx, figure.errors
        );
        self.rows.push((name.to_owned(), figure));
    }

    fn rate(&self, name: &str) -> f64 {
        self.rows
            .iter()
            .find(|(n, _)| n == name)
            .map_or(f64::NAN, |(_, f)| f.per_second)
    }

    fn print(&self) {
        let free = self.rate(FREE);
        let nginx = self.rate(NGINX);
        println!(
            "\n| target | req/s | p50 ms | p99 ms | × free route | × nginx proxy | non-2xx | errors |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (name, f) in &self.rows {
            println!(
                "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
                f.per_second,
                f.p50_ms,
                f.p99_ms,
                f.per_second / free,
                f.per_second / nginx,
                f.non_2xx,
                f.errors
            );
        }
        // Work against waiting: CPU the gateway process used per request
        // (warm-up included, all threads) and the mean of each phase its
        // metrics time (payment: admission; upstream: to the upstream's
        // headers; deliver: read, metered, committed, to our headers).
        println!(
            "\nInside the gateway, per request (means; its CPU from /proc, phases from its metrics):"
        );
        println!(
            "\n| target | CPU µs | context switches | payment µs | upstream µs | deliver µs |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for (name, (cpu, switches, phases)) in &self.inside {
            let phase = |p: &str| phases.iter().find(|(n, _)| n == p).map_or(0.0, |(_, v)| *v);
            println!(
                "| {name} | {cpu:.0} | {switches:.2} | {:.0} | {:.0} | {:.0} |",
                phase("payment"),
                phase("upstream"),
                phase("deliver")
            );
        }
    }
}

const FREE: &str = "Tollgate, free route";
const NGINX: &str = "nginx, bare reverse proxy";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    load::quiet_logs();
    let connections = env_u32("CONNECTIONS", 16);
    let seconds = env_u32("SECONDS", 10);
    let rate = env_u32("RATE", 2_000);
    let h = Harness::start_sessions(MockOptions::default()).await;
    let dir = h.dir.path().to_owned();

    // The fixed answers: the mock's, captured once.
    let mock = format!("{}/v1/chat/completions", h.upstream_url);
    let text = |r: reqwest::Response| async { r.text().await.unwrap() };
    let answer = text(post(&h.http, &mock, &chat(false), None).await).await;
    let plan_answer = text(post(&h.http, &mock, &plan_turn(), None).await).await;
    let sse = text(post(&h.http, &mock, &chat(true), None).await).await;
    let nginx = Nginx::start(&dir, &answer, &plan_answer, &sse);
    let (mut child, gw, metrics) = launch(&h, &nginx.upstream).await;
    let pid = child.id().unwrap();
    let gauge = Gauge {
        pid,
        metrics,
        client: reqwest::Client::new(),
    };
    let idle_rss = rss_mib(pid);

    let paid_url = format!("{gw}/v1/chat/completions");
    let free_url = format!("{gw}/free/v1/chat/completions");
    let plan_url = format!("{gw}/v1/mpp/chat/completions");
    let body = chat(false);
    let quote = amount(&session_challenge(&challenges(
        &post(&h.http, &paid_url, &body, None).await,
    )));
    // Enough for every request of the closed and the open loop.
    let deposit = quote * 2_000_000;
    let balance = h.balance(DEV_ACCOUNTS[PAYER].address).await;
    assert!(
        balance > deposit + 2 * BUCKET,
        "payer balance {balance} < {deposit}"
    );
    let session = session_auth(&h, &paid_url, &body, deposit).await;
    let session_v2 = session_auth_v2(&h, &paid_url, &body, deposit).await;
    let plan = plan_auth(&h, &plan_url, &plan_turn()).await;

    println!(
        "closed loop: {connections} connections, {seconds} s each after 2 s of warm-up; {} cores, load avg {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let gauge = &gauge;
    let measure = |url: String, body: String, auth: Option<String>| {
        let dir = dir.clone();
        async move {
            let before = gauge.read().await;
            let figure = tokio::task::spawn_blocking(move || {
                wrk(&dir, &url, &body, auth.as_deref(), connections, 2);
                wrk(&dir, &url, &body, auth.as_deref(), connections, seconds)
            })
            .await
            .unwrap();
            (figure, per_request(&before, &gauge.read().await))
        }
    };
    // `ONLY=a,b` runs the rows whose name contains one of the words (and the
    // free route, the ratios' base); the open loop runs when `open` is named.
    let only: Option<Vec<String>> = std::env::var("ONLY")
        .ok()
        .map(|v| v.split(',').map(|w| w.trim().to_lowercase()).collect());
    let wanted = |name: &str| {
        only.as_ref().is_none_or(|words| {
            name == FREE
                || words
                    .iter()
                    .any(|w| !w.is_empty() && name.to_lowercase().contains(w.as_str()))
        })
    };
    let mut table = Table {
        rows: Vec::new(),
        inside: Vec::new(),
    };
    let upstream_chat = format!("{}/v1/chat/completions", nginx.upstream);
    let proxy_chat = format!("{}/v1/chat/completions", nginx.proxy);
    if wanted("upstream directly (nginx)") {
        table.add(
            "upstream directly (nginx)",
            measure(upstream_chat, body.clone(), None).await,
        );
    }
    if wanted(NGINX) {
        table.add(NGINX, measure(proxy_chat, body.clone(), None).await);
    }
    if wanted(FREE) {
        table.add(FREE, measure(free_url.clone(), body.clone(), None).await);
    }
    if wanted("Tollgate, unpaid → 402") {
        table.add(
            "Tollgate, unpaid → 402",
            measure(paid_url.clone(), body.clone(), None).await,
        );
    }
    if wanted("Tollgate, session-paid v1 (voucher re-sent)") {
        table.add(
            "Tollgate, session-paid v1 (voucher re-sent)",
            measure(paid_url.clone(), body.clone(), Some(session.clone())).await,
        );
    }
    if wanted("Tollgate, session-paid v2 (voucher re-sent)") {
        table.add(
            "Tollgate, session-paid v2 (voucher re-sent)",
            measure(paid_url.clone(), body.clone(), Some(session_v2.clone())).await,
        );
    }
    if wanted("Tollgate, plan-endpoint turn") {
        table.add(
            "Tollgate, plan-endpoint turn",
            measure(plan_url, plan_turn(), Some(plan)).await,
        );
    }
    if wanted("streaming, nginx proxy") {
        table.add(
            "streaming, nginx proxy",
            measure(format!("{}/free/stream", nginx.proxy), chat(true), None).await,
        );
    }
    if wanted("streaming, Tollgate free route") {
        table.add(
            "streaming, Tollgate free route",
            measure(format!("{gw}/free/stream"), chat(true), None).await,
        );
    }
    let per = (seconds as usize * 1_500).max(1_000);
    if wanted("new-voucher accepts (HTTP, durable)") {
        table.add_figure(
            "new-voucher accepts (HTTP, durable)",
            voucher_accepts(&h, &paid_url, connections as usize, per).await,
        );
    }
    let busy_rss = rss_mib(pid);
    table.print();

    // Open loop: what a payment adds to the tail at a fixed rate.
    if only.is_some() && !wanted("open loop") {
        child.start_kill().unwrap();
        let _ = child.wait().await;
        return;
    }
    let client = load::client();
    load::load(&client, &free_url, &body, None, rate, 2).await;
    let mut free = load::load(&client, &free_url, &body, None, rate, seconds).await;
    load::load(&client, &paid_url, &body, Some(&session), rate, 2).await;
    let mut paid = load::load(&client, &paid_url, &body, Some(&session), rate, seconds).await;
    load::print_conditions(rate);
    let free_p = load::report("free route", &mut free);
    let paid_p = load::report("session-paid", &mut paid);
    load::print_overhead("session-paid over free", paid_p, free_p);

    println!(
        "\ngateway VmRSS: {idle_rss:.1} MiB idle after start-up, {busy_rss:.1} MiB after the closed-loop runs"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
    drop(nginx);
}
