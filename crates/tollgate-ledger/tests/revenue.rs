//! Revenue reports over what the payment path recorded, on every backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::Store;
use tollgate_ledger::{
    ChargeRecord, Ledger, RefundRecord, RefundState, RevenueIntent, RevenueQuery, RevenueRow,
    UsageRecord,
};

on_every_backend!(
    totals_count_what_charges_paid_and_sessions_spent,
    buckets_and_ranges_split_by_day,
);

const CHAT: &str = "POST /v1/chat/completions";
const EMBED: &str = "POST /v1/embeddings";
const DAY: i64 = 86_400;

fn charge(id: &str, route: &str, amount: u128, at: i64) -> ChargeRecord {
    ChargeRecord {
        challenge_id: id.into(),
        route: route.into(),
        amount: amount.to_string(),
        currency: "0x20c0000000000000000000000000000000000000".into(),
        reference: format!("0xhash-{id}"),
        settled_at: at,
    }
}

fn usage(
    id: &str,
    route: &str,
    model: &str,
    cost: u128,
    tokens: (u64, u64),
    at: i64,
) -> UsageRecord {
    UsageRecord {
        challenge_id: Some(id.into()),
        route: route.into(),
        model: model.into(),
        quoted: cost * 3,
        input_tokens: tokens.0,
        cached_tokens: 0,
        output_tokens: tokens.1,
        actual_cost: cost,
        usage_reported: true,
        recorded_at: at,
    }
}

async fn ledger(store: &Store) -> Arc<dyn Ledger> {
    let ledger = store.open().await;
    // Day 0: two metered charges (their usage costs less than they paid)
    // and one fixed-price charge without usage.
    ledger
        .record_charge(&charge("c1", CHAT, 9_833, 100), &["a"])
        .await
        .unwrap();
    ledger
        .record_usage(&usage("c1", CHAT, "gpt-4o-mini", 12, (8, 10), 101))
        .await
        .unwrap();
    ledger
        .record_charge(&charge("c2", CHAT, 5_000, 200), &["b"])
        .await
        .unwrap();
    ledger
        .record_usage(&usage("c2", CHAT, "gpt-4o-mini", 7, (5, 3), 201))
        .await
        .unwrap();
    ledger
        .record_charge(&charge("c3", EMBED, 1_000, 300), &["c"])
        .await
        .unwrap();
    // A fourth charge whose answer was not delivered: refunded in full.
    ledger
        .record_charge(&charge("c4", EMBED, 700, 310), &["d"])
        .await
        .unwrap();
    assert!(
        ledger
            .record_refund(&RefundRecord {
                challenge_id: "c4".into(),
                route: EMBED.into(),
                charge_reference: "0xhash-c4".into(),
                payer: None,
                amount: 700,
                currency: "0x20c0000000000000000000000000000000000000".into(),
                reason: "undelivered".into(),
                state: RefundState::Owed,
                tx_hash: None,
                signed_tx: None,
                created_at: 311,
                updated_at: 311,
            })
            .await
            .unwrap()
    );
    // Sessions: two turns on one challenge on day 0, one on day 1.
    ledger
        .record_usage(&usage("s1", CHAT, "gpt-4o", 40, (20, 30), 400))
        .await
        .unwrap();
    ledger
        .record_usage(&usage("s1", CHAT, "gpt-4o", 2, (1, 1), 500))
        .await
        .unwrap();
    ledger
        .record_usage(&usage("s2", CHAT, "gpt-4o", 60, (10, 50), DAY + 5))
        .await
        .unwrap();
    // An unpaid record counts for nothing.
    let mut free = usage("x", CHAT, "gpt-4o", 99, (1, 1), 600);
    free.challenge_id = None;
    ledger.record_usage(&free).await.unwrap();
    ledger
}

fn row(
    bucket: i64,
    route: &str,
    model: &str,
    intent: RevenueIntent,
    requests: u64,
    amount: u128,
    tokens: (u64, u64),
) -> RevenueRow {
    RevenueRow {
        bucket,
        route: route.into(),
        model: model.into(),
        intent,
        requests,
        amount,
        input_tokens: tokens.0,
        output_tokens: tokens.1,
        refunded: 0,
    }
}

async fn totals_count_what_charges_paid_and_sessions_spent(store: Store) {
    let ledger = ledger(&store).await;
    let rows = ledger.revenue(RevenueQuery::totals()).await.unwrap();
    use RevenueIntent::*;
    assert_eq!(
        rows,
        [
            row(0, CHAT, "gpt-4o", Session, 3, 102, (31, 81)),
            row(0, CHAT, "gpt-4o-mini", Charge, 2, 14_833, (13, 13)),
            RevenueRow {
                refunded: 700,
                ..row(0, EMBED, "", Charge, 2, 1_000, (0, 0))
            },
        ]
    );
}

async fn buckets_and_ranges_split_by_day(store: Store) {
    let ledger = ledger(&store).await;
    let by_day = RevenueQuery {
        since: None,
        until: None,
        bucket_secs: Some(DAY as u32),
    };
    let rows = ledger.revenue(by_day).await.unwrap();
    let day1: Vec<_> = rows.iter().filter(|r| r.bucket == DAY).collect();
    assert_eq!(day1.len(), 1);
    assert_eq!((day1[0].amount, day1[0].requests), (60, 1));
    let total: u128 = rows.iter().map(|r| r.amount).sum();
    assert_eq!(total, 102 + 14_833 + 1_000);

    let only_day0 = ledger
        .revenue(RevenueQuery {
            since: Some(0),
            until: Some(DAY),
            bucket_secs: None,
        })
        .await
        .unwrap();
    let total: u128 = only_day0.iter().map(|r| r.amount).sum();
    assert_eq!(total, 42 + 14_833 + 1_000);
    // `since` is inclusive, `until` exclusive.
    let edge = ledger
        .revenue(RevenueQuery {
            since: Some(300),
            until: Some(310),
            bucket_secs: None,
        })
        .await
        .unwrap();
    assert_eq!(
        edge,
        [row(0, EMBED, "", RevenueIntent::Charge, 1, 1_000, (0, 0))]
    );
}
