//! Channel accounting on a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use tollgate_ledger::{
    ChannelBook, ChannelRecord, ChannelStatus, Durability, IdempotencyBegin, InFlight, Ledger,
    OnChainFacts, ReserveOutcome, SqliteLedger, StoredResponse, StoredVoucher, VoucherOutcome,
    VoucherRefusal,
};

const CHANNEL: &str = "0x00000000000000000000000000000000000000000000000000000000000000aa";

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

fn voucher(cumulative: u128) -> StoredVoucher {
    StoredVoucher {
        cumulative,
        signature: format!("0xsig{cumulative}"),
    }
}

async fn opened(ledger: &SqliteLedger, deposit: u128, initial: u128) -> ChannelRecord {
    ledger
        .open_channel(&channel(deposit), Some(&voucher(initial)))
        .await
        .unwrap()
}

#[tokio::test]
async fn vouchers_are_monotonic_bounded_and_idempotent() {
    let ledger = SqliteLedger::in_memory().unwrap();
    let c = opened(&ledger, 1_000, 100).await;
    assert_eq!(
        (c.accepted, c.deposit, c.status),
        (100, 1_000, ChannelStatus::Open)
    );

    let accepted = ledger
        .accept_voucher(CHANNEL, &voucher(300), 50)
        .await
        .unwrap();
    assert!(matches!(accepted, VoucherOutcome::Accepted(ref c) if c.accepted == 300));
    let again = ledger
        .accept_voucher(CHANNEL, &voucher(300), 50)
        .await
        .unwrap();
    assert!(matches!(again, VoucherOutcome::Unchanged(ref c) if c.accepted == 300));
    assert_eq!(
        ledger
            .accept_voucher(CHANNEL, &voucher(200), 0)
            .await
            .unwrap(),
        VoucherOutcome::Refused(VoucherRefusal::Decreasing { accepted: 300 })
    );
    assert_eq!(
        ledger
            .accept_voucher(CHANNEL, &voucher(320), 50)
            .await
            .unwrap(),
        VoucherOutcome::Refused(VoucherRefusal::DeltaTooSmall { accepted: 300 })
    );
    assert_eq!(
        ledger
            .accept_voucher(CHANNEL, &voucher(1_001), 0)
            .await
            .unwrap(),
        VoucherOutcome::Refused(VoucherRefusal::ExceedsDeposit { deposit: 1_000 })
    );
    assert_eq!(
        ledger
            .accept_voucher("0xunknown", &voucher(1), 0)
            .await
            .unwrap(),
        VoucherOutcome::Refused(VoucherRefusal::NotFound)
    );
    // The smallest voucher covering an amount is what a close captures.
    assert_eq!(
        ledger.voucher_covering(CHANNEL, 101).await.unwrap(),
        Some(voucher(300))
    );
    assert_eq!(
        ledger.voucher_covering(CHANNEL, 100).await.unwrap(),
        Some(voucher(100))
    );
    assert_eq!(ledger.voucher_covering(CHANNEL, 301).await.unwrap(), None);
}

#[tokio::test]
async fn reserve_commit_charges_at_most_what_was_held() {
    let ledger = SqliteLedger::in_memory().unwrap();
    opened(&ledger, 1_000, 500).await;
    let ReserveOutcome::Reserved {
        reservation,
        channel,
    } = ledger.reserve(CHANNEL, 200).await.unwrap()
    else {
        panic!("reserve failed")
    };
    assert_eq!((channel.reserved, channel.available()), (200, 300));
    let after = ledger.commit(reservation, 120, 7).await.unwrap();
    assert_eq!((after.spent, after.reserved, after.units), (120, 0, 7));

    // A commit above the hold is capped at the hold.
    let ReserveOutcome::Reserved { reservation, .. } = ledger.reserve(CHANNEL, 50).await.unwrap()
    else {
        panic!("reserve failed")
    };
    let after = ledger.commit(reservation, 10_000, 1).await.unwrap();
    assert_eq!(after.spent, 170);

    // Growing a reservation draws on what is left, and fails past it.
    let ReserveOutcome::Reserved { reservation, .. } = ledger.reserve(CHANNEL, 300).await.unwrap()
    else {
        panic!("reserve failed")
    };
    assert!(matches!(
        ledger.grow_reservation(reservation, 31).await.unwrap(),
        ReserveOutcome::Insufficient { .. }
    ));
    assert!(matches!(
        ledger.grow_reservation(reservation, 30).await.unwrap(),
        ReserveOutcome::Reserved { ref channel, .. } if channel.available() == 0
    ));
    ledger.release_reservation(reservation).await.unwrap();
    let c = ledger.channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!((c.spent, c.reserved, c.available()), (170, 0, 330));
}

#[tokio::test]
async fn concurrent_reservations_never_exceed_the_balance() {
    let ledger = Arc::new(SqliteLedger::in_memory().unwrap());
    opened(&ledger, 10_000, 50 * 7).await;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move { ledger.reserve(CHANNEL, 7).await.unwrap() })
        })
        .collect();
    let mut served = 0;
    for task in tasks {
        if let ReserveOutcome::Reserved { reservation, .. } = task.await.unwrap() {
            ledger.commit(reservation, 7, 1).await.unwrap();
            served += 1;
        }
    }
    assert_eq!(served, 50);
    let c = ledger.channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!((c.spent, c.reserved, c.accepted), (350, 0, 350));
}

#[tokio::test]
async fn closing_and_on_chain_close_requests_stop_service() {
    let ledger = SqliteLedger::in_memory().unwrap();
    opened(&ledger, 1_000, 500).await;
    let facts = OnChainFacts {
        deposit: 2_000,
        settled: 0,
        close_requested_at: 1_700_000_000,
        finalized: false,
    };
    let c = ledger
        .refresh_channel(CHANNEL, facts)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.deposit, 2_000);
    assert_eq!(
        ledger.reserve(CHANNEL, 1).await.unwrap(),
        ReserveOutcome::Unavailable(VoucherRefusal::Closing)
    );
    assert_eq!(
        ledger
            .accept_voucher(CHANNEL, &voucher(600), 0)
            .await
            .unwrap(),
        VoucherOutcome::Refused(VoucherRefusal::Closing)
    );
    let finalized = OnChainFacts {
        finalized: true,
        ..facts
    };
    ledger.refresh_channel(CHANNEL, finalized).await.unwrap();
    assert_eq!(
        ledger.reserve(CHANNEL, 1).await.unwrap(),
        ReserveOutcome::Unavailable(VoucherRefusal::Finalized)
    );
}

#[tokio::test]
async fn settlement_in_flight_survives_a_restart_and_reservations_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        let ledger = SqliteLedger::open(&path, Durability::Normal).unwrap();
        opened(&ledger, 1_000, 400).await;
        let ReserveOutcome::Reserved { reservation, .. } =
            ledger.reserve(CHANNEL, 300).await.unwrap()
        else {
            panic!("reserve failed")
        };
        ledger.commit(reservation, 100, 3).await.unwrap();
        ledger.reserve(CHANNEL, 250).await.unwrap(); // dies with the process
        let flight = InFlight {
            kind: "settle".into(),
            tx_hash: "0xabc".into(),
            amount: 400,
            since: 1,
        };
        ledger.begin_settlement(CHANNEL, &flight).await.unwrap();
        assert_eq!(
            ledger.idempotency_begin("k", "f").await.unwrap(),
            IdempotencyBegin::Started
        );
    }
    let ledger = SqliteLedger::open(&path, Durability::Normal).unwrap();
    assert_eq!(ledger.release_all_reservations().await.unwrap(), 1);
    let c = ledger.channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!((c.accepted, c.spent, c.reserved), (400, 100, 0));
    assert_eq!(c.inflight.as_ref().map(|f| f.amount), Some(400));
    // The unfinished idempotent request left nothing to replay.
    assert_eq!(
        ledger.idempotency_begin("k", "f").await.unwrap(),
        IdempotencyBegin::Started
    );

    let c = ledger
        .finish_settlement(CHANNEL, 400, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.settled, c.inflight.is_none()), (400, true));
    assert_eq!(ledger.recent_charges(1).await.unwrap().len(), 0);
}

#[tokio::test]
async fn idempotency_replays_and_refuses_a_different_body() {
    let ledger = SqliteLedger::in_memory().unwrap();
    assert_eq!(
        ledger.idempotency_begin("key", "body-a").await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        ledger.idempotency_begin("key", "body-a").await.unwrap(),
        IdempotencyBegin::InProgress
    );
    let response = StoredResponse {
        status: 200,
        headers: vec![("payment-receipt".into(), "r".into())],
        body: b"{}".to_vec(),
    };
    ledger.idempotency_finish("key", &response).await.unwrap();
    assert_eq!(
        ledger.idempotency_begin("key", "body-a").await.unwrap(),
        IdempotencyBegin::Done(response)
    );
    assert_eq!(
        ledger.idempotency_begin("key", "body-b").await.unwrap(),
        IdempotencyBegin::Mismatch
    );
    ledger.idempotency_begin("other", "x").await.unwrap();
    ledger.idempotency_abandon("other").await.unwrap();
    assert_eq!(
        ledger.idempotency_begin("other", "x").await.unwrap(),
        IdempotencyBegin::Started
    );
}

#[allow(dead_code)]
fn is_ledger(_: &dyn Ledger) {}
