//! Resident memory of the real `tollgate` binary holding 1 000 concurrent
//! session-paid streams.
//!
//! The gateway runs as a child process (as in `tests/cli/crash.rs`) with
//! sessions on, in front of a slow mock upstream in this process (2 000
//! tokens, 50 ms apart: each stream lasts ~100 s). One channel is opened
//! with a voucher authorizing every stream's worst case; the streams all
//! resend that voucher on one reused session challenge for one streaming
//! body. Once every stream has received its first bytes (and they keep
//! being read), the child's `VmRSS` (anonymous / file-backed), `VmHWM` and
//! thread count are read from `/proc/<pid>/status`, next to the same figures
//! when idle, then sampled for 10 s more with the gateway's CPU use.
//!
//! Run: `cargo bench -p tollgate --bench streams_memory`
//! (`STREAMS=n` changes the number of streams; `FREE=1` runs them on a free
//! route, forwarding without metering, to show the HTTP plumbing's share).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

#[path = "../../tollgate-e2e/tests/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::session::{Payer, session_challenge};
use common::*;
use futures::StreamExt;
use serde_json::json;
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_mock::MockOptions;

fn streams() -> usize {
    std::env::var("STREAMS").map_or(1_000, |n| n.parse().expect("STREAMS is a number"))
}

/// `/proc/<pid>/status` fields in kB (or a count).
fn status(pid: u32) -> impl Fn(&str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    move |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn print_memory(what: &str, pid: u32) {
    let field = status(pid);
    println!(
        "{what:<36} VmRSS={:>6.1} MiB (anon {:>6.1}, file {:>5.1})  VmHWM={:>6.1} MiB  threads={}",
        mib(field("VmRSS")),
        mib(field("RssAnon")),
        mib(field("RssFile")),
        mib(field("VmHWM")),
        field("Threads")
    );
}

/// User + system CPU time of `pid`, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn chat(stream: bool, max_tokens: u32) -> String {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Explain payment channels in one line."}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
    .to_string()
}

fn amount(challenge: &mpp::PaymentChallenge) -> u128 {
    challenge.request.decode_value().unwrap()["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The gateway as a child process on a free port.
async fn launch(h: &Harness, options: &Options) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = h.dir.path().join("tollgate.toml");
    std::fs::write(&config, h.config_text(options)).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("TOLLGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("E2E_SECRET_0", SECRET)
        .env("E2E_UPSTREAM_KEY", UPSTREAM_KEY)
        .env("E2E_OPERATOR_KEY", DEV_ACCOUNTS[RECIPIENT].private_key)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the tollgate binary starts");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if let Ok(r) = h.http.get(format!("{url}/healthz")).send().await
            && r.status() == 200
        {
            return (child, url);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not come up");
}

/// `TcpExt: ListenOverflows` from `/proc/net/netstat` (system-wide).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Counts {
    started: AtomicUsize,
    failed: AtomicUsize,
}

/// One stream: counted as started at its first bytes, then read to the end.
async fn stream(request: reqwest::RequestBuilder, counts: Arc<Counts>) {
    let mut bytes = match request.send().await {
        Ok(r) if r.status() == 200 => r.bytes_stream(),
        Ok(r) => {
            if counts.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                let status = r.status();
                println!(
                    "first refusal: {status} {}",
                    r.text().await.unwrap_or_default()
                );
            }
            return;
        }
        Err(e) => {
            if counts.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                println!("first failure: {e}");
            }
            return;
        }
    };
    if let Some(Ok(_)) = bytes.next().await {
        counts.started.fetch_add(1, Ordering::Relaxed);
    }
    while let Some(Ok(_)) = bytes.next().await {}
}

/// Opens one channel authorizing `streams` worst cases of `stream_body`
/// (by a short non-streamed request) and returns the `Authorization` value
/// every stream reuses: that voucher on one session challenge.
async fn authorize(h: &Harness, url: &str, stream_body: &str, streams: usize) -> String {
    let payer = Payer::new(
        signer(PAYER),
        &h.devnet.rpc_url(),
        h.devnet.escrow().unwrap(),
    );
    let offered = challenges(&post(&h.http, url, stream_body, None).await);
    let stream_challenge = session_challenge(&offered);
    // A stream's session challenge asks for its start (the prompt and a few
    // tokens); its worst case is what the charge offered beside it asks.
    let worst = offered.iter().map(amount).max().unwrap_or(0);
    let deposit = worst * (streams as u128 + 10);
    let open_body = chat(false, 16);
    let open_challenge =
        session_challenge(&challenges(&post(&h.http, url, &open_body, None).await));
    let (channel, open) = payer.open(&open_challenge, deposit, deposit).await;
    let opened = post(&h.http, url, &open_body, Some(&open)).await;
    assert_eq!(opened.status(), 200, "{}", opened.text().await.unwrap());
    let _ = opened.bytes().await;
    println!(
        "stream challenge {} base units, worst case {worst}, deposit {deposit}",
        amount(&stream_challenge)
    );
    payer.pay_voucher(&stream_challenge, channel, deposit)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Before the harness: its debug-level log capture would grow without end.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::sink)
        .init();
    let n = streams();
    let h = Harness::start_sessions(MockOptions {
        answer_tokens: 2_000,
        chunk_interval: Duration::from_millis(50),
        ..MockOptions::default()
    })
    .await;
    let free = std::env::var_os("FREE").is_some();
    let options = Options {
        quoted: true,
        session: true,
        free,
        ..Options::default()
    };
    let (mut child, url) = launch(&h, &options).await;
    let pid = child.id().unwrap();
    let chat_url = format!("{url}/v1/chat/completions");
    println!(
        "{n} streams, {} cores, load avg {}, open files limit {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
        std::fs::read_to_string("/proc/self/limits")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or_default()
            .split_whitespace()
            .nth(3)
            .unwrap_or("?")
    );
    print_memory("idle, just started", pid);

    let stream_body = chat(true, 2_000);
    let auth: Option<Arc<str>> = if free {
        None
    } else {
        Some(authorize(&h, &chat_url, &stream_body, n).await.into())
    };
    print_memory("idle, before the streams", pid);

    // The streams, opened 1 ms apart. Listen queue overflows (backlog 128;
    // in practice the busy in-process mock's) delay some by SYN retries.
    let counts = Arc::new(Counts::default());
    let (started, failed) = (&counts.started, &counts.failed);
    let (opening, overflows) = (Instant::now(), listen_overflows());
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    let mut tasks = Vec::new();
    for _ in 0..n {
        pace.tick().await;
        let request = h
            .http
            .post(&chat_url)
            .header("content-type", "application/json")
            .body(stream_body.clone());
        let request = match &auth {
            Some(auth) => request.header("authorization", &**auth),
            None => request,
        };
        tasks.push(tokio::spawn(stream(request, Arc::clone(&counts))));
    }
    while started.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n {
        assert!(
            opening.elapsed() < Duration::from_secs(60),
            "only {} streams started in 60 s",
            started.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{} streams started in {:.2} s, {} refused, {} listen queue overflows",
        started.load(Ordering::Relaxed),
        opening.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
        listen_overflows() - overflows
    );
    print_memory("all streams past their first bytes", pid);
    // Steady state: sample for 10 s while the streams flow.
    let (mut peak, ticks) = (0, cpu_ticks(pid));
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(status(pid)("VmRSS"));
    }
    print_memory("after 10 s more of streaming", pid);
    println!(
        "peak VmRSS sampled while streaming: {:.1} MiB; gateway CPU {:.0}% of one core",
        mib(peak),
        (cpu_ticks(pid) - ticks) as f64 / 10.0
    );

    for task in &tasks {
        task.abort();
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
