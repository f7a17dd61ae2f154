//! Our TIP-1034 channel reserve stand-in on a real local chain, driven as
//! clients drive the precompile: 0x76 transactions through the devnet's RPC
//! front, vouchers signed here over EIP-712. Every refusal is checked by its
//! custom error (simulated) and, where it matters, by a failing transaction
//! that moves nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

mod support;

use alloy::primitives::{Address, B256, Bytes, U256, aliases::U96, keccak256};
use alloy::sol_types::{SolCall, SolError, SolValue};
use mpp::protocol::methods::tempo::precompile_voucher::{
    compute_precompile_channel_id_with_escrow, precompile_voucher_signing_hash_with_escrow,
};
use support::*;
use tollgate_devnet::ITIP20ChannelReserve::{self as Reserve};
use tollgate_devnet::reserve::{self, SIMULATION_CONTEXT};
use tollgate_devnet::{CHANNEL_RESERVE, CHANNEL_RESERVE_ADDRESS};

const PAYER: usize = 3;
const PAYEE: usize = 4;
const OPERATOR: usize = 6;
const STRANGER: usize = 7;

alloy::sol! {
    interface UnknownSelector {
        error UnknownFunctionSelector(bytes4 selector);
    }
}

fn word(out: &[u8]) -> B256 {
    B256::from_slice(out)
}

#[tokio::test]
async fn open_derives_the_channel_from_its_transaction_and_refuses_bad_opens() {
    let chain = Chain::start().await;
    let payer = dev(PAYER);
    let payee = dev(PAYEE).address();

    // Constants and the EIP-712 domain, as the TIP and the SDK define them.
    let out = chain
        .view(payee, &Reserve::CLOSE_GRACE_PERIODCall {}.abi_encode())
        .await;
    assert_eq!(U256::from_be_slice(&out), U256::from(900));
    let out = chain
        .view(payee, &Reserve::VOUCHER_TYPEHASHCall {}.abi_encode())
        .await;
    assert_eq!(
        word(&out),
        keccak256("Voucher(bytes32 channelId,uint96 cumulativeAmount)")
    );
    let out = chain
        .view(payee, &Reserve::domainSeparatorCall {}.abi_encode())
        .await;
    let expected_domain = keccak256(
        (
            keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
            keccak256("TIP20 Channel Reserve"),
            keccak256("1"),
            U256::from(CHAIN_ID),
            CHANNEL_RESERVE_ADDRESS,
        )
            .abi_encode(),
    );
    assert_eq!(word(&out), expected_domain);

    // open: funds move from the payer to the reserve, exactly the deposit.
    let terms = Terms::new(payee, 1_000_000);
    let payer_before = chain.balance(path_usd(), payer.address()).await;
    let reserve_before = chain.balance(path_usd(), CHANNEL_RESERVE_ADDRESS).await;
    let opened = chain.open(&payer, &terms, Nonce::Lane).await;
    assert_eq!(
        payer_before - chain.balance(path_usd(), payer.address()).await,
        1_000_000
    );
    assert_eq!(
        chain.balance(path_usd(), CHANNEL_RESERVE_ADDRESS).await - reserve_before,
        1_000_000
    );
    // The full descriptor is in the event.
    let event = opened.sent.events::<Reserve::ChannelOpened>()[0].clone();
    assert_eq!(
        (event.payer, event.payee, event.operator, event.token),
        (payer.address(), payee, Address::ZERO, path_usd())
    );
    assert_eq!(
        (event.salt, event.authorizedSigner),
        (terms.salt, Address::ZERO)
    );

    // The id is the TIP's derivation: ours, the SDK's and the contract's agree.
    let d = &opened.descriptor;
    assert_eq!(
        opened.id,
        compute_precompile_channel_id_with_escrow(
            d.payer,
            d.payee,
            d.operator,
            d.token,
            d.salt,
            d.authorizedSigner,
            d.expiringNonceHash,
            CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID
        )
    );
    let computed = chain
        .view(
            payee,
            &Reserve::computeChannelIdCall {
                payer: d.payer,
                payee: d.payee,
                operator: d.operator,
                token: d.token,
                salt: d.salt,
                authorizedSigner: d.authorizedSigner,
                expiringNonceHash: d.expiringNonceHash,
            }
            .abi_encode(),
        )
        .await;
    assert_eq!(word(&computed), opened.id);
    // So is the voucher digest.
    let digest = chain
        .view(
            payee,
            &Reserve::getVoucherDigestCall {
                channelId: opened.id,
                cumulativeAmount: U96::from(123_456u64),
            }
            .abi_encode(),
        )
        .await;
    assert_eq!(
        word(&digest),
        precompile_voucher_signing_hash_with_escrow(
            opened.id,
            123_456,
            CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID
        )
        .unwrap()
    );
    assert_eq!(
        Some(word(&digest)),
        reserve::voucher_digest(opened.id, 123_456, CHAIN_ID)
    );

    // State: one packed slot, read by id and by descriptor.
    assert_eq!(chain.state(opened.id).await, (0, 1_000_000, 0));
    let channel = reserve::read_channel(chain.devnet.rpc(), d).await.unwrap();
    assert_eq!(channel.descriptor, *d);
    assert_eq!(channel.state.deposit, U96::from(1_000_000u64));
    let batch = chain
        .view(
            payee,
            &Reserve::getChannelStatesBatchCall {
                channelIds: vec![opened.id, B256::ZERO],
            }
            .abi_encode(),
        )
        .await;
    let states = Reserve::getChannelStatesBatchCall::abi_decode_returns(&batch).unwrap();
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].deposit, U96::from(1_000_000u64));
    assert_eq!(states[1].deposit, U96::ZERO);

    // An expiring-nonce open (what mppx sends) is seeded the same way.
    let other_payer = dev(5);
    let expiring = chain
        .open(&other_payer, &Terms::new(payee, 10), Nonce::Expiring)
        .await;
    assert_ne!(expiring.id, opened.id);
    // A second one from the same payer goes through too (the front reopens
    // anvil's expiring-nonce lane), and replaying a mined one changes nothing.
    let again = chain
        .open(&other_payer, &Terms::new(payee, 20), Nonce::Expiring)
        .await;
    assert_ne!(again.id, expiring.id);
    let replay = chain
        .rpc(
            &chain.front,
            "eth_sendRawTransaction",
            serde_json::json!([again.sent.raw.clone()]),
        )
        .await;
    let _ = replay; // anvil may answer with the known hash or an error
    assert_eq!(chain.state(again.id).await, (0, 20, 0));
    assert_eq!(
        chain.balance(path_usd(), CHANNEL_RESERVE_ADDRESS).await - reserve_before,
        1_000_000 + 10 + 20
    );
    // anvil estimates a Tempo batch as an empty call; the front raises it.
    let batch_gas = chain
        .rpc(
            &chain.front,
            "eth_estimateGas",
            serde_json::json!([{"from": other_payer.address(), "calls": [{"to": CHANNEL_RESERVE, "data": Bytes::from(Terms::new(payee, 1).open_call())}]}]),
        )
        .await
        .unwrap();
    let batch_gas =
        u64::from_str_radix(batch_gas.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert!(batch_gas >= 1_000_000, "{batch_gas}");

    // Several opens in one transaction share its hash and differ by salt.
    let (a, b) = (Terms::new(payee, 7), Terms::new(payee, 8));
    let both = chain
        .send(
            &payer,
            vec![
                (CHANNEL_RESERVE_ADDRESS, a.open_call()),
                (CHANNEL_RESERVE_ADDRESS, b.open_call()),
            ],
        )
        .await;
    assert!(both.succeeded(), "{}", both.receipt);
    let events = both.events::<Reserve::ChannelOpened>();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].expiringNonceHash, both.expected_nonce_hash());
    assert_eq!(events[1].expiringNonceHash, both.expected_nonce_hash());
    assert_ne!(events[0].channelId, events[1].channelId);

    // The same open twice in one transaction: the second one fails, and
    // with it the whole transaction.
    let twice = Terms::new(payee, 9);
    let payer_before = chain.balance(path_usd(), payer.address()).await;
    let sent = chain
        .send(
            &payer,
            vec![
                (CHANNEL_RESERVE_ADDRESS, twice.open_call()),
                (CHANNEL_RESERVE_ADDRESS, twice.open_call()),
            ],
        )
        .await;
    assert!(!sent.succeeded());
    assert_eq!(
        chain.balance(path_usd(), payer.address()).await,
        payer_before
    );
    // Reopening a channel opened earlier: the id exists. (Simulated at
    // anvil, which sees the hash the front seeded for that open.)
    assert_eq!(
        chain
            .revert_at(&chain.anvil, payer.address(), &terms.open_call())
            .await,
        error::<Reserve::ChannelAlreadyExists>()
    );
    // Open, close, reopen within one transaction is refused although close
    // deleted the slot. A signed transaction cannot name its own hash, so a
    // contract does this in a simulation, where the hash is the node's constant.
    let reopener = chain.install_reopener().await;
    let run = |reopen| Reopener::runCall {
        reserve: CHANNEL_RESERVE_ADDRESS,
        token: path_usd(),
        salt: B256::random(),
        context: SIMULATION_CONTEXT,
        reopen,
    };
    chain
        .simulate(reopener, &run(false).abi_encode())
        .await
        .unwrap();
    assert_eq!(
        chain
            .simulate(reopener, &run(true).abi_encode())
            .await
            .unwrap_err(),
        error::<Reserve::ChannelAlreadyExists>()
    );

    // Refusals, each with the TIP's error (simulated through the front, so
    // open runs with the node's simulation context).
    let from = payer.address();
    let mut bad = terms.clone();
    bad.payee = Address::ZERO;
    assert_eq!(
        chain.revert(from, &bad.open_call()).await,
        error::<Reserve::InvalidPayee>()
    );
    bad.payee = path_usd();
    assert_eq!(
        chain.revert(from, &bad.open_call()).await,
        error::<Reserve::InvalidPayee>()
    );
    // A TIP-1022 virtual payee needs a real operator.
    let virtual_payee: Address = "0x12345678fdfdfdfdfdfdfdfdfdfd123456789abc"
        .parse()
        .unwrap();
    bad.payee = virtual_payee;
    assert_eq!(
        chain.revert(from, &bad.open_call()).await,
        error::<Reserve::InvalidPayee>()
    );
    bad.operator = virtual_payee;
    assert_eq!(
        chain.revert(from, &bad.open_call()).await,
        error::<Reserve::InvalidPayee>()
    );
    let mut bad = terms.clone();
    bad.token = Address::repeat_byte(0x42);
    assert_eq!(
        chain.revert(from, &bad.open_call()).await,
        error::<ITip20Errors::InvalidToken>()
    );
    let mut bad = terms.clone();
    bad.deposit = 0;
    assert_eq!(
        chain.revert(from, &bad.open_call()).await,
        error::<Reserve::ZeroDeposit>()
    );
    // Unknown selectors and selector-less calldata, as a precompile answers them.
    assert_eq!(
        chain.revert(from, &[0xde, 0xad, 0xbe, 0xef, 0x00]).await,
        [
            &UnknownSelector::UnknownFunctionSelector::SELECTOR[..],
            &[0xde, 0xad, 0xbe, 0xef],
            &[0; 28]
        ]
        .concat()
    );
    assert_eq!(chain.revert(from, &[0x01]).await, Vec::<u8>::new());
    // A deposit word past uint96 is not an open at all.
    let past_uint96 = open_call_raw(&terms, U256::from(1u8) << 96);
    assert_eq!(chain.revert(from, &past_uint96).await, Vec::<u8>::new());
    let sent = chain.call_reserve(&payer, past_uint96).await;
    assert!(!sent.succeeded());

    // Simulation: a simulated open runs with the node's constant context
    // hash, so its id is predictable (and gas can be estimated).
    let simulated = Terms::new(payee, 5);
    let out = chain.view(from, &simulated.open_call()).await;
    assert_eq!(
        word(&out),
        reserve::channel_id(&simulated.descriptor(from, SIMULATION_CONTEXT), CHAIN_ID)
    );
    let gas = chain
        .rpc(
            &chain.front,
            "eth_estimateGas",
            serde_json::json!([{"from": from, "to": CHANNEL_RESERVE, "data": Bytes::from(simulated.open_call())}]),
        )
        .await;
    assert!(gas.is_ok(), "{gas:?}");

    // Bypassing the front, nobody tells the stand-in the transaction's hash.
    assert_eq!(
        chain
            .revert_at(&chain.anvil, from, &simulated.open_call())
            .await,
        error::<Reserve::ExpiringNonceHashNotSet>()
    );
    let before = chain.balance(path_usd(), from).await;
    let bypass = chain
        .send_to(
            &chain.anvil,
            &payer,
            vec![(CHANNEL_RESERVE_ADDRESS, simulated.open_call())],
            Nonce::Lane,
        )
        .await;
    assert!(!bypass.succeeded());
    assert_eq!(chain.balance(path_usd(), from).await, before);
}

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

fn sign_digest(signer: &alloy::signers::local::PrivateKeySigner, digest: B256) -> Bytes {
    use alloy::signers::SignerSync;
    Bytes::from(signer.sign_hash_sync(&digest).unwrap().as_bytes().to_vec())
}

/// The same voucher in the v1 escrow's domain ("Tempo Stream Channel").
fn v1_domain_digest(channel_id: B256, amount: u128) -> B256 {
    let domain = keccak256(
        (
            keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
            keccak256("Tempo Stream Channel"),
            keccak256("1"),
            U256::from(CHAIN_ID),
            CHANNEL_RESERVE_ADDRESS,
        )
            .abi_encode(),
    );
    let voucher = keccak256(
        (
            keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)"),
            channel_id,
            amount,
        )
            .abi_encode(),
    );
    keccak256([&b"\x19\x01"[..], domain.as_slice(), voucher.as_slice()].concat())
}

/// (r, s, v) → (r, n − s, v ^ 1): the same signer, the malleable form.
fn flip_s(signature: &mut [u8]) {
    const N: U256 = U256::from_be_bytes([
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ]);
    let s = U256::from_be_slice(&signature[32..64]);
    signature[32..64].copy_from_slice(&(N - s).to_be_bytes::<32>());
    signature[64] ^= 1;
}

/// EIP-2098: r || (yParity << 255 | s).
fn compact(signature: &[u8]) -> Vec<u8> {
    let mut out = signature[..64].to_vec();
    if signature[64] == 28 {
        out[32] |= 0x80;
    }
    out
}

async fn credits(chain: &Chain, payer: Address) -> u64 {
    let out = chain
        .view(payer, &Reserve::storageCreditsCall { payer }.abi_encode())
        .await;
    Reserve::storageCreditsCall::abi_decode_returns(&out).unwrap()
}

async fn block_timestamp(chain: &Chain, sent: &support::Sent) -> u64 {
    let number = sent.receipt["blockNumber"].clone();
    let block = chain
        .rpc(
            &chain.front,
            "eth_getBlockByNumber",
            serde_json::json!([number, false]),
        )
        .await
        .unwrap();
    u64::from_str_radix(
        block["timestamp"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap()
}

async fn next_block_at(chain: &Chain, timestamp: u64) {
    chain
        .rpc(
            &chain.front,
            "evm_setNextBlockTimestamp",
            serde_json::json!([timestamp]),
        )
        .await
        .unwrap();
}

/// pathUSD for deposits and AlphaUSD for fees, from dev account #0.
async fn fund(chain: &Chain, to: Address) {
    let transfer = |amount: u64| {
        IToken::transferCall {
            to,
            amount: U256::from(amount),
        }
        .abi_encode()
    };
    let sent = chain
        .send(
            &dev(0),
            vec![
                (path_usd(), transfer(10_000_000)),
                (
                    tollgate_devnet::ALPHA_USD.parse().unwrap(),
                    transfer(10_000_000),
                ),
            ],
        )
        .await;
    assert!(sent.succeeded(), "{}", sent.receipt);
}
