//! Session-paid requests on each store, in one run: SQLite (one instance,
//! default `durability = "full"`), PostgreSQL with one instance, and
//! PostgreSQL with three instances sharing one database (requests spread
//! round-robin over them); then the cross-instance wake-up latency
//! (a voucher accepted on one instance → the event on another, by
//! `LISTEN/NOTIFY`).
//!
//! Closed loop: 16 connections (`WORKERS=n`) each sending its next request
//! when the last answered, 2 s warm-up then 10 s measured, the same
//! fixed-answer upstream for all; each store serves its own channel, whose
//! voucher every request re-sends (reserve, commit and usage record per
//! request). All gateways, the upstream and the load share this process
//! and the machine's cores with PostgreSQL — three instances in one process
//! on 2 cores measure coordination cost, not scale-out. Figures are
//! printed with ratios to SQLite; nothing is asserted.
//!
//! PostgreSQL: `TOLLGATE_TEST_PG_URL`, else a throwaway server started with
//! `scripts/pg-test-server` (fsync on, like SQLite `full`).
//!
//! Run: `cargo bench -p tollgate-e2e --bench store_backends`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load.rs"]
mod load;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::session::{Payer, session_challenge};
use common::*;
use load::*;
use tollgate_devnet::DEV_ACCOUNTS;
use tollgate_ledger::{
    ChannelEvent, ChannelRecord, ChannelStatus, Instance, Ledger, PgLedger, PgSettings,
    StoredVoucher,
};
use tollgate_mock::MockOptions;

/// Requests each channel can pay for (far more than a run sends).
const REQUESTS: u128 = 80_000;
const WAKE_SAMPLES: usize = 500;

/// Opens a channel authorizing `REQUESTS` worst cases; the `Authorization`
/// every measured request reuses.
async fn authorize(h: &Harness, url: &str, body: &str) -> String {
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
    let deposit = quote * REQUESTS;
    assert!(
        h.balance(DEV_ACCOUNTS[PAYER].address).await >= deposit,
        "the payer cannot fund the channel"
    );
    let (channel, open) = payer.open(&challenge, deposit, deposit).await;
    assert_eq!(post(&h.http, url, body, Some(&open)).await.status(), 200);
    payer.pay_voucher(&challenge, channel, deposit)
}

/// The PostgreSQL server: the tests' one, or a throwaway one of our own.
async fn pg_server() -> (String, Option<tempfile::TempDir>) {
    if let Ok(Some(url)) = tollgate_ledger::test_server_url() {
        return (url, None);
    }
    let dir = tempfile::Builder::new()
        .prefix("tollgate-bench-pg-")
        .tempdir_in("/tmp")
        .unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-test-server");
    let output = tokio::process::Command::new(&script)
        .arg("start")
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8(output.stdout).unwrap().trim().to_owned(),
        Some(dir),
    )
}

struct Figures {
    name: &'static str,
    rps: f64,
    p50: Duration,
    p99: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    quiet_logs();
    let workers: usize = std::env::var("WORKERS").map_or(16, |w| w.parse().unwrap());
    let (server, own_server) = pg_server().await;
    let h = Harness::start_sessions(MockOptions::default()).await;
    let client = client();
    let body = chat_body();
    let mock_url = format!("{}/v1/chat/completions", h.upstream_url);
    let upstream = fixed_upstream(
        post(&client, &mock_url, &body, None)
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .await;
    let sessions = Options {
        quoted: true,
        session: true,
        ..Options::default()
    };
    let sqlite = Options {
        db_path: Some(h.dir.path().join("bench.db")),
        ..sessions.clone()
    };
    let pg_one = Options {
        pg_url: Some(tollgate_ledger::test_database(&server).await.unwrap()),
        ..sessions.clone()
    };
    let pg_three = Options {
        pg_url: Some(tollgate_ledger::test_database(&server).await.unwrap()),
        ..sessions.clone()
    };
    let stores: [(&'static str, &Options, usize); 3] = [
        ("SQLite, 1 instance", &sqlite, 1),
        ("PostgreSQL, 1 instance", &pg_one, 1),
        ("PostgreSQL, 3 instances", &pg_three, 3),
    ];

    println!(
        "\nsession-paid, closed loop, {workers} connections, {SECONDS} s after {WARM_UP_SECONDS} s warm-up, {} cores, load avg {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut figures = Vec::new();
    for (name, options, instances) in stores {
        let mut urls = Vec::new();
        let mut stops = Vec::new();
        for _ in 0..instances {
            let (url, stop) = gateway_for(&h, &upstream, options).await;
            urls.push(format!("{url}/v1/chat/completions"));
            stops.push(stop);
        }
        let auth = authorize(&h, &urls[0], &body).await;
        closed_loop(&client, &urls, &body, &auth, workers, WARM_UP_SECONDS).await;
        let mut run = closed_loop(&client, &urls, &body, &auth, workers, SECONDS).await;
        let (p50, p99) = report(name, &mut run);
        figures.push(Figures {
            name,
            rps: throughput(&run),
            p50,
            p99,
        });
        for stop in stops {
            stop().await;
        }
    }
    let base = &figures[0];
    println!(
        "\n{:<26} {:>9} {:>9} {:>9}  {:>12} {:>10}",
        "store", "req/s", "p50 ms", "p99 ms", "req/s ratio", "p99 ratio"
    );
    for f in &figures {
        println!(
            "{:<26} {:>9.0} {:>9.3} {:>9.3}  {:>11.2}× {:>9.2}×",
            f.name,
            f.rps,
            ms(f.p50),
            ms(f.p99),
            f.rps / base.rps,
            f.p99.as_secs_f64() / base.p99.as_secs_f64(),
        );
    }

    wake_up_latency(&server).await;
    if let Some(dir) = own_server {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-test-server");
        let _ = std::process::Command::new(script)
            .arg("stop")
            .arg(dir.path())
            .status();
    }
}

/// A voucher accepted through one instance's ledger, until the event
/// reaches another's subscriber.
async fn wake_up_latency(server: &str) {
    let url = tollgate_ledger::test_database(server).await.unwrap();
    let settings = PgSettings {
        url,
        pool_size: 2,
        instance: Instance::generated(tollgate_ledger::DEFAULT_LEASE),
        connect_timeout: Duration::from_secs(5),
    };
    let open = |instance: Instance| {
        let settings = PgSettings {
            instance,
            ..settings.clone()
        };
        async move { Arc::new(PgLedger::connect(settings).await.unwrap()) as Arc<dyn Ledger> }
    };
    let lease = tollgate_ledger::DEFAULT_LEASE;
    let (listener, acceptor) = (
        open(Instance::generated(lease)).await,
        open(Instance::generated(lease)).await,
    );
    let id = "0x00000000000000000000000000000000000000000000000000000000000000bb";
    acceptor
        .open_channel(
            &ChannelRecord {
                channel_id: id.into(),
                protocol: "v1".into(),
                escrow: String::new(),
                chain_id: 1,
                payer: String::new(),
                payee: String::new(),
                token: String::new(),
                authorized_signer: String::new(),
                descriptor: None,
                deposit: u128::MAX,
                accepted: 0,
                spent: 0,
                reserved: 0,
                settled: 0,
                units: 0,
                close_requested_at: 0,
                status: ChannelStatus::Open,
                opened_at: 0,
                updated_at: 0,
                last_settled_at: None,
                inflight: None,
            },
            None,
        )
        .await
        .unwrap();
    let mut events = listener.channel_events();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut wake, mut commit) = (Vec::new(), Vec::new());
    for i in 1..=WAKE_SAMPLES as u128 {
        let voucher = StoredVoucher {
            cumulative: i,
            signature: format!("0x{i:x}"),
        };
        let started = Instant::now();
        acceptor.accept_voucher(id, &voucher, 0).await.unwrap();
        commit.push(started.elapsed());
        loop {
            if let ChannelEvent::VoucherAccepted(_) = events.recv().await.unwrap() {
                break;
            }
        }
        wake.push(started.elapsed());
    }
    println!(
        "\ncross-instance wake-up (PostgreSQL LISTEN/NOTIFY), {WAKE_SAMPLES} vouchers:\n  accept committed     p50={:>7.3} ms  p99={:>7.3} ms\n  other instance woken p50={:>7.3} ms  p99={:>7.3} ms (from the accept call)",
        ms(percentile(&mut commit, 0.5)),
        ms(percentile(&mut commit, 0.99)),
        ms(percentile(&mut wake, 0.5)),
        ms(percentile(&mut wake, 0.99)),
    );
}
