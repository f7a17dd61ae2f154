//! Tempo `charge`: a signed 0x76 TIP-20 transfer (with the challenge-bound
//! attribution memo), sent to the server to broadcast (pull) or broadcast
//! here and named by its hash (push). Zero-amount charges are answered
//! with a proof signature.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use mpp::client::tempo::charge::{SignOptions, TempoCharge};
use mpp::protocol::core::Base64UrlJson;
use mpp::{PaymentChallenge, PaymentCredential, PaymentPayload};

use crate::challenge::ChargeOffer;
use crate::error::{Error, Result};
use crate::rpc::Rpc;

/// How a charge reaches the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChargeMode {
    /// The credential carries the signed transaction; the server broadcasts.
    #[default]
    Pull,
    /// The client broadcasts and sends the transaction hash.
    Push,
}

impl ChargeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
        }
    }
}

/// The mode to use: the asked one when the server accepts it; pull falls
/// back to push when the server only takes push. Checked before signing.
pub fn resolve_mode(offer: &ChargeOffer, asked: ChargeMode) -> Result<ChargeMode> {
    if offer.amount == 0 || offer.supports(asked.as_str()) {
        return Ok(asked);
    }
    if asked == ChargeMode::Pull && offer.supports("push") {
        return Ok(ChargeMode::Push);
    }
    Err(Error::Unsupported(format!(
        "the server does not accept {} charges (supportedModes: {})",
        asked.as_str(),
        offer.modes.as_deref().unwrap_or_default().join(", ")
    )))
}

/// A signed charge, ready to send.
pub struct SignedCharge {
    pub credential: PaymentCredential,
    /// The transfer's hash (push mode, where it was broadcast here).
    pub tx_hash: Option<String>,
    pub mode: ChargeMode,
}

/// Signs (and in push mode broadcasts) the payment for `challenge`.
pub async fn pay(
    challenge: &PaymentChallenge,
    offer: &ChargeOffer,
    signer: &PrivateKeySigner,
    rpc: Option<&Rpc>,
    mode: ChargeMode,
    fee_token: Option<Address>,
) -> Result<SignedCharge> {
    if offer.amount == 0 {
        // A proof of the payer's account: no transaction.
        let signed = TempoCharge::from_challenge(challenge)
            .map_err(Error::signing)?
            .sign_with_options(signer, options(rpc, None, fee_token))
            .await
            .map_err(Error::signing)?;
        return Ok(SignedCharge {
            credential: signed.into_credential(),
            tx_hash: None,
            mode,
        });
    }
    match mode {
        ChargeMode::Pull => {
            // Fee-sponsored transactions must use the expiring nonce the
            // server's co-signer expects; our own go on a fresh 2D nonce
            // lane (back-to-back expiring-nonce transactions from one sender
            // can stall a node).
            let lane = if offer.fee_payer {
                None
            } else {
                Some(random_lane())
            };
            let signed = TempoCharge::from_challenge(challenge)
                .map_err(Error::signing)?
                .sign_with_options(signer, options(rpc, lane, fee_token))
                .await
                .map_err(Error::signing)?;
            Ok(SignedCharge {
                credential: signed.into_credential(),
                tx_hash: None,
                mode,
            })
        }
        ChargeMode::Push => {
            let rpc = rpc.ok_or_else(|| {
                Error::Config("push mode broadcasts the transfer: it needs --rpc-url".to_owned())
            })?;
            // We pay our own fees when broadcasting, whatever the server
            // offers, and the server's supportedModes were checked above:
            // sign a copy without them (same id, realm, amount, memo).
            let plain = without_pull_only_details(challenge)?;
            let signed = TempoCharge::from_challenge(&plain)
                .map_err(Error::signing)?
                .sign_with_options(signer, options(Some(rpc), Some(random_lane()), fee_token))
                .await
                .map_err(Error::signing)?;
            rpc.send_raw_sync(signed.tx_bytes()).await?;
            let hash = format!("{:#x}", keccak256(signed.tx_bytes()));
            let credential =
                PaymentCredential::new(challenge.to_echo(), PaymentPayload::hash(&hash));
            Ok(SignedCharge {
                credential,
                tx_hash: Some(hash),
                mode,
            })
        }
    }
}

fn options(rpc: Option<&Rpc>, lane: Option<U256>, fee_token: Option<Address>) -> SignOptions {
    SignOptions {
        rpc_url: rpc.map(|r| r.url().to_owned()),
        nonce_key: lane,
        nonce: lane.map(|_| 0),
        fee_token,
        ..Default::default()
    }
}

/// A fresh 2D nonce lane: a random key in a u64 range, never 0 (the
/// protocol nonce).
pub fn random_lane() -> U256 {
    U256::from_be_slice(&B256::random()[..8]) + U256::from(1)
}

/// The challenge with `feePayer` and `supportedModes` removed from its
/// method details: what a self-broadcast transfer is signed from.
fn without_pull_only_details(challenge: &PaymentChallenge) -> Result<PaymentChallenge> {
    let mut request = challenge
        .request
        .decode_value()
        .map_err(|e| Error::MalformedChallenge(e.to_string()))?;
    if let Some(details) = request
        .get_mut("methodDetails")
        .and_then(|d| d.as_object_mut())
    {
        details.remove("feePayer");
        details.remove("supportedModes");
    }
    let mut copy = challenge.clone();
    copy.request = Base64UrlJson::from_value(&request).map_err(Error::signing)?;
    Ok(copy)
}
