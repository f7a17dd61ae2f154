//! Single-use claims, charges and the SDK's key-value store, on every backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::Store;
use tollgate_ledger::{ChargeRecord, ClaimOutcome};

on_every_backend!(
    a_key_is_claimed_once,
    concurrent_claims_have_exactly_one_winner,
    concurrent_claims_on_two_instances_have_exactly_one_winner,
    released_pending_claims_can_be_taken_again_but_settled_ones_cannot,
    claims_and_charges_survive_reopening_the_store,
    recording_the_same_challenge_twice_fails_and_changes_nothing,
    kv_operations_are_atomic,
    usage_records_keep_exact_amounts,
    noted_usage_records_are_all_written_once,
);

fn record(id: &str, at: i64) -> ChargeRecord {
    ChargeRecord {
        challenge_id: id.into(),
        route: "POST /v1/chat/completions".into(),
        amount: "1500".into(),
        currency: "0x20c0000000000000000000000000000000000000".into(),
        reference: format!("0xhash-{id}"),
        settled_at: at,
    }
}

async fn a_key_is_claimed_once(store: Store) {
    let ledger = store.open().await;
    assert_eq!(
        ledger.claim("challenge:a").await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        ledger.claim("challenge:a").await.unwrap(),
        ClaimOutcome::AlreadyClaimed
    );
    assert_eq!(
        ledger.claim("challenge:b").await.unwrap(),
        ClaimOutcome::Claimed
    );
}

async fn concurrent_claims_have_exactly_one_winner(store: Store) {
    let ledger = store.open().await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move { ledger.claim("tx:0xabc").await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap() == ClaimOutcome::Claimed {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

async fn concurrent_claims_on_two_instances_have_exactly_one_winner(store: Store) {
    let instances = [store.open().await, store.open().await];
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let ledger = Arc::clone(&instances[i % 2]);
            tokio::spawn(async move { ledger.claim("challenge:shared").await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap() == ClaimOutcome::Claimed {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

async fn released_pending_claims_can_be_taken_again_but_settled_ones_cannot(store: Store) {
    let ledger = store.open().await;
    ledger.claim("k1").await.unwrap();
    ledger.release_claim("k1").await.unwrap();
    assert_eq!(ledger.claim("k1").await.unwrap(), ClaimOutcome::Claimed);

    ledger.settle_claims(&["k1"]).await.unwrap();
    ledger.release_claim("k1").await.unwrap();
    assert_eq!(
        ledger.claim("k1").await.unwrap(),
        ClaimOutcome::AlreadyClaimed
    );
}

async fn claims_and_charges_survive_reopening_the_store(store: Store) {
    {
        let ledger = store.open().await;
        ledger.claim("challenge:x").await.unwrap();
        ledger
            .record_charge(&record("x", 10), &["challenge:x", "tx:0x1"])
            .await
            .unwrap();
    }
    let ledger = store.open().await;
    assert_eq!(
        ledger.claim("challenge:x").await.unwrap(),
        ClaimOutcome::AlreadyClaimed
    );
    assert_eq!(
        ledger.claim("tx:0x1").await.unwrap(),
        ClaimOutcome::AlreadyClaimed
    );
    assert_eq!(
        ledger.recent_charges(10).await.unwrap(),
        vec![record("x", 10)]
    );
}

async fn recording_the_same_challenge_twice_fails_and_changes_nothing(store: Store) {
    let ledger = store.open().await;
    ledger
        .record_charge(&record("x", 1), &["c:x"])
        .await
        .unwrap();
    assert!(
        ledger
            .record_charge(&record("x", 2), &["c:y"])
            .await
            .is_err()
    );
    // The failed transaction rolled back: its claim was not written.
    assert_eq!(ledger.claim("c:y").await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(ledger.recent_charges(10).await.unwrap().len(), 1);
}

async fn kv_operations_are_atomic(store: Store) {
    let ledger = store.open().await;
    assert_eq!(ledger.kv_get("a").await.unwrap(), None);
    assert!(ledger.kv_put_if_absent("a", "1").await.unwrap());
    assert!(!ledger.kv_put_if_absent("a", "2").await.unwrap());
    assert_eq!(ledger.kv_get("a").await.unwrap().as_deref(), Some("1"));
    assert!(
        !ledger
            .kv_compare_exchange("a", Some("9"), Some("3"))
            .await
            .unwrap()
    );
    assert!(
        ledger
            .kv_compare_exchange("a", Some("1"), Some("3"))
            .await
            .unwrap()
    );
    assert_eq!(ledger.kv_get("a").await.unwrap().as_deref(), Some("3"));
    assert!(
        ledger
            .kv_compare_exchange("a", Some("3"), None)
            .await
            .unwrap()
    );
    assert_eq!(ledger.kv_get("a").await.unwrap(), None);
    assert!(
        ledger
            .kv_compare_exchange("b", None, Some("x"))
            .await
            .unwrap()
    );
    ledger.kv_put("b", "y").await.unwrap();
    assert_eq!(ledger.kv_get("b").await.unwrap().as_deref(), Some("y"));
    ledger.kv_delete("b").await.unwrap();
    assert_eq!(ledger.kv_get("b").await.unwrap(), None);
}

async fn usage_records_keep_exact_amounts(store: Store) {
    let ledger = store.open().await;
    let record = tollgate_ledger::UsageRecord {
        challenge_id: Some("c1".into()),
        route: "POST /v1/chat/completions".into(),
        model: "gpt-4o".into(),
        quoted: u128::MAX,
        input_tokens: 12,
        cached_tokens: 3,
        output_tokens: 40,
        actual_cost: 340_282_366_920_938_463_463_374_607_431_768_211_000,
        usage_reported: true,
        recorded_at: 7,
    };
    ledger.record_usage(&record).await.unwrap();
    assert_eq!(ledger.usage_for("c1").await.unwrap(), vec![record]);
    assert!(ledger.usage_for("c2").await.unwrap().is_empty());
}

/// The payment path notes usage without waiting (SQLite batches the records
/// into one job per group): every record noted by concurrent callers lands,
/// exactly once.
async fn noted_usage_records_are_all_written_once(store: Store) {
    let ledger = store.open().await;
    let record = |caller: u64, n: u64| tollgate_ledger::UsageRecord {
        challenge_id: Some(format!("noted-{caller}")),
        route: "POST /v1/chat/completions".into(),
        model: "gpt-4o".into(),
        quoted: 1_000,
        input_tokens: n,
        cached_tokens: 0,
        output_tokens: 1,
        actual_cost: u128::from(n),
        usage_reported: true,
        recorded_at: 1,
    };
    let callers: Vec<_> = (0..8u64)
        .map(|caller| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                for n in 0..50u64 {
                    Arc::clone(&ledger).note_usage(record(caller, n));
                    if n % 10 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for caller in 0..8u64 {
        let id = format!("noted-{caller}");
        let mut written = ledger.usage_for(&id).await.unwrap();
        while written.len() < 50 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            written = ledger.usage_for(&id).await.unwrap();
        }
        let mut tokens: Vec<u64> = written.iter().map(|r| r.input_tokens).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, (0..50).collect::<Vec<_>>(), "{id}");
    }
}
