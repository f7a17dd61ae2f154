//! Gateway overhead of a paid turn on the accountless plan endpoint
//! `POST /v1/mpp/chat/completions` under an open-loop load.
//!
//! Modelled on `session_request` (read its header for the load, latency and
//! CPU accounting; its small helpers are copied here). For each
//! `[store] durability` (`normal`, then `full`, the default) a gateway is
//! started on its own database with a `[plans]` section whose one plan
//! serves an open model (custom prices, like `Qwen/Qwen3-8B-AWQ` in
//! `tests/e2e/plan_endpoint.rs`) on the `openai` runtime. The voucher bucket is
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

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load.rs"]
mod load;

use common::session::Payer;
use common::*;
use load::*;
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_mock::MockOptions;

const DEFAULT_RATE: u32 = 200;

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    quiet_logs();
    let rate = rate(DEFAULT_RATE);
    let h = Harness::start_sessions(MockOptions::default()).await;
    let client = client();
    let body = turn_body();
    // The mock ignores the plan fields: its answer is the one to the turn.
    let mock_url = format!("{}/v1/chat/completions", h.upstream_url);
    let answer = post(&client, &mock_url, &body, None).await;
    let upstream = fixed_upstream(answer.bytes().await.unwrap()).await;
    let direct_url = format!("{upstream}/v1/chat/completions");

    load(&client, &direct_url, &body, None, rate, WARM_UP_SECONDS).await;
    let mut direct = load(&client, &direct_url, &body, None, rate, SECONDS).await;

    print_conditions(rate);
    let (d50, d99) = report("runtime directly", &mut direct);
    for durability in ["normal", "full"] {
        let (gw, stop) = gateway(&h, &upstream, durability, Some(plans_toml())).await;
        let url = format!("{gw}/v1/mpp/chat/completions");
        let auth = authorize(&h, &url, &body).await;
        load(&client, &url, &body, Some(&auth), rate, WARM_UP_SECONDS).await;
        let mut run = load(&client, &url, &body, Some(&auth), rate, SECONDS).await;
        let (g50, g99) = report(&format!("plan turn via gateway ({durability})"), &mut run);
        print_overhead(durability, (g50, g99), (d50, d99));
        stop().await;
    }
}
