//! Channel accounting, on every backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::{CHANNEL, Store, opened, voucher};
use tollgate_ledger::{
    ChannelStatus, IdempotencyBegin, InFlight, OnChainFacts, ReserveOutcome, StoredResponse,
    VoucherOutcome, VoucherRefusal,
};

on_every_backend!(
    vouchers_are_monotonic_bounded_and_idempotent,
    reserve_commit_charges_at_most_what_was_held,
    concurrent_reservations_never_exceed_the_balance,
    concurrent_reservations_on_three_instances_never_exceed_the_balance,
    vouchers_accepted_on_one_instance_count_on_all,
    holds_and_charges_of_one_instance_bound_the_next_on_another,
    closing_and_on_chain_close_requests_stop_service,
    settlement_in_flight_survives_a_restart,
    idempotency_replays_and_refuses_a_different_body,
    amounts_beyond_u64_are_exact,
);

async fn vouchers_are_monotonic_bounded_and_idempotent(store: Store) {
    let ledger = store.open().await;
    let c = opened(&*ledger, 1_000, 100).await;
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

async fn reserve_commit_charges_at_most_what_was_held(store: Store) {
    let ledger = store.open().await;
    opened(&*ledger, 1_000, 500).await;
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

async fn concurrent_reservations_never_exceed_the_balance(store: Store) {
    let ledger = store.open().await;
    opened(&*ledger, 10_000, 50 * 7).await;
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

async fn closing_and_on_chain_close_requests_stop_service(store: Store) {
    let ledger = store.open().await;
    opened(&*ledger, 1_000, 500).await;
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

async fn settlement_in_flight_survives_a_restart(store: Store) {
    {
        let ledger = store.open().await;
        opened(&*ledger, 1_000, 400).await;
        let ReserveOutcome::Reserved { reservation, .. } =
            ledger.reserve(CHANNEL, 300).await.unwrap()
        else {
            panic!("reserve failed")
        };
        ledger.commit(reservation, 100, 3).await.unwrap();
        let flight = InFlight {
            kind: "settle".into(),
            tx_hash: "0xabc".into(),
            amount: 400,
            since: 1,
        };
        ledger.begin_settlement(CHANNEL, &flight).await.unwrap();
    }
    let ledger = store.open().await;
    let c = ledger.channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!((c.accepted, c.spent, c.reserved), (400, 100, 0));
    assert_eq!(c.inflight.as_ref().map(|f| f.amount), Some(400));

    let c = ledger
        .finish_settlement(CHANNEL, 400, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.settled, c.inflight.is_none()), (400, true));
    assert_eq!(ledger.recent_charges(1).await.unwrap().len(), 0);
    // Vouchers below what is settled are gone; the highest stays.
    assert_eq!(ledger.voucher_within(CHANNEL, 399).await.unwrap(), None);
    assert_eq!(
        ledger.voucher_covering(CHANNEL, 0).await.unwrap(),
        Some(voucher(400))
    );
}

async fn idempotency_replays_and_refuses_a_different_body(store: Store) {
    let ledger = store.open().await;
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

async fn concurrent_reservations_on_three_instances_never_exceed_the_balance(store: Store) {
    let instances = [store.open().await, store.open().await, store.open().await];
    opened(&*instances[0], 10_000, 100 * 7).await;
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let ledger = Arc::clone(&instances[i % 3]);
            tokio::spawn(async move {
                match ledger.reserve(CHANNEL, 7).await.unwrap() {
                    ReserveOutcome::Reserved { reservation, .. } => {
                        ledger.commit(reservation, 7, 1).await.unwrap();
                        true
                    }
                    ReserveOutcome::Insufficient { channel } => {
                        assert!(channel.spent + channel.reserved <= channel.accepted);
                        false
                    }
                    other => panic!("unexpected {other:?}"),
                }
            })
        })
        .collect();
    let mut served = 0;
    for task in tasks {
        served += usize::from(task.await.unwrap());
    }
    assert_eq!(served, 100);
    let c = instances[2].channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!(
        (c.spent, c.reserved, c.accepted, c.units),
        (700, 0, 700, 100)
    );
}

async fn vouchers_accepted_on_one_instance_count_on_all(store: Store) {
    let (a, b) = (store.open().await, store.open().await);
    opened(&*a, 1_000, 100).await;
    assert!(matches!(
        b.reserve(CHANNEL, 150).await.unwrap(),
        ReserveOutcome::Insufficient { .. }
    ));
    // Both instances race the same voucher: one accepts, the other sees it.
    let v = voucher(300);
    let (x, y) = tokio::join!(
        a.accept_voucher(CHANNEL, &v, 0),
        b.accept_voucher(CHANNEL, &v, 0)
    );
    let outcomes = [x.unwrap(), y.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, VoucherOutcome::Accepted(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, VoucherOutcome::Unchanged(c) if c.accepted == 300))
    );
    assert!(matches!(
        b.reserve(CHANNEL, 150).await.unwrap(),
        ReserveOutcome::Reserved { ref channel, .. } if channel.accepted == 300
    ));
    // A lower voucher arriving late on the other instance is refused.
    assert_eq!(
        a.accept_voucher(CHANNEL, &voucher(200), 0).await.unwrap(),
        VoucherOutcome::Refused(VoucherRefusal::Decreasing { accepted: 300 })
    );
}

/// Each instance sees what the other held and charged since its own last
/// look (SQLite keeps a process's holds in memory and must read the row
/// again after another process wrote it).
async fn holds_and_charges_of_one_instance_bound_the_next_on_another(store: Store) {
    let (a, b) = (store.open().await, store.open().await);
    opened(&*a, 10_000, 1_000).await;
    let held = |outcome: ReserveOutcome| match outcome {
        ReserveOutcome::Reserved { reservation, .. } => reservation,
        other => panic!("not reserved: {other:?}"),
    };
    let first = held(a.reserve(CHANNEL, 600).await.unwrap());
    assert!(matches!(
        b.reserve(CHANNEL, 500).await.unwrap(),
        ReserveOutcome::Insufficient { ref channel } if channel.reserved == 600
    ));
    let c = a.commit(first, 100, 1).await.unwrap();
    assert_eq!((c.spent, c.reserved), (100, 0));
    let other = held(b.reserve(CHANNEL, 800).await.unwrap());
    // `a` last saw 900 available; `b` holds 800 of it now.
    assert!(matches!(
        a.reserve(CHANNEL, 200).await.unwrap(),
        ReserveOutcome::Insufficient { ref channel }
            if (channel.spent, channel.reserved) == (100, 800)
    ));
    let small = held(a.reserve(CHANNEL, 100).await.unwrap());
    let c = b.commit(other, 800, 1).await.unwrap();
    assert_eq!((c.spent, c.reserved), (900, 100));
    let c = a.commit(small, 100, 1).await.unwrap();
    assert_eq!(
        (c.spent, c.reserved, c.available(), c.units),
        (1_000, 0, 0, 3)
    );
    assert!(matches!(
        b.reserve(CHANNEL, 1).await.unwrap(),
        ReserveOutcome::Insufficient { .. }
    ));
}

async fn amounts_beyond_u64_are_exact(store: Store) {
    let ledger = store.open().await;
    // SQLite keeps channel amounts in 64-bit integers (deposits above are
    // counted as i64::MAX: we authorize less, never more); PostgreSQL keeps
    // every u128 in NUMERIC(39,0).
    let big: u128 = match store {
        Store::Sqlite { .. } => i64::MAX as u128,
        Store::Postgres { .. } => u128::MAX,
    };
    let c = opened(&*ledger, big, big - 1).await;
    assert_eq!((c.deposit, c.accepted), (big, big - 1));
    let ReserveOutcome::Reserved { reservation, .. } =
        ledger.reserve(CHANNEL, big - 3).await.unwrap()
    else {
        panic!("reserve failed")
    };
    let c = ledger.commit(reservation, big - 4, 1).await.unwrap();
    assert_eq!((c.spent, c.reserved, c.available()), (big - 4, 0, 3));
}

/// A cached record refreshed in place is exactly the newer one, strings,
/// options and amounts alike, whichever way they changed.
#[test]
fn a_record_refreshed_in_place_is_the_newer_one() {
    let mut cached = common::channel(1_000);
    cached.inflight = Some(InFlight {
        kind: "settle".into(),
        tx_hash: "0xaa".into(),
        amount: 5,
        since: 1,
    });
    let mut newer = common::channel(2_000);
    newer.channel_id = "0xother".into();
    newer.descriptor = Some("{\"salt\":\"0x01\"}".into());
    newer.accepted = 900;
    newer.spent = 700;
    newer.reserved = 100;
    newer.units = 12;
    newer.close_requested_at = 77;
    newer.status = ChannelStatus::Closing;
    newer.updated_at = 9;
    newer.last_settled_at = Some(8);
    cached.refresh_from(&newer);
    assert_eq!(cached, newer);
    // And back: fields the newer record lacks are cleared, not kept.
    let older = common::channel(1_000);
    cached.refresh_from(&older);
    assert_eq!(cached, older);
}
