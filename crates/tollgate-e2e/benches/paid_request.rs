//! Whole-request latency through the gateway on loopback, with the chain
//! round trip separated out via `Server-Timing`.
//!
//! Run: `cargo bench -p tollgate-e2e --bench paid_request`
//! Prints p50/p99 for: a 402 challenge, a free route forwarded to the mock
//! upstream, the upstream called directly, and a paid (pull) request split
//! into total, chain and gateway overhead (total − chain − upstream).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

const ROUNDS: usize = 200;
const PAID_ROUNDS: usize = 150;
const BATCH: usize = 25;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn report(name: &str, samples: &mut [Duration]) {
    println!(
        "{name:<34} n={:<4} p50={:>9.3} ms  p99={:>9.3} ms",
        samples.len(),
        percentile(samples, 0.50).as_secs_f64() * 1e3,
        percentile(samples, 0.99).as_secs_f64() * 1e3
    );
}

fn timing(response: &reqwest::Response, metric: &str) -> Duration {
    let header = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_owned();
    let value = header
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix(&format!("{metric};dur=")))
        .unwrap();
    Duration::from_secs_f64(value.parse::<f64>().unwrap() / 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let h = Harness::start().await;
    let paid = h.gateway(&Options::default()).await;
    let free = h
        .gateway(&Options {
            free: true,
            ..Options::default()
        })
        .await;
    let paid_url = format!("{}/v1/chat/completions", paid.url);
    let free_url = format!("{}/v1/chat/completions", free.url);
    let direct_url = format!("{}/v1/chat/completions", h.upstream_url);
    let body = chat_body();

    for _ in 0..50 {
        post(&h.http, &paid_url, &body, None).await;
        post(&h.http, &free_url, &body, None).await;
    }

    let mut challenge_402 = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let response = post(&h.http, &paid_url, &body, None).await;
        let _ = response.bytes().await;
        challenge_402.push(started.elapsed());
    }
    let (mut forwarded, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let _ = post(&h.http, &free_url, &body, None).await.bytes().await;
        forwarded.push(started.elapsed());
        let started = Instant::now();
        let _ = post(&h.http, &direct_url, &body, None).await.bytes().await;
        direct.push(started.elapsed());
    }

    let (mut total, mut chain, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    while total.len() < PAID_ROUNDS {
        // Sign a batch first (signing is the client's cost), then submit.
        let mut credentials = Vec::new();
        for _ in 0..BATCH {
            let challenge = challenges(&post(&h.http, &paid_url, &body, None).await).remove(0);
            credentials.push(pay(&challenge, signer(PAYER), &h.devnet.rpc_url()).await);
        }
        for auth in credentials {
            let started = Instant::now();
            let response = post(&h.http, &paid_url, &body, Some(&auth)).await;
            let elapsed = started.elapsed();
            assert_eq!(response.status(), 200);
            let (on_chain, upstream) = (timing(&response, "chain"), timing(&response, "upstream"));
            let _ = response.bytes().await;
            total.push(elapsed);
            chain.push(on_chain);
            overhead.push(elapsed.saturating_sub(on_chain + upstream));
        }
    }

    // Streaming: a 2 000-chunk answer, direct vs through the gateway.
    let long = Harness::start_with(tollgate_mock::MockOptions {
        answer_tokens: 2_000,
        ..Default::default()
    })
    .await;
    let long_gw = long
        .gateway(&Options {
            free: true,
            ..Options::default()
        })
        .await;
    let stream_body =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"stream"}],"stream":true}"#;
    let (mut via, mut direct_stream) = (Vec::new(), Vec::new());
    let mut chunks = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let text = post(
            &long.http,
            &format!("{}/v1/chat/completions", long.upstream_url),
            stream_body,
            None,
        )
        .await
        .text()
        .await
        .unwrap();
        direct_stream.push(started.elapsed());
        chunks = text.matches("data: ").count();
        let started = Instant::now();
        let _ = post(
            &long.http,
            &format!("{}/v1/chat/completions", long_gw.url),
            stream_body,
            None,
        )
        .await
        .text()
        .await
        .unwrap();
        via.push(started.elapsed());
    }
    let per_chunk = |a: &mut Vec<Duration>, b: &mut Vec<Duration>| {
        (percentile(a, 0.5).as_secs_f64() - percentile(b, 0.5).as_secs_f64()) / chunks as f64 * 1e6
    };
    let overhead_us = per_chunk(&mut via, &mut direct_stream);

    println!("\nTollgate on loopback, 2-core machine, debug=false release build");
    report("402 challenge (HTTP round trip)", &mut challenge_402);
    report("upstream mock called directly", &mut direct);
    report("free route via gateway", &mut forwarded);
    report("paid request: total", &mut total);
    report("paid request: chain part", &mut chain);
    report("paid request: overhead w/o chain", &mut overhead);
    report("stream direct (2000 chunks)", &mut direct_stream);
    report("stream via gateway (2000 chunks)", &mut via);
    println!("stream pass-through overhead: {overhead_us:.2} µs per chunk ({chunks} SSE events)");
    long_gw.stop().await;
    paid.stop().await;
    free.stop().await;
}
