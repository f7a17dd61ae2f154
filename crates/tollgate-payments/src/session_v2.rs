//! Tempo session protocol v2: channels held by the TIP-20 channel reserve
//! precompile (TIP-1034), per `draft-tempo-session-00`.
//!
//! A v2 channel has no contract storage we can query by id alone for its
//! parties: every credential carries the channel's descriptor, which must hash
//! to the claimed channel id. Everything here is a pure check except
//! [`RpcChannelReader`], which reads the precompile's mutable state.
//!
//! The SDK (`mpp`) owns the hashing: channel ids, EIP-712 voucher hashes and
//! the boolean voucher check come from it, so a change of formula there cannot
//! silently diverge from us. What this module adds is strict wire parsing,
//! errors precise enough to pick the spec's problem type, and the open
//! transaction checks.

use std::future::Future;
use std::time::Duration;

use alloy::consensus::transaction::SignerRecoverable;
use alloy::primitives::{Address, B256, Bytes, Signature, TxKind};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use mpp::protocol::methods::tempo::precompile_voucher::{
    PRECOMPILE_MAX_CUMULATIVE_AMOUNT, compute_precompile_channel_id_with_escrow,
    precompile_voucher_signing_hash_with_escrow, verify_precompile_voucher_signature,
};
use mpp::protocol::methods::tempo::session::ChannelDescriptor;
use serde_json::Value;
use tempo_alloy::TempoNetwork;
use tempo_alloy::contracts::precompiles::ITIP20ChannelReserve;
use tempo_alloy::primitives::AASigned;
use tempo_alloy::primitives::transaction::TEMPO_TX_TYPE_ID;
use tempo_alloy::rpc::TempoTransactionRequest;

use crate::redact::redact_hex;

/// Largest amount a v2 channel can hold or a voucher can authorize (2^96 − 1).
pub const MAX_V2_AMOUNT: u128 = PRECOMPILE_MAX_CUMULATIVE_AMOUNT;

/// Why a v2 credential was refused. Details never carry signatures or keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V2Error {
    /// The payload cannot be read: missing or malformed fields, or a
    /// transaction that is not a single precompile `open`.
    #[error("invalid v2 payload: {0}")]
    InvalidPayload(String),
    /// The descriptor or open transaction disagrees with the challenge, the
    /// claimed channel id, or each other, at `0`.
    #[error("channel {0} does not match")]
    DescriptorMismatch(Field),
    /// An amount does not fit the precompile's `uint96`.
    #[error("amount exceeds the uint96 range")]
    AmountOutOfRange,
    /// Not a canonical secp256k1 signature (length, `v`, high `s`, or it
    /// recovers no key at all).
    #[error("invalid voucher signature: {0}")]
    InvalidSignature(&'static str),
    /// A well-formed signature that recovers to `recovered`, not the channel's
    /// signer. ECDSA cannot tell another key from another message, so a
    /// voucher for another channel, amount, escrow, chain or EIP-712 domain
    /// lands here too.
    #[error("voucher is not signed by the channel's signer")]
    SignerMismatch { recovered: Address },
    /// The voucher authorizes more than the channel holds on chain.
    #[error("voucher amount exceeds the channel deposit")]
    AmountExceedsDeposit { cumulative: u128, deposit: u128 },
    /// The precompile holds nothing under this id: never opened, already
    /// closed or withdrawn, or not yet visible to a lagging node.
    #[error("channel not found")]
    ChannelNotFound,
    /// The channel is finalized or has a forced close pending, so service
    /// delivered now might never be settleable.
    #[error("channel is finalized or closing")]
    ChannelFinalized,
    /// The chain could not be read; nothing can be concluded.
    #[error("channel state could not be read: {0}")]
    Rpc(String),
}

impl V2Error {
    /// Problem type, relative to `https://paymentauth.org/problems/`. The
    /// `session/` ones are the spec's; the rest reuse the gateway's general
    /// types, since the spec names none for them.
    pub fn problem_slug(&self) -> &'static str {
        match self {
            Self::InvalidPayload(_) | Self::AmountOutOfRange => "invalid-payload",
            Self::DescriptorMismatch(_) => "verification-failed",
            Self::InvalidSignature(_) => "session/invalid-signature",
            Self::SignerMismatch { .. } => "session/signer-mismatch",
            Self::AmountExceedsDeposit { .. } => "session/amount-exceeds-deposit",
            Self::ChannelNotFound => "session/channel-not-found",
            Self::ChannelFinalized => "session/channel-finalized",
            Self::Rpc(_) => "chain-unavailable",
        }
    }

    /// HTTP status from the spec's rejection table. On the paid resource
    /// itself the caller answers 402 with a fresh challenge instead.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidPayload(_) | Self::AmountOutOfRange => 400,
            Self::ChannelNotFound | Self::ChannelFinalized => 410,
            Self::Rpc(_) => 503,
            _ => 402,
        }
    }
}

/// A descriptor (or open transaction) field that failed a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The descriptor does not hash to the claimed id on this escrow and
    /// chain; covers every field not compared on its own.
    ChannelId,
    Payer,
    Payee,
    Operator,
    Token,
    Salt,
    AuthorizedSigner,
    ExpiringNonceHash,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ChannelId => "channelId",
            Self::Payer => "payer",
            Self::Payee => "payee",
            Self::Operator => "operator",
            Self::Token => "token",
            Self::Salt => "salt",
            Self::AuthorizedSigner => "authorizedSigner",
            Self::ExpiringNonceHash => "expiringNonceHash",
        })
    }
}

/// The immutable identity of a v2 channel, as carried in every credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub payer: Address,
    pub payee: Address,
    /// Payee-side operator; zero when the challenge advertises none.
    pub operator: Address,
    pub token: Address,
    pub salt: B256,
    /// Voucher signer; zero delegates to `payer`.
    pub authorized_signer: Address,
    /// Hash of the sender-signed open transaction; makes the id unique.
    pub expiring_nonce_hash: B256,
}

impl Descriptor {
    /// Reads `payload.descriptor`, which v2 requires on every action.
    pub fn from_payload(payload: &Value) -> Result<Self, V2Error> {
        let descriptor = payload
            .get("descriptor")
            .ok_or_else(|| V2Error::InvalidPayload("descriptor is required for v2".into()))?;
        Self::from_json(descriptor)
    }

    /// Parses the JSON `descriptor` object: camelCase keys, `0x`-prefixed hex
    /// of exactly the type's length (the spec's schema), any letter case.
    /// Unknown keys are ignored, as the spec asks.
    pub fn from_json(value: &Value) -> Result<Self, V2Error> {
        let object = value
            .as_object()
            .ok_or_else(|| V2Error::InvalidPayload("descriptor must be an object".into()))?;
        let field = |key: &'static str| {
            object.get(key).and_then(Value::as_str).ok_or_else(|| {
                V2Error::InvalidPayload(format!("descriptor.{key} is missing or not a string"))
            })
        };
        Ok(Self {
            payer: address("payer", field("payer")?)?,
            payee: address("payee", field("payee")?)?,
            operator: address("operator", field("operator")?)?,
            token: address("token", field("token")?)?,
            salt: bytes32("salt", field("salt")?)?,
            authorized_signer: address("authorizedSigner", field("authorizedSigner")?)?,
            expiring_nonce_hash: bytes32("expiringNonceHash", field("expiringNonceHash")?)?,
        })
    }

    /// The address whose signature a voucher needs.
    pub fn voucher_signer(&self) -> Address {
        if self.authorized_signer.is_zero() {
            self.payer
        } else {
            self.authorized_signer
        }
    }
}

impl TryFrom<&ChannelDescriptor> for Descriptor {
    type Error = V2Error;

    fn try_from(d: &ChannelDescriptor) -> Result<Self, V2Error> {
        Ok(Self {
            payer: address("payer", &d.payer)?,
            payee: address("payee", &d.payee)?,
            operator: address("operator", &d.operator)?,
            token: address("token", &d.token)?,
            salt: bytes32("salt", &d.salt)?,
            authorized_signer: address("authorizedSigner", &d.authorized_signer)?,
            expiring_nonce_hash: bytes32("expiringNonceHash", &d.expiring_nonce_hash)?,
        })
    }
}

/// The SDK's wire form, lowercase hex as the spec's encoding rules ask
/// (for session snapshots and receipts).
impl From<&Descriptor> for ChannelDescriptor {
    fn from(d: &Descriptor) -> Self {
        Self {
            payer: format!("{:#x}", d.payer),
            payee: format!("{:#x}", d.payee),
            operator: format!("{:#x}", d.operator),
            token: format!("{:#x}", d.token),
            salt: format!("{:#x}", d.salt),
            authorized_signer: format!("{:#x}", d.authorized_signer),
            expiring_nonce_hash: format!("{:#x}", d.expiring_nonce_hash),
        }
    }
}

fn fixed_hex<const N: usize>(key: &'static str, text: &str) -> Result<[u8; N], V2Error> {
    let malformed = || {
        V2Error::InvalidPayload(format!(
            "descriptor.{key} must be 0x and {} hex digits",
            2 * N
        ))
    };
    let digits = text
        .strip_prefix("0x")
        .filter(|d| d.len() == 2 * N)
        .ok_or_else(malformed)?;
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|_| malformed())?;
    Ok(out)
}

fn address(key: &'static str, text: &str) -> Result<Address, V2Error> {
    fixed_hex::<20>(key, text).map(Address::from)
}

fn bytes32(key: &'static str, text: &str) -> Result<B256, V2Error> {
    fixed_hex::<32>(key, text).map(B256::from)
}

/// The v2 channel id: binds the descriptor to one escrow on one chain.
pub fn channel_id(descriptor: &Descriptor, escrow: Address, chain_id: u64) -> B256 {
    compute_precompile_channel_id_with_escrow(
        descriptor.payer,
        descriptor.payee,
        descriptor.operator,
        descriptor.token,
        descriptor.salt,
        descriptor.authorized_signer,
        descriptor.expiring_nonce_hash,
        escrow,
        chain_id,
    )
}

/// What a descriptor must match: the challenge's payment fields and the
/// credential's claimed channel id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The challenge `recipient`.
    pub payee: Address,
    /// The challenge `currency`.
    pub token: Address,
    /// `methodDetails.operator`, or zero when none is advertised.
    pub operator: Address,
    /// `methodDetails.escrowContract`.
    pub escrow: Address,
    /// `methodDetails.chainId`.
    pub chain_id: u64,
    /// The credential's `channelId`.
    pub channel_id: B256,
}

/// Checks a descriptor against the challenge and the claimed channel id.
/// Payee, token and operator are compared first so the error names them;
/// every other field (and the escrow and chain) is covered by the id.
pub fn check_descriptor(descriptor: &Descriptor, expected: &Expected) -> Result<(), V2Error> {
    let mismatch = |field| Err(V2Error::DescriptorMismatch(field));
    if descriptor.payee != expected.payee {
        return mismatch(Field::Payee);
    }
    if descriptor.token != expected.token {
        return mismatch(Field::Token);
    }
    if descriptor.operator != expected.operator {
        return mismatch(Field::Operator);
    }
    if channel_id(descriptor, expected.escrow, expected.chain_id) != expected.channel_id {
        return mismatch(Field::ChannelId);
    }
    Ok(())
}

/// Verifies a v2 voucher: EIP-712 domain "TIP20 Channel Reserve" version "1"
/// on `escrow` and `chain_id`, `Voucher(bytes32 channelId,uint96
/// cumulativeAmount)`, signed by `expected_signer` (see
/// [`Descriptor::voucher_signer`]).
///
/// Accepts 65-byte `r‖s‖v` with `v` 27 or 28, and 64-byte EIP-2098 compact;
/// rejects high-`s` either way, as the spec requires. Secp256k1 only, as the
/// spec's accepted formats are: the SDK also takes P-256 and WebAuthn
/// primitive signatures, which the spec does not mention.
pub fn verify_voucher(
    escrow: Address,
    chain_id: u64,
    channel_id: B256,
    cumulative: u128,
    signature: &[u8],
    expected_signer: Address,
) -> Result<(), V2Error> {
    if cumulative > MAX_V2_AMOUNT {
        return Err(V2Error::AmountOutOfRange);
    }
    let signature = canonical_signature(signature)?;
    // The SDK decides; we only look closer to explain a refusal.
    let valid = verify_precompile_voucher_signature(
        &signature.as_bytes(),
        expected_signer,
        channel_id,
        cumulative,
        escrow,
        chain_id,
    )
    .map_err(|_| V2Error::InvalidSignature("not a secp256k1 signature"))?;
    if valid {
        return Ok(());
    }
    let hash =
        precompile_voucher_signing_hash_with_escrow(channel_id, cumulative, escrow, chain_id)
            .map_err(|_| V2Error::AmountOutOfRange)?;
    match signature.recover_address_from_prehash(&hash) {
        Ok(recovered) if recovered != expected_signer => Err(V2Error::SignerMismatch { recovered }),
        _ => Err(V2Error::InvalidSignature("signature does not verify")),
    }
}

/// Parses the two encodings the spec allows into one low-`s` signature.
fn canonical_signature(bytes: &[u8]) -> Result<Signature, V2Error> {
    let signature = match bytes.len() {
        65 => {
            let y_parity = match bytes[64] {
                27 => false,
                28 => true,
                _ => return Err(V2Error::InvalidSignature("v must be 27 or 28")),
            };
            Signature::from_bytes_and_parity(&bytes[..64], y_parity)
        }
        64 => Signature::from_erc2098(bytes),
        _ => {
            return Err(V2Error::InvalidSignature(
                "expected 65 bytes (r, s, v) or 64 bytes (EIP-2098)",
            ));
        }
    };
    // `(r, n − s)` verifies the same message; only one form may count.
    if signature.normalize_s().is_some() {
        return Err(V2Error::InvalidSignature("s is above half the curve order"));
    }
    Ok(signature)
}

/// What a verified open transaction establishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedV2 {
    /// The transaction's sender, who funds the channel.
    pub payer: Address,
    /// Who must sign this channel's vouchers.
    pub voucher_signer: Address,
    /// The initial deposit the open pulls from the payer.
    pub deposit: u128,
}

/// Checks a client-signed open transaction (type 0x76, as sent in
/// `payload.transaction`) before it is broadcast: it must be a single call of
/// the escrow's `open` whose sender and arguments are the descriptor's, whose
/// sender-scoped hash is the descriptor's `expiringNonceHash`, and the
/// descriptor must match `expected` (claimed channel id included).
///
/// These are offline checks. They cannot tell whether an access-key
/// (keychain) signature's key is authorized for the account it names, nor
/// whether the transaction will succeed; the spec's receipt and state checks
/// after broadcast remain necessary. The validity window, fee sponsorship and
/// auto-swap prefixes (which mppx allows before the open) are not handled:
/// anything but exactly one call is refused.
pub fn verify_open_transaction(
    tx_bytes: &[u8],
    descriptor: &Descriptor,
    expected: &Expected,
) -> Result<OpenedV2, V2Error> {
    check_descriptor(descriptor, expected)?;
    let invalid = |detail: &str| V2Error::InvalidPayload(detail.to_owned());

    let Some((&TEMPO_TX_TYPE_ID, mut body)) = tx_bytes.split_first() else {
        return Err(invalid("open must be a Tempo (0x76) transaction"));
    };
    let signed = AASigned::rlp_decode(&mut body)
        .map_err(|_| invalid("open transaction cannot be decoded"))?;
    if !body.is_empty() {
        return Err(invalid("open transaction has trailing bytes"));
    }
    let tx = signed.tx();
    if tx.chain_id != expected.chain_id {
        return Err(invalid("open transaction is for another chain"));
    }
    let [call] = tx.calls.as_slice() else {
        return Err(invalid("open transaction must contain exactly one call"));
    };
    if call.to != TxKind::Call(expected.escrow) || !call.value.is_zero() {
        return Err(invalid(
            "open transaction must call the escrow and send no value",
        ));
    }
    if !call
        .input
        .starts_with(&ITIP20ChannelReserve::openCall::SELECTOR)
    {
        return Err(invalid("open transaction does not call open()"));
    }
    let open = ITIP20ChannelReserve::openCall::abi_decode_validate(&call.input)
        .map_err(|_| invalid("open() calldata cannot be decoded"))?;

    let sender = signed
        .recover_signer()
        .map_err(|_| invalid("open transaction signature is invalid"))?;
    let mismatch = |field| Err(V2Error::DescriptorMismatch(field));
    if sender != descriptor.payer {
        return mismatch(Field::Payer);
    }
    if open.payee != descriptor.payee {
        return mismatch(Field::Payee);
    }
    if open.operator != descriptor.operator {
        return mismatch(Field::Operator);
    }
    if open.token != descriptor.token {
        return mismatch(Field::Token);
    }
    if open.salt != descriptor.salt {
        return mismatch(Field::Salt);
    }
    if open.authorizedSigner != descriptor.authorized_signer {
        return mismatch(Field::AuthorizedSigner);
    }
    // The node seeds the precompile with keccak256(signing encoding ‖ sender)
    // for every transaction; the primitives crate computes exactly that.
    if signed.expiring_nonce_hash(sender) != descriptor.expiring_nonce_hash {
        return mismatch(Field::ExpiringNonceHash);
    }
    let deposit: u128 = open.deposit.to();
    if deposit == 0 {
        return Err(invalid("open deposit is zero"));
    }
    Ok(OpenedV2 {
        payer: sender,
        voucher_signer: descriptor.voucher_signer(),
        deposit,
    })
}

/// A v2 channel's mutable state on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnChainV2 {
    pub deposit: u128,
    pub settled: u128,
    /// Unix seconds of the payer's close request, or 0.
    pub close_requested_at: u64,
    /// Always false when read from the precompile, which deletes a channel
    /// when it closes (that reads as [`V2Error::ChannelNotFound`]). Kept so
    /// v1 and v2 state can be handled alike.
    pub finalized: bool,
}

impl OnChainV2 {
    /// Whether a voucher for `cumulative` can be served against this state:
    /// the channel is neither finalized nor closing, and holds enough.
    pub fn admit_voucher(&self, cumulative: u128) -> Result<(), V2Error> {
        if self.finalized || self.close_requested_at != 0 {
            return Err(V2Error::ChannelFinalized);
        }
        if cumulative > self.deposit {
            return Err(V2Error::AmountExceedsDeposit {
                cumulative,
                deposit: self.deposit,
            });
        }
        Ok(())
    }
}

/// Reads a v2 channel's on-chain state. A trait so verification logic can
/// be tested without a chain (the local devnet has no precompile).
pub trait V2ChannelReader: Send + Sync {
    /// State of `channel_id`, which `descriptor` must identify.
    fn read_channel(
        &self,
        channel_id: B256,
        descriptor: &Descriptor,
    ) -> impl Future<Output = Result<OnChainV2, V2Error>> + Send;
}

/// Reads channel state with the precompile's `getChannelState(bytes32)` view,
/// over JSON-RPC `eth_call` at the latest block.
#[derive(Debug, Clone)]
pub struct RpcChannelReader<P> {
    provider: P,
    escrow: Address,
    chain_id: u64,
    timeout: Duration,
}

impl<P> RpcChannelReader<P> {
    /// `escrow` and `chain_id` are the challenge's; `timeout` bounds each read.
    pub fn new(provider: P, escrow: Address, chain_id: u64, timeout: Duration) -> Self {
        Self {
            provider,
            escrow,
            chain_id,
            timeout,
        }
    }
}

impl<P> V2ChannelReader for RpcChannelReader<P>
where
    P: Provider<TempoNetwork> + Send + Sync,
{
    async fn read_channel(
        &self,
        channel_id: B256,
        descriptor: &Descriptor,
    ) -> Result<OnChainV2, V2Error> {
        // State is keyed by id alone: make sure it is this descriptor's.
        if self::channel_id(descriptor, self.escrow, self.chain_id) != channel_id {
            return Err(V2Error::DescriptorMismatch(Field::ChannelId));
        }
        let call = ITIP20ChannelReserve::getChannelStateCall {
            channelId: channel_id,
        };
        let request = TempoTransactionRequest {
            inner: TransactionRequest::default()
                .to(self.escrow)
                .input(Bytes::from(call.abi_encode()).into()),
            ..Default::default()
        };
        let answer = tokio::time::timeout(
            self.timeout,
            self.provider
                .raw_request::<_, Bytes>("eth_call".into(), (request, "latest")),
        )
        .await
        .map_err(|_| V2Error::Rpc("eth_call timed out".into()))?;
        // Transport errors can carry the RPC URL (and any key in it): say less.
        let raw = answer.map_err(|e| match e.as_error_resp() {
            Some(resp) => V2Error::Rpc(format!(
                "node refused eth_call ({}): {}",
                resp.code,
                redact_hex(&resp.message)
            )),
            None => V2Error::Rpc("RPC endpoint unreachable or answered garbage".into()),
        })?;
        let state = ITIP20ChannelReserve::getChannelStateCall::abi_decode_returns(&raw)
            .map_err(|_| V2Error::Rpc("unexpected getChannelState result".into()))?;
        // A live channel always holds a deposit (opening with zero reverts).
        if state.deposit.is_zero() {
            return Err(V2Error::ChannelNotFound);
        }
        Ok(OnChainV2 {
            deposit: state.deposit.to(),
            settled: state.settled.to(),
            close_requested_at: u64::from(state.closeRequestedAt),
            finalized: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;
    use std::sync::{Arc, Mutex};

    use alloy::eips::Encodable2718;
    use alloy::primitives::{U256, Uint, address, b256, hex};
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use mpp::protocol::methods::tempo::precompile_voucher::sign_precompile_voucher_with_escrow;
    use serde_json::json;
    use tempo_alloy::contracts::precompiles::TIP20_CHANNEL_RESERVE_ADDRESS;
    use tempo_alloy::primitives::TempoTransaction;
    use tempo_alloy::primitives::transaction::{
        Call, PrimitiveSignature, TEMPO_EXPIRING_NONCE_KEY, TempoSignature,
    };

    use super::*;

    // Vectors from mppx 0.11.0 (viem 2.57.0, ox 0.14.33), generated once by a
    // node script: `Session.Precompile.Channel.computeId`, `Voucher.signVoucher`
    // with anvil's first key, and an open transaction built with
    // `TxEnvelopeTempo`, hashed with `Channel.computeExpiringNonceHash` and
    // accepted by mppx's own `Chain.validateOpenCredentialTransaction`.
    const PAYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const PAYER: Address = address!("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
    const PAYEE: Address = address!("0x742d35cc6634c0532925a3b844bc9e7595f8fe00");
    const TOKEN: Address = address!("0x20c0000000000000000000000000000000000000");
    const SALT: B256 = b256!("0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    const NONCE_HASH: B256 =
        b256!("0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    const CUSTOM_ESCROW: Address = address!("0x5fbdb2315678afecb367f032d93f642f64180aa3");
    const CHAIN_ID: u64 = 42431;
    const MPPX_ID: B256 =
        b256!("0x1770b0088fc65e2746d0b0dc7d51b48a60a1492681cff47562740927f3840c92");
    const MPPX_ID_CUSTOM_ESCROW: B256 =
        b256!("0x132c9de0e47b6130dd30e60722fbc10f4c744056a7010eb9b2fd774bce060169");
    const MPPX_AMOUNT: u128 = 250_000;
    const MPPX_SIG: &str = "0xd304a1656b53fe642e3864ecfcd40fddc5ee3eaf23ad4af4693d9782b7c6492a6be532c782997d9e4e3aebfbca923218c6c66a7f9cecae6445087f730d86724f1c";
    const MPPX_SIG_CUSTOM_ESCROW: &str = "0x5b6f5e7085562370c46e37f43869af4b4544aa2c81472a49a13c86fe0b33e26b3d006f8e555e249bbc58452a954f09ae4947b4839b5470e52c8c449f796fb5be1c";
    const MPPX_OPEN_TX: &str = "0x76f9016182a5bf843b9aca008504a817c8008307a120f8def8dc944d5050000000000000000000000000000000000080b8c4edc53b00000000000000000000000000742d35cc6634c0532925a3b844bc9e7595f8fe00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000020c000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000004c4b40aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa0000000000000000000000000000000000000000000000000000000000000000c0a0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff808470dbd880808080c0b8416d54fc4c4f8f117beaf5a2a0186a4eab05878d80839c3e36e5b3ce3e2f06a7590ad6744081661dc36723d9cf148d6da4b2b622b937133d79ebf2f078820921d81c";
    const MPPX_OPEN_NONCE_HASH: B256 =
        b256!("0x45af6b2bb02589be0d0506b8e8103a4ff32b2424600f41182e8909c07dc4bcb8");
    const MPPX_OPEN_ID: B256 =
        b256!("0xbb8d05802e48af1253876c63331ef68f4f15536401537722a2b319325d317c35");
    const MPPX_OPEN_DEPOSIT: u128 = 5_000_000;
    /// secp256k1 group order n.
    const SECP256K1_N: U256 = U256::from_be_bytes(hex!(
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"
    ));

    fn payer_key() -> PrivateKeySigner {
        PAYER_KEY.parse().unwrap()
    }

    fn descriptor() -> Descriptor {
        Descriptor {
            payer: PAYER,
            payee: PAYEE,
            operator: Address::ZERO,
            token: TOKEN,
            salt: SALT,
            authorized_signer: Address::ZERO,
            expiring_nonce_hash: NONCE_HASH,
        }
    }

    fn expected_for(d: &Descriptor) -> Expected {
        Expected {
            payee: PAYEE,
            token: TOKEN,
            operator: Address::ZERO,
            escrow: TIP20_CHANNEL_RESERVE_ADDRESS,
            chain_id: CHAIN_ID,
            channel_id: channel_id(d, TIP20_CHANNEL_RESERVE_ADDRESS, CHAIN_ID),
        }
    }

    fn verify(
        sig: &[u8],
        escrow: Address,
        chain: u64,
        id: B256,
        amount: u128,
    ) -> Result<(), V2Error> {
        verify_voucher(escrow, chain, id, amount, sig, PAYER)
    }

    #[test]
    fn channel_id_matches_mppx() {
        let d = descriptor();
        assert_eq!(
            channel_id(&d, TIP20_CHANNEL_RESERVE_ADDRESS, CHAIN_ID),
            MPPX_ID
        );
        assert_eq!(
            channel_id(&d, CUSTOM_ESCROW, CHAIN_ID),
            MPPX_ID_CUSTOM_ESCROW
        );
        assert_ne!(channel_id(&d, TIP20_CHANNEL_RESERVE_ADDRESS, 4217), MPPX_ID);
    }

    #[test]
    fn mppx_signed_vouchers_verify() {
        let sig = hex::decode(MPPX_SIG).unwrap();
        verify(
            &sig,
            TIP20_CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID,
            MPPX_ID,
            MPPX_AMOUNT,
        )
        .unwrap();
        let sig = hex::decode(MPPX_SIG_CUSTOM_ESCROW).unwrap();
        verify(
            &sig,
            CUSTOM_ESCROW,
            CHAIN_ID,
            MPPX_ID_CUSTOM_ESCROW,
            MPPX_AMOUNT,
        )
        .unwrap();
    }

    #[tokio::test]
    async fn sdk_signed_voucher_verifies_up_to_uint96_max() {
        let key = payer_key();
        for amount in [0, 1, MAX_V2_AMOUNT] {
            let sig = sign_precompile_voucher_with_escrow(
                &key,
                MPPX_ID,
                amount,
                TIP20_CHANNEL_RESERVE_ADDRESS,
                CHAIN_ID,
            )
            .await
            .unwrap();
            verify(
                &sig,
                TIP20_CHANNEL_RESERVE_ADDRESS,
                CHAIN_ID,
                MPPX_ID,
                amount,
            )
            .unwrap();
        }
    }

    #[tokio::test]
    async fn another_key_is_a_signer_mismatch() {
        let other = PrivateKeySigner::random();
        let sig = sign_precompile_voucher_with_escrow(
            &other,
            MPPX_ID,
            MPPX_AMOUNT,
            TIP20_CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID,
        )
        .await
        .unwrap();
        assert_eq!(
            verify(
                &sig,
                TIP20_CHANNEL_RESERVE_ADDRESS,
                CHAIN_ID,
                MPPX_ID,
                MPPX_AMOUNT
            ),
            Err(V2Error::SignerMismatch {
                recovered: other.address()
            })
        );
        // The delegated signer is accepted when the descriptor names it.
        let d = Descriptor {
            authorized_signer: other.address(),
            ..descriptor()
        };
        verify_voucher(
            TIP20_CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID,
            MPPX_ID,
            MPPX_AMOUNT,
            &sig,
            d.voucher_signer(),
        )
        .unwrap();
        assert_eq!(descriptor().voucher_signer(), PAYER);
    }

    #[test]
    fn high_s_is_rejected_though_it_recovers_the_payer() {
        let sig = hex::decode(MPPX_SIG).unwrap();
        let low = Signature::from_raw(&sig).unwrap();
        let high = Signature::new(low.r(), SECP256K1_N - low.s(), !low.v());
        let hash = precompile_voucher_signing_hash_with_escrow(
            MPPX_ID,
            MPPX_AMOUNT,
            TIP20_CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID,
        )
        .unwrap();
        assert_eq!(high.recover_address_from_prehash(&hash).unwrap(), PAYER);
        let high_bytes = high.as_bytes();
        assert!(matches!(
            verify(
                &high_bytes,
                TIP20_CHANNEL_RESERVE_ADDRESS,
                CHAIN_ID,
                MPPX_ID,
                MPPX_AMOUNT
            ),
            Err(V2Error::InvalidSignature(_))
        ));
        // EIP-2098 has no room for s ≥ 2^255, but (n/2, 2^255) is still high
        // and must be refused in the compact form too.
        let mut compact = [0u8; 64];
        compact[..32].copy_from_slice(&high.r().to_be_bytes::<32>());
        let barely_high: U256 = (SECP256K1_N >> 1usize) + U256::from(1);
        compact[32..].copy_from_slice(&barely_high.to_be_bytes::<32>());
        assert!(matches!(
            verify(
                &compact,
                TIP20_CHANNEL_RESERVE_ADDRESS,
                CHAIN_ID,
                MPPX_ID,
                MPPX_AMOUNT
            ),
            Err(V2Error::InvalidSignature(_))
        ));
    }

    #[test]
    fn eip2098_compact_form_is_accepted() {
        let sig = Signature::from_raw(&hex::decode(MPPX_SIG).unwrap()).unwrap();
        let compact = sig.as_erc2098();
        verify(
            &compact,
            TIP20_CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID,
            MPPX_ID,
            MPPX_AMOUNT,
        )
        .unwrap();
        // Both parities: a fresh signature likely has the other one.
        let other = payer_key()
            .sign_hash_sync(
                &precompile_voucher_signing_hash_with_escrow(
                    MPPX_ID,
                    7,
                    TIP20_CHANNEL_RESERVE_ADDRESS,
                    CHAIN_ID,
                )
                .unwrap(),
            )
            .unwrap();
        verify(
            &other.as_erc2098(),
            TIP20_CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID,
            MPPX_ID,
            7,
        )
        .unwrap();
    }

    #[test]
    fn malformed_signatures_are_invalid() {
        let sig = hex::decode(MPPX_SIG).unwrap();
        let mut v_zero = sig.clone();
        v_zero[64] -= 27;
        let mut zero_r = sig.clone();
        zero_r[..32].fill(0);
        let mut extra = sig.clone();
        extra.push(0);
        for bad in [&[][..], &sig[..63], &extra, &v_zero, &zero_r] {
            assert!(
                matches!(
                    verify(
                        bad,
                        TIP20_CHANNEL_RESERVE_ADDRESS,
                        CHAIN_ID,
                        MPPX_ID,
                        MPPX_AMOUNT
                    ),
                    Err(V2Error::InvalidSignature(_))
                ),
                "{} bytes",
                bad.len()
            );
        }
    }

    #[test]
    fn amounts_beyond_uint96_are_refused_before_any_crypto() {
        let sig = hex::decode(MPPX_SIG).unwrap();
        assert_eq!(
            verify(
                &sig,
                TIP20_CHANNEL_RESERVE_ADDRESS,
                CHAIN_ID,
                MPPX_ID,
                MAX_V2_AMOUNT + 1
            ),
            Err(V2Error::AmountOutOfRange)
        );
        assert_eq!(
            verify(
                &sig,
                TIP20_CHANNEL_RESERVE_ADDRESS,
                CHAIN_ID,
                MPPX_ID,
                u128::MAX
            ),
            Err(V2Error::AmountOutOfRange)
        );
    }

    #[tokio::test]
    async fn v1_domain_signature_is_rejected() {
        let v1 = mpp::protocol::methods::tempo::voucher::sign_voucher(
            &payer_key(),
            MPPX_ID,
            MPPX_AMOUNT,
            TIP20_CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID,
        )
        .await
        .unwrap();
        assert!(matches!(
            verify(
                &v1,
                TIP20_CHANNEL_RESERVE_ADDRESS,
                CHAIN_ID,
                MPPX_ID,
                MPPX_AMOUNT
            ),
            Err(V2Error::SignerMismatch { .. })
        ));
    }

    #[test]
    fn voucher_is_bound_to_escrow_chain_channel_and_amount() {
        let sig = hex::decode(MPPX_SIG).unwrap();
        for (escrow, chain, id, amount) in [
            (CUSTOM_ESCROW, CHAIN_ID, MPPX_ID, MPPX_AMOUNT),
            (TIP20_CHANNEL_RESERVE_ADDRESS, 4217, MPPX_ID, MPPX_AMOUNT),
            (
                TIP20_CHANNEL_RESERVE_ADDRESS,
                CHAIN_ID,
                MPPX_ID_CUSTOM_ESCROW,
                MPPX_AMOUNT,
            ),
            (
                TIP20_CHANNEL_RESERVE_ADDRESS,
                CHAIN_ID,
                MPPX_ID,
                MPPX_AMOUNT + 1,
            ),
        ] {
            let err = verify(&sig, escrow, chain, id, amount).unwrap_err();
            assert!(
                matches!(err, V2Error::SignerMismatch { recovered } if recovered != PAYER),
                "{escrow} {chain}: {err:?}"
            );
        }
    }

    #[test]
    fn descriptor_mismatches_name_the_field() {
        let d = descriptor();
        let expected = expected_for(&d);
        check_descriptor(&d, &expected).unwrap();
        let other = Address::repeat_byte(0x99);
        let cases = [
            (Descriptor { payee: other, ..d }, Field::Payee),
            (Descriptor { token: other, ..d }, Field::Token),
            (
                Descriptor {
                    operator: other,
                    ..d
                },
                Field::Operator,
            ),
            (Descriptor { payer: other, ..d }, Field::ChannelId),
            (
                Descriptor {
                    salt: B256::repeat_byte(1),
                    ..d
                },
                Field::ChannelId,
            ),
            (
                Descriptor {
                    authorized_signer: other,
                    ..d
                },
                Field::ChannelId,
            ),
            (
                Descriptor {
                    expiring_nonce_hash: B256::ZERO,
                    ..d
                },
                Field::ChannelId,
            ),
        ];
        for (changed, field) in cases {
            assert_eq!(
                check_descriptor(&changed, &expected),
                Err(V2Error::DescriptorMismatch(field))
            );
        }
        for wrong in [
            Expected {
                escrow: CUSTOM_ESCROW,
                ..expected
            },
            Expected {
                chain_id: 4217,
                ..expected
            },
            Expected {
                channel_id: MPPX_ID_CUSTOM_ESCROW,
                ..expected
            },
        ] {
            assert_eq!(
                check_descriptor(&d, &wrong),
                Err(V2Error::DescriptorMismatch(Field::ChannelId))
            );
        }
        // An operator the challenge advertises must be the descriptor's.
        let with_operator = Descriptor {
            operator: other,
            ..d
        };
        let expected = Expected {
            operator: other,
            ..expected_for(&with_operator)
        };
        check_descriptor(&with_operator, &expected).unwrap();
        assert_eq!(
            check_descriptor(&d, &expected),
            Err(V2Error::DescriptorMismatch(Field::Operator))
        );
    }

    fn descriptor_json() -> Value {
        json!({
            "payer": "0xF39FD6E51AAD88F6F4CE6AB8827279CFFFB92266",
            "payee": "0x742d35cc6634c0532925a3b844bc9e7595f8fe00",
            "operator": "0x0000000000000000000000000000000000000000",
            "token": "0x20c0000000000000000000000000000000000000",
            "salt": "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "authorizedSigner": "0x0000000000000000000000000000000000000000",
            "expiringNonceHash": "0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "futureField": 1
        })
    }

    #[test]
    fn descriptor_parses_from_json_and_round_trips_through_the_sdk_type() {
        let parsed = Descriptor::from_json(&descriptor_json()).unwrap();
        assert_eq!(parsed, descriptor());
        let payload = json!({ "action": "voucher", "descriptor": descriptor_json() });
        assert_eq!(Descriptor::from_payload(&payload).unwrap(), parsed);

        let wire = ChannelDescriptor::from(&parsed);
        assert_eq!(wire.payer, "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266");
        assert_eq!(Descriptor::try_from(&wire).unwrap(), parsed);
        let reparsed: ChannelDescriptor = serde_json::from_value(descriptor_json()).unwrap();
        assert_eq!(Descriptor::try_from(&reparsed).unwrap(), parsed);
    }

    #[test]
    fn malformed_descriptors_are_named() {
        let with = |key: &str, value: Value| {
            let mut d = descriptor_json();
            d[key] = value;
            d
        };
        let without = |key: &str| {
            let mut d = descriptor_json();
            d.as_object_mut().unwrap().remove(key);
            d
        };
        let cases = [
            (without("salt"), "salt"),
            (with("payee", json!(42)), "payee"),
            (
                with("payee", json!("742d35cc6634c0532925a3b844bc9e7595f8fe00")),
                "payee",
            ),
            (
                with("token", json!("0x20c00000000000000000000000000000000000")),
                "token",
            ),
            (
                with(
                    "operator",
                    json!("0x000000000000000000000000000000000000000g"),
                ),
                "operator",
            ),
            (with("salt", json!("0xaaaa")), "salt"),
            (with("authorizedSigner", Value::Null), "authorizedSigner"),
            (
                with("expiringNonceHash", json!(format!("0x{}", "b".repeat(66)))),
                "expiringNonceHash",
            ),
        ];
        for (value, key) in cases {
            match Descriptor::from_json(&value) {
                Err(V2Error::InvalidPayload(detail)) => {
                    assert!(detail.contains(key), "{key}: {detail}")
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        for value in [json!("descriptor"), json!([]), Value::Null] {
            assert!(matches!(
                Descriptor::from_json(&value),
                Err(V2Error::InvalidPayload(_))
            ));
        }
        assert!(matches!(
            Descriptor::from_payload(&json!({ "action": "voucher" })),
            Err(V2Error::InvalidPayload(_))
        ));
    }

    #[test]
    fn mppx_open_transaction_verifies() {
        let tx = hex::decode(MPPX_OPEN_TX).unwrap();
        let d = Descriptor {
            expiring_nonce_hash: MPPX_OPEN_NONCE_HASH,
            ..descriptor()
        };
        let expected = expected_for(&d);
        assert_eq!(expected.channel_id, MPPX_OPEN_ID);
        let opened = verify_open_transaction(&tx, &d, &expected).unwrap();
        assert_eq!(
            opened,
            OpenedV2 {
                payer: PAYER,
                voucher_signer: PAYER,
                deposit: MPPX_OPEN_DEPOSIT
            }
        );
        // One flipped salt byte: the signature now recovers someone else.
        let salt_at = tx.windows(32).position(|w| w == SALT.as_slice()).unwrap();
        let mut tampered = tx.clone();
        tampered[salt_at] ^= 1;
        assert_eq!(
            verify_open_transaction(&tampered, &d, &expected),
            Err(V2Error::DescriptorMismatch(Field::Payer))
        );
    }

    fn open_call(deposit: u128, authorized_signer: Address) -> Call {
        let open = ITIP20ChannelReserve::openCall {
            payee: PAYEE,
            operator: Address::ZERO,
            token: TOKEN,
            deposit: Uint::from(deposit),
            salt: SALT,
            authorizedSigner: authorized_signer,
        };
        Call {
            to: TxKind::Call(TIP20_CHANNEL_RESERVE_ADDRESS),
            value: U256::ZERO,
            input: open.abi_encode().into(),
        }
    }

    fn open_tx(calls: Vec<Call>) -> TempoTransaction {
        TempoTransaction {
            chain_id: CHAIN_ID,
            max_priority_fee_per_gas: 1_000_000_000,
            max_fee_per_gas: 20_000_000_000,
            gas_limit: 500_000,
            calls,
            nonce_key: TEMPO_EXPIRING_NONCE_KEY,
            valid_before: NonZeroU64::new(1_893_456_000),
            ..Default::default()
        }
    }

    /// Signs `tx` as the payer (its signature is reused for `sent`, to tamper).
    fn sign(tx: &TempoTransaction, sent: TempoTransaction) -> (Vec<u8>, Descriptor) {
        let sig = payer_key().sign_hash_sync(&tx.signature_hash()).unwrap();
        let signed = AASigned::new_unhashed(
            sent,
            TempoSignature::Primitive(PrimitiveSignature::Secp256k1(sig)),
        );
        let d = Descriptor {
            expiring_nonce_hash: signed.expiring_nonce_hash(PAYER),
            ..descriptor()
        };
        (signed.encoded_2718(), d)
    }

    #[test]
    fn locally_built_open_transactions() {
        let tx = open_tx(vec![open_call(1_000, Address::ZERO)]);
        let (bytes, d) = sign(&tx, tx.clone());
        let expected = expected_for(&d);
        assert_eq!(
            verify_open_transaction(&bytes, &d, &expected)
                .unwrap()
                .deposit,
            1_000
        );

        // A protocol (non-expiring) nonce opens channels too.
        let plain = TempoTransaction {
            nonce_key: U256::ZERO,
            nonce: 3,
            valid_before: None,
            ..tx.clone()
        };
        let (bytes_plain, d_plain) = sign(&plain, plain.clone());
        verify_open_transaction(&bytes_plain, &d_plain, &expected_for(&d_plain)).unwrap();

        // The descriptor must say what the transaction does.
        let mismatch = |d: Descriptor, field| {
            assert_eq!(
                verify_open_transaction(&bytes, &d, &expected_for(&d)),
                Err(V2Error::DescriptorMismatch(field))
            );
        };
        mismatch(
            Descriptor {
                salt: B256::repeat_byte(1),
                ..d
            },
            Field::Salt,
        );
        mismatch(
            Descriptor {
                authorized_signer: PAYEE,
                ..d
            },
            Field::AuthorizedSigner,
        );
        mismatch(
            Descriptor {
                expiring_nonce_hash: NONCE_HASH,
                ..d
            },
            Field::ExpiringNonceHash,
        );
        mismatch(Descriptor { payer: PAYEE, ..d }, Field::Payer);
        // A descriptor that does not match the claimed id never gets that far.
        assert_eq!(
            verify_open_transaction(
                &bytes,
                &d,
                &Expected {
                    channel_id: MPPX_ID,
                    ..expected
                }
            ),
            Err(V2Error::DescriptorMismatch(Field::ChannelId))
        );

        // Signed deposit 1000, sent deposit 10^6: the sender no longer recovers.
        let inflated = open_tx(vec![open_call(1_000_000, Address::ZERO)]);
        let (tampered, _) = sign(&tx, inflated);
        assert_eq!(
            verify_open_transaction(&tampered, &d, &expected),
            Err(V2Error::DescriptorMismatch(Field::Payer))
        );
    }

    #[test]
    fn open_transactions_of_the_wrong_shape_are_invalid() {
        let call = open_call(1_000, Address::ZERO);
        let elsewhere = Call {
            to: TxKind::Call(CUSTOM_ESCROW),
            ..call.clone()
        };
        let with_value = Call {
            value: U256::from(1),
            ..call.clone()
        };
        let top_up = Call {
            input: ITIP20ChannelReserve::topUpCall {
                descriptor: ITIP20ChannelReserve::ChannelDescriptor {
                    payer: PAYER,
                    payee: PAYEE,
                    operator: Address::ZERO,
                    token: TOKEN,
                    salt: SALT,
                    authorizedSigner: Address::ZERO,
                    expiringNonceHash: NONCE_HASH,
                },
                additionalDeposit: Uint::from(1),
            }
            .abi_encode()
            .into(),
            ..call.clone()
        };
        let txs = [
            open_tx(vec![call.clone(), call.clone()]),
            open_tx(vec![]),
            open_tx(vec![elsewhere]),
            open_tx(vec![with_value]),
            open_tx(vec![top_up]),
            open_tx(vec![open_call(0, Address::ZERO)]),
            TempoTransaction {
                chain_id: 4217,
                ..open_tx(vec![call])
            },
        ];
        for (i, tx) in txs.into_iter().enumerate() {
            let (bytes, d) = sign(&tx, tx.clone());
            assert!(
                matches!(
                    verify_open_transaction(&bytes, &d, &expected_for(&d)),
                    Err(V2Error::InvalidPayload(_))
                ),
                "case {i}"
            );
        }

        let good = open_tx(vec![open_call(1_000, Address::ZERO)]);
        let (bytes, d) = sign(&good, good.clone());
        let expected = expected_for(&d);
        let mut trailing = bytes.clone();
        trailing.push(0);
        for bad in [
            &bytes[1..],
            &trailing[..],
            &bytes[..bytes.len() - 1],
            &[][..],
        ] {
            assert!(matches!(
                verify_open_transaction(bad, &d, &expected),
                Err(V2Error::InvalidPayload(_))
            ));
        }
    }

    #[test]
    fn on_chain_state_admits_vouchers_up_to_the_deposit() {
        let state = OnChainV2 {
            deposit: 100,
            settled: 10,
            close_requested_at: 0,
            finalized: false,
        };
        state.admit_voucher(100).unwrap();
        assert_eq!(
            state.admit_voucher(101),
            Err(V2Error::AmountExceedsDeposit {
                cumulative: 101,
                deposit: 100
            })
        );
        let closing = OnChainV2 {
            close_requested_at: 1_767_225_600,
            ..state
        };
        assert_eq!(closing.admit_voucher(50), Err(V2Error::ChannelFinalized));
        let finalized = OnChainV2 {
            finalized: true,
            ..state
        };
        assert_eq!(finalized.admit_voucher(50), Err(V2Error::ChannelFinalized));
    }

    #[test]
    fn errors_map_to_the_spec_problem_types() {
        let slug = |e: V2Error| (e.problem_slug(), e.status());
        assert_eq!(
            slug(V2Error::InvalidSignature("x")),
            ("session/invalid-signature", 402)
        );
        assert_eq!(
            slug(V2Error::SignerMismatch {
                recovered: Address::ZERO
            }),
            ("session/signer-mismatch", 402)
        );
        assert_eq!(
            slug(V2Error::AmountExceedsDeposit {
                cumulative: 2,
                deposit: 1
            }),
            ("session/amount-exceeds-deposit", 402)
        );
        assert_eq!(
            slug(V2Error::ChannelNotFound),
            ("session/channel-not-found", 410)
        );
        assert_eq!(
            slug(V2Error::ChannelFinalized),
            ("session/channel-finalized", 410)
        );
        assert_eq!(
            slug(V2Error::InvalidPayload("x".into())),
            ("invalid-payload", 400)
        );
        assert_eq!(slug(V2Error::AmountOutOfRange), ("invalid-payload", 400));
        assert_eq!(
            slug(V2Error::DescriptorMismatch(Field::Token)),
            ("verification-failed", 402)
        );
        assert_eq!(slug(V2Error::Rpc("x".into())), ("chain-unavailable", 503));
        assert_eq!(
            V2Error::DescriptorMismatch(Field::ExpiringNonceHash).to_string(),
            "channel expiringNonceHash does not match"
        );
    }

    // ---- the RPC reader, against a loopback JSON-RPC stub ----

    /// `getChannelState(bytes32)` selector, from viem's `toFunctionSelector`.
    const GET_CHANNEL_STATE: &str = "d18da8b1";
    /// ABI-encoded `ChannelState { settled: 1000, deposit: 5_000_000, closeRequestedAt: 0 }`
    /// as a node returns it (encoded with viem's `encodeAbiParameters`).
    const OPEN_STATE: &str = "0x00000000000000000000000000000000000000000000000000000000000003e800000000000000000000000000000000000000000000000000000000004c4b400000000000000000000000000000000000000000000000000000000000000000";
    /// `{ settled: 250_000, deposit: 5_000_000, closeRequestedAt: 1767225600 }`.
    const CLOSING_STATE: &str = "0x000000000000000000000000000000000000000000000000000000000003d09000000000000000000000000000000000000000000000000000000000004c4b40000000000000000000000000000000000000000000000000000000006955b900";

    /// Serves one canned JSON-RPC answer per request and records the requests.
    async fn stub(answer: Value) -> (String, Arc<Mutex<Vec<Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |axum::Json(request): axum::Json<Value>| {
                let log = log.clone();
                let answer = answer.clone();
                async move {
                    let mut response = json!({ "jsonrpc": "2.0", "id": request["id"].clone() });
                    for (k, v) in answer.as_object().unwrap() {
                        response[k] = v.clone();
                    }
                    log.lock().unwrap().push(request);
                    axum::Json(response)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    async fn read_via_stub(answer: Value, id: B256) -> (Result<OnChainV2, V2Error>, Vec<Value>) {
        let (url, seen) = stub(answer).await;
        let reader = RpcChannelReader::new(
            mpp::server::tempo_provider(&url).unwrap(),
            TIP20_CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID,
            Duration::from_secs(5),
        );
        let result = reader.read_channel(id, &descriptor()).await;
        let requests = seen.lock().unwrap().clone();
        (result, requests)
    }

    #[tokio::test]
    async fn rpc_reader_decodes_a_recorded_eth_call() {
        let (state, requests) = read_via_stub(json!({ "result": OPEN_STATE }), MPPX_ID).await;
        assert_eq!(
            state.unwrap(),
            OnChainV2 {
                deposit: 5_000_000,
                settled: 1_000,
                close_requested_at: 0,
                finalized: false
            }
        );
        let [request] = requests.as_slice() else {
            panic!("{requests:?}")
        };
        assert_eq!(request["method"], "eth_call");
        let call = &request["params"][0];
        assert_eq!(
            call["to"].as_str().unwrap().to_lowercase(),
            format!("{TIP20_CHANNEL_RESERVE_ADDRESS:#x}")
        );
        let data = call.get("input").or_else(|| call.get("data")).unwrap();
        assert_eq!(
            data,
            &json!(format!("0x{GET_CHANNEL_STATE}{}", hex::encode(MPPX_ID)))
        );
        assert_eq!(request["params"][1], "latest");

        let (state, _) = read_via_stub(json!({ "result": CLOSING_STATE }), MPPX_ID).await;
        let state = state.unwrap();
        assert_eq!(
            (state.settled, state.close_requested_at),
            (250_000, 1_767_225_600)
        );
        assert_eq!(state.admit_voucher(300_000), Err(V2Error::ChannelFinalized));
    }

    #[tokio::test]
    async fn rpc_reader_failures() {
        let zero = format!("0x{}", "0".repeat(192));
        let (state, _) = read_via_stub(json!({ "result": zero }), MPPX_ID).await;
        assert_eq!(state, Err(V2Error::ChannelNotFound));

        let refused = json!({ "error": { "code": -32000, "message": "header not found" } });
        let (state, _) = read_via_stub(refused, MPPX_ID).await;
        assert!(
            matches!(state, Err(V2Error::Rpc(ref m)) if m.contains("header not found")),
            "{state:?}"
        );

        let (state, _) = read_via_stub(json!({ "result": "0x01" }), MPPX_ID).await;
        assert!(matches!(state, Err(V2Error::Rpc(_))), "{state:?}");

        // Another channel's id: refused before anything is asked.
        let (state, requests) =
            read_via_stub(json!({ "result": OPEN_STATE }), MPPX_ID_CUSTOM_ESCROW).await;
        assert_eq!(state, Err(V2Error::DescriptorMismatch(Field::ChannelId)));
        assert!(requests.is_empty());

        // Nothing listening: no URL in the error.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/secret-key");
        let reader = RpcChannelReader::new(
            mpp::server::tempo_provider(&url).unwrap(),
            TIP20_CHANNEL_RESERVE_ADDRESS,
            CHAIN_ID,
            Duration::from_secs(5),
        );
        match reader.read_channel(MPPX_ID, &descriptor()).await {
            Err(V2Error::Rpc(detail)) => assert!(!detail.contains("secret-key"), "{detail}"),
            other => panic!("{other:?}"),
        }
    }
}
