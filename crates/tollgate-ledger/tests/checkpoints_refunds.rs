//! Stream checkpoints (delivered usage charged while a stream runs, kept
//! across a restart) and charge refunds (at most one per charge, signed
//! bytes kept until confirmed), on a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use tollgate_ledger::{
    ChannelBook, ChannelRecord, ChannelStatus, Durability, RefundBook, RefundRecord, RefundState,
    ReserveOutcome, SqliteLedger, StoredVoucher,
};

const CHANNEL: &str = "0x00000000000000000000000000000000000000000000000000000000000000bb";

fn channel(deposit: u128) -> ChannelRecord {
    ChannelRecord {
        channel_id: CHANNEL.into(),
        protocol: "v1".into(),
        escrow: "0xe5c0".into(),
        chain_id: 42431,
        payer: "0xpayer".into(),
        payee: "0xpayee".into(),
        token: "0x20c0".into(),
        authorized_signer: "0xsigner".into(),
        descriptor: None,
        deposit,
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

async fn opened(ledger: &SqliteLedger, deposit: u128, accepted: u128) {
    let voucher = StoredVoucher {
        cumulative: accepted,
        signature: "0xsig".into(),
    };
    ledger
        .open_channel(&channel(deposit), Some(&voucher))
        .await
        .unwrap();
}

async fn reserve(ledger: &SqliteLedger, amount: u128) -> i64 {
    match ledger.reserve(CHANNEL, amount).await.unwrap() {
        ReserveOutcome::Reserved { reservation, .. } => reservation,
        other => panic!("reserve failed: {other:?}"),
    }
}

async fn state(ledger: &SqliteLedger) -> (u128, u128, u128) {
    let c = ledger.channel(CHANNEL).await.unwrap().unwrap();
    (c.spent, c.reserved, c.available())
}

#[tokio::test]
async fn checkpoints_move_delivered_usage_to_spent_within_the_hold() {
    let ledger = SqliteLedger::in_memory().unwrap();
    opened(&ledger, 10_000, 1_000).await;
    let id = reserve(&ledger, 300).await;
    assert_eq!(state(&ledger).await, (0, 300, 700));

    assert_eq!(
        ledger.checkpoint_reservation(id, 120).await.unwrap(),
        Some(120)
    );
    assert_eq!(state(&ledger).await, (120, 180, 700));
    // Never lowered, never above the hold.
    assert_eq!(
        ledger.checkpoint_reservation(id, 50).await.unwrap(),
        Some(120)
    );
    assert_eq!(
        ledger.checkpoint_reservation(id, 5_000).await.unwrap(),
        Some(300)
    );
    assert_eq!(state(&ledger).await, (300, 0, 700));

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
    let id = reserve(&ledger, 200).await;
    ledger.checkpoint_reservation(id, 150).await.unwrap();
    let c = ledger.commit(id, 100, 1).await.unwrap();
    assert_eq!((c.spent, c.reserved), (450, 0));

    // A released reservation keeps what it checkpointed.
    let id = reserve(&ledger, 200).await;
    ledger.checkpoint_reservation(id, 80).await.unwrap();
    ledger.release_reservation(id).await.unwrap();
    assert_eq!(state(&ledger).await, (530, 0, 470));
    assert_eq!(ledger.checkpoint_reservation(id, 90).await.unwrap(), None);
}

#[tokio::test]
async fn a_restart_releases_the_hold_but_keeps_the_checkpointed_part() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        let ledger = SqliteLedger::open(&path, Durability::Full).unwrap();
        opened(&ledger, 10_000, 1_000).await;
        let id = reserve(&ledger, 400).await;
        ledger.checkpoint_reservation(id, 64).await.unwrap();
        ledger.checkpoint_reservation(id, 128).await.unwrap();
        // The process dies here, mid-stream.
    }
    let ledger = SqliteLedger::open(&path, Durability::Full).unwrap();
    assert_eq!(ledger.release_all_reservations().await.unwrap(), 1);
    assert_eq!(state(&ledger).await, (128, 0, 872));
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

#[tokio::test]
async fn a_refund_is_recorded_once_and_keeps_its_signed_bytes_until_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        let ledger = SqliteLedger::open(&path, Durability::Full).unwrap();
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
    let ledger = SqliteLedger::open(&path, Durability::Full).unwrap();
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
