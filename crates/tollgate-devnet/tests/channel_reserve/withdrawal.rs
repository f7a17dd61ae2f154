//! The payer's way out: requestClose, the grace period, withdraw.

use alloy::primitives::aliases::U96;
use tollgate_devnet::ITIP20ChannelReserve::{self as Reserve};

use super::*;

#[tokio::test]
async fn a_payer_withdraws_exactly_after_the_grace_period() {
    let chain = Chain::start().await;
    let payer = dev(PAYER);
    let payee = dev(PAYEE);
    let opened = chain
        .open(&payer, &Terms::new(payee.address(), 1_000_000), Nonce::Lane)
        .await;
    let (d, id) = (opened.descriptor.clone(), opened.id);
    let sent = chain
        .call_reserve(
            &payee,
            settle_call(&d, 300_000, voucher(&payer, id, 300_000)),
        )
        .await;
    assert!(sent.succeeded(), "{}", sent.receipt);

    // No close requested: not ready.
    assert_eq!(
        chain.revert(payer.address(), &withdraw_call(&d)).await,
        error::<Reserve::CloseNotReady>()
    );
    let sent = chain.call_reserve(&payer, request_close_call(&d)).await;
    assert!(sent.succeeded());
    let requested_at = block_timestamp(&chain, &sent).await;
    assert_eq!(
        chain.revert(payee.address(), &withdraw_call(&d)).await,
        error::<Reserve::NotPayer>()
    );
    // The payee may still settle during the grace period.
    let sent = chain
        .call_reserve(
            &payee,
            settle_call(&d, 400_000, voucher(&payer, id, 400_000)),
        )
        .await;
    assert!(sent.succeeded(), "{}", sent.receipt);

    // One second before the end: refused, and nothing moves.
    next_block_at(&chain, requested_at + 899).await;
    let payer_before = chain.balance(path_usd(), payer.address()).await;
    let early = chain.call_reserve(&payer, withdraw_call(&d)).await;
    assert!(!early.succeeded());
    assert_eq!(block_timestamp(&chain, &early).await, requested_at + 899);
    assert_eq!(
        chain.balance(path_usd(), payer.address()).await,
        payer_before
    );

    // At closeRequestedAt + CLOSE_GRACE_PERIOD exactly: the rest is the payer's.
    next_block_at(&chain, requested_at + 900).await;
    let sent = chain.call_reserve(&payer, withdraw_call(&d)).await;
    assert!(sent.succeeded(), "{}", sent.receipt);
    assert_eq!(block_timestamp(&chain, &sent).await, requested_at + 900);
    let closed = sent.events::<Reserve::ChannelClosed>();
    assert_eq!(
        (closed[0].settledToPayee, closed[0].refundedToPayer),
        (U96::from(400_000u64), U96::from(600_000u64))
    );
    assert_eq!(
        chain.balance(path_usd(), payer.address()).await - payer_before,
        600_000
    );
    assert_eq!(chain.state(id).await, (0, 0, 0));
    assert_eq!(credits(&chain, payer.address()).await, 1);
    assert_eq!(
        chain.revert(payer.address(), &withdraw_call(&d)).await,
        error::<Reserve::ChannelNotFound>()
    );
}
