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

use tollgate_ledger::{
    ChannelBook, ChannelRecord, ChannelStatus, Durability, Ledger, ReserveOutcome, SqliteLedger,
    StoredVoucher, UsageRecord,
};

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 2_000;
const ROUNDS: usize = 3;
/// Deposit and voucher: enough for every round.
const BALANCE: u128 = 1_000_000_000_000;
const CHANNEL: &str = "0x00000000000000000000000000000000000000000000000000000000000000c1";

fn channel() -> ChannelRecord {
    ChannelRecord {
        channel_id: CHANNEL.into(),
        protocol: "v1".into(),
        escrow: format!("0x{}", "e5".repeat(20)),
        chain_id: 42431,
        payer: format!("0x{}", "aa".repeat(20)),
        payee: format!("0x{}", "bb".repeat(20)),
        token: format!("0x{}", "20".repeat(20)),
        authorized_signer: format!("0x{}", "aa".repeat(20)),
        descriptor: None,
        deposit: BALANCE,
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
    }
}

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

/// CPU ticks (user + system) of this process, and its threads' context
/// switches (voluntary, involuntary).
fn process_counters() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu = ticks(11) + ticks(12);
    let (mut voluntary, mut involuntary) = (0, 0);
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                let value = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                };
                if line.starts_with("voluntary_ctxt_switches") {
                    voluntary += value(line).unwrap_or(0);
                } else if line.starts_with("nonvoluntary_ctxt_switches") {
                    involuntary += value(line).unwrap_or(0);
                }
            }
        }
    }
    (cpu, voluntary, involuntary)
}

async fn round(ledger: &Arc<SqliteLedger>, name: &str) {
    let (cpu0, vol0, invol0) = process_counters();
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
    let (cpu1, vol1, invol1) = process_counters();
    let requests = (CLIENTS * PER_CLIENT) as f64;
    // Clock ticks are 10 ms (USER_HZ 100).
    let cpu_us = (cpu1 - cpu0) as f64 * 10_000.0 / requests;
    println!(
        "{name:<28} {:>8.0} req/s  cpu {:>6.1} µs/req  context switches {:>5.2} vol + {:>5.2} invol per req",
        requests / wall.as_secs_f64(),
        cpu_us,
        (vol1 - vol0) as f64 / requests,
        (invol1 - invol0) as f64 / requests,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let ledger =
        Arc::new(SqliteLedger::open(&dir.path().join("ledger.db"), Durability::Full).unwrap());
    let _keeper = tollgate_ledger::spawn_keeper(&(Arc::clone(&ledger) as Arc<dyn Ledger>));
    ledger.open_channel(&channel(), None).await.unwrap();
    let voucher = StoredVoucher {
        cumulative: BALANCE,
        signature: format!("0x{}", "11".repeat(65)),
    };
    let accepted = ledger.accept_voucher(CHANNEL, &voucher, 0).await.unwrap();
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
