#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test
use std::sync::Arc;

use tollgate_ledger::{ChargeRecord, ClaimOutcome, Durability, Ledger, SqliteLedger};

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

#[tokio::test]
async fn a_key_is_claimed_once() {
    let ledger = SqliteLedger::in_memory().unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_exactly_one_winner() {
    let ledger: Arc<dyn Ledger> = Arc::new(SqliteLedger::in_memory().unwrap());
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

#[tokio::test]
async fn released_pending_claims_can_be_taken_again_but_settled_ones_cannot() {
    let ledger = SqliteLedger::in_memory().unwrap();
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

#[tokio::test]
async fn claims_and_charges_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/ledger.db");
    {
        let ledger = SqliteLedger::open(&path, Durability::Full).unwrap();
        ledger.claim("challenge:x").await.unwrap();
        ledger
            .record_charge(&record("x", 10), &["challenge:x", "tx:0x1"])
            .await
            .unwrap();
    }
    let ledger = SqliteLedger::open(&path, Durability::Normal).unwrap();
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

#[tokio::test]
async fn recording_the_same_challenge_twice_fails_and_changes_nothing() {
    let ledger = SqliteLedger::in_memory().unwrap();
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

#[tokio::test]
async fn kv_operations_are_atomic() {
    let ledger = SqliteLedger::in_memory().unwrap();
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
