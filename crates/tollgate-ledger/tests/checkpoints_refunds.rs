//! Stream checkpoints (delivered usage charged while a stream runs, kept
//! across a restart) and charge refunds (at most one per charge, signed
//! bytes kept until confirmed), on every backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{CHANNEL, Store, opened};
use tollgate_ledger::{Ledger, RefundRecord, RefundState, ReserveOutcome};

on_every_backend!(
    checkpoints_move_delivered_usage_to_spent_within_the_hold,
    a_restart_releases_the_hold_but_keeps_the_checkpointed_part,
    a_refund_is_recorded_once_and_keeps_its_signed_bytes_until_confirmed,
);

async fn reserve(ledger: &dyn Ledger, amount: u128) -> i64 {
    match ledger.reserve(CHANNEL, amount).await.unwrap() {
        ReserveOutcome::Reserved { reservation, .. } => reservation,
        other => panic!("reserve failed: {other:?}"),
    }
}

async fn state(ledger: &dyn Ledger) -> (u128, u128, u128) {
    let c = ledger.channel(CHANNEL).await.unwrap().unwrap();
    (c.spent, c.reserved, c.available())
}

async fn checkpoints_move_delivered_usage_to_spent_within_the_hold(store: Store) {
    let ledger = &*store.open().await;
    opened(ledger, 10_000, 1_000).await;
    let id = reserve(ledger, 300).await;
    assert_eq!(state(ledger).await, (0, 300, 700));

    assert_eq!(
        ledger.checkpoint_reservation(id, 120).await.unwrap(),
        Some(120)
    );
    assert_eq!(state(ledger).await, (120, 180, 700));
    // Never lowered, never above the hold.
    assert_eq!(
        ledger.checkpoint_reservation(id, 50).await.unwrap(),
        Some(120)
    );
    assert_eq!(
        ledger.checkpoint_reservation(id, 5_000).await.unwrap(),
        Some(300)
    );
    assert_eq!(state(ledger).await, (300, 0, 700));

    // The hold grows again; the commit charges the whole cost once.
    assert!(matches!(
        ledger.grow_reservation(id, 100).await.unwrap(),
        ReserveOutcome::Reserved { .. }
    ));
    let c = ledger.commit(id, 350, 9).await.unwrap();
    assert_eq!(
        (c.spent, c.reserved, c.available(), c.units),
        (350, 0, 650, 9)
    );

    // A commit below the checkpoints (the upstream reported less than was
    // counted) charges the report.
    let id = reserve(ledger, 200).await;
    ledger.checkpoint_reservation(id, 150).await.unwrap();
    let c = ledger.commit(id, 100, 1).await.unwrap();
    assert_eq!((c.spent, c.reserved), (450, 0));

    // A released reservation keeps what it checkpointed.
    let id = reserve(ledger, 200).await;
    ledger.checkpoint_reservation(id, 80).await.unwrap();
    ledger.release_reservation(id).await.unwrap();
    assert_eq!(state(ledger).await, (530, 0, 470));
    assert_eq!(ledger.checkpoint_reservation(id, 90).await.unwrap(), None);
}

async fn a_restart_releases_the_hold_but_keeps_the_checkpointed_part(store: Store) {
    {
        let ledger = &*store.open_named("gw", Duration::from_secs(60)).await;
        opened(ledger, 10_000, 1_000).await;
        let id = reserve(ledger, 400).await;
        ledger.checkpoint_reservation(id, 64).await.unwrap();
        ledger.checkpoint_reservation(id, 128).await.unwrap();
        // The process dies here, mid-stream.
    }
    // The same instance restarts: it releases its hold, the checkpoints stay.
    let ledger = &*store.open_named("gw", Duration::from_secs(60)).await;
    assert_eq!(ledger.start_instance().await.unwrap().reservations, 1);
    assert_eq!(state(ledger).await, (128, 0, 872));
}

fn refund(challenge_id: &str, amount: u128) -> RefundRecord {
    RefundRecord {
        challenge_id: challenge_id.into(),
        route: "POST /v1/chat/completions".into(),
        charge_reference: "0xcharge".into(),
        payer: None,
        amount,
        currency: "0x20c0".into(),
        reason: "undelivered".into(),
        state: RefundState::Owed,
        tx_hash: None,
        signed_tx: None,
        created_at: 0,
        updated_at: 0,
    }
}

async fn a_refund_is_recorded_once_and_keeps_its_signed_bytes_until_confirmed(store: Store) {
    {
        let ledger = store.open().await;
        assert!(ledger.record_refund(&refund("c1", 4_037)).await.unwrap());
        assert!(
            !ledger.record_refund(&refund("c1", 9_999)).await.unwrap(),
            "one refund per charge"
        );
        ledger.set_refund_payer("c1", "0xpayer").await.unwrap();
        ledger.set_refund_payer("c1", "0xother").await.unwrap();
        assert!(ledger.refund_signed("c1", "0xtx1", "0x76aa").await.unwrap());
        assert!(
            !ledger.refund_signed("c1", "0xtx2", "0x76bb").await.unwrap(),
            "a sent refund is not signed again"
        );
        assert!(ledger.record_refund(&refund("c2", 10)).await.unwrap());
        // The process dies before the confirmation.
    }
    let ledger = store.open().await;
    let open = ledger.open_refunds().await.unwrap();
    assert_eq!(open.len(), 2);
    let c1 = &open[0];
    assert_eq!(
        (
            c1.amount,
            c1.payer.as_deref(),
            c1.state,
            c1.tx_hash.as_deref(),
            c1.signed_tx.as_deref()
        ),
        (
            4_037,
            Some("0xpayer"),
            RefundState::Sent,
            Some("0xtx1"),
            Some("0x76aa")
        )
    );

    // A reverted transfer is owed again and may be signed anew.
    ledger.refund_reverted("c1").await.unwrap();
    let c1 = ledger.refund("c1").await.unwrap().unwrap();
    assert_eq!((c1.state, c1.tx_hash), (RefundState::Owed, None));
    assert!(ledger.refund_signed("c1", "0xtx3", "0x76cc").await.unwrap());
    ledger.refund_confirmed("c1").await.unwrap();
    let c1 = ledger.refund("c1").await.unwrap().unwrap();
    assert_eq!(
        (c1.state, c1.tx_hash.as_deref(), c1.signed_tx),
        (RefundState::Refunded, Some("0xtx3"), None)
    );
    assert_eq!(ledger.open_refunds().await.unwrap().len(), 1);
    let recent = ledger.recent_refunds(10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert!(ledger.refund("nope").await.unwrap().is_none());
}
