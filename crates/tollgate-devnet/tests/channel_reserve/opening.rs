//! open: funding, the id and its derivation, simulations, every refusal.

use alloy::primitives::{Address, B256, Bytes, U256, aliases::U96, keccak256};
use alloy::sol_types::{SolCall, SolError, SolValue};
use tollgate_devnet::ITIP20ChannelReserve::{self as Reserve};
use tollgate_devnet::reserve::{self, SIMULATION_CONTEXT};
use tollgate_devnet::{CHANNEL_RESERVE, CHANNEL_RESERVE_ADDRESS};

use super::*;
use mpp::protocol::methods::tempo::precompile_voucher::{
    compute_precompile_channel_id_with_escrow, precompile_voucher_signing_hash_with_escrow,
};

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
