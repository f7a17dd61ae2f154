//! settle, topUp, requestClose and close, with their refusals.

use alloy::primitives::{B256, Bytes, U256, aliases::U96};

use tollgate_devnet::CHANNEL_RESERVE_ADDRESS;
use tollgate_devnet::ITIP20ChannelReserve::{self as Reserve};
use tollgate_devnet::reserve;

use super::*;

#[tokio::test]
async fn settle_top_up_and_close_follow_the_tip() {
    let chain = Chain::start().await;
    let payer = dev(PAYER);
    let payee = dev(PAYEE);
    let operator = dev(OPERATOR);
    let stranger = dev(STRANGER);
    // Vouchers come from a delegated signer, not the payer.
    let signer = alloy::signers::local::PrivateKeySigner::random();
    let mut terms = Terms::new(payee.address(), 1_000_000);
    terms.operator = operator.address();
    terms.authorized_signer = signer.address();
    let opened = chain.open(&payer, &terms, Nonce::Lane).await;
    let (d, id) = (opened.descriptor.clone(), opened.id);

    // settle by the payee: exactly the delta moves to the payee.
    let payee_before = chain.balance(path_usd(), payee.address()).await;
    let sent = chain
        .call_reserve(
            &payee,
            settle_call(&d, 100_000, voucher(&signer, id, 100_000)),
        )
        .await;
    assert!(sent.succeeded(), "{}", sent.receipt);
    let settled = sent.events::<Reserve::Settled>();
    assert_eq!(settled.len(), 1);
    assert_eq!(
        (
            settled[0].cumulativeAmount,
            settled[0].deltaPaid,
            settled[0].newSettled
        ),
        (
            U96::from(100_000u64),
            U96::from(100_000u64),
            U96::from(100_000u64)
        )
    );
    assert_eq!(
        chain.balance(path_usd(), payee.address()).await - payee_before,
        100_000
    );
    assert_eq!(chain.state(id).await, (100_000, 1_000_000, 0));
    // ...and by the operator, still paying the payee.
    let payee_before = chain.balance(path_usd(), payee.address()).await;
    let sent = chain
        .call_reserve(
            &operator,
            settle_call(&d, 250_000, voucher(&signer, id, 250_000)),
        )
        .await;
    assert!(sent.succeeded(), "{}", sent.receipt);
    assert_eq!(
        sent.events::<Reserve::Settled>()[0].deltaPaid,
        U96::from(150_000u64)
    );
    assert_eq!(
        chain.balance(path_usd(), payee.address()).await - payee_before,
        150_000
    );

    // settle refusals.
    let good = voucher(&signer, id, 300_000);
    let at = |amount, signature| settle_call(&d, amount, signature);
    assert_eq!(
        chain
            .revert(payer.address(), &at(300_000, good.clone()))
            .await,
        error::<Reserve::NotPayeeOrOperator>()
    );
    assert_eq!(
        chain
            .revert(stranger.address(), &at(300_000, good.clone()))
            .await,
        error::<Reserve::NotPayeeOrOperator>()
    );
    // The payer is not the signer this channel names.
    assert_eq!(
        chain
            .revert(payee.address(), &at(300_000, voucher(&payer, id, 300_000)))
            .await,
        error::<Reserve::InvalidSignature>()
    );
    // A voucher for another amount, channel, chain or domain recovers someone else.
    for wrong in [
        voucher(&signer, id, 300_001),
        voucher(&signer, B256::random(), 300_000),
        sign_digest(&signer, reserve::voucher_digest(id, 300_000, 4217).unwrap()),
        sign_digest(&signer, v1_domain_digest(id, 300_000)),
    ] {
        assert_eq!(
            chain.revert(payee.address(), &at(300_000, wrong)).await,
            error::<Reserve::InvalidSignature>()
        );
    }
    // Malformed signatures: garbage, the high-s twin, EIP-2098 compact, empty.
    let mut high_s = good.to_vec();
    flip_s(&mut high_s);
    for malformed in [
        Bytes::from(vec![0x11; 65]),
        Bytes::from(high_s),
        Bytes::copy_from_slice(&compact(&good)),
        Bytes::new(),
    ] {
        assert_eq!(
            chain.revert(payee.address(), &at(300_000, malformed)).await,
            error::<Reserve::InvalidSignature>()
        );
    }
    // v as 0/1 is the same signature (TIP-1020 accepts both forms).
    let mut raw_v = good.to_vec();
    raw_v[64] -= 27;
    chain
        .view(payee.address(), &at(300_000, Bytes::from(raw_v)))
        .await;
    // Amounts: above the deposit, not increasing, past uint96.
    assert_eq!(
        chain
            .revert(
                payee.address(),
                &at(1_000_001, voucher(&signer, id, 1_000_001))
            )
            .await,
        error::<Reserve::AmountExceedsDeposit>()
    );
    let max = reserve::MAX_AMOUNT;
    assert_eq!(
        chain
            .revert(payee.address(), &at(max, voucher(&signer, id, max)))
            .await,
        error::<Reserve::AmountExceedsDeposit>()
    );
    for stale in [250_000, 200_000] {
        assert_eq!(
            chain
                .revert(payee.address(), &at(stale, voucher(&signer, id, stale)))
                .await,
            error::<Reserve::AmountNotIncreasing>()
        );
    }
    let mut past_uint96 = at(300_000, good.clone());
    past_uint96[4 + 7 * 32..4 + 8 * 32]
        .copy_from_slice(&(U256::from(1u8) << 96usize).to_be_bytes::<32>());
    assert_eq!(
        chain.revert(payee.address(), &past_uint96).await,
        Vec::<u8>::new()
    );
    // Another descriptor is another (absent) channel.
    let mut other = d.clone();
    other.salt = B256::random();
    assert_eq!(
        chain
            .revert(
                payee.address(),
                &settle_call(&other, 1, voucher(&signer, id, 1))
            )
            .await,
        error::<Reserve::ChannelNotFound>()
    );
    // A refused settle, sent for real, moves nothing.
    let payee_before = chain.balance(path_usd(), payee.address()).await;
    let sent = chain
        .call_reserve(&payee, at(300_000, voucher(&payer, id, 300_000)))
        .await;
    assert!(!sent.succeeded());
    assert_eq!(
        chain.balance(path_usd(), payee.address()).await,
        payee_before
    );
    assert_eq!(chain.state(id).await, (250_000, 1_000_000, 0));

    // topUp: only the payer; the deposit grows by exactly the amount.
    assert_eq!(
        chain.revert(payee.address(), &top_up_call(&d, 1)).await,
        error::<Reserve::NotPayer>()
    );
    assert_eq!(
        chain.revert(payer.address(), &top_up_call(&d, max)).await,
        error::<Reserve::DepositOverflow>()
    );
    let payer_before = chain.balance(path_usd(), payer.address()).await;
    let sent = chain.call_reserve(&payer, top_up_call(&d, 500_000)).await;
    assert!(sent.succeeded(), "{}", sent.receipt);
    let top_ups = sent.events::<Reserve::TopUp>();
    assert_eq!(
        (top_ups[0].additionalDeposit, top_ups[0].newDeposit),
        (U96::from(500_000u64), U96::from(1_500_000u64))
    );
    assert_eq!(
        payer_before - chain.balance(path_usd(), payer.address()).await,
        500_000
    );
    assert_eq!(chain.state(id).await, (250_000, 1_500_000, 0));
    // A zero top-up with no close pending changes nothing and says nothing.
    let sent = chain.call_reserve(&payer, top_up_call(&d, 0)).await;
    assert!(sent.succeeded());
    assert!(sent.reserve_logs().is_empty());

    // requestClose: only the payer; the first request's time sticks.
    assert_eq!(
        chain.revert(payee.address(), &request_close_call(&d)).await,
        error::<Reserve::NotPayer>()
    );
    let sent = chain.call_reserve(&payer, request_close_call(&d)).await;
    assert!(sent.succeeded());
    let requested_at = block_timestamp(&chain, &sent).await;
    let requested = sent.events::<Reserve::CloseRequested>();
    assert_eq!(requested[0].closeGraceEnd, U256::from(requested_at + 900));
    assert_eq!(
        chain.state(id).await,
        (250_000, 1_500_000, requested_at as u32)
    );
    let again = chain.call_reserve(&payer, request_close_call(&d)).await;
    assert!(again.succeeded() && again.reserve_logs().is_empty());
    assert_eq!(chain.state(id).await.2, requested_at as u32);
    // A zero top-up cancels it.
    let sent = chain.call_reserve(&payer, top_up_call(&d, 0)).await;
    assert_eq!(sent.events::<Reserve::CloseRequestCancelled>().len(), 1);
    let top_ups = sent.events::<Reserve::TopUp>();
    assert_eq!(
        (top_ups[0].additionalDeposit, top_ups[0].newDeposit),
        (U96::ZERO, U96::from(1_500_000u64))
    );
    assert_eq!(chain.state(id).await, (250_000, 1_500_000, 0));

    // close refusals: capture below settled, above the voucher, above the deposit.
    let above = 1_600_000; // a voucher above the deposit is still a valid voucher
    let v_above = voucher(&signer, id, above);
    assert_eq!(
        chain
            .revert(
                payee.address(),
                &close_call(&d, above, 249_999, v_above.clone())
            )
            .await,
        error::<Reserve::CaptureAmountInvalid>()
    );
    assert_eq!(
        chain
            .revert(
                payee.address(),
                &close_call(&d, 400_000, 400_001, voucher(&signer, id, 400_000))
            )
            .await,
        error::<Reserve::CaptureAmountInvalid>()
    );
    assert_eq!(
        chain
            .revert(
                payee.address(),
                &close_call(&d, above, 1_500_001, v_above.clone())
            )
            .await,
        error::<Reserve::AmountExceedsDeposit>()
    );
    assert_eq!(
        chain
            .revert(
                payer.address(),
                &close_call(&d, above, 400_000, v_above.clone())
            )
            .await,
        error::<Reserve::NotPayeeOrOperator>()
    );
    assert_eq!(
        chain
            .revert(
                payee.address(),
                &close_call(&d, above, 400_000, voucher(&payer, id, above))
            )
            .await,
        error::<Reserve::InvalidSignature>()
    );

    // close by the payee with a voucher above the deposit, capturing less:
    // the payee gets capture − settled, the payer the rest of the deposit.
    let payee_before = chain.balance(path_usd(), payee.address()).await;
    let payer_before = chain.balance(path_usd(), payer.address()).await;
    let reserve_before = chain.balance(path_usd(), CHANNEL_RESERVE_ADDRESS).await;
    let sent = chain
        .call_reserve(&payee, close_call(&d, above, 400_000, v_above))
        .await;
    assert!(sent.succeeded(), "{}", sent.receipt);
    let closed = sent.events::<Reserve::ChannelClosed>();
    assert_eq!(
        (closed[0].settledToPayee, closed[0].refundedToPayer),
        (U96::from(400_000u64), U96::from(1_100_000u64))
    );
    assert_eq!(
        chain.balance(path_usd(), payee.address()).await - payee_before,
        150_000
    );
    assert_eq!(
        chain.balance(path_usd(), payer.address()).await - payer_before,
        1_100_000
    );
    assert_eq!(
        reserve_before - chain.balance(path_usd(), CHANNEL_RESERVE_ADDRESS).await,
        1_250_000
    );
    // The slot is gone; the payer holds a storage credit for it.
    assert_eq!(chain.state(id).await, (0, 0, 0));
    assert_eq!(
        chain
            .revert(
                payee.address(),
                &settle_call(&d, 500_000, voucher(&signer, id, 500_000))
            )
            .await,
        error::<Reserve::ChannelNotFound>()
    );
    assert_eq!(credits(&chain, payer.address()).await, 1);

    // A close capturing only what was settled needs no voucher, and the
    // payer's next open spends the credit.
    let second = chain
        .open(&payer, &Terms::new(payee.address(), 50), Nonce::Lane)
        .await;
    assert_eq!(credits(&chain, payer.address()).await, 0);
    let sent = chain
        .call_reserve(&payee, close_call(&second.descriptor, 0, 0, Bytes::new()))
        .await;
    assert!(sent.succeeded(), "{}", sent.receipt);
    assert_eq!(
        sent.events::<Reserve::ChannelClosed>()[0].refundedToPayer,
        U96::from(50u64)
    );

    // A payer with no allowance opens and tops up as with the precompile:
    // the front grants it (TIP-1035 needs no approve).
    let fresh = alloy::signers::local::PrivateKeySigner::random();
    fund(&chain, fresh.address()).await;
    let opened = chain
        .open(&fresh, &Terms::new(payee.address(), 1_000), Nonce::Lane)
        .await;
    let sent = chain
        .call_reserve(&fresh, top_up_call(&opened.descriptor, 500))
        .await;
    assert!(sent.succeeded(), "{}", sent.receipt);
    assert_eq!(chain.state(opened.id).await, (0, 1_500, 0));
}
