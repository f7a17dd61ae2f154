//! What a metrics scrape (or a dashboard load) costs the ledger: the
//! revenue query over a large SQLite store, all time in one bucket and by
//! hour over a week. `cargo bench -p tollgate-ledger --bench revenue`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate_ledger::{ChannelBook, ChargeRecord, Ledger, RevenueQuery, SqliteLedger, UsageRecord};

const CHARGES: usize = 50_000;
const SESSION_TURNS: usize = 50_000;
const MODELS: [&str; 4] = ["gpt-4o", "gpt-4o-mini", "claude-haiku-4-5", "o4-mini"];
const ROUTES: [&str; 3] = [
    "POST /v1/chat/completions",
    "POST /v1/messages",
    "POST /v1/responses",
];

fn usage(id: String, i: usize, at: i64) -> UsageRecord {
    UsageRecord {
        challenge_id: Some(id),
        route: ROUTES[i % ROUTES.len()].into(),
        model: MODELS[i % MODELS.len()].into(),
        quoted: 9_833,
        input_tokens: 20,
        cached_tokens: 0,
        output_tokens: 40,
        actual_cost: 37,
        usage_reported: true,
        recorded_at: at,
    }
}

fn populate(runtime: &tokio::runtime::Runtime) -> (tempfile::TempDir, SqliteLedger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(
        &dir.path().join("bench.db"),
        tollgate_ledger::Durability::Normal,
    )
    .unwrap();
    let week = 7 * 86_400;
    let start = 1_764_547_200;
    runtime.block_on(async {
        for i in 0..CHARGES {
            let at = start + (i as i64 * week / CHARGES as i64);
            let id = format!("c{i}");
            let record = ChargeRecord {
                challenge_id: id.clone(),
                route: ROUTES[i % ROUTES.len()].into(),
                amount: "9833".into(),
                currency: "0x20c0000000000000000000000000000000000000".into(),
                reference: format!("0x{i:064x}"),
                settled_at: at,
            };
            let claim = format!("challenge:{id}");
            ledger
                .record_charge(&record, &[claim.as_str()])
                .await
                .unwrap();
            ledger.record_usage(&usage(id, i, at + 1)).await.unwrap();
        }
        for i in 0..SESSION_TURNS {
            let at = start + (i as i64 * week / SESSION_TURNS as i64);
            ledger
                .record_usage(&usage(format!("s{}", i / 10), i, at))
                .await
                .unwrap();
        }
        let _ = ledger.channels().await.unwrap();
    });
    (dir, ledger)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_dir, ledger) = populate(&runtime);
    let mut group = c.benchmark_group(format!(
        "revenue over {CHARGES} charges + {SESSION_TURNS} session turns"
    ));
    group.sample_size(20);
    group.bench_function("totals (a scrape)", |b| {
        b.iter(|| {
            runtime
                .block_on(ledger.revenue(RevenueQuery::totals()))
                .unwrap()
        })
    });
    group.bench_function("hourly, 7 days (the dashboard)", |b| {
        b.iter(|| {
            runtime
                .block_on(ledger.revenue(RevenueQuery {
                    since: Some(1_764_547_200),
                    until: None,
                    bucket_secs: Some(3_600),
                }))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
