//! Tempo `session` v2 (the TIP-20 channel reserve, TIP-1034): the payer's
//! open and topUp transactions, the channel descriptor every credential
//! carries, and vouchers in the "TIP20 Channel Reserve" domain (`uint96`).
//!
//! The reserve moves the deposit without an approval, so unlike v1 there
//! is no `approve` call; the open uses an expiring nonce, whose hash makes
//! the channel id unique.

use std::num::NonZeroU64;

use alloy::eips::Encodable2718;
use alloy::primitives::aliases::U96;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use mpp::protocol::methods::tempo::precompile_voucher::{
    PRECOMPILE_MAX_CUMULATIVE_AMOUNT, compute_precompile_channel_id_with_escrow,
    sign_precompile_voucher_with_escrow,
};
use serde_json::{Value, json};
use tempo_alloy::primitives::transaction::{Call, TEMPO_EXPIRING_NONCE_KEY};
use tempo_alloy::primitives::{AASigned, TempoTransaction};

use crate::challenge::SessionOffer;
use crate::charge::random_lane;
use crate::error::{Error, Result};
use crate::rpc::{ITIP20ChannelReserve, Rpc};
use crate::session::Opening;

/// Gas for reserve transactions.
const RESERVE_GAS: u64 = 2_000_000;
/// How long an expiring-nonce open stays valid.
const OPEN_VALID_SECS: u64 = 25;

/// A v2 channel's identity, as the draft's `descriptor` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub payer: Address,
    pub payee: Address,
    pub operator: Address,
    pub token: Address,
    pub salt: B256,
    pub authorized_signer: Address,
    pub expiring_nonce_hash: B256,
}

impl Descriptor {
    pub fn to_json(&self) -> Value {
        json!({
            "payer": format!("{:#x}", self.payer),
            "payee": format!("{:#x}", self.payee),
            "operator": format!("{:#x}", self.operator),
            "token": format!("{:#x}", self.token),
            "salt": format!("{:#x}", self.salt),
            "authorizedSigner": format!("{:#x}", self.authorized_signer),
            "expiringNonceHash": format!("{:#x}", self.expiring_nonce_hash),
        })
    }

    /// Reads the stored JSON back.
    pub fn from_json(value: &Value) -> Result<Self> {
        let field = |key: &str| -> Result<&str> {
            value
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| Error::State(format!("stored descriptor lacks {key}")))
        };
        let parse_address = |key: &str| -> Result<Address> {
            field(key)?
                .parse()
                .map_err(|_| Error::State(format!("stored descriptor {key} is not an address")))
        };
        let parse_b256 = |key: &str| -> Result<B256> {
            field(key)?
                .parse()
                .map_err(|_| Error::State(format!("stored descriptor {key} is not bytes32")))
        };
        Ok(Self {
            payer: parse_address("payer")?,
            payee: parse_address("payee")?,
            operator: parse_address("operator")?,
            token: parse_address("token")?,
            salt: parse_b256("salt")?,
            authorized_signer: parse_address("authorizedSigner")?,
            expiring_nonce_hash: parse_b256("expiringNonceHash")?,
        })
    }

    /// The channel id on `reserve` and `chain_id`.
    pub fn channel_id(&self, reserve: Address, chain_id: u64) -> B256 {
        compute_precompile_channel_id_with_escrow(
            self.payer,
            self.payee,
            self.operator,
            self.token,
            self.salt,
            self.authorized_signer,
            self.expiring_nonce_hash,
            reserve,
            chain_id,
        )
    }

    fn abi(&self) -> ITIP20ChannelReserve::ChannelDescriptor {
        ITIP20ChannelReserve::ChannelDescriptor {
            payer: self.payer,
            payee: self.payee,
            operator: self.operator,
            token: self.token,
            salt: self.salt,
            authorizedSigner: self.authorized_signer,
            expiringNonceHash: self.expiring_nonce_hash,
        }
    }
}

fn uint96(amount: u128) -> Result<U96> {
    if amount > PRECOMPILE_MAX_CUMULATIVE_AMOUNT {
        return Err(Error::Policy(format!(
            "{amount} exceeds what a v2 channel can hold (2^96 - 1)"
        )));
    }
    Ok(U96::from(amount))
}

fn sign(signer: &PrivateKeySigner, tx: TempoTransaction) -> Result<AASigned> {
    let signature = signer
        .sign_hash_sync(&tx.signature_hash())
        .map_err(Error::signing)?;
    Ok(tx.into_signed(signature.into()))
}

fn now() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}

/// A v2 voucher signature (65 bytes, 0x-hex).
pub async fn voucher_signature(
    signer: &PrivateKeySigner,
    reserve: Address,
    chain_id: u64,
    channel: B256,
    cumulative: u128,
) -> Result<String> {
    uint96(cumulative)?;
    let bytes = sign_precompile_voucher_with_escrow(signer, channel, cumulative, reserve, chain_id)
        .await
        .map_err(Error::signing)?;
    Ok(format!("0x{}", alloy::hex::encode(bytes)))
}

/// open(payee, 0, token, deposit, salt, 0) on an expiring nonce, the
/// descriptor it makes, and an initial voucher for `initial`.
pub async fn open(
    signer: &PrivateKeySigner,
    rpc: &Rpc,
    offer: &SessionOffer,
    deposit: u128,
    initial: u128,
    fee_token: Address,
) -> Result<(Opening, Descriptor)> {
    let gas_price = rpc.gas_price().await?;
    // The expiring nonce's window is judged against the chain's clock,
    // which may run ahead of ours.
    let chain_now = rpc.block_timestamp().await.unwrap_or(0);
    open_signed(
        signer, offer, deposit, initial, fee_token, gas_price, chain_now,
    )
    .await
}

/// [`open`] at a known gas price (no RPC).
pub async fn open_signed(
    signer: &PrivateKeySigner,
    offer: &SessionOffer,
    deposit: u128,
    initial: u128,
    fee_token: Address,
    gas_price: u128,
    chain_now: u64,
) -> Result<(Opening, Descriptor)> {
    let salt = B256::random();
    let call = ITIP20ChannelReserve::openCall {
        payee: offer.recipient,
        operator: Address::ZERO,
        token: offer.currency,
        deposit: uint96(deposit)?,
        salt,
        authorizedSigner: Address::ZERO,
    };
    let tx = TempoTransaction {
        chain_id: offer.chain_id,
        fee_token: Some(fee_token),
        nonce_key: TEMPO_EXPIRING_NONCE_KEY,
        nonce: 0,
        valid_before: NonZeroU64::new(now().max(chain_now) + OPEN_VALID_SECS),
        gas_limit: RESERVE_GAS,
        max_fee_per_gas: gas_price.saturating_mul(2),
        max_priority_fee_per_gas: gas_price,
        calls: vec![Call {
            to: TxKind::Call(offer.escrow),
            value: U256::ZERO,
            input: call.abi_encode().into(),
        }],
        ..Default::default()
    };
    let signed = sign(signer, tx)?;
    let descriptor = Descriptor {
        payer: signer.address(),
        payee: offer.recipient,
        operator: Address::ZERO,
        token: offer.currency,
        salt,
        authorized_signer: Address::ZERO,
        expiring_nonce_hash: signed.expiring_nonce_hash(signer.address()),
    };
    let channel_id = descriptor.channel_id(offer.escrow, offer.chain_id);
    let signature =
        voucher_signature(signer, offer.escrow, offer.chain_id, channel_id, initial).await?;
    let transaction = Bytes::from(signed.encoded_2718());
    Ok((
        Opening {
            channel_id,
            payload: json!({
                "action": "open",
                "type": "transaction",
                "channelId": format!("{channel_id:#x}"),
                "transaction": transaction.to_string(),
                "descriptor": descriptor.to_json(),
                "authorizedSigner": format!("{:#x}", Address::ZERO),
                "cumulativeAmount": initial.to_string(),
                "signature": signature,
            }),
        },
        descriptor,
    ))
}

/// topUp(descriptor, amount).
pub async fn top_up(
    signer: &PrivateKeySigner,
    rpc: &Rpc,
    offer: &SessionOffer,
    descriptor: &Descriptor,
    amount: u128,
    fee_token: Address,
) -> Result<Value> {
    let call = ITIP20ChannelReserve::topUpCall {
        descriptor: descriptor.abi(),
        additionalDeposit: uint96(amount)?,
    };
    let gas_price = rpc.gas_price().await?;
    let tx = TempoTransaction {
        chain_id: offer.chain_id,
        fee_token: Some(fee_token),
        nonce_key: random_lane(),
        nonce: 0,
        gas_limit: RESERVE_GAS,
        max_fee_per_gas: gas_price.saturating_mul(2),
        max_priority_fee_per_gas: gas_price,
        calls: vec![Call {
            to: TxKind::Call(offer.escrow),
            value: U256::ZERO,
            input: call.abi_encode().into(),
        }],
        ..Default::default()
    };
    let signed = sign(signer, tx)?;
    let channel_id = descriptor.channel_id(offer.escrow, offer.chain_id);
    Ok(json!({
        "action": "topUp",
        "type": "transaction",
        "channelId": format!("{channel_id:#x}"),
        "transaction": Bytes::from(signed.encoded_2718()).to_string(),
        "descriptor": descriptor.to_json(),
        "additionalDeposit": amount.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_payments::session::{Action, RESERVE_ADDRESS};
    use tollgate_payments::session_v2::{self, Expected};

    fn offer() -> SessionOffer {
        SessionOffer {
            amount: 1_000,
            worst_case: 1_000,
            currency: Address::repeat_byte(0x20),
            recipient: Address::repeat_byte(0x11),
            suggested_deposit: None,
            escrow: RESERVE_ADDRESS,
            chain_id: 42431,
            min_voucher_delta: 0,
            v2: true,
        }
    }

    /// What this client sends is what the gateway's v2 checks accept.
    #[tokio::test]
    async fn the_gateway_accepts_our_v2_open_and_vouchers() {
        let signer = PrivateKeySigner::random();
        let terms = offer();
        let (opening, descriptor) = open_signed(
            &signer,
            &terms,
            5_000,
            1_000,
            terms.currency,
            1_000_000_000,
            0,
        )
        .await
        .unwrap();
        let Action::Open(open) = Action::parse(&opening.payload).unwrap() else {
            panic!("not an open")
        };
        let parsed = open.descriptor.unwrap();
        let expected = Expected {
            payee: terms.recipient,
            token: terms.currency,
            operator: Address::ZERO,
            escrow: RESERVE_ADDRESS,
            chain_id: terms.chain_id,
            channel_id: opening.channel_id,
        };
        let opened =
            session_v2::verify_open_transaction(&open.transaction, &parsed, &expected).unwrap();
        assert_eq!((opened.payer, opened.deposit), (signer.address(), 5_000));
        session_v2::verify_voucher(
            RESERVE_ADDRESS,
            terms.chain_id,
            opening.channel_id,
            1_000,
            &open.voucher.signature,
            signer.address(),
        )
        .unwrap();

        let stored = descriptor.to_json().to_string();
        assert_eq!(
            Descriptor::from_json(&serde_json::from_str(&stored).unwrap()).unwrap(),
            descriptor
        );
        let payload = crate::session::voucher(
            "voucher",
            &signer,
            RESERVE_ADDRESS,
            terms.chain_id,
            opening.channel_id,
            2_500,
            Some(&stored),
        )
        .await
        .unwrap();
        let Action::Voucher(voucher) = Action::parse(&payload).unwrap() else {
            panic!("not a voucher")
        };
        assert_eq!(voucher.descriptor, Some(parsed));
        session_v2::verify_voucher(
            RESERVE_ADDRESS,
            terms.chain_id,
            voucher.channel_id,
            2_500,
            &voucher.signature,
            signer.address(),
        )
        .unwrap();
        // Above uint96: refused before signing.
        assert!(
            voucher_signature(&signer, RESERVE_ADDRESS, 1, opening.channel_id, u128::MAX)
                .await
                .is_err()
        );
    }
}
