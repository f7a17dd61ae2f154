//! Tempo `session` v1 (escrow): the payer-side transactions (approve +
//! open, approve + topUp) and the cumulative EIP-712 vouchers; v2 lives in
//! [`crate::reserve`].

use alloy::eips::Encodable2718;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use mpp::{PaymentChallenge, PaymentCredential};
use serde_json::{Value, json};
use tempo_alloy::primitives::TempoTransaction;
use tempo_alloy::primitives::transaction::Call;

use crate::challenge::SessionOffer;
use crate::charge::random_lane;
use crate::error::{Error, Result};
use crate::rpc::{IEscrow, IToken, Rpc};

/// Gas for the escrow transactions (approve + open is well below).
const ESCROW_GAS: u64 = 2_000_000;

/// Signs a 0x76 transaction with `calls`, on a fresh 2D nonce lane, fees
/// paid in `fee_token`.
async fn sign_calls(
    signer: &PrivateKeySigner,
    rpc: &Rpc,
    chain_id: u64,
    fee_token: Address,
    calls: Vec<(Address, Vec<u8>)>,
) -> Result<Bytes> {
    let gas_price = rpc.gas_price().await?;
    let tx = TempoTransaction {
        chain_id,
        fee_token: Some(fee_token),
        nonce_key: random_lane(),
        nonce: 0,
        gas_limit: ESCROW_GAS,
        max_fee_per_gas: gas_price.saturating_mul(2),
        max_priority_fee_per_gas: gas_price,
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
    let signature = signer
        .sign_hash_sync(&tx.signature_hash())
        .map_err(Error::signing)?;
    Ok(Bytes::from(tx.into_signed(signature.into()).encoded_2718()))
}

/// A voucher signature (65 bytes, 0x-hex) for `cumulative` on `channel`.
pub async fn voucher_signature(
    signer: &PrivateKeySigner,
    offer_escrow: Address,
    chain_id: u64,
    channel: B256,
    cumulative: u128,
) -> Result<String> {
    let bytes = mpp::tempo::sign_voucher(signer, channel, cumulative, offer_escrow, chain_id)
        .await
        .map_err(Error::signing)?;
    Ok(format!("0x{}", alloy::hex::encode(bytes)))
}

/// A channel about to be opened.
pub struct Opening {
    pub channel_id: B256,
    pub payload: Value,
}

/// approve(escrow, deposit) + open(payee, token, deposit, salt, 0), and an
/// initial voucher for `initial`.
pub async fn open(
    signer: &PrivateKeySigner,
    rpc: &Rpc,
    offer: &SessionOffer,
    deposit: u128,
    initial: u128,
    fee_token: Address,
) -> Result<Opening> {
    let salt = B256::random();
    let channel_id = mpp::tempo::compute_channel_id(
        signer.address(),
        offer.recipient,
        offer.currency,
        salt,
        Address::ZERO,
        offer.escrow,
        offer.chain_id,
    );
    let approve = IToken::approveCall {
        spender: offer.escrow,
        amount: U256::from(deposit),
    }
    .abi_encode();
    let open = IEscrow::openCall {
        payee: offer.recipient,
        token: offer.currency,
        deposit,
        salt,
        authorizedSigner: Address::ZERO,
    }
    .abi_encode();
    let tx = sign_calls(
        signer,
        rpc,
        offer.chain_id,
        fee_token,
        vec![(offer.currency, approve), (offer.escrow, open)],
    )
    .await?;
    let signature =
        voucher_signature(signer, offer.escrow, offer.chain_id, channel_id, initial).await?;
    Ok(Opening {
        channel_id,
        payload: json!({
            "action": "open",
            "type": "transaction",
            "channelId": format!("{channel_id:#x}"),
            "transaction": tx.to_string(),
            "cumulativeAmount": initial.to_string(),
            "signature": signature,
        }),
    })
}

/// approve + topUp(channel, amount).
pub async fn top_up(
    signer: &PrivateKeySigner,
    rpc: &Rpc,
    offer: &SessionOffer,
    channel_id: B256,
    amount: u128,
    fee_token: Address,
) -> Result<Value> {
    let approve = IToken::approveCall {
        spender: offer.escrow,
        amount: U256::from(amount),
    }
    .abi_encode();
    let top_up = IEscrow::topUpCall {
        channelId: channel_id,
        additionalDeposit: U256::from(amount),
    }
    .abi_encode();
    let tx = sign_calls(
        signer,
        rpc,
        offer.chain_id,
        fee_token,
        vec![(offer.currency, approve), (offer.escrow, top_up)],
    )
    .await?;
    Ok(json!({
        "action": "topUp",
        "type": "transaction",
        "channelId": format!("{channel_id:#x}"),
        "transaction": tx.to_string(),
        "additionalDeposit": amount.to_string(),
    }))
}

/// A `voucher` or `close` payload for `cumulative`: v1, or v2 when the
/// channel has a descriptor (stored JSON), which the payload then carries.
pub async fn voucher(
    action: &str,
    signer: &PrivateKeySigner,
    escrow: Address,
    chain_id: u64,
    channel_id: B256,
    cumulative: u128,
    descriptor: Option<&str>,
) -> Result<Value> {
    let Some(descriptor) = descriptor else {
        let signature = voucher_signature(signer, escrow, chain_id, channel_id, cumulative).await?;
        return Ok(json!({
            "action": action,
            "channelId": format!("{channel_id:#x}"),
            "cumulativeAmount": cumulative.to_string(),
            "signature": signature,
        }));
    };
    let descriptor: Value = serde_json::from_str(descriptor)
        .map_err(|e| Error::State(format!("stored descriptor is not JSON: {e}")))?;
    let signature =
        crate::reserve::voucher_signature(signer, escrow, chain_id, channel_id, cumulative).await?;
    Ok(json!({
        "action": action,
        "channelId": format!("{channel_id:#x}"),
        "descriptor": descriptor,
        "cumulativeAmount": cumulative.to_string(),
        "signature": signature,
    }))
}

/// The header value carrying `payload` as an answer to `challenge`.
pub fn authorization(challenge: &PaymentChallenge, payload: Value) -> Result<String> {
    mpp::format_authorization(&PaymentCredential::new(challenge.to_echo(), payload))
        .map_err(Error::signing)
}

/// The cumulative amount to sign for a request needing `amount` at worst:
/// what was spent plus the request's need (capped by `authorize`), never
/// below what was signed before, rising by at least `min_delta` over what
/// was accepted (equal is an idempotent resubmission).
pub fn next_cumulative(
    signed: u128,
    accepted: u128,
    spent: u128,
    amount: u128,
    authorize: Option<u128>,
    min_delta: u128,
) -> u128 {
    let step = authorize.map_or(amount, |cap| cap.min(amount));
    let mut target = signed.max(spent.saturating_add(step));
    if target > accepted && target - accepted < min_delta {
        target = accepted.saturating_add(min_delta);
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_rules() {
        // Fresh request: spent + amount.
        assert_eq!(next_cumulative(1_000, 1_000, 600, 500, None, 0), 1_100);
        // Unspent authorization covers it: nothing new to sign.
        assert_eq!(next_cumulative(2_000, 2_000, 600, 500, None, 0), 2_000);
        // Never below what was signed.
        assert_eq!(next_cumulative(3_000, 2_000, 600, 500, None, 0), 3_000);
        // Authorize cap.
        assert_eq!(
            next_cumulative(1_000, 1_000, 600, 5_000, Some(700), 0),
            1_300
        );
        // Minimum delta.
        assert_eq!(next_cumulative(1_000, 1_000, 600, 401, None, 100), 1_100);
        assert_eq!(next_cumulative(1_000, 1_000, 1_000, 10, None, 100), 1_100);
    }
}
