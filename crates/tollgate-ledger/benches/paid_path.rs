//! What the ledger adds to a session-paid request, in process, with the
//! default `full` durability: `CLIENTS` tasks on one channel, each doing
//! what a request does — reserve, commit (durable), note its usage record.
//! Prints requests per second, the process's CPU and its threads' context
//! switches per request (the figures the gateway bench's paid rows break
//! down), so two builds of the writer can be compared without HTTP's noise.
//! `cargo bench -p tollgate-ledger --bench paid_path`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use std::sync::Arc;
use std::time::Instant;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../../tollgate-e2e/benches/support/process.rs"]
mod process;

use common::CHANNEL;
use tollgate_ledger::{ChannelBook, Durability, Ledger, ReserveOutcome, SqliteLedger, UsageRecord};

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 2_000;
const ROUNDS: usize = 3;
/// Deposit and voucher: enough for every round.
const BALANCE: u128 = 1_000_000_000_000;

fn usage() -> UsageRecord {
    UsageRecord {
        challenge_id: Some("bench-challenge".into()),
        route: "POST /v1/chat/completions".into(),
        model: "gpt-4o-mini".into(),
        quoted: 9_833,
        input_tokens: 8,
        cached_tokens: 0,
        output_tokens: 12,
        actual_cost: 9,
        usage_reported: true,
        recorded_at: 0,
    }
}

async fn round(ledger: &Arc<SqliteLedger>, name: &str) {
    let pid = std::process::id();
    let (cpu0, switches0) = (process::cpu(pid), process::context_switches(pid));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let ledger = Arc::clone(ledger);
            tokio::spawn(async move {
                for _ in 0..PER_CLIENT {
                    let reservation = match ledger.reserve(CHANNEL, 100).await.unwrap() {
                        ReserveOutcome::Reserved { reservation, .. } => reservation,
                        other => panic!("not reserved: {other:?}"),
                    };
                    ledger.commit(reservation, 9, 20).await.unwrap();
                    Arc::clone(&ledger).note_usage(usage());
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let wall = started.elapsed();
    let (cpu1, switches1) = (process::cpu(pid), process::context_switches(pid));
    let requests = (CLIENTS * PER_CLIENT) as f64;
    let cpu_us = (cpu1 - cpu0).as_secs_f64() * 1e6 / requests;
    println!(
        "{name:<28} {:>8.0} req/s  cpu {:>6.1} µs/req  context switches {:>5.2} vol + {:>5.2} invol per req",
        requests / wall.as_secs_f64(),
        cpu_us,
        (switches1.voluntary - switches0.voluntary) as f64 / requests,
        (switches1.involuntary - switches0.involuntary) as f64 / requests,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let ledger =
        Arc::new(SqliteLedger::open(&dir.path().join("ledger.db"), Durability::Full).unwrap());
    let _keeper = tollgate_ledger::spawn_keeper(&(Arc::clone(&ledger) as Arc<dyn Ledger>));
    ledger
        .open_channel(&common::channel(BALANCE), None)
        .await
        .unwrap();
    let accepted = ledger
        .accept_voucher(CHANNEL, &common::voucher(BALANCE), 0)
        .await
        .unwrap();
    assert!(
        matches!(accepted, tollgate_ledger::VoucherOutcome::Accepted(_)),
        "{accepted:?}"
    );
    println!(
        "reserve + commit + usage, one channel, {CLIENTS} clients, durability full, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    round(&ledger, "(warm-up)").await;
    for i in 1..=ROUNDS {
        round(&ledger, &format!("round {i}")).await;
    }
}
