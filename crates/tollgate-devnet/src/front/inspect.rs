//! What the front reads from a raw transaction before anvil sees it: the
//! reserve `open` calls it makes (whose channel ids depend on the
//! transaction's own hash) and the reserve funding calls (which the real
//! precompile makes without an allowance).

use alloy::consensus::transaction::SignerRecoverable;
use alloy::consensus::{SignableTransaction, Transaction};
use alloy::eips::Decodable2718;
use alloy::primitives::{Address, B256, Signature, keccak256};
use alloy::sol_types::SolCall;
use tempo_alloy::primitives::TempoTxEnvelope;

use crate::reserve::layout::open_context_slot;
use crate::reserve::{CHANNEL_RESERVE_ADDRESS, ITIP20ChannelReserve};

/// A storage write the front makes before forwarding a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Tells the stand-in the hash of the transaction that opens a channel.
    Seed { slot: B256, hash: B256 },
    /// Grants the reserve `owner`'s allowance on `token`.
    Grant { token: Address, owner: Address },
}

/// What the front learned from one raw transaction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Inspection {
    pub actions: Vec<Action>,
    /// A Tempo transaction on the expiring-nonce key (TIP-1009).
    pub expiring: Option<Expiring>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expiring {
    pub sender: Address,
    pub tx_hash: B256,
}

/// Reads a raw transaction (hex, as in `eth_sendRawTransaction`); nothing
/// when it is not one (anvil then answers it as usual).
pub(crate) fn inspect(raw_hex: &str) -> Inspection {
    let Ok(bytes) = hex::decode(raw_hex.trim_start_matches("0x")) else {
        return Inspection::default();
    };
    let Ok(envelope) = TempoTxEnvelope::decode_2718(&mut bytes.as_slice()) else {
        return Inspection::default();
    };
    let Ok(sender) = envelope.recover_signer() else {
        return Inspection::default();
    };
    let expiring = match &envelope {
        TempoTxEnvelope::AA(signed) if signed.tx().is_expiring_nonce_tx() => Some(Expiring {
            sender,
            tx_hash: *signed.hash(),
        }),
        _ => None,
    };
    Inspection {
        actions: reserve_actions(&envelope, sender),
        expiring,
    }
}

/// The storage writes a transaction's reserve calls need.
fn reserve_actions(envelope: &TempoTxEnvelope, sender: Address) -> Vec<Action> {
    let calls: Vec<(Option<Address>, &[u8])> = match envelope {
        TempoTxEnvelope::AA(signed) => signed
            .tx()
            .calls
            .iter()
            .map(|call| (call.to.to().copied(), call.input.as_ref()))
            .collect(),
        other => vec![(Transaction::to(other), Transaction::input(other).as_ref())],
    };
    let touches_reserve = calls
        .iter()
        .any(|(to, _)| *to == Some(CHANNEL_RESERVE_ADDRESS));
    if !touches_reserve {
        return Vec::new();
    }
    let context = context_hash(envelope, sender);
    calls
        .into_iter()
        .filter(|(to, _)| *to == Some(CHANNEL_RESERVE_ADDRESS))
        .flat_map(|(_, input)| actions_for_call(input, sender, context))
        .collect()
}

/// TIP-1034's replay-protected context hash of the enclosing transaction:
/// `keccak256(encodeForSigning || sender)`, for every transaction type.
fn context_hash(envelope: &TempoTxEnvelope, sender: Address) -> B256 {
    match envelope {
        // Tempo's own helper: leaves out the fee payer's signature (and fee
        // token) exactly as the node does.
        TempoTxEnvelope::AA(signed) => signed.expiring_nonce_hash(sender),
        TempoTxEnvelope::Legacy(signed) => signing_payload_hash(signed.tx(), sender),
        TempoTxEnvelope::Eip2930(signed) => signing_payload_hash(signed.tx(), sender),
        TempoTxEnvelope::Eip1559(signed) => signing_payload_hash(signed.tx(), sender),
        TempoTxEnvelope::Eip7702(signed) => signing_payload_hash(signed.tx(), sender),
    }
}

fn signing_payload_hash<T: SignableTransaction<Signature>>(tx: &T, sender: Address) -> B256 {
    let mut payload = Vec::with_capacity(tx.payload_len_for_signature() + 20);
    tx.encode_for_signing(&mut payload);
    payload.extend_from_slice(sender.as_slice());
    keccak256(payload)
}

fn actions_for_call(input: &[u8], sender: Address, context: B256) -> Vec<Action> {
    if let Ok(open) = ITIP20ChannelReserve::openCall::abi_decode(input) {
        let slot = open_context_slot(
            sender,
            open.payee,
            open.operator,
            open.token,
            open.salt,
            open.authorizedSigner,
        );
        let mut actions = vec![Action::Seed {
            slot,
            hash: context,
        }];
        actions.extend(grant(open.token, sender));
        return actions;
    }
    if let Ok(top_up) = ITIP20ChannelReserve::topUpCall::abi_decode(input) {
        return grant(top_up.descriptor.token, sender).into_iter().collect();
    }
    Vec::new()
}

/// Only TIP-20 addresses: anything else is refused by the reserve anyway,
/// and the front writes no storage it has no reason to.
fn grant(token: Address, owner: Address) -> Option<Action> {
    const TIP20_PREFIX: [u8; 12] = [0x20, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    (token.as_slice()[..12] == TIP20_PREFIX).then_some(Action::Grant { token, owner })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::eips::Encodable2718;
    use alloy::primitives::{Bytes, TxKind, U256, aliases::U96};
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use tempo_alloy::primitives::TempoTransaction;
    use tempo_alloy::primitives::transaction::Call;

    const TOKEN: Address = Address::new([
        0x20, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);

    fn open_call(salt: B256) -> Vec<u8> {
        ITIP20ChannelReserve::openCall {
            payee: Address::repeat_byte(0x22),
            operator: Address::ZERO,
            token: TOKEN,
            deposit: U96::from(1_000_000u64),
            salt,
            authorizedSigner: Address::ZERO,
        }
        .abi_encode()
    }

    fn signed(
        key: &PrivateKeySigner,
        calls: Vec<(Address, Vec<u8>)>,
    ) -> (String, TempoTransaction) {
        signed_on(key, calls, U256::from(7))
    }

    fn signed_on(
        key: &PrivateKeySigner,
        calls: Vec<(Address, Vec<u8>)>,
        nonce_key: U256,
    ) -> (String, TempoTransaction) {
        let tx = TempoTransaction {
            chain_id: 42431,
            nonce_key,
            gas_limit: 1_000_000,
            max_fee_per_gas: 20_000_000_000,
            max_priority_fee_per_gas: 1,
            calls: calls
                .into_iter()
                .map(|(to, input)| Call {
                    to: TxKind::Call(to),
                    value: U256::ZERO,
                    input: Bytes::from(input),
                })
                .collect(),
            ..Default::default()
        };
        let signature = key.sign_hash_sync(&tx.signature_hash()).unwrap();
        let raw = tx.clone().into_signed(signature.into()).encoded_2718();
        (format!("0x{}", hex::encode(raw)), tx)
    }

    fn inspect_actions(raw: &str) -> Vec<Action> {
        inspect(raw).actions
    }

    #[test]
    fn an_open_is_seeded_with_the_hash_of_its_signing_payload_and_sender() {
        let key = PrivateKeySigner::random();
        let salt = B256::repeat_byte(0x5a);
        let (raw, tx) = signed(&key, vec![(CHANNEL_RESERVE_ADDRESS, open_call(salt))]);

        // The TIP's definition, computed by hand.
        let mut preimage = Vec::new();
        tx.encode_for_signing(&mut preimage);
        preimage.extend_from_slice(key.address().as_slice());
        let expected = keccak256(preimage);

        let slot = open_context_slot(
            key.address(),
            Address::repeat_byte(0x22),
            Address::ZERO,
            TOKEN,
            salt,
            Address::ZERO,
        );
        let inspection = inspect(&raw);
        assert_eq!(inspection.expiring, None);
        assert_eq!(
            inspection.actions,
            vec![
                Action::Seed {
                    slot,
                    hash: expected
                },
                Action::Grant {
                    token: TOKEN,
                    owner: key.address()
                }
            ]
        );
    }

    #[test]
    fn every_open_in_a_batch_shares_the_transaction_hash() {
        let key = PrivateKeySigner::random();
        let (raw, _) = signed(
            &key,
            vec![
                (CHANNEL_RESERVE_ADDRESS, open_call(B256::repeat_byte(1))),
                (TOKEN, vec![0xa9, 0x05, 0x9c, 0xbb]),
                (CHANNEL_RESERVE_ADDRESS, open_call(B256::repeat_byte(2))),
            ],
        );
        let hashes: Vec<B256> = inspect_actions(&raw)
            .into_iter()
            .filter_map(|a| match a {
                Action::Seed { hash, .. } => Some(hash),
                Action::Grant { .. } => None,
            })
            .collect();
        assert_eq!(hashes.len(), 2);
        assert_eq!(hashes[0], hashes[1]);
    }

    #[test]
    fn transactions_elsewhere_and_garbage_need_nothing() {
        let key = PrivateKeySigner::random();
        let (raw, _) = signed(&key, vec![(TOKEN, open_call(B256::ZERO))]);
        assert_eq!(inspect_actions(&raw), vec![]);
        assert_eq!(inspect_actions("0x76deadbeef"), vec![]);
        assert_eq!(inspect_actions("not hex"), vec![]);
        // A reserve call that is not open or topUp (requestClose) needs nothing.
        let descriptor = ITIP20ChannelReserve::ChannelDescriptor {
            payer: key.address(),
            payee: Address::repeat_byte(0x22),
            operator: Address::ZERO,
            token: TOKEN,
            salt: B256::ZERO,
            authorizedSigner: Address::ZERO,
            expiringNonceHash: B256::ZERO,
        };
        let request_close = ITIP20ChannelReserve::requestCloseCall {
            descriptor: descriptor.clone(),
        }
        .abi_encode();
        let (raw, _) = signed(&key, vec![(CHANNEL_RESERVE_ADDRESS, request_close)]);
        assert_eq!(inspect_actions(&raw), vec![]);
        let top_up = ITIP20ChannelReserve::topUpCall {
            descriptor,
            additionalDeposit: U96::from(5u8),
        }
        .abi_encode();
        let (raw, _) = signed(&key, vec![(CHANNEL_RESERVE_ADDRESS, top_up)]);
        assert_eq!(
            inspect_actions(&raw),
            vec![Action::Grant {
                token: TOKEN,
                owner: key.address()
            }]
        );
    }

    #[test]
    fn an_expiring_nonce_transaction_is_recognised_with_its_hash() {
        use tempo_alloy::primitives::transaction::TEMPO_EXPIRING_NONCE_KEY;
        let key = PrivateKeySigner::random();
        let (raw, _) = signed_on(&key, vec![(TOKEN, vec![1])], TEMPO_EXPIRING_NONCE_KEY);
        let expected_hash = keccak256(hex::decode(raw.trim_start_matches("0x")).unwrap());
        assert_eq!(
            inspect(&raw).expiring,
            Some(Expiring {
                sender: key.address(),
                tx_hash: expected_hash
            })
        );
    }
}
