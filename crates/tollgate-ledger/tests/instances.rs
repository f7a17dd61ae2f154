//! Several instances on one store, on every backend: holds belong to their
//! instance and live with its lease; restarts release only their own; one
//! settlement leader; voucher events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{CHANNEL, Store, opened, voucher};
use tollgate_ledger::{
    ChannelEvent, ClaimOutcome, Hold, HoldsReleased, IdempotencyBegin, Ledger, LedgerError,
    ReserveOutcome,
};

on_every_backend!(
    a_restart_releases_only_its_own_holds,
    holds_of_an_instance_whose_lease_ran_out_are_free,
    a_renewed_lease_keeps_holds_alive,
    an_instance_whose_lease_lapsed_takes_no_new_holds,
    a_hold_released_with_its_lease_is_never_another_holds,
    exactly_one_settlement_leader_and_a_successor,
    accepted_vouchers_are_announced,
    releases_handed_over_are_done_soon,
    instances_starting_together_migrate_once,
);

const LONG: Duration = Duration::from_secs(60);
/// Long enough for a test's setup, short enough to wait out.
const SHORT: Duration = Duration::from_millis(1500);

async fn reserve(ledger: &dyn Ledger, amount: u128) -> ReserveOutcome {
    ledger.reserve(CHANNEL, amount).await.unwrap()
}

fn reserved(outcome: &ReserveOutcome) -> bool {
    matches!(outcome, ReserveOutcome::Reserved { .. })
}

/// Holds one of everything: a reservation of `amount`, a claim and an
/// idempotency key, all named after `tag`.
async fn hold_everything(ledger: &dyn Ledger, tag: &str, amount: u128) {
    assert!(reserved(&reserve(ledger, amount).await));
    assert_eq!(
        ledger.claim(&format!("claim:{tag}")).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        ledger
            .idempotency_begin(&format!("key:{tag}"), "body")
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
}

async fn a_restart_releases_only_its_own_holds(store: Store) {
    let a = store.open_named("gw-a", LONG).await;
    let b = store.open_named("gw-b", LONG).await;
    opened(&*a, 1_000, 1_000).await;
    hold_everything(&*a, "a", 300).await;
    hold_everything(&*b, "b", 200).await;
    drop(a); // dies with its holds

    // The same configured id comes back: its old holds go, b's stay.
    let a = store.open_named("gw-a", LONG).await;
    assert_eq!(
        a.start_instance().await.unwrap(),
        HoldsReleased {
            reservations: 1,
            claims: 1,
            idempotency_keys: 1
        }
    );
    let c = a.channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!(c.reserved, 200, "b's reservation is untouched");
    assert_eq!(a.claim("claim:a").await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(
        a.claim("claim:b").await.unwrap(),
        ClaimOutcome::AlreadyClaimed
    );
    assert_eq!(
        a.idempotency_begin("key:a", "body").await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        a.idempotency_begin("key:b", "body").await.unwrap(),
        IdempotencyBegin::InProgress
    );
    // b's own releases still work (they are its holds), a's do not touch them.
    a.release_claim("claim:b").await.unwrap();
    assert_eq!(
        a.claim("claim:b").await.unwrap(),
        ClaimOutcome::AlreadyClaimed
    );
    b.release_claim("claim:b").await.unwrap();
    assert_eq!(a.claim("claim:b").await.unwrap(), ClaimOutcome::Claimed);
    // A fresh start of a live instance releases nothing of anyone's.
    assert_eq!(
        b.start_instance().await.unwrap().reservations,
        1,
        "b releases its own (a restart of b)"
    );
    assert_eq!(a.channel(CHANNEL).await.unwrap().unwrap().reserved, 0);
}

async fn holds_of_an_instance_whose_lease_ran_out_are_free(store: Store) {
    let dying = store.open_named("gw-dying", SHORT).await;
    let live = store.open_named("gw-live", LONG).await;
    opened(&*live, 1_000, 1_000).await;
    hold_everything(&*dying, "d", 1_000).await;
    drop(dying); // no keeper renews its lease any more

    // While its lease runs, its holds count.
    assert!(matches!(
        reserve(&*live, 1).await,
        ReserveOutcome::Insufficient { .. }
    ));
    assert_eq!(
        live.claim("claim:d").await.unwrap(),
        ClaimOutcome::AlreadyClaimed
    );
    assert_eq!(
        live.idempotency_begin("key:d", "body").await.unwrap(),
        IdempotencyBegin::InProgress
    );
    assert!(live.release_expired_holds().await.unwrap().is_empty());

    tokio::time::sleep(SHORT + Duration::from_millis(300)).await;
    // Its lease ran out: a reserve that comes up short frees them itself…
    let ReserveOutcome::Reserved { channel, .. } = reserve(&*live, 600).await else {
        panic!("the expired hold still counts")
    };
    assert_eq!((channel.reserved, channel.spent), (600, 0));
    // …claims and keys are taken over…
    assert_eq!(live.claim("claim:d").await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(
        live.idempotency_begin("key:d", "other body").await.unwrap(),
        IdempotencyBegin::Started
    );
    // …and the sweeper has nothing left but what it now owns.
    assert!(live.release_expired_holds().await.unwrap().is_empty());
    assert_eq!(live.channel(CHANNEL).await.unwrap().unwrap().reserved, 600);
}

async fn a_renewed_lease_keeps_holds_alive(store: Store) {
    let busy = store.open_named("gw-busy", SHORT).await;
    let other = store.open_named("gw-other", LONG).await;
    let keeper = tollgate_ledger::spawn_keeper(&busy);
    opened(&*other, 1_000, 1_000).await;
    let ReserveOutcome::Reserved { reservation, .. } = reserve(&*busy, 1_000).await else {
        panic!("reserve failed")
    };
    tokio::time::sleep(SHORT * 2).await;
    assert!(other.release_expired_holds().await.unwrap().is_empty());
    assert!(matches!(
        reserve(&*other, 1).await,
        ReserveOutcome::Insufficient { .. }
    ));
    let c = busy.commit(reservation, 400, 4).await.unwrap();
    assert_eq!((c.spent, c.reserved), (400, 0));
    keeper.abort();
}

async fn an_instance_whose_lease_lapsed_takes_no_new_holds(store: Store) {
    let stale = store.open_named("gw-stale", SHORT).await;
    opened(&*stale, 1_000, 1_000).await;
    assert!(reserved(&reserve(&*stale, 10).await));
    // Nobody renews: after two thirds of the lease it refuses new holds
    // (another instance may release them any moment after the lease).
    tokio::time::sleep(SHORT * 3 / 4).await;
    assert!(matches!(
        stale.reserve(CHANNEL, 10).await,
        Err(LedgerError::LeaseLost)
    ));
    assert!(matches!(
        stale.claim("c").await,
        Err(LedgerError::LeaseLost)
    ));
    assert!(LedgerError::LeaseLost.is_unavailable());
    stale.renew_lease().await.unwrap();
    assert!(reserved(&reserve(&*stale, 10).await));
}

async fn a_hold_released_with_its_lease_is_never_another_holds(store: Store) {
    // An instance stalls past its lease while it holds a reservation; a live
    // one frees it and holds the balance anew. When the stalled one wakes
    // and commits, it must find its hold gone, not charge a newer one that
    // took its id.
    let stalled = store.open_named("gw-stalled", SHORT).await;
    let live = store.open_named("gw-live", LONG).await;
    opened(&*live, 1_000, 1_000).await;
    let ReserveOutcome::Reserved {
        reservation: old, ..
    } = reserve(&*stalled, 1_000).await
    else {
        panic!("reserve failed")
    };
    tokio::time::sleep(SHORT + Duration::from_millis(300)).await;
    let mut newer = Vec::new();
    for amount in [600, 400] {
        let ReserveOutcome::Reserved { reservation, .. } = reserve(&*live, amount).await else {
            panic!("the expired hold still counts")
        };
        newer.push(reservation);
    }
    assert!(
        !newer.contains(&old),
        "an id was reused: {old} in {newer:?}"
    );

    assert!(stalled.commit(old, 1_000, 1).await.is_err());
    let c = live.channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!((c.spent, c.reserved), (0, 1_000), "nothing charged");
    live.commit(newer[0], 500, 1).await.unwrap();
    let c = live.commit(newer[1], 400, 1).await.unwrap();
    assert_eq!((c.spent, c.reserved), (900, 0));
}

async fn exactly_one_settlement_leader_and_a_successor(store: Store) {
    let first = store.open_named("gw-1", SHORT).await;
    let second = store.open_named("gw-2", LONG).await;
    let keeper = tollgate_ledger::spawn_keeper(&first);
    assert!(first.lead_settlement().await.unwrap());
    assert!(!second.lead_settlement().await.unwrap());
    assert!(first.lead_settlement().await.unwrap(), "leadership is kept");
    tokio::time::sleep(SHORT * 2).await;
    assert!(
        !second.lead_settlement().await.unwrap(),
        "a live leader keeps it past its lease length"
    );

    // The leader dies: its lease (SQLite) or its lock's connection
    // (PostgreSQL) goes, and the other instance takes over.
    keeper.abort();
    drop(first);
    let mut took_over = false;
    for _ in 0..40 {
        if second.lead_settlement().await.unwrap() {
            took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(took_over, "a successor leads");
    let third = store.open_named("gw-3", LONG).await;
    assert!(!third.lead_settlement().await.unwrap());
}

async fn accepted_vouchers_are_announced(store: Store) {
    let a = store.open().await;
    let b = store.open().await;
    opened(&*a, 1_000, 100).await;
    // SQLite announces to the accepting process only; PostgreSQL to all.
    let listener = if store.events_cross_instances() {
        Arc::clone(&a)
    } else {
        Arc::clone(&b)
    };
    let mut events = listener.channel_events();
    tokio::time::sleep(Duration::from_millis(100)).await; // the LISTEN is up
    b.accept_voucher(CHANNEL, &voucher(200), 0).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await.unwrap() {
                ChannelEvent::Resync => continue,
                event => return event,
            }
        }
    })
    .await
    .expect("the voucher is announced");
    assert_eq!(event, ChannelEvent::VoucherAccepted(CHANNEL.into()));
    // An unchanged resubmission announces nothing new.
    b.accept_voucher(CHANNEL, &voucher(200), 0).await.unwrap();
    b.accept_voucher(CHANNEL, &voucher(300), 0).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, ChannelEvent::VoucherAccepted(CHANNEL.into()));
}

async fn releases_handed_over_are_done_soon(store: Store) {
    let ledger = store.open().await;
    opened(&*ledger, 1_000, 1_000).await;
    let ReserveOutcome::Reserved { reservation, .. } = reserve(&*ledger, 700).await else {
        panic!("reserve failed")
    };
    ledger.claim("claim:x").await.unwrap();
    ledger.idempotency_begin("key:x", "b").await.unwrap();
    // What a value's Drop does: hand the hold over without waiting.
    ledger.release_soon(Hold::Reservation(reservation));
    ledger.release_soon(Hold::Claim("claim:x".into()));
    ledger.release_soon(Hold::IdempotencyKey("key:x".into()));
    assert_eq!(ledger.flush_releases().await, 0);
    let c = ledger.channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!(c.reserved, 0);
    assert_eq!(
        ledger.claim("claim:x").await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        ledger.idempotency_begin("key:x", "b").await.unwrap(),
        IdempotencyBegin::Started
    );
}

async fn instances_starting_together_migrate_once(store: Store) {
    // Several gateways start at once on an empty store: each migration is
    // applied once (PostgreSQL: under an advisory lock; SQLite: under the
    // write lock), and all of them work.
    let instances = futures::future::join_all((0..4).map(|_| store.open())).await;
    opened(&*instances[0], 1_000, 1_000).await;
    for (i, ledger) in instances.iter().enumerate() {
        assert!(reserved(&reserve(&**ledger, 100).await), "instance {i}");
    }
    let c = instances[3].channel(CHANNEL).await.unwrap().unwrap();
    assert_eq!(c.reserved, 400);
}
