//! The gate per action, in process, on a fake chain and a real SQLite
//! ledger: accept rules, minimum delta, deposit bound, open/top-up checks,
//! close rules, the capture rule, crash-safe settlement, protocols side by
//! side.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use alloy::eips::Encodable2718;
use alloy::primitives::aliases::U96;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use base64::Engine;
use mpp::protocol::methods::tempo::precompile_voucher::precompile_voucher_signing_hash_with_escrow;
use serde_json::json;
use tempo_alloy::contracts::precompiles::ITIP20ChannelReserve;
use tempo_alloy::primitives::transaction::{
    Call, PrimitiveSignature, TEMPO_EXPIRING_NONCE_KEY, TempoSignature,
};
use tempo_alloy::primitives::{AASigned, TempoTransaction};
use tollgate_ledger::{ChannelRecord, ChannelStatus, Ledger, SqliteLedger};

use super::fake::{Effect, FakeChain};
use super::*;
use crate::problem::ProblemKind;
use crate::session_v2::{self, Descriptor, MAX_V2_AMOUNT};

const CHAIN: u64 = 42431;
const ESCROW: Address = Address::repeat_byte(0xe5);
const TOKEN: Address = Address::repeat_byte(0x20);

fn key(byte: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(byte)).unwrap()
}

fn payee() -> PrivateKeySigner {
    key(2)
}

struct World {
    gate: SessionGate,
    v1: Arc<FakeChain>,
    v2: Arc<FakeChain>,
    ledger: Arc<dyn Ledger>,
}

fn world_with(protocols: Protocols, min_voucher_delta: u128) -> World {
    let settings = SessionSettings {
        rpc_url: "http://127.0.0.1:9".into(),
        rpc_timeout: Duration::from_secs(1),
        protocols,
        escrow: ESCROW,
        reserve: RESERVE_ADDRESS,
        chain_id: CHAIN,
        currency: TOKEN,
        recipient: payee().address(),
        suggested_deposit: 1_000,
        min_voucher_delta,
        operator: Some(payee()),
        fee_token: None,
    };
    let ledger: Arc<dyn Ledger> = Arc::new(SqliteLedger::in_memory().unwrap());
    let v1 = Arc::new(FakeChain::new(
        Protocol::V1,
        ESCROW,
        CHAIN,
        Some(payee().address()),
    ));
    let v2 = Arc::new(FakeChain::new(
        Protocol::V2,
        RESERVE_ADDRESS,
        CHAIN,
        Some(payee().address()),
    ));
    let offered = protocols.offered();
    let gate = SessionGate::with_chains(
        settings,
        Arc::clone(&ledger),
        offered
            .contains(&Protocol::V1)
            .then(|| Arc::clone(&v1) as Arc<dyn SessionChain>),
        offered
            .contains(&Protocol::V2)
            .then(|| Arc::clone(&v2) as Arc<dyn SessionChain>),
    )
    .unwrap();
    World {
        gate,
        v1,
        v2,
        ledger,
    }
}

fn world() -> World {
    world_with(Protocols::V2, 0)
}

fn sign_tx(payer: &PrivateKeySigner, calls: Vec<Call>, lane: u64) -> AASigned {
    let tx = TempoTransaction {
        chain_id: CHAIN,
        max_priority_fee_per_gas: 1,
        max_fee_per_gas: 1,
        gas_limit: 500_000,
        calls,
        nonce_key: TEMPO_EXPIRING_NONCE_KEY,
        valid_before: NonZeroU64::new(1_893_456_000 + lane),
        ..Default::default()
    };
    let sig = payer.sign_hash_sync(&tx.signature_hash()).unwrap();
    AASigned::new_unhashed(
        tx,
        TempoSignature::Primitive(PrimitiveSignature::Secp256k1(sig)),
    )
}

/// A v2 channel as a client opens it.
#[derive(Clone)]
struct V2Channel {
    id: B256,
    descriptor: Descriptor,
    open_tx: Vec<u8>,
    deposit: u128,
}

fn v2_channel(payer: &PrivateKeySigner, deposit: u128, salt: u8) -> V2Channel {
    let open = ITIP20ChannelReserve::openCall {
        payee: payee().address(),
        operator: Address::ZERO,
        token: TOKEN,
        deposit: U96::from(deposit),
        salt: B256::repeat_byte(salt),
        authorizedSigner: Address::ZERO,
    };
    let signed = sign_tx(
        payer,
        vec![Call {
            to: TxKind::Call(RESERVE_ADDRESS),
            value: U256::ZERO,
            input: open.abi_encode().into(),
        }],
        salt.into(),
    );
    let descriptor = Descriptor {
        payer: payer.address(),
        payee: payee().address(),
        operator: Address::ZERO,
        token: TOKEN,
        salt: B256::repeat_byte(salt),
        authorized_signer: Address::ZERO,
        expiring_nonce_hash: signed.expiring_nonce_hash(payer.address()),
    };
    V2Channel {
        id: session_v2::channel_id(&descriptor, RESERVE_ADDRESS, CHAIN),
        descriptor,
        open_tx: signed.encoded_2718(),
        deposit,
    }
}

fn v2_sig(key: &PrivateKeySigner, id: B256, amount: u128, escrow: Address, chain: u64) -> String {
    let hash = precompile_voucher_signing_hash_with_escrow(id, amount, escrow, chain).unwrap();
    format!(
        "0x{}",
        alloy::hex::encode(key.sign_hash_sync(&hash).unwrap().as_bytes())
    )
}

fn v1_sig(key: &PrivateKeySigner, id: B256, amount: u128, escrow: Address) -> String {
    let hash = voucher::signing_hash(escrow, CHAIN, id, amount);
    format!(
        "0x{}",
        alloy::hex::encode(key.sign_hash_sync(&hash).unwrap().as_bytes())
    )
}

fn voucher_action(action: &str, c: &V2Channel, amount: u128, signature: String) -> Action {
    Action::parse(&json!({
        "action": action,
        "channelId": format!("{:#x}", c.id),
        "descriptor": descriptor_json(&c.descriptor),
        "cumulativeAmount": amount.to_string(),
        "signature": signature,
    }))
    .unwrap()
}

fn v2_voucher(c: &V2Channel, amount: u128) -> Action {
    voucher_action(
        "voucher",
        c,
        amount,
        v2_sig(&key(1), c.id, amount, RESERVE_ADDRESS, CHAIN),
    )
}

fn v2_close(c: &V2Channel, amount: u128) -> Action {
    voucher_action(
        "close",
        c,
        amount,
        v2_sig(&key(1), c.id, amount, RESERVE_ADDRESS, CHAIN),
    )
}

fn v2_open_action(c: &V2Channel, initial: u128) -> Action {
    Action::parse(&json!({
        "action": "open",
        "type": "transaction",
        "channelId": format!("{:#x}", c.id),
        "transaction": format!("0x{}", alloy::hex::encode(&c.open_tx)),
        "descriptor": descriptor_json(&c.descriptor),
        "authorizedSigner": format!("{:#x}", c.descriptor.authorized_signer),
        "cumulativeAmount": initial.to_string(),
        "signature": v2_sig(&key(1), c.id, initial, RESERVE_ADDRESS, CHAIN),
    }))
    .unwrap()
}

fn open_state(deposit: u128) -> ChannelState {
    ChannelState {
        exists: true,
        finalized: false,
        close_requested_at: 0,
        deposit,
        settled: 0,
        parties: None,
    }
}

async fn opened(w: &World, deposit: u128) -> V2Channel {
    let c = v2_channel(&key(1), deposit, 0xaa);
    w.v2.on_broadcast(&c.open_tx, Effect::Open(c.id, open_state(c.deposit)));
    let applied = w.gate.apply(&v2_open_action(&c, 0), 100).await.unwrap();
    assert_eq!(applied.channel.protocol, "v2");
    c
}

async fn kind(w: &World, action: &Action) -> ProblemKind {
    w.gate.apply(action, 0).await.unwrap_err().kind
}

async fn spend(w: &World, c: &V2Channel, cost: u128) -> ChannelRecord {
    let id = format!("{:#x}", c.id);
    let reservation = w.gate.reserve(&id, cost).await.unwrap();
    w.gate.commit(reservation, cost, 1).await.unwrap()
}

#[tokio::test]
async fn v2_open_is_checked_broadcast_and_recorded() {
    let w = world();
    let c = opened(&w, 1_000).await;
    let stored = w
        .ledger
        .channel(&format!("{:#x}", c.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.deposit, 1_000);
    assert_eq!(stored.escrow, format!("{RESERVE_ADDRESS:#x}"));
    assert_eq!(stored.payer, format!("{:#x}", key(1).address()));
    let descriptor: serde_json::Value =
        serde_json::from_str(stored.descriptor.as_deref().unwrap()).unwrap();
    assert_eq!(descriptor, descriptor_json(&c.descriptor));
    // A retried open counts as its voucher; nothing is broadcast again.
    let before = w.v2.state.lock().unwrap().broadcasts;
    w.gate.apply(&v2_open_action(&c, 0), 0).await.unwrap();
    assert_eq!(w.v2.state.lock().unwrap().broadcasts, before);
}

#[tokio::test]
async fn v2_open_refusals_broadcast_nothing() {
    let w = world();
    let good = v2_channel(&key(1), 1_000, 0xaa);
    // The deposit does not cover the request.
    assert_eq!(
        w.gate
            .apply(&v2_open_action(&good, 0), 5_000)
            .await
            .unwrap_err()
            .kind,
        ProblemKind::SessionInsufficientBalance
    );
    // The initial voucher exceeds the deposit.
    assert_eq!(
        kind(&w, &v2_open_action(&good, 2_000)).await,
        ProblemKind::SessionAmountExceedsDeposit
    );
    // A descriptor that does not say what the transaction does.
    let wrong = V2Channel {
        descriptor: Descriptor {
            salt: B256::repeat_byte(0xbb),
            ..good.descriptor
        },
        ..good.clone()
    };
    assert_eq!(
        kind(&w, &v2_open_action(&wrong, 0)).await,
        ProblemKind::VerificationFailed
    );
    // The claimed id is not the descriptor's.
    let other_id = V2Channel {
        id: B256::repeat_byte(9),
        ..good.clone()
    };
    assert_eq!(
        kind(&w, &v2_open_action(&other_id, 0)).await,
        ProblemKind::VerificationFailed
    );
    // Paying someone else.
    let elsewhere = V2Channel {
        descriptor: Descriptor {
            payee: key(7).address(),
            ..good.descriptor
        },
        ..good.clone()
    };
    assert_eq!(
        kind(&w, &v2_open_action(&elsewhere, 0)).await,
        ProblemKind::VerificationFailed
    );
    // An open voucher by someone else.
    let mut stranger = v2_open_action(&good, 0);
    if let Action::Open(open) = &mut stranger {
        open.voucher.signature = v2_sig(&key(3), good.id, 0, RESERVE_ADDRESS, CHAIN)
            .parse()
            .unwrap();
    }
    assert_eq!(
        kind(&w, &stranger).await,
        ProblemKind::SessionSignerMismatch
    );
    assert_eq!(w.v2.state.lock().unwrap().broadcasts, 0);
}

#[tokio::test]
async fn vouchers_accept_without_rpc_and_follow_the_rules() {
    let w = world();
    let c = opened(&w, 1_000).await;
    let reads = w.v2.state.lock().unwrap().reads;
    for amount in [100, 200, 300] {
        let applied = w.gate.apply(&v2_voucher(&c, amount), 0).await.unwrap();
        assert_eq!(applied.channel.accepted, amount);
    }
    // The same voucher again changes nothing.
    assert_eq!(
        w.gate
            .apply(&v2_voucher(&c, 300), 0)
            .await
            .unwrap()
            .channel
            .accepted,
        300
    );
    assert_eq!(
        w.v2.state.lock().unwrap().reads,
        reads,
        "no chain read per voucher"
    );
    // Below the highest: answered like a resubmission (the spec), nothing
    // changes.
    let below = w.gate.apply(&v2_voucher(&c, 250), 0).await.unwrap();
    assert_eq!(below.channel.accepted, 300);
    // Above the deposit: the chain is asked once, then refused.
    assert_eq!(
        kind(&w, &v2_voucher(&c, 1_001)).await,
        ProblemKind::SessionAmountExceedsDeposit
    );
    assert_eq!(w.v2.state.lock().unwrap().reads, reads + 1);
    // Topped up on chain behind our back: the same voucher now passes.
    w.v2.set(c.id, open_state(2_000));
    assert_eq!(
        w.gate
            .apply(&v2_voucher(&c, 1_001), 0)
            .await
            .unwrap()
            .channel
            .deposit,
        2_000
    );
}

#[tokio::test]
async fn min_voucher_delta_is_enforced() {
    let w = world_with(Protocols::V2, 10);
    let c = opened(&w, 1_000).await;
    w.gate.apply(&v2_voucher(&c, 100), 0).await.unwrap();
    assert_eq!(
        kind(&w, &v2_voucher(&c, 105)).await,
        ProblemKind::SessionDeltaTooSmall
    );
    w.gate.apply(&v2_voucher(&c, 110), 0).await.unwrap();
}

#[tokio::test]
async fn bad_v2_vouchers_get_the_right_problem() {
    let w = world();
    let c = opened(&w, 1_000).await;
    let signed = |sig: String| voucher_action("voucher", &c, 100, sig);
    // Another key.
    let stranger = signed(v2_sig(&key(3), c.id, 100, RESERVE_ADDRESS, CHAIN));
    assert_eq!(
        kind(&w, &stranger).await,
        ProblemKind::SessionSignerMismatch
    );
    // The v1 domain ("Tempo Stream Channel", uint128) for a v2 channel.
    let v1_domain = signed(v1_sig(&key(1), c.id, 100, RESERVE_ADDRESS));
    assert_eq!(
        kind(&w, &v1_domain).await,
        ProblemKind::SessionSignerMismatch
    );
    // Another chain, another reserve.
    let other_chain = signed(v2_sig(&key(1), c.id, 100, RESERVE_ADDRESS, 4217));
    assert_eq!(
        kind(&w, &other_chain).await,
        ProblemKind::SessionSignerMismatch
    );
    let other_reserve = signed(v2_sig(&key(1), c.id, 100, ESCROW, CHAIN));
    assert_eq!(
        kind(&w, &other_reserve).await,
        ProblemKind::SessionSignerMismatch
    );
    // Above uint96.
    let huge = voucher_action(
        "voucher",
        &c,
        MAX_V2_AMOUNT + 1,
        format!("0x{}", "11".repeat(65)),
    );
    assert_eq!(kind(&w, &huge).await, ProblemKind::InvalidPayload);
    // A wrong descriptor for this channel id.
    let wrong = V2Channel {
        descriptor: Descriptor {
            salt: B256::repeat_byte(0x01),
            ..c.descriptor
        },
        ..c.clone()
    };
    assert_eq!(
        kind(&w, &v2_voucher(&wrong, 100)).await,
        ProblemKind::VerificationFailed
    );
    // An id that is not this descriptor's (and not a channel we know).
    let unknown = V2Channel {
        id: B256::repeat_byte(0x42),
        ..c.clone()
    };
    assert_eq!(
        kind(&w, &v2_voucher(&unknown, 100)).await,
        ProblemKind::VerificationFailed
    );
    // No descriptor at all.
    let bare = Action::parse(&json!({
        "action": "voucher",
        "channelId": format!("{:#x}", c.id),
        "cumulativeAmount": "100",
        "signature": v2_sig(&key(1), c.id, 100, RESERVE_ADDRESS, CHAIN),
    }))
    .unwrap();
    assert_eq!(kind(&w, &bare).await, ProblemKind::InvalidPayload);
    // Nothing was accepted.
    let stored = w
        .ledger
        .channel(&format!("{:#x}", c.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.accepted, 0);
}

#[tokio::test]
async fn top_up_grows_the_deposit_of_the_stored_channel_only() {
    let w = world();
    let c = opened(&w, 1_000).await;
    let top_up_tx = |descriptor: &Descriptor, amount: u128, lane| {
        let call = ITIP20ChannelReserve::topUpCall {
            descriptor: reserve::to_abi(descriptor),
            additionalDeposit: U96::from(amount),
        };
        sign_tx(
            &key(1),
            vec![Call {
                to: TxKind::Call(RESERVE_ADDRESS),
                value: U256::ZERO,
                input: call.abi_encode().into(),
            }],
            lane,
        )
        .encoded_2718()
    };
    let action = |tx: &[u8], amount: u128, d: &Descriptor| {
        Action::parse(&json!({
            "action": "topUp",
            "type": "transaction",
            "channelId": format!("{:#x}", c.id),
            "transaction": format!("0x{}", alloy::hex::encode(tx)),
            "descriptor": descriptor_json(d),
            "additionalDeposit": amount.to_string(),
        }))
        .unwrap()
    };
    let tx = top_up_tx(&c.descriptor, 500, 1);
    w.v2.on_broadcast(&tx, Effect::TopUp(c.id, 500));
    // The claimed amount must be the transaction's.
    assert_eq!(
        kind(&w, &action(&tx, 400, &c.descriptor)).await,
        ProblemKind::InvalidPayload
    );
    let applied = w
        .gate
        .apply(&action(&tx, 500, &c.descriptor), 0)
        .await
        .unwrap();
    assert_eq!(applied.channel.deposit, 1_500);
    // A top-up of another channel under this id.
    let other = Descriptor {
        salt: B256::repeat_byte(3),
        ..c.descriptor
    };
    let tx = top_up_tx(&other, 500, 2);
    assert_eq!(
        kind(&w, &action(&tx, 500, &c.descriptor)).await,
        ProblemKind::InvalidPayload
    );
}

#[tokio::test]
async fn close_needs_a_voucher_covering_spent_and_captures_exactly_spent() {
    let w = world();
    let c = opened(&w, 1_000).await;
    w.gate.apply(&v2_voucher(&c, 500), 0).await.unwrap();
    spend(&w, &c, 300).await;
    // Below what was spent.
    assert_eq!(
        kind(&w, &v2_close(&c, 200)).await,
        ProblemKind::SessionDeltaTooSmall
    );
    // Above the deposit.
    assert_eq!(
        kind(&w, &v2_close(&c, 1_001)).await,
        ProblemKind::SessionAmountExceedsDeposit
    );
    let applied = w.gate.apply(&v2_close(&c, 400), 0).await.unwrap();
    assert!(applied.tx_hash.is_some());
    assert_eq!(applied.channel.status, ChannelStatus::Finalized);
    assert_eq!(applied.channel.settled, 300);
    let landed = w.v2.landed();
    let [close] = landed.as_slice() else {
        panic!("{landed:?}")
    };
    assert!(close.close);
    assert_eq!(close.capture, 300, "capture = max(spent, settled)");
    assert!(close.cumulative >= close.capture);
    assert_eq!(close.descriptor, Some(c.descriptor));
    // The reserve deleted it; a second close is refused.
    assert!(!w.v2.get(c.id).exists);
    assert_eq!(
        kind(&w, &v2_close(&c, 500)).await,
        ProblemKind::SessionChannelFinalized
    );
}

#[tokio::test]
async fn capture_is_settled_when_settled_exceeds_spent() {
    let w = world();
    let c = opened(&w, 1_000).await;
    w.gate.apply(&v2_voucher(&c, 600), 0).await.unwrap();
    spend(&w, &c, 100).await;
    // Settled on chain above what we recorded as spent.
    w.v2.set(
        c.id,
        ChannelState {
            settled: 400,
            ..open_state(1_000)
        },
    );
    w.gate.refresh(c.id).await.unwrap();
    w.gate.apply(&v2_close(&c, 600), 0).await.unwrap();
    assert_eq!(w.v2.landed()[0].capture, 400);
}

#[tokio::test]
async fn routine_settlement_takes_at_most_spent_and_is_reconciled_after_a_lost_answer() {
    let w = world();
    let c = opened(&w, 1_000).await;
    let id = format!("{:#x}", c.id);
    w.gate.apply(&v2_voucher(&c, 200), 0).await.unwrap();
    spend(&w, &c, 200).await;
    w.gate.apply(&v2_voucher(&c, 500), 0).await.unwrap();
    // The settle lands but its answer is lost (a crash, a timeout).
    w.v2.state.lock().unwrap().lose_next_answer = true;
    assert_eq!(
        w.gate.submit_settlement(&id, false).await.unwrap_err().kind,
        ProblemKind::ChainUnavailable
    );
    let stored = w.ledger.channel(&id).await.unwrap().unwrap();
    let flight = stored.inflight.expect("recorded before broadcast");
    assert_eq!(flight.amount, 200, "never more than spent");
    assert_eq!(w.gate.reconcile().await.unwrap(), 1);
    let stored = w.ledger.channel(&id).await.unwrap().unwrap();
    assert!(stored.inflight.is_none());
    assert_eq!(stored.settled, 200);
    // Nothing more is owed.
    assert_eq!(w.gate.submit_settlement(&id, false).await.unwrap(), None);
}

#[tokio::test]
async fn a_close_that_never_reached_the_chain_is_abandoned_then_retried() {
    let w = world();
    let c = opened(&w, 1_000).await;
    let id = format!("{:#x}", c.id);
    w.gate.apply(&v2_voucher(&c, 300), 0).await.unwrap();
    spend(&w, &c, 300).await;
    w.v2.state.lock().unwrap().fail_next = Some(ChainError::Unavailable("down".into()));
    assert!(w.gate.apply(&v2_close(&c, 300), 0).await.is_err());
    assert!(
        w.ledger
            .channel(&id)
            .await
            .unwrap()
            .unwrap()
            .inflight
            .is_some()
    );
    w.gate.reconcile().await.unwrap();
    assert!(
        w.ledger
            .channel(&id)
            .await
            .unwrap()
            .unwrap()
            .inflight
            .is_none()
    );
    w.gate.submit_settlement(&id, true).await.unwrap();
    assert_eq!(w.v2.landed().len(), 1);
    assert_eq!(w.v2.landed()[0].capture, 300);
}

#[tokio::test]
async fn both_protocols_side_by_side() {
    let w = world_with(Protocols::Both, 0);
    let offers = w.gate.offers(10, None);
    assert_eq!(offers.len(), 2);
    assert_eq!(offers[0].protocol, Protocol::V2);
    assert_eq!(offers[0].escrow, RESERVE_ADDRESS);
    assert_eq!(
        offers[0].request_json()["methodDetails"]["sessionProtocol"],
        "v2"
    );
    assert_eq!(offers[1].protocol, Protocol::V1);
    assert_eq!(offers[1].escrow, ESCROW);
    assert!(!offers[1].same_terms(&offers[0].request_json()));

    let c = opened(&w, 1_000).await;
    // A v2 channel's voucher answering the v1 challenge.
    let refused = w
        .gate
        .apply_as(&v2_voucher(&c, 100), 0, None, Some(Protocol::V1))
        .await
        .unwrap_err();
    assert_eq!(refused.kind, ProblemKind::InvalidChallenge);
    // A v2 open answering the v1 challenge.
    let other = v2_channel(&key(1), 1_000, 0xcc);
    let refused = w
        .gate
        .apply_as(&v2_open_action(&other, 0), 0, None, Some(Protocol::V1))
        .await
        .unwrap_err();
    assert_eq!(refused.kind, ProblemKind::InvalidChallenge);

    // A v1 channel on the same gate: the v1 domain, the escrow's rules.
    let v1_id = B256::repeat_byte(0x77);
    let record = ChannelRecord {
        channel_id: format!("{v1_id:#x}"),
        protocol: "v1".into(),
        escrow: format!("{ESCROW:#x}"),
        chain_id: CHAIN,
        payer: format!("{:#x}", key(1).address()),
        payee: format!("{:#x}", payee().address()),
        token: format!("{TOKEN:#x}"),
        authorized_signer: format!("{:#x}", key(1).address()),
        descriptor: None,
        deposit: 1_000,
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
    };
    w.ledger.open_channel(&record, None).await.unwrap();
    w.v1.set(v1_id, open_state(1_000));
    let v1_voucher = |amount: u128, sig: String| {
        Action::parse(&json!({
            "action": "voucher",
            "channelId": format!("{v1_id:#x}"),
            "cumulativeAmount": amount.to_string(),
            "signature": sig,
        }))
        .unwrap()
    };
    let ok = w
        .gate
        .apply_as(
            &v1_voucher(100, v1_sig(&key(1), v1_id, 100, ESCROW)),
            0,
            None,
            Some(Protocol::V1),
        )
        .await
        .unwrap();
    assert_eq!(ok.channel.accepted, 100);
    // The v2 domain does not sign for a v1 channel.
    let wrong_domain = v1_voucher(200, v2_sig(&key(1), v1_id, 200, ESCROW, CHAIN));
    assert_eq!(
        kind(&w, &wrong_domain).await,
        ProblemKind::SessionSignerMismatch
    );
    // v1 close captures the voucher's amount (the smallest covering spent).
    let reservation = w.gate.reserve(&record.channel_id, 80).await.unwrap();
    w.gate.commit(reservation, 80, 1).await.unwrap();
    let close = Action::parse(&json!({
        "action": "close",
        "channelId": format!("{v1_id:#x}"),
        "cumulativeAmount": "80",
        "signature": v1_sig(&key(1), v1_id, 80, ESCROW),
    }))
    .unwrap();
    w.gate.apply(&close, 0).await.unwrap();
    assert_eq!(w.v1.landed()[0].cumulative, 80);
    assert!(w.v1.get(v1_id).finalized);
    assert!(w.v2.landed().is_empty());
}

#[tokio::test]
async fn snapshot_names_the_channel_and_its_highest_voucher() {
    /// The snapshot header `gate` builds for `channel` with `voucher` in
    /// hand, decoded.
    fn header_for(
        gate: &SessionGate,
        channel: &ChannelRecord,
        voucher: &Action,
    ) -> serde_json::Value {
        let Action::Voucher(signed) = voucher else {
            panic!("a voucher action")
        };
        let header = gate
            .snapshot_header_with(channel, 300, Some(signed))
            .unwrap();
        assert!(!header.contains('='));
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        serde_json::from_slice(&json).unwrap()
    }
    let w = world();
    let c = opened(&w, 1_000).await;
    let voucher = v2_voucher(&c, 250);
    let channel = w.gate.apply(&voucher, 0).await.unwrap().channel;
    let snapshot = w.gate.snapshot(&channel, 300).await.unwrap().unwrap();
    assert_eq!(snapshot["channelId"], format!("{:#x}", c.id));
    assert_eq!(snapshot["acceptedCumulative"], "250");
    assert_eq!(snapshot["requiredCumulative"], "300");
    assert_eq!(snapshot["highestVoucher"]["cumulativeAmount"], "250");
    assert_eq!(snapshot["descriptor"], descriptor_json(&c.descriptor));
    // A paid answer's header, built without a ledger read from the voucher
    // the request carried, says the same.
    assert_eq!(header_for(&w.gate, &channel, &voucher), snapshot);
    // Without the highest voucher in hand, the header leaves it out.
    let decoded = header_for(&w.gate, &channel, &v2_voucher(&c, 200));
    assert!(decoded.get("highestVoucher").is_none());
    assert_eq!(decoded["spent"], snapshot["spent"]);
}

#[tokio::test]
async fn a_v2_only_gate_refuses_v1_opens() {
    let w = world();
    let c = v2_channel(&key(1), 1_000, 0xaa);
    let mut v1_open = v2_open_action(&c, 0);
    if let Action::Open(open) = &mut v1_open {
        open.descriptor = None;
    }
    assert_eq!(kind(&w, &v1_open).await, ProblemKind::MethodUnsupported);
    let _ = Bytes::new();
}

#[tokio::test]
async fn a_v2_channel_gone_from_the_reserve_is_final() {
    let w = world();
    let c = opened(&w, 1_000).await;
    w.gate.apply(&v2_voucher(&c, 100), 0).await.unwrap();
    // The payer withdrew after a forced close: the reserve deleted it.
    w.v2.state.lock().unwrap().channels.remove(&c.id);
    let refreshed = w.gate.refresh(c.id).await.unwrap();
    assert_eq!(refreshed.status, ChannelStatus::Finalized);
    assert_eq!(
        kind(&w, &v2_voucher(&c, 200)).await,
        ProblemKind::SessionChannelFinalized
    );
}

#[tokio::test]
async fn compact_vouchers_are_stored_in_the_form_settlement_takes() {
    let w = world();
    let c = opened(&w, 1_000).await;
    let full = v2_sig(&key(1), c.id, 300, RESERVE_ADDRESS, CHAIN);
    let raw = alloy::hex::decode(&full).unwrap();
    let compact = alloy::primitives::Signature::from_raw(&raw)
        .unwrap()
        .as_erc2098();
    let action = voucher_action(
        "voucher",
        &c,
        300,
        format!("0x{}", alloy::hex::encode(compact)),
    );
    w.gate.apply(&action, 0).await.unwrap();
    spend(&w, &c, 300).await;
    w.gate.apply(&v2_close(&c, 300), 0).await.unwrap();
    assert_eq!(w.v2.landed()[0].signature.len(), 65);
}
